package store_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/shared/envelope"
	"sluice/shared/store"
)

// hungRedis accepts connections and never answers, as a Redis behind a
// network partition or stuck in a long script does. drop closes the
// connections.
func hungRedis(t *testing.T) (addr string, drop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String(), func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	}
}

// TestHungRedisCostsTheContext: a command of the request path gives up when
// its context ends, even though it goes through the automatic pipeliner,
// whose own wait for a stuck connection is tens of seconds.
func TestHungRedisCostsTheContext(t *testing.T) {
	addr, drop := hungRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	// The connections drop before the client closes, so that Close does not
	// wait for the stuck batch.
	t.Cleanup(func() { drop(); _ = rdb.Close() })
	s, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	d := store.Dialog{"t1", "u1", envelope.NewDialogID()}
	calls := map[string]func(context.Context) error{
		"Load":   func(ctx context.Context) error { _, _, err := s.Load(ctx, d, "r1"); return err },
		"Result": func(ctx context.Context) error { _, err := s.Result(ctx, d, "r1"); return err },
		"MarkQueued": func(ctx context.Context) error {
			_, err := s.MarkQueued(ctx, d, "r1", time.Now())
			return err
		},
		"Complete": func(ctx context.Context) error {
			_, _, err := s.Complete(ctx, d, doneReply(d, "r1", "a"), time.Now())
			return err
		},
		"EvalSha": func(ctx context.Context) error { return s.Pipe().EvalSha(ctx, "0123", []string{"k"}).Err() },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s against a hung Redis: %v, want the context's deadline", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s against a hung Redis still waiting 10s after its 100ms context ended", name)
		}
		cancel()
	}
}
