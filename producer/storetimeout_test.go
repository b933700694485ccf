package producer_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/producer"
	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/store"
)

// TestHungRedisBoundedOnPollAndDialog: against a Redis that accepts
// connections and never answers, polls and dialog reads and deletes answer
// 503 within the store timeout instead of hanging on.
func TestHungRedisBoundedOnPollAndDialog(t *testing.T) {
	m, _ := stacktest.Miniredis(t)
	px := stacktest.NewFreezer(t, m.Addr())
	cfg := bus.DefaultConfig()
	cfg.Partitions = 2
	cfg.Brokers = []string{stacktest.Broker(t, cfg, false).Addr()}
	pcfg := producer.DefaultConfig()
	pcfg.StoreTimeout = 100 * time.Millisecond
	pcfg.ShutdownTimeout = 2 * time.Second
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := producer.Open(ctx, producer.Settings{Producer: pcfg, Bus: cfg,
		Redis: store.ClientConfig{Addrs: []string{px.Addr}}, Store: store.DefaultConfig(),
		Auth: auth.Config{Secret: secret}}, log, reg, admin.New(reg, log))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; p.Close() })
	h := &harness{url: "http://" + ln.Addr().String()}
	bearer := "Bearer " + token(t, "t1", "u1")
	const dlg0 = "00000000000000000000000000000000"
	if r := h.send(t, "GET", "/v1/dialogs/"+dlg0, bearer, "", ""); r.code != http.StatusOK {
		t.Fatalf("dialog read before Redis hangs: %d %s", r.code, r.body)
	}
	px.Freeze()
	t.Cleanup(px.Thaw) // before the producer closes: a hung Redis holds its Close's drain
	const dlg = "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/chat/" + dlg + "/01a1fd8b-6311-729c-8b2d-bb41722db1c5?wait_ms=0"},
		{"GET", "/v1/dialogs/" + dlg},
		{"DELETE", "/v1/dialogs/" + dlg},
	} {
		start := time.Now()
		r := h.send(t, tc.method, tc.path, bearer, "", "")
		took := time.Since(start)
		if r.code != http.StatusServiceUnavailable || !strings.Contains(r.problem.Detail, "store unavailable") {
			t.Errorf("%s %s with Redis hung: %d %s, want 503", tc.method, tc.path, r.code, r.body)
		}
		// The bound is the behaviour under test: the store timeout (100 ms),
		// with a wide margin; without it the client's 3 s read timeout ends
		// the call.
		if took > 2*time.Second {
			t.Errorf("%s %s with Redis hung took %v, want it bounded by the store timeout", tc.method, tc.path, took)
		}
	}
}
