package admin_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"sluice/shared/admin"
)

// TestDrain: GET /drain drains every component of the process at once and
// answers 200 once all drained, 503 when one did not, summing what was
// left; RequestDrain reads the answer.
func TestDrain(t *testing.T) {
	drained := func(took int64) admin.Drain {
		return func(context.Context) admin.DrainReport { return admin.DrainReport{Drained: true, TookMS: took} }
	}
	tests := []struct {
		name   string
		drains map[string]admin.Drain
		want   admin.DrainReport
	}{
		{"NoComponents", nil, admin.DrainReport{Drained: true}},
		{"AllDrained", map[string]admin.Drain{"producer": drained(5000), "consumer": drained(1200)},
			admin.DrainReport{Drained: true, TookMS: 5000}},
		{"OneLeftWork", map[string]admin.Drain{"producer": drained(10), "consumer": func(context.Context) admin.DrainReport {
			return admin.DrainReport{InFlightLeft: 3, TookMS: 25000}
		}}, admin.DrainReport{InFlightLeft: 3, TookMS: 25000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, base := newServer(t)
			for name, d := range tt.drains {
				s.AddDrain(name, d)
			}
			rep, err := admin.RequestDrain(context.Background(), strings.TrimPrefix(base, "http://"))
			if rep != tt.want {
				t.Errorf("report %+v, want %+v", rep, tt.want)
			}
			if tt.want.Drained && err != nil {
				t.Errorf("RequestDrain: %v", err)
			}
			if !tt.want.Drained && !errors.Is(err, admin.ErrNotDrained) {
				t.Errorf("RequestDrain: %v, want ErrNotDrained", err)
			}
			resp, err := http.Get(base + admin.DrainPath)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := http.StatusOK
			if !tt.want.Drained {
				want = http.StatusServiceUnavailable
			}
			if resp.StatusCode != want {
				t.Errorf("GET /drain = %d, want %d", resp.StatusCode, want)
			}
		})
	}
}

// TestDrainGetOnly: a preStop httpGet sends GET; other methods are refused.
func TestDrainGetOnly(t *testing.T) {
	_, base := newServer(t)
	resp, err := http.Post(base+admin.DrainPath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /drain = %d, want 405", resp.StatusCode)
	}
}

// TestRequestDrainAddress: an admin address with an empty or unspecified
// host (a container's SLUICE_ADMIN_ADDR=:9090) is dialled on this machine.
func TestRequestDrainAddress(t *testing.T) {
	_, base := newServer(t)
	_, port, _ := strings.Cut(strings.TrimPrefix(base, "http://"), ":")
	for _, addr := range []string{":" + port, "0.0.0.0:" + port, "[::]:" + port} {
		if _, err := admin.RequestDrain(context.Background(), addr); err != nil {
			t.Errorf("RequestDrain(%q): %v", addr, err)
		}
	}
	if _, err := admin.RequestDrain(context.Background(), "no-port"); err == nil {
		t.Error("RequestDrain of an address without a port: no error")
	}
}
