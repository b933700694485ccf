package lab

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"sluice/hpa"
)

// TestChartBehaviorIsTheChartsHPA: the lab scales with the behaviour the
// chart renders into hpa/hpa.yaml, so a change to the chart's values shows
// here.
func TestChartBehaviorIsTheChartsHPA(t *testing.T) {
	b, err := os.ReadFile("../hpa.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := hpa.ParseHPA(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(spec.Behavior, ChartBehavior()) {
		t.Errorf("ChartBehavior() = %+v, hpa/hpa.yaml has %+v", ChartBehavior(), spec.Behavior)
	}
	// The chart's signals with the chart's targets, but the lag per pod,
	// which the lab derives from its own budget and LLM latency.
	ms, err := metricsFor("chart", defaultTargets(256, time.Second, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != len(spec.Metrics) {
		t.Fatalf("lab's chart signal has %d metrics, hpa.yaml %d", len(ms), len(spec.Metrics))
	}
	for i, m := range ms {
		want := spec.Metrics[i]
		if m.Name != want.Name || m.Source != want.Source || m.Target != want.Target {
			t.Errorf("metric %d: lab %+v, hpa.yaml %+v", i, m, want)
		}
		if m.Name != metricGroupLag && m.Value != want.Value {
			t.Errorf("metric %s: lab target %g, hpa.yaml %g", m.Name, m.Value, want.Value)
		}
	}
}

// TestDefaultTargetsFollowTheChartsFormula: the lag of a pod whose budget
// is just full is budget × (1 + commit / (2 × LLM latency)): 680 for the
// chart's 256 and a 300 ms LLM (hpa/README.md).
func TestDefaultTargetsFollowTheChartsFormula(t *testing.T) {
	got := defaultTargets(256, time.Second, 300*time.Millisecond).LagPerPod
	if math.Abs(got-682.67) > 0.01 {
		t.Errorf("lag per pod = %g, want 682.67", got)
	}
}

func simConfig(t *testing.T, profile string) SimConfig {
	t.Helper()
	p, err := ParseProfile(strings.NewReader(profile), "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Profile, cfg.Out, cfg.InFlight, cfg.LLMLatency = p, t.TempDir(), 4, 200*time.Millisecond
	return SimConfig{Config: cfg, PodStart: time.Second}
}

// TestSimSteadyLoadFollowsLittlesLaw: at a steady 100 questions/s on pods
// of budget 4 and a 200 ms LLM (20 answers/s each), the in-flight ratio
// target of 0.7 settles at ceil(100 × 0.2 / (4 × 0.7)) = 8 pods, with no
// queue.
func TestSimSteadyLoadFollowsLittlesLaw(t *testing.T) {
	cfg := simConfig(t, "0,100\n120,100\n")
	cfg.Signal = "inflight"
	sum, samples, err := Simulate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := samples[len(samples)-1].Replicas; got != 8 {
		t.Errorf("replicas at the end = %d, want 8", got)
	}
	if sum.QueueWaitP50Ms > 0 || sum.Lost != 0 || sum.Answered < 11900 {
		t.Errorf("summary %+v: want no queue and 12,000 answered", sum)
	}
}

// TestSimFollowsASpike: a 5x spike scales up with the chart's doubling and
// back down after the compressed 5-minute window, 10 % a minute.
func TestSimFollowsASpike(t *testing.T) {
	cfg := simConfig(t, "0,20\n20,100\n60,20\n150,20\n")
	sum, samples, err := Simulate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	peak := 0
	for _, s := range samples[20:60] {
		peak = max(peak, s.Replicas)
	}
	if peak < 6 || sum.ScaleUps == 0 {
		t.Errorf("at most %d replicas in the spike (%d scale-ups), want 6 or more for 100/s on 20/s pods", peak, sum.ScaleUps)
	}
	if sum.FinalReplicas > 3 || sum.ScaleDowns < 3 {
		t.Errorf("%d replicas at the end after %d scale-downs: the window and the 10 %% steps did not bring them down", sum.FinalReplicas, sum.ScaleDowns)
	}
	// Scale-down waits for the stabilization window: the recommendations
	// of the spike hold the replicas for 300 s / 20 = 15 s after its end.
	at60 := samples[59].Replicas
	for _, s := range samples[60:73] {
		if s.Replicas < at60 {
			t.Errorf("at %gs %d replicas, %d at the spike's end: scaled down within the stabilization window", s.T, s.Replicas, at60)
			break
		}
	}
	if samples[80].Replicas >= at60 {
		t.Errorf("still %d replicas 20 s after the spike's end", samples[80].Replicas)
	}
}
