package producer_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/store"
)

// logBuffer keeps what a logger writes, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDrainWaitsTheDelayOnce: Drain (the preStop hook's GET /drain) turns
// readiness false and returns once the drain delay has passed, while the
// ingress keeps serving; a second call reports the same drain, and the
// shutdown that follows (SIGTERM) does not wait the delay again.
func TestDrainWaitsTheDelayOnce(t *testing.T) {
	cfg := bus.DefaultConfig()
	cfg.Partitions = 2
	cfg.Brokers = []string{stacktest.Broker(t, cfg, false).Addr()}
	_, rdb := stacktest.Miniredis(t)
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	pcfg := producer.DefaultConfig()
	pcfg.DrainDelay = 300 * time.Millisecond
	pcfg.ShutdownTimeout = 2 * time.Second
	var logs logBuffer
	p, err := producer.New(pcfg, cfg, v, st, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	defer func() { cancel(); <-done; p.Close() }()
	for !p.Ready() {
		select {
		case err := <-done:
			t.Fatalf("producer stopped: %v", err)
		case <-time.After(5 * time.Millisecond): // readiness has no event to await
		}
	}

	rep := p.Drain(context.Background())
	if !rep.Drained || rep.TookMS < pcfg.DrainDelay.Milliseconds() {
		t.Fatalf("Drain = %+v, want drained after the %v drain delay", rep, pcfg.DrainDelay)
	}
	if p.Ready() {
		t.Error("ready after Drain")
	}
	resp, err := http.Get(url + "/openapi.yaml")
	if err != nil {
		t.Fatalf("drained ingress no longer serving before SIGTERM: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /openapi.yaml after Drain = %d, want 200", resp.StatusCode)
	}
	if again := p.Drain(context.Background()); again != rep {
		t.Errorf("second Drain = %+v, want the first's %+v", again, rep)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil // for the deferred stop
	if out := logs.String(); !strings.Contains(out, `msg="producer shutting down" drain_delay=0s`) {
		t.Errorf("the shutdown after Drain waited the drain delay again:\n%s", out)
	}
}
