package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"sluice/shared/devstack/bench"
	"sluice/shared/devstack/stacktest"
)

// TestBenchEndToEnd runs `sluice bench` as an operator does, briefly: 20
// questions a second for 2 s after a 1 s warm-up, one run. Every question
// of the window is answered, the report has a CPU time and system calls
// per answer for every process, one produce and one fetch request per
// answer at least on each hop, the spread of its one run, and a shared
// Redis keeps none of the run's keys.
func TestBenchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process bench run skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBinary(t), "bench", "--rates", "20", "--duration", "2s", "--warmup", "1s", "--runs", "1", "--json",
		"--max-other-cores", "0") // the other tests may run alongside
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sluice bench: %v\n%s", err, stderr.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || strings.Count(strings.TrimSpace(stdout.String()), "\n") != 0 {
		t.Fatalf("stdout is not one line of JSON (%v):\n%s", err, stdout.String())
	}
	if len(rep.Rates) != 1 || len(rep.Rates[0].Runs) != 1 {
		t.Fatalf("report of %d rates, want 1 of 1 run: %+v", len(rep.Rates), rep)
	}
	r := rep.Rates[0].Runs[0]
	t.Logf("run: %+v", r)
	if r.Answered != 40 || r.Sent != 40 || r.CacheHits != 0 {
		t.Errorf("sent %d, answered %d, %d from the hot-answer cache; want the 40 questions due in 2 s at 20/s, none from the cache", r.Sent, r.Answered, r.CacheHits)
	}
	for name, c := range map[string]bench.ProcessCost{"producer": r.Producer, "consumer": r.Consumer, "broker": r.Broker} {
		if c.CPUUS <= 0 || c.Syscalls <= 0 || c.Reads <= 0 || c.Writes <= 0 {
			t.Errorf("%s: %+v; want CPU time and read and write system calls", name, c)
		}
	}
	// Each answer is produced by the producer and by the consumer and
	// fetched by each of them: at 20/s there is no batching to speak of.
	for name, v := range map[string]float64{
		"producer produce": r.Producer.KafkaProduce, "consumer produce": r.Consumer.KafkaProduce,
		"producer fetch": r.Producer.KafkaFetch, "consumer fetch": r.Consumer.KafkaFetch,
	} {
		if v < 0.9 {
			t.Errorf("%s requests per answer: %.2f, want about 1", name, v)
		}
	}
	if r.AppCPUUS != r.Producer.CPUUS+r.Consumer.CPUUS {
		t.Errorf("producer + consumer CPU %.0f µs, want %.0f + %.0f", r.AppCPUUS, r.Producer.CPUUS, r.Consumer.CPUUS)
	}
	if s := rep.Rates[0].Summary["app_cpu_us"]; s.Min != r.AppCPUUS || s.Max != r.AppCPUUS || s.Median != r.AppCPUUS {
		t.Errorf("spread of one run %+v, want %.0f throughout", s, r.AppCPUUS)
	}
	if p := rep.Conditions.RedisPrefix; p != "" {
		rdb := stacktest.Client(t, rep.Conditions.Redis)
		for _, pattern := range []string{p + ":*", "rate:" + p + ":*"} {
			if keys, err := rdb.Keys(t.Context(), pattern).Result(); err != nil || len(keys) > 0 {
				t.Errorf("after the run, %d keys %s are left (%v)", len(keys), pattern, err)
			}
		}
	}
}
