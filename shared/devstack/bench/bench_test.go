package bench

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"sluice/shared/devstack/loadgen"
	"sluice/shared/devstack/proc"
)

func TestParseMetrics(t *testing.T) {
	f, err := os.Open("testdata/producer.metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := parseMetrics(f)
	if err != nil {
		t.Fatal(err)
	}
	got := m.requests
	if m.hotHits != 3 {
		t.Errorf("hot-answer cache hits %v, want 3", m.hotHits)
	}
	want := map[string]float64{"produce": 1200, "fetch": 1100, "metadata": 5, "init_producer_id": 1, "heartbeat": 7}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v (summed over the process's clients)", k, got[k], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("# TYPE x counter\nx 1\n")); err == nil {
		t.Error("a page without request counters parsed")
	}
}

func TestParseRedisInfo(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:12.500000\r\nused_cpu_user:30.250000\r\nused_cpu_sys_children:0.1\r\n\r\n# Stats\r\ntotal_connections_received:9\r\ntotal_commands_processed:123456\r\n" +
		"# Commandstats\r\ncmdstat_evalsha:calls=3233170,usec=125493617,usec_per_call=38.81,rejected_calls=0,failed_calls=4\r\ncmdstat_get:calls=7,usec=1\r\n"
	ri, err := parseRedisInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	if ri.CPU != 42.75 || ri.Commands != 123456 || ri.ByCommand["evalsha"] != 3233170 || ri.ByCommand["get"] != 7 || len(ri.ByCommand) != 2 {
		t.Errorf("got %+v, want CPU 42.75 s, 123456 commands, evalsha 3233170 and get 7 calls", ri)
	}
	for _, bad := range []string{"# CPU\r\nused_cpu_sys:1\r\n", "used_cpu_sys:1\nused_cpu_user:x\ntotal_commands_processed:1\n"} {
		if ri, err := parseRedisInfo(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, ri)
		}
	}
}

// TestCompute turns readings 20 s apart into figures per answer.
func TestCompute(t *testing.T) {
	hz := uint64(proc.ClockTicks())
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	before := snapshot{at: t0,
		procs: map[string]proc.Usage{
			roleProducer: {UserTicks: 1000, SysTicks: 100, ReadCalls: 50, WriteCalls: 50},
			roleConsumer: {UserTicks: 2000}, roleBroker: {}, roleLoadgen: {},
		},
		machine: proc.Machine{Busy: 10 * hz, Total: 100 * hz},
		kafka: map[string]map[string]float64{
			roleProducer: {"produce": 10, "fetch": 10},
			roleConsumer: {"produce": 5, "fetch": 7, "heartbeat": 1},
		},
		redis: &redisInfo{CPU: 100, Commands: 1000, ByCommand: map[string]float64{"evalsha": 100, "get": 5}},
	}
	// 12,000 answers in 20 s: the producer spent 6 s (1.5 in the kernel),
	// the consumer 9 s, the broker 3 s, the load generator 1 s, Redis 2 s;
	// the machine 23 s busy, so 2 s went elsewhere.
	after := snapshot{at: t0.Add(20 * time.Second),
		procs: map[string]proc.Usage{
			roleProducer: {UserTicks: 1000 + 450*hz/100, SysTicks: 100 + 150*hz/100, ReadCalls: 50 + 120000, WriteCalls: 50 + 60000},
			roleConsumer: {UserTicks: 2000 + 9*hz, ReadCalls: 240000},
			roleBroker:   {UserTicks: 3 * hz}, roleLoadgen: {SysTicks: hz},
		},
		machine: proc.Machine{Busy: 33 * hz, Total: 140 * hz},
		kafka: map[string]map[string]float64{
			roleProducer: {"produce": 10 + 12000, "fetch": 10 + 6000},
			roleConsumer: {"produce": 5 + 3000, "fetch": 7 + 12000, "heartbeat": 1 + 120},
		},
		redis:   &redisInfo{CPU: 102, Commands: 1000 + 120000, ByCommand: map[string]float64{"evalsha": 100 + 24000, "get": 5, "set": 600}},
		hotHits: 2,
	}
	r := compute(600, 1, loadgen.Result{Sent: 12001, Answered: 12000, Refused: 1, PerSecond: 600, P50MS: 1, P99MS: 4}, before, after)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("producer cpu µs", r.Producer.CPUUS, 500)
	near("producer sys µs", r.Producer.SysUS, 125)
	near("producer syscalls", r.Producer.Syscalls, 15)
	near("producer writes", r.Producer.Writes, 5)
	near("consumer cpu µs", r.Consumer.CPUUS, 750)
	near("app cpu µs", r.AppCPUUS, 1250)
	near("broker cpu µs", r.Broker.CPUUS, 250)
	near("loadgen cpu µs", r.LoadGen.CPUUS, 1e6/12000)
	near("producer cores", r.Producer.Cores, 0.3)
	near("producer produce", r.Producer.KafkaProduce, 1)
	near("producer fetch", r.Producer.KafkaFetch, 0.5)
	near("consumer produce", r.Consumer.KafkaProduce, 0.25)
	near("consumer other", r.Consumer.KafkaOther, 0.01)
	near("redis cpu µs", r.Redis.CPUUS, 2e6/12000)
	near("redis commands", r.Redis.Commands, 10)
	if bc := r.Redis.ByCommand; len(bc) != 2 || bc["evalsha"] != 2 || bc["set"] != 0.05 {
		t.Errorf("redis calls by command %v, want evalsha 2 and set 0.05 (get not called)", bc)
	}
	near("other cores", r.OtherCores, 0.1)
	if r.Answered != 12000 || r.Refused != 1 || r.Seconds != 20 || r.CacheHits != 2 {
		t.Errorf("counts %+v", r)
	}
	// Nothing answered: no figures, and no division by zero.
	if z := compute(600, 1, loadgen.Result{}, before, after); z.AppCPUUS != 0 || math.IsNaN(z.Producer.CPUUS) {
		t.Errorf("nothing answered: %+v", z)
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want Spread
	}{
		{[]float64{3}, Spread{3, 3, 3}},
		{[]float64{5, 1, 3}, Spread{3, 1, 5}},
		{[]float64{4, 1, 2, 10}, Spread{3, 1, 10}},
	} {
		if got := spread(tc.in); got != tc.want {
			t.Errorf("spread(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestReportText(t *testing.T) {
	rr := RateReport{Rate: 600, Runs: []RunResult{
		{Rate: 600, Run: 1, Answered: 12000, AppCPUUS: 1100, Producer: ProcessCost{CPUUS: 500}},
		{Rate: 600, Run: 2, Answered: 11990, AppCPUUS: 1400, Producer: ProcessCost{CPUUS: 700}},
		{Rate: 600, Run: 3, Answered: 12001, AppCPUUS: 1250, Producer: ProcessCost{CPUUS: 600}},
	}, Discarded: []RunResult{{OtherCores: 0.55}}}.summarize()
	rr.Runs[0].Redis = &RedisCost{ByCommand: map[string]float64{"evalsha": 3, "hget": 0.004, "get": 1.5, "set": 1.5}}
	var b bytes.Buffer
	if err := (Report{Conditions: Conditions{ClockTicks: 100, Runs: 3}, Rates: []RateReport{rr}}).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"offered 600/s, 3 run(s)", "producer + consumer CPU µs/answer", "1,250   1,100 – 1,400", "12,000   11,990 – 12,001", "(100 ticks/s)", "(1 more discarded: the rest of the machine used 0.55 cores)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	if !strings.Contains(b.String(), "by command, first run: evalsha 3.00, get 1.50, set 1.50\n") {
		t.Errorf("Redis calls by command not listed most called first, those under 0.01 left out:\n%s", b.String())
	}
	var j bytes.Buffer
	if err := (Report{Rates: []RateReport{rr}}).WriteJSON(&j); err != nil || bytes.Count(j.Bytes(), []byte("\n")) != 1 {
		t.Errorf("JSON %q, %v: want one line", j.String(), err)
	}
}

func TestNum(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -2500: "-2,500"} {
		if got := num(in, 0); got != want {
			t.Errorf("num(%v) = %q, want %q", in, got, want)
		}
	}
	if got := num(1234.5, 2); got != "1,234.50" {
		t.Errorf("num(1234.5, 2) = %q", got)
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultConfig()
	c.Rates, c.Runs, c.Env = []float64{600, -1}, 0, []string{"KAFKA_LINGER=1ms", "GOARCH=386", "SLUICE_REDIS_ADDR=x", "SLUICE_KAFKA_LINGER=2ms", "GOMAXPROCS=1"}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"--rates", "--runs", `"KAFKA_LINGER=1ms" is not SLUICE_NAME=value`, `"GOARCH=386" is not SLUICE_NAME=value`, "SLUICE_REDIS_ADDR is the bench's own"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want it to name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "SLUICE_KAFKA_LINGER") || strings.Contains(err.Error(), `"GOMAXPROCS=1"`) {
		t.Errorf("%v: a setting under test refused", err)
	}
}
