package producer

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

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
