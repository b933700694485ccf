package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/shared/admin"
)

// mustServe starts s on a free local port and shuts it down at cleanup.
func mustServe(tb testing.TB, s *admin.Server) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			tb.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func newServer(tb testing.TB) (*admin.Server, string) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_admin_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(7)
	s := admin.New(reg, slog.New(slog.DiscardHandler))
	return s, mustServe(tb, s)
}

func get(tb testing.TB, url string) (int, map[string]string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var out map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		tb.Fatalf("GET %s: body is not a JSON object of strings: %v", url, err)
	}
	return resp.StatusCode, out
}

func TestHealthz(t *testing.T) {
	s, base := newServer(t)
	s.AddCheck("broken", func(context.Context) error { return errors.New("down") })
	// Liveness does not depend on readiness.
	code, body := get(t, base+"/healthz")
	if code != http.StatusOK || body["status"] != "ok" {
		t.Errorf("/healthz = %d %v, want 200 ok", code, body)
	}
}

func TestReadyz(t *testing.T) {
	t.Run("NoChecks", func(t *testing.T) {
		_, base := newServer(t)
		code, body := get(t, base+"/readyz")
		if code != http.StatusServiceUnavailable || body["process"] != "starting" {
			t.Errorf("/readyz = %d %v, want 503 starting", code, body)
		}
	})
	t.Run("AllPass", func(t *testing.T) {
		s, base := newServer(t)
		s.AddCheck("kafka", func(context.Context) error { return nil })
		s.AddCheck("redis", func(context.Context) error { return nil })
		code, body := get(t, base+"/readyz")
		if code != http.StatusOK || body["kafka"] != "ok" || body["redis"] != "ok" || len(body) != 2 {
			t.Errorf("/readyz = %d %v, want 200 with both ok", code, body)
		}
	})
	t.Run("OneFails", func(t *testing.T) {
		s, base := newServer(t)
		s.AddCheck("kafka", func(context.Context) error { return nil })
		s.AddCheck("redis", func(context.Context) error { return errors.New("dial tcp: refused") })
		code, body := get(t, base+"/readyz")
		if code != http.StatusServiceUnavailable || body["kafka"] != "ok" || body["redis"] != "dial tcp: refused" {
			t.Errorf("/readyz = %d %v, want 503 naming the redis error", code, body)
		}
	})
	t.Run("ChecksFollowState", func(t *testing.T) {
		s, base := newServer(t)
		var ready atomic.Bool
		s.AddCheck("consumer", admin.Flag(ready.Load, "draining"))
		if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || body["consumer"] != "draining" {
			t.Errorf("not ready: /readyz = %d %v", code, body)
		}
		ready.Store(true)
		if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
			t.Errorf("ready: /readyz = %d, want 200", code)
		}
		// Re-adding a check under the same name replaces it.
		s.AddCheck("consumer", admin.Flag(func() bool { return false }, "stopped"))
		if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || body["consumer"] != "stopped" {
			t.Errorf("replaced check: /readyz = %d %v", code, body)
		}
	})
	t.Run("CheckGetsDeadline", func(t *testing.T) {
		s, base := newServer(t)
		s.AddCheck("ctx", func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		})
		if code, body := get(t, base+"/readyz"); code != http.StatusOK {
			t.Errorf("/readyz = %d %v, want the check to get a deadline", code, body)
		}
	})
}

func TestMetricsEndpoint(t *testing.T) {
	_, base := newServer(t)
	want := "# HELP sluice_admin_test_total test\n# TYPE sluice_admin_test_total counter\nsluice_admin_test_total 7\n"
	if err := testutil.ScrapeAndCompare(base+"/metrics", strings.NewReader(want), "sluice_admin_test_total"); err != nil {
		t.Errorf("/metrics: %v", err)
	}
	resp2, err := http.Get(base + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusOK {
		t.Errorf("/debug/pprof/ = %d", resp2.StatusCode)
	}
}

func TestFlag(t *testing.T) {
	ready := false
	c := admin.Flag(func() bool { return ready }, "warming up")
	if err := c(context.Background()); err == nil || err.Error() != "warming up" {
		t.Errorf("not ready: %v", err)
	}
	ready = true
	if err := c(context.Background()); err != nil {
		t.Errorf("ready: %v", err)
	}
}

// TestPeriodic drives the probe step by step. Each probe call announces
// itself on calls and returns what the test sends on results. The loop runs
// probes one after another, storing each result before the next call starts,
// so once call n+1 has been announced, the result of call n is the check's.
func TestPeriodic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan context.Context)
	results := make(chan error)
	stop := make(chan struct{})
	// End the loop, then release a probe still blocked on the channels.
	defer func() { cancel(); close(stop) }()
	probe := func(pctx context.Context) error {
		select {
		case calls <- pctx:
		case <-stop:
			return errors.New("test over")
		}
		select {
		case err := <-results:
			return err
		case <-stop:
			return errors.New("test over")
		}
	}

	check := admin.Periodic(ctx, time.Millisecond, probe)
	wait := func() context.Context {
		t.Helper()
		select {
		case pctx := <-calls:
			return pctx
		case <-time.After(10 * time.Second):
			t.Fatal("probe not called within 10s")
			return nil
		}
	}

	// Before the first probe has returned, the check fails.
	pctx := wait()
	if err := check(ctx); err == nil {
		t.Error("check passes before the first probe returned")
	}
	if _, ok := pctx.Deadline(); !ok {
		t.Error("probe context has no deadline")
	}

	steps := []error{nil, errors.New("kafka unreachable"), errors.New("still unreachable"), nil}
	for i, want := range steps {
		results <- want
		wait() // the next call: the previous result is stored
		err := check(ctx)
		switch {
		case want == nil && err != nil:
			t.Errorf("step %d: check = %v, want nil (latest probe passed)", i, err)
		case want != nil && (err == nil || err.Error() != want.Error()):
			t.Errorf("step %d: check = %v, want %v (latest probe result)", i, err, want)
		}
	}
}
