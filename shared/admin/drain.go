package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// DrainPath is the drain endpoint's path on the admin listener. A
// Kubernetes preStop hook calls it (httpGet, or `sluice drain` as exec):
// GET only, since that is all an httpGet hook sends.
const DrainPath = "/drain"

// DrainReport is the answer of GET /drain: 200 when every component of the
// process drained, 503 when one did not within its drain timeout (or the
// call ended first).
type DrainReport struct {
	// Drained is true once every component finished its work and let go
	// of what routes traffic to it.
	Drained bool `json:"drained"`
	// InFlightLeft is the work a component gave up on at its drain
	// timeout (a consumer's records, left uncommitted for the next owner).
	InFlightLeft int64 `json:"in_flight_left"`
	// TookMS is how long the drain took, from its start: a repeated call
	// reports the first drain's time.
	TookMS int64 `json:"took_ms"`
}

// Drain drains a component: it stops taking new work, finishes what it
// has and returns its report once drained, or when ctx ends first (then
// with Drained false). Every call after the first, concurrent or later,
// waits for the same drain and reports it.
type Drain func(ctx context.Context) DrainReport

// AddDrain adds a named component that GET /drain drains. The components
// of one process are drained concurrently.
func (s *Server) AddDrain(name string, d Drain) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drains[name] = d
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	drains := make(map[string]Drain, len(s.drains))
	for k, v := range s.drains {
		drains[k] = v
	}
	s.mu.Unlock()
	out := DrainReport{Drained: true}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, d := range drains {
		wg.Go(func() {
			rep := d(r.Context())
			mu.Lock()
			defer mu.Unlock()
			out.Drained = out.Drained && rep.Drained
			out.InFlightLeft += rep.InFlightLeft
			out.TookMS = max(out.TookMS, rep.TookMS)
			if !rep.Drained {
				s.log.Warn("drain incomplete", "component", name, "in_flight_left", rep.InFlightLeft, "took_ms", rep.TookMS)
			}
		})
	}
	wg.Wait()
	status := http.StatusOK
	if !out.Drained {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, out)
}

// ErrNotDrained is returned by RequestDrain when the process answered that
// it did not drain within its drain timeout.
var ErrNotDrained = errors.New("not drained")

// RequestDrain calls GET /drain on the admin listener at addr (host:port;
// an empty or unspecified host, as in ":9090", means this machine) and
// returns the report once the process drained. It returns ErrNotDrained
// with the report when the process did not drain in time, and another
// error when the listener cannot be reached or ctx ends first.
func RequestDrain(ctx context.Context, addr string) (DrainReport, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return DrainReport{}, fmt.Errorf("admin address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+DrainPath, nil)
	if err != nil {
		return DrainReport{}, err
	}
	// No client timeout: the drain takes up to the process's drain
	// timeout, and ctx bounds the wait.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return DrainReport{}, fmt.Errorf("drain: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return DrainReport{}, fmt.Errorf("drain: read answer: %w", err)
	}
	var rep DrainReport
	if err := json.Unmarshal(body, &rep); err != nil {
		return DrainReport{}, fmt.Errorf("drain: %s answered %d %q", addr, resp.StatusCode, body)
	}
	if resp.StatusCode != http.StatusOK || !rep.Drained {
		return rep, fmt.Errorf("%w: %d in flight left after %v", ErrNotDrained, rep.InFlightLeft, time.Duration(rep.TookMS)*time.Millisecond)
	}
	return rep, nil
}
