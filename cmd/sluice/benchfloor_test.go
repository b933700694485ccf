package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/shared/devstack/bench"
)

// TestMain lets the test binary run as sluice when it is started with a
// command instead of test flags: `sluice bench --floor` starts its parts,
// and the broker's `sluice dev`, as its own executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "bench" || os.Args[1] == "dev") {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestBenchFloorSmoke runs `sluice bench --floor` at a low rate for a
// second: every primitive's driver runs in a process of its own, its
// operations all succeed, and the floor sums the terms it lists. The
// figures of so short a window are not measurements. The Redis primitive
// is left out, and said so, without a Redis at 127.0.0.1:6379.
func TestBenchFloorSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and a broker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb syncBuffer
	err := runBench(ctx, []string{"--floor", "--rates", "50", "--runs", "1", "--duration", "1s", "--warmup", "200ms",
		"--max-other-cores", "0", "--json"}, &out, &errb)
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var rep bench.FloorReport
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("report: %v: %q", err, out.String())
	}
	if len(rep.Rates) != 1 {
		t.Fatalf("rates %d, want 1", len(rep.Rates))
	}
	rr := rep.Rates[0]
	want := len(bench.Primitives) - len(rep.Conditions.Skipped)
	if len(rr.Primitives) != want {
		t.Fatalf("%d primitives measured, want %d (skipped: %v)", len(rr.Primitives), want, rep.Conditions.Skipped)
	}
	for _, p := range rr.Primitives {
		if len(p.Runs) != 1 {
			t.Fatalf("%s: %d runs, want 1", p.Name, len(p.Runs))
		}
		r := p.Runs[0]
		// 50 are due in the 1 s window; an open loop sends them whatever
		// the answers do.
		if r.Ops < 45 || r.Errors != 0 || r.Missed != 0 {
			t.Errorf("%s: %d ops, %d failed (%s), %d missed: want about 50, all succeeded", p.Name, r.Ops, r.Errors, r.FirstError, r.Missed)
		}
		if len(r.Sides) == 0 {
			t.Errorf("%s: no side read", p.Name)
		}
	}
	f := rr.Floor
	var sum float64
	for _, term := range f.Terms {
		if term.Role != bench.PaidByOthers {
			sum += term.US.Median
		}
	}
	if diff := sum - f.App.Median; diff > 1e-6 || diff < -1e-6 {
		t.Errorf("floor %v µs, its terms sum to %v", f.App.Median, sum)
	}
	if len(rep.Conditions.Skipped) == 0 && len(f.Missing) != 0 {
		t.Errorf("floor missing %v with every primitive measured", f.Missing)
	}
	if !strings.Contains(errb.String(), "bench floor: kafka 50/s run 1") {
		t.Errorf("no progress line of the Kafka run:\n%s", errb.String())
	}
}

// TestBenchPrimitivesNeedFloor: --primitives without --floor is refused,
// named, instead of being ignored.
func TestBenchPrimitivesNeedFloor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // bounds a bench that should not run
	defer cancel()
	var out, errb syncBuffer
	err := runBench(ctx, []string{"--primitives", "http", "--rates", "50", "--runs", "1", "--duration", "1s", "--warmup", "0s", "--max-other-cores", "0"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "--primitives") || !strings.Contains(err.Error(), "only with --floor") {
		t.Fatalf("runBench --primitives without --floor: %v, want an error naming --primitives", err)
	}
}
