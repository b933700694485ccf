package bench

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"sluice/shared/devstack/proc"
)

// floorRuns returns runs of prim whose every side costs cpu[i] µs and
// syscalls per operation in run i.
func floorRuns(prim string, cpu map[string][]float64, syscalls map[string]float64) FloorPrimitive {
	fp := FloorPrimitive{Name: prim}
	for i := range 3 {
		r := FloorRun{Primitive: prim, Rate: 600, Run: i + 1, Ops: 12000, OpsPerSecond: 600, Sides: map[string]ProcessCost{}}
		for side, vs := range cpu {
			r.Sides[side] = ProcessCost{CPUUS: vs[i], Syscalls: syscalls[side]}
		}
		fp.Runs = append(fp.Runs, r)
	}
	return fp.summarize()
}

// fixedRate is a rate of every primitive with fixed figures: the HTTP
// server's CPU varies over the runs (30, 40, 50: median 40), every other
// side's is the same in each run.
func fixedRate() FloorRate {
	same := func(v float64) []float64 { return []float64{v, v, v} }
	return FloorRate{Rate: 600, Primitives: []FloorPrimitive{
		floorRuns(PrimitiveHTTP, map[string][]float64{SideServer: {50, 30, 40}, SideClient: same(60)},
			map[string]float64{SideServer: 4, SideClient: 5}),
		floorRuns(PrimitiveKafka, map[string][]float64{SideProducer: same(100), SideConsumer: same(80), SideBroker: same(120)},
			map[string]float64{SideProducer: 3, SideConsumer: 2, SideBroker: 9}),
		floorRuns(PrimitiveRedis, map[string][]float64{SideClient: same(30), SideRedisServer: same(10)},
			map[string]float64{SideClient: 2}),
		floorRuns(PrimitivePace, map[string][]float64{SideDriver: {4, 5, 6}}, nil),
	}}
}

// TestFloorSum: the floor of an answer is each exchange's count times its
// side's median CPU per operation, summed per role; the least and greatest
// sums likewise.
func TestFloorSum(t *testing.T) {
	rr := fixedRate()
	f := floorOf(rr, AnswerExchanges(4))
	// producer: ingress server 40 + produce 100 + reply consume 80 +
	// rate limit 30 + hot answer 2/4 × 30; consumer: request consume 80 +
	// Load 2 × 30 + LLM client 60 + Complete 30 + reply produce 100.
	const producer, consumer = 40 + 100 + 80 + 30 + 15, 80 + 60 + 60 + 30 + 100
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("producer", f.Producer.Median, producer)
	near("consumer", f.Consumer.Median, consumer)
	near("producer + consumer", f.App.Median, producer+consumer)
	near("producer + consumer, least", f.App.Min, producer+consumer-10)
	near("producer + consumer, greatest", f.App.Max, producer+consumer+10)
	// less the pacing: 7.5 operations a driver started (the producer's
	// produce and 1.5 Redis round trips, the consumer's 3 Redis round
	// trips, LLM call and produce) × 5 µs (4 – 6).
	near("paced operations", f.PacedOps, 7.5)
	near("less the pacing", f.AppLessPacer.Median, producer+consumer-7.5*5)
	near("less the pacing, least", f.AppLessPacer.Min, producer+consumer-10-7.5*6)
	near("less the pacing, greatest", f.AppLessPacer.Max, producer+consumer+10-7.5*4)
	// syscalls: producer 4 + 3 + 2 + 1.5 × 2, consumer 2 + 3 × 2 + 5 + 3.
	near("syscalls", f.AppSyscalls, 12+16)
	// beside: broker 2 × 120, Redis server 4.5 × 10, the LLM's server 40.
	near("others", f.Others.Median, 240+45+40)
	if f.TargetUS != 150 || len(f.Missing) != 0 {
		t.Errorf("target %v, missing %v", f.TargetUS, f.Missing)
	}

	var b bytes.Buffer
	if err := (FloorReport{Conditions: floorConditions(DefaultConfig()), Rates: []FloorRate{{Rate: 600, Primitives: rr.Primitives, Floor: f}}}).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"offered 600/s",
		"server (net/http: read the body, write a JSON reply)",
		"40.0  (30.0 – 50.0)",
		"floor, producer + consumer µs/answer                           595.0  (585.0 – 605.0)",
		"floor / target                                                3.97",
		"consumer   2.00 × redis   client           30.0 µs/op =    60.0 µs  store.Load",
		"  less the pacing, 7.50 × 5.0 µs                               557.5  (540.0 – 575.0)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestFloorPartial: a primitive without runs is named, and its terms are
// left out of the sums, not counted as zero silently.
func TestFloorPartial(t *testing.T) {
	rr := fixedRate()
	rr.Primitives = rr.Primitives[:2] // no Redis, no pacing
	f := floorOf(rr, AnswerExchanges(4))
	if len(f.Missing) != 1 || f.Missing[0] != PrimitiveRedis {
		t.Fatalf("missing %v, want [redis]", f.Missing)
	}
	if got, want := f.App.Median, float64(40+100+80+80+60+100); got != want {
		t.Errorf("producer + consumer without Redis = %v, want %v", got, want)
	}
	if f.AppLessPacer != (Spread{}) {
		t.Errorf("less the pacing %+v without a run of it", f.AppLessPacer)
	}
	var b bytes.Buffer
	_ = (FloorReport{Rates: []FloorRate{{Rate: 600, Primitives: rr.Primitives, Floor: f}}}).WriteText(&b)
	if !strings.Contains(b.String(), "PARTIAL: no runs of redis") {
		t.Errorf("report does not say the floor is partial:\n%s", b.String())
	}
}

// TestAnswerExchanges: the counts per role are those of the code paths
// (AnswerExchanges' doc): Kafka, a produce and a consume each; Redis,
// 1 + 2/turns round trips for the producer and 3 for the consumer; HTTP,
// the ingress's server side and the LLM call's client side.
func TestAnswerExchanges(t *testing.T) {
	count := map[string]float64{}
	for _, e := range AnswerExchanges(4) {
		count[e.Role+" "+e.Primitive+" "+e.Side] += e.Count
	}
	want := map[string]float64{
		"producer http server": 1, "producer kafka producer": 1, "producer kafka consumer": 1, "producer redis client": 1.5,
		"consumer kafka consumer": 1, "consumer kafka producer": 1, "consumer redis client": 3, "consumer http client": 1,
		"others kafka broker": 2, "others redis redis-server": 4.5, "others http server": 1,
	}
	if len(count) != len(want) {
		t.Errorf("exchanges %v, want %v", count, want)
	}
	for k, v := range want {
		if count[k] != v {
			t.Errorf("%s: %v a answer, want %v", k, count[k], v)
		}
	}
}

// TestComputeFloor: per operation figures of a window from /proc and
// INFO readings at its edges.
func TestComputeFloor(t *testing.T) {
	hz := uint64(proc.ClockTicks())
	t0 := time.Unix(1000, 0)
	before := snapshot{at: t0, procs: map[string]proc.Usage{
		SideClient: {UserTicks: 10, ReadCalls: 5}, roleLoadgen: {},
	}, redis: &redisInfo{CPU: 1, Commands: 100}}
	after := snapshot{at: t0.Add(10 * time.Second), procs: map[string]proc.Usage{
		SideClient: {UserTicks: 10 + 2*hz, SysTicks: hz, ReadCalls: 5 + 3000, WriteCalls: 3000}, roleLoadgen: {},
	}, redis: &redisInfo{CPU: 1.6, Commands: 100 + 6000}}
	r := computeFloor(PrimitiveRedis, 600, 1, windowResult{Ops: 6000, P99MS: 1.5}, before, after)
	c := r.Sides[SideClient]
	if c.CPUUS != 500 || c.SysUS != 500.0/3 || c.Syscalls != 1 || r.OpsPerSecond != 600 {
		t.Errorf("client %+v, %v ops/s: want 500 µs (166.7 kernel) and 1 syscall an op, 600 ops/s", c, r.OpsPerSecond)
	}
	if s := r.Sides[SideRedisServer]; math.Abs(s.CPUUS-100) > 1e-9 || r.Redis.Commands != 1 {
		t.Errorf("Redis server %v µs, %v commands an op: want 100 and 1", s.CPUUS, r.Redis.Commands)
	}
}

func TestFloorValidate(t *testing.T) {
	if err := DefaultFloorConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultFloorConfig()
	c.Primitives, c.Env, c.Runs = []string{"http", "grpc"}, []string{"SLUICE_KAFKA_LINGER=2ms"}, 0
	err := c.Validate()
	for _, want := range []string{`"grpc" is none of`, "--env", "--runs"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want it to name %q", err, want)
		}
	}
	if err := (PartConfig{Role: PartKafkaProducer, Addr: "x:1", Rate: 0}).Validate(); err == nil || !strings.Contains(err.Error(), "--rate") ||
		!strings.Contains(err.Error(), "--topic") {
		t.Errorf("part without rate and topic: %v", err)
	}
}
