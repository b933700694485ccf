package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/shared/admin"
)

// serveAdmin serves an admin listener whose one component drains as d,
// and returns its address.
func serveAdmin(t *testing.T, d admin.Drain) string {
	t.Helper()
	adm := admin.New(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	adm.AddDrain("consumer", d)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = adm.Serve(ln) }()
	t.Cleanup(func() { shutdownAdmin(adm) })
	return ln.Addr().String()
}

// TestDrainCommand: sluice drain calls the admin listener's GET /drain,
// prints the report and exits 0 only when the process drained. Like the
// services, it takes the admin address from SLUICE_ADMIN_ADDR, so that a
// preStop exec in the service's container needs no arguments.
func TestDrainCommand(t *testing.T) {
	drained := serveAdmin(t, func(context.Context) admin.DrainReport { return admin.DrainReport{Drained: true, TookMS: 42} })
	stuck := serveAdmin(t, func(context.Context) admin.DrainReport { return admin.DrainReport{InFlightLeft: 3, TookMS: 25000} })
	_, port, _ := net.SplitHostPort(drained)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		report *admin.DrainReport
	}{
		{"Drained", nil, []string{"--admin-addr", drained}, 0, &admin.DrainReport{Drained: true, TookMS: 42}},
		{"FromEnvironment", map[string]string{"SLUICE_ADMIN_ADDR": ":" + port}, nil, 0, &admin.DrainReport{Drained: true, TookMS: 42}},
		{"NotDrained", nil, []string{"--admin-addr", stuck}, 1, &admin.DrainReport{InFlightLeft: 3, TookMS: 25000}},
		{"Unreachable", nil, []string{"--admin-addr", gone}, 1, nil},
		{"BadTimeout", nil, []string{"--admin-addr", drained, "--timeout", "0s"}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if code := run(context.Background(), append([]string{"drain"}, tt.args...), &out, &errb); code != tt.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tt.code, errb.String())
			}
			if tt.report == nil {
				if out.Len() > 0 {
					t.Errorf("printed %q, want nothing", out.String())
				}
				return
			}
			var got admin.DrainReport
			if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &got); err != nil || got != *tt.report {
				t.Errorf("printed %q (%v), want the report %+v", strings.TrimSpace(out.String()), err, *tt.report)
			}
		})
	}
}
