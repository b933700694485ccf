package loadgen_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"sluice/shared/devstack/loadgen"
)

// fakeWS serves GET /v1/ws as the producer does for a happy path: ready,
// then for each ask accepted, two pieces gap apart, and done. /metrics
// grows by 10 KiB of heap per connection served.
func fakeWS(t *testing.T, gap time.Duration) *httptest.Server {
	var conns atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		n := float64(conns.Load())
		fmt.Fprintf(w, "process_resident_memory_bytes %g\ngo_memstats_heap_inuse_bytes %g\ngo_goroutines %g\n", 1e8+n*20480, 5e7+n*10240, 10+2*n)
	})
	mux.HandleFunc("/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"sluice.v1"}})
		if err != nil {
			return
		}
		conns.Add(1)
		defer c.CloseNow()
		ctx := context.Background()
		send := func(v any) error { b, _ := json.Marshal(v); return c.Write(ctx, websocket.MessageText, b) }
		if send(map[string]string{"type": "ready"}) != nil {
			return
		}
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
			_ = send(map[string]string{"type": "accepted", "request_id": "r", "dialog_id": "0123456789abcdef0123456789abcdef"})
			_ = send(map[string]any{"type": "delta", "request_id": "r", "seq": 0, "text": "Hel"})
			time.Sleep(gap) // the answer's second piece comes later
			_ = send(map[string]any{"type": "delta", "request_id": "r", "seq": 1, "text": "lo"})
			_ = send(map[string]any{"type": "done", "request_id": "r", "status": "done", "answer": "Hello"})
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestWSTargetTimesFirstPieceAndWhole(t *testing.T) {
	srv := fakeWS(t, 50*time.Millisecond)
	c := httpConfig(srv.URL)
	c.Target, c.Count = loadgen.TargetWS, 6
	res, err := loadgen.Run(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered != 6 || res.Errors != 0 {
		t.Fatalf("answered %d, errors %d (%v), want 6 and 0", res.Answered, res.Errors, res.Failures)
	}
	if res.FirstP50MS <= 0 || res.P50MS < res.FirstP50MS+40 {
		t.Errorf("first piece p50 %.1f ms, whole answer p50 %.1f ms: want the whole 50 ms after the first", res.FirstP50MS, res.P50MS)
	}
}

func TestWSHoldMeasuresMemoryPerConnection(t *testing.T) {
	srv := fakeWS(t, 0)
	c := httpConfig(srv.URL)
	c.Target, c.Hold, c.MetricsURL, c.Duration = loadgen.TargetWS, 50, srv.URL+"/metrics", time.Millisecond
	res, err := loadgen.Run(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 50 || res.HeapPerConnKB != 10 || res.RSSPerConnKB != 20 || res.GoroutinesPerConn != 2 {
		t.Fatalf("%+v, want 50 connections at 10 KB heap, 20 KB RSS and 2 goroutines each", res)
	}
}
