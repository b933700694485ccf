package producer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/store"
)

// stuckWriter is a client that takes the first room bytes and then nothing:
// a write blocks until its deadline passes.
type stuckWriter struct {
	header http.Header
	mu     sync.Mutex
	room   int
	took   int
	dl     time.Time
}

func (w *stuckWriter) Header() http.Header { return w.header }
func (w *stuckWriter) WriteHeader(int)     {}
func (w *stuckWriter) Flush()              {}

func (w *stuckWriter) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dl = t
	return nil
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.took+len(p) <= w.room {
		w.took += len(p)
		w.mu.Unlock()
		return len(p), nil
	}
	dl := w.dl
	w.mu.Unlock()
	if dl.IsZero() {
		select {} // a write without a deadline would hang the handler for ever
	}
	time.Sleep(time.Until(dl)) // the connection's deadline passing
	return 0, os.ErrDeadlineExceeded
}

// deltaStore is a store on miniredis holding n deltas of text for request
// r1 of the dialog it returns.
func deltaStore(t *testing.T, n int, text string) (*store.Redis, store.Dialog) {
	t.Helper()
	_, rdb := stacktest.Miniredis(t)
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	d := store.Dialog{Tenant: "t", User: "u", ID: "0123456789abcdef0123456789abcdef"}
	entries := make([]store.StreamEntry, n)
	for i := range entries {
		entries[i] = store.StreamEntry{Kind: store.StreamDelta, Seq: i, Text: text}
	}
	if _, err := st.AppendStream(context.Background(), d, "r1", entries...); err != nil {
		t.Fatal(err)
	}
	return st, d
}

func TestStreamSlowReaderIsGivenUp(t *testing.T) {
	st, d := deltaStore(t, 500, "piece of the answer ")
	v, err := auth.NewVerifier(auth.Config{Secret: "sse-internal-test-secret-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.StreamWriteTimeout, cfg.StreamHeartbeat = 50*time.Millisecond, time.Second
	bcfg := bus.DefaultConfig()
	bcfg.Brokers = []string{stacktest.RefusingAddr(t)}
	s, err := New(cfg, bcfg, v, st, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	w := &stuckWriter{header: http.Header{}, room: 600}
	c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), w)
	done := make(chan error, 1)
	go func() { done <- s.streamAnswer(c, d, "r1", "", "/poll", time.Time{}, nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("streamAnswer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a client that takes nothing holds its stream past the write timeout")
	}
	if s.OpenStreams() != 0 {
		t.Errorf("%d streams open after the client was given up", s.OpenStreams())
	}
	// The handler wrote what the client took and one event more, no more:
	// it reads the stream only as fast as the client takes it.
	if w.took > w.room {
		t.Errorf("took %d bytes of room %d", w.took, w.room)
	}
}

func TestStreamNextIsBounded(t *testing.T) {
	st, d := deltaStore(t, 300, "x")
	a := NewAnswerStream(st, d, "r1", "", AnswerStreamConfig{Count: 16, Block: time.Millisecond})
	for range 5 {
		evs, err := a.Next(context.Background())
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if len(evs) > 16 {
			t.Fatalf("one Next returned %d events, more than Count 16", len(evs))
		}
	}
}

// failXRead is a Redis client hook that fails the first n XREADs.
type failXRead struct{ n atomic.Int64 }

func (f *failXRead) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failXRead) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xread" && f.n.Add(-1) >= 0 {
			err := errors.New("i/o timeout (a Redis blip)")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (f *failXRead) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// An SSE stream reads its answer stream again after failed reads (the
// code WebSocket answers share): a blip delays the answer; an outage ends
// the stream with an error event whose id resumes from the start.
func TestStreamRetriesFailedReads(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fails int64
		want  string // in the body
		not   string // never in the body
	}{
		{"Blip", 2, "event: done\n", "event: error\n"},
		{"Outage", 1 << 40, "id: 0\nevent: error\n", "event: delta\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rdb := stacktest.Miniredis(t)
			hook := &failXRead{}
			rdb.AddHook(hook)
			st, err := store.New(rdb, store.DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			d := store.Dialog{Tenant: "t", User: "u", ID: "0123456789abcdef0123456789abcdef"}
			done, _ := json.Marshal(DoneBody{RequestID: "r1", DialogID: d.ID, Status: "done", Answer: "Hi", Source: "llm"})
			if _, err := st.AppendStream(context.Background(), d, "r1",
				store.StreamEntry{Kind: store.StreamDelta, Seq: 0, Text: "Hi"},
				store.StreamEntry{Kind: store.StreamDone, Text: string(done)}); err != nil {
				t.Fatal(err)
			}
			v, err := auth.NewVerifier(auth.Config{Secret: "sse-internal-test-secret-0123456789"})
			if err != nil {
				t.Fatal(err)
			}
			bcfg := bus.DefaultConfig()
			bcfg.Brokers = []string{stacktest.RefusingAddr(t)}
			s, err := New(DefaultConfig(), bcfg, v, st, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(s.Close)
			hook.n.Store(tc.fails)
			rec := httptest.NewRecorder()
			c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)
			if err := s.streamAnswer(c, d, "r1", "", "/poll", time.Time{}, nil); err != nil {
				t.Fatal(err)
			}
			body := rec.Body.String()
			if !strings.Contains(body, tc.want) || strings.Contains(body, tc.not) {
				t.Errorf("body %q: want %q in it, not %q", body, tc.want, tc.not)
			}
		})
	}
}
