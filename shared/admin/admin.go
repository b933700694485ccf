// Package admin serves the operator endpoints of a Sluice process on their
// own listener: GET /metrics (Prometheus), /healthz (the process is alive),
// /readyz (ready for traffic: every readiness check passes; false while
// draining or when Kafka is unreachable), /drain (a Kubernetes preStop hook:
// drains every component of the process and answers once they are drained;
// see DrainReport) and /debug/pprof/.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports nil when its part is ready.
type Check func(ctx context.Context) error

// Server is the admin listener.
type Server struct {
	log    *slog.Logger
	gather prometheus.Gatherer
	mu     sync.Mutex
	checks map[string]Check
	drains map[string]Drain
	srv    *http.Server
}

// New returns an admin server exposing g's metrics.
func New(g prometheus.Gatherer, log *slog.Logger) *Server {
	s := &Server{log: log, gather: g, checks: map[string]Check{}, drains: map[string]Drain{}}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET "+DrainPath, s.drain)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s
}

// AddCheck adds a named readiness check.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()
	out := map[string]string{}
	status := http.StatusOK
	if len(checks) == 0 {
		status = http.StatusServiceUnavailable
		out["process"] = "starting"
	}
	for name, c := range checks {
		if err := c(ctx); err != nil {
			status = http.StatusServiceUnavailable
			out[name] = err.Error()
		} else {
			out[name] = "ok"
		}
	}
	writeJSON(w, status, out)
}

// Handler returns the admin endpoints' handler.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin serve: %w", err)
	}
	return nil
}

// Shutdown stops the listener.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Flag is a readiness check backed by a func, e.g. a component's Ready.
func Flag(ready func() bool, notReady string) Check {
	return func(context.Context) error {
		if !ready() {
			return errors.New(notReady)
		}
		return nil
	}
}

// Periodic runs probe every interval in the background until ctx ends and
// returns a check that reports the latest result, so /readyz stays cheap.
// The check fails until the first probe succeeded.
func Periodic(ctx context.Context, interval time.Duration, probe Check) Check {
	var mu sync.Mutex
	last := errors.New("not probed yet")
	run := func() {
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := probe(pctx)
		cancel()
		mu.Lock()
		last = err
		mu.Unlock()
	}
	go func() {
		run()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				run()
			}
		}
	}()
	return func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}
