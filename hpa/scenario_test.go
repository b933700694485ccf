package hpa_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"sluice/hpa"
)

// clock is a fake clock: the autoscaler reads it, the test moves it.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// run drives an autoscaler sync by sync, every 15 s (the controller's
// default --horizontal-pod-autoscaler-sync-period), applying each Desired as
// the cluster would.
type run struct {
	t       *testing.T
	clock   *clock
	a       *hpa.Autoscaler
	start   time.Time
	current int32
}

func newRun(t *testing.T, spec hpa.Spec, current int32) *run {
	t.Helper()
	c := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	a, err := hpa.New(spec, c.now)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &run{t: t, clock: c, a: a, start: c.t, current: current}
}

// at returns the seconds since the run started.
func (r *run) at() int { return int(r.clock.t.Sub(r.start) / time.Second) }

// sync runs one sync with values, applies Desired, and moves the clock
// forward 15 s.
func (r *run) sync(values ...hpa.MetricValue) hpa.Decision {
	r.t.Helper()
	d, err := r.a.Sync(r.current, values)
	if err != nil {
		r.t.Fatalf("t=%ds: Sync(%d): %v", r.at(), r.current, err)
	}
	r.current = d.Desired
	r.clock.t = r.clock.t.Add(15 * time.Second)
	return d
}

// until syncs every 15 s up to (and excluding) second end, with values
// from load, and returns the counts set, by second, when they changed.
func (r *run) until(end int, load func(t int) []hpa.MetricValue) map[int]int32 {
	r.t.Helper()
	changes := map[int]int32{}
	for r.at() < end {
		at, before := r.at(), r.current
		d := r.sync(load(at)...)
		if d.Desired != before {
			changes[at] = d.Desired
		}
	}
	return changes
}

func constant(values ...hpa.MetricValue) func(int) []hpa.MetricValue {
	return func(int) []hpa.MetricValue { return values }
}

// sequence renders changes in time order: "0s:4 15s:8 ...".
func sequence(changes map[int]int32, end int) string {
	var b strings.Builder
	for s := 0; s < end; s++ {
		if n, ok := changes[s]; ok {
			fmt.Fprintf(&b, "%ds:%d ", s, n)
		}
	}
	return strings.TrimSpace(b.String())
}

func chartSpec(t *testing.T) hpa.Spec {
	t.Helper()
	manifest, err := os.ReadFile("hpa.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := hpa.ParseHPA(manifest)
	if err != nil {
		t.Fatalf("ParseHPA(hpa.yaml): %v", err)
	}
	return spec
}

// The chart's signals, in the order of hpa.yaml: the in-flight ratio
// (Value 0.7), the group lag (AverageValue 700), the oldest unfinished age
// (Value 15 s), and the bulk lane's lag averaged over 10 minutes
// (AverageValue 50,000), none here.
func signals(inFlight, lag, age float64) []hpa.MetricValue {
	return []hpa.MetricValue{{Value: inFlight}, {Value: lag}, {Value: age}, {Value: 0}}
}

// The chart's behavior with maxReplicas 10: a spike doubles the consumers
// every 15 s up to the maximum (Percent 100 per 15 s, no window); when the
// load goes, nothing moves for the 300 s window after the last high
// proposal, then 10 % a minute comes off, truncated: 10 → 9 → … → 2, one
// step every 60 s since a scale event exactly one period old no longer
// counts.
func TestChartSpikeAndDecline(t *testing.T) {
	spec := chartSpec(t)
	spec.MaxReplicas = 10
	r := newRun(t, spec, 2)

	spike := signals(1.0, 70000, 30) // the lag asks for 100 pods
	idle := signals(0.05, 0, 0.3)
	changes := r.until(1200, func(at int) []hpa.MetricValue {
		if at < 45 {
			return spike
		}
		return idle
	})
	want := "0s:4 15s:8 30s:10 330s:9 390s:8 450s:7 510s:6 570s:5 630s:4 690s:3 750s:2"
	if got := sequence(changes, 1200); got != want {
		t.Errorf("counts\n got %s\nwant %s", got, want)
	}

	// The reasons along the way, replayed on a second run.
	r = newRun(t, spec, 2)
	check := func(at int, d hpa.Decision, want string) {
		t.Helper()
		if d.Reason != want {
			t.Errorf("t=%ds: reason %q (decision %+v), want %q", at, d.Reason, d, want)
		}
	}
	check(0, r.sync(spike...), "ScaleUpLimit")
	check(15, r.sync(spike...), "ScaleUpLimit")
	check(30, r.sync(spike...), "TooManyReplicas")
	for r.at() < 330 {
		at := r.at()
		d := r.sync(idle...)
		check(at, d, "ScaleDownStabilized")
		if d.Desired != 10 || d.Stabilized != 10 || d.Proposal != 1 {
			t.Fatalf("t=%ds: %+v, want 10 held by the window against a proposal of 1", at, d)
		}
	}
	check(330, r.sync(idle...), "ScaleDownLimit")
	check(345, r.sync(idle...), "ScaleDownLimit") // 9 held: the 60 s period is not over
	for r.at() < 750 {
		r.sync(idle...)
	}
	check(750, r.sync(idle...), "TooFewReplicas")
	if r.current != 2 {
		t.Errorf("ended at %d, want minReplicas 2", r.current)
	}
}

// With the chart's real maximum, 300: "From 2 pods the maximum of 300 is 8
// steps, 2 minutes, away" (hpa/README.md), and the way down takes 10 % a
// minute off once the proposals were lower for 5 minutes.
func TestChartToMaximumAndBack(t *testing.T) {
	r := newRun(t, chartSpec(t), 2)
	changes := r.until(2*3600, func(at int) []hpa.MetricValue {
		if at < 120 {
			return signals(1.0, 700*1000, 60)
		}
		return signals(0, 0, 0)
	})
	// Up: doubling every sync; the eighth step, 105 s in, reaches 300.
	want := []string{"0s:4", "15s:8", "30s:16", "45s:32", "60s:64", "75s:128", "90s:256", "105s:300"}
	// Down: the last high proposal is at 105 s, so the window ends at 405 s;
	// then every 60 s, n → int(n × 0.9).
	at, n := 405, int32(300)
	for n > 2 {
		n = max(n*9/10, 2)
		want = append(want, fmt.Sprintf("%ds:%d", at, n))
		at += 60
	}
	if got := sequence(changes, 2*3600); got != strings.Join(want, " ") {
		t.Errorf("counts\n got %s\nwant %s", got, strings.Join(want, " "))
	}
}

// The largest proposal of the three signals wins, and a missing signal only
// stops a scale-down (computeReplicasForMetrics).
func TestChartSignals(t *testing.T) {
	spec := chartSpec(t)
	tests := []struct {
		name        string
		values      []hpa.MetricValue
		wantPer     []int32
		wantDesired int32
		wantReason  string
		wantMissing bool
	}{
		// 0.91/0.7 = 1.3 of 10 pods: 13; 9000/(700×10) = 1.29: ceil(9000/700) = 13;
		// 12 s of 15 s: 0.8 of 10: 8.
		{"in-flight and lag agree", signals(0.91, 9000, 12), []int32{13, 13, 8, 0}, 13, "DesiredWithinRange", false},
		// The age alone: 45 s of 15 s → 30; the policy allows 100 % (20).
		{"age asks for most", signals(0.7, 7000, 45), []int32{10, 10, 30, 0}, 20, "ScaleUpLimit", false},
		// Within the tolerance everywhere: no change.
		{"at target", signals(0.72, 7300, 15.5), []int32{10, 10, 10, 0}, 10, "DesiredWithinRange", false},
		// The bulk lane's backlog alone: 600,000 of 50,000 per pod → 12.
		{"bulk backlog", []hpa.MetricValue{{Value: 0.7}, {Value: 7000}, {Value: 15}, {Value: 600000}}, []int32{10, 10, 10, 12}, 12, "DesiredWithinRange", false},
		// The lag could not be read; the in-flight ratio still scales up.
		{"lag missing, scale up", []hpa.MetricValue{{Value: 1.4}, {Missing: true}, {Value: 1}, {Value: 0}}, []int32{20, -1, 1, 0}, 20, "DesiredWithinRange", true},
		// The lag could not be read and the others would scale down: hold.
		{"lag missing, no scale down", []hpa.MetricValue{{Value: 0.1}, {Missing: true}, {Value: 1}, {Value: 0}}, []int32{2, -1, 1, 0}, 10, "FailedGetExternalMetric", true},
		{"all missing", []hpa.MetricValue{{Missing: true}, {Missing: true}, {Missing: true}, {Missing: true}}, []int32{-1, -1, -1, -1}, 10, "FailedGetExternalMetric", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := hpa.New(spec, (&clock{t: time.Unix(1e9, 0)}).now)
			if err != nil {
				t.Fatal(err)
			}
			d, err := a.Sync(10, tc.values)
			if tc.wantMissing != errors.Is(err, hpa.ErrMissingMetric) {
				t.Errorf("error %v, want ErrMissingMetric: %v", err, tc.wantMissing)
			} else if !tc.wantMissing && err != nil {
				t.Errorf("Sync: %v", err)
			}
			if fmt.Sprint(d.PerMetric) != fmt.Sprint(tc.wantPer) || d.Desired != tc.wantDesired || d.Reason != tc.wantReason {
				t.Errorf("decision %+v, want per metric %v, desired %d (%s)", d, tc.wantPer, tc.wantDesired, tc.wantReason)
			}
		})
	}
}

// Kubernetes docs, Horizontal Pod Autoscaling, "Default Behavior": "There
// are 2 policies where 4 pods or a 100% of the currently running replicas
// will be added every 15 seconds".
func TestDocsDefaultBehaviorScaleUp(t *testing.T) {
	spec := hpa.Spec{MinReplicas: 1, MaxReplicas: 100, Behavior: hpa.DefaultBehavior(),
		Metrics: []hpa.MetricSpec{{Name: "queue", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 1}}}
	r := newRun(t, spec, 1)
	changes := r.until(120, constant(hpa.MetricValue{Value: 1000}))
	// 1 → 5 (+4 beats ×2), 5 → 10 (×2 beats +4), then doubling, capped at 100.
	if got, want := sequence(changes, 120), "0s:5 15s:10 30s:20 45s:40 60s:80 75s:100"; got != want {
		t.Errorf("counts\n got %s\nwant %s", got, want)
	}
}

// Kubernetes docs, HPA walkthrough: php-apache at 50 % CPU, 1 to 10
// replicas; the load generator drives the one pod to 305 % of its request,
// "the deployment was resized to 7 replicas"; when the load stops,
// utilization drops to 0 and the HPA "autoscaled the number of replicas back
// down to 1". The load is a fixed amount of CPU shared by the pods.
func TestDocsWalkthrough(t *testing.T) {
	spec := hpa.Spec{MinReplicas: 1, MaxReplicas: 10, Behavior: hpa.DefaultBehavior(),
		Metrics: []hpa.MetricSpec{{Name: "cpu", Source: hpa.ResourceSource, Target: hpa.UtilizationTarget, Value: 50}}}
	r := newRun(t, spec, 1)
	load := 305.0
	changes := r.until(600, func(at int) []hpa.MetricValue {
		if at >= 120 {
			load = 0
		}
		pods := make([]float64, r.current)
		for i := range pods {
			pods[i] = load / float64(r.current)
		}
		return []hpa.MetricValue{{PodValues: pods}}
	})
	// 305 % asks for 7 at once; the default policy allows 1+4 = 5 first.
	// At 5 pods (61 % each) the proposal is still 7. At 7 pods (43 %) the
	// ratio 0.86 asks for ceil(6.02) = 7: it holds. Unloaded at 120 s, the
	// count falls to 1 once the 300 s window is past the last proposal of 7
	// (105 s), in one step: the default policy removes up to 100 % per 15 s.
	if got, want := sequence(changes, 600), "0s:5 15s:7 405s:1"; got != want {
		t.Errorf("counts\n got %s\nwant %s", got, want)
	}
}

// Kubernetes docs, "Scaling policies": with Pods 4/60 s and Percent 10/60 s
// scaling down from 80 to 10, "during the first step 8 replicas will be
// reduced. In the next iteration when the number of replicas is 72, 10% of
// the pods is 7.2 but the number is rounded up to 8 … When the number of
// replicas falls below 40 the first policy (Pods) is applied and 4 replicas
// will be reduced at a time." The stabilization window is set to 0 to look at
// the policies alone.
func TestDocsScaleDownPolicies(t *testing.T) {
	b := hpa.DefaultBehavior()
	b.ScaleDown = hpa.Rules{Policies: []hpa.Policy{
		{Type: hpa.PodsPolicy, Value: 4, Period: 60 * time.Second},
		{Type: hpa.PercentPolicy, Value: 10, Period: 60 * time.Second},
	}}
	spec := hpa.Spec{MinReplicas: 1, MaxReplicas: 100, Behavior: b,
		Metrics: []hpa.MetricSpec{{Name: "queue", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 1}}}
	r := newRun(t, spec, 80)
	changes := r.until(900, constant(hpa.MetricValue{Value: 10}))
	want := "0s:72 60s:64 120s:57 180s:51 240s:45 300s:40 360s:36 420s:32 480s:28 540s:24 600s:20 660s:16 720s:12 780s:10"
	if got := sequence(changes, 900); got != want {
		t.Errorf("counts\n got %s\nwant %s", got, want)
	}
}

// Kubernetes docs, "Example: limit scale down rate": 10 % per minute, and
// with a second policy of 5 pods and selectPolicy Min, "no more than 5 Pods
// are removed per minute"; "Example: disable scale down": selectPolicy
// Disabled.
func TestDocsScaleDownExamples(t *testing.T) {
	spec := func(rules hpa.Rules) hpa.Spec {
		b := hpa.DefaultBehavior()
		b.ScaleDown = rules
		return hpa.Spec{MinReplicas: 1, MaxReplicas: 200, Behavior: b,
			Metrics: []hpa.MetricSpec{{Name: "queue", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 1}}}
	}
	percent10 := hpa.Policy{Type: hpa.PercentPolicy, Value: 10, Period: 60 * time.Second}
	pods5 := hpa.Policy{Type: hpa.PodsPolicy, Value: 5, Period: 60 * time.Second}
	tests := []struct {
		name  string
		rules hpa.Rules
		from  int32
		want  string
	}{
		{"10 % per minute", hpa.Rules{Policies: []hpa.Policy{percent10}}, 100, "0s:90 60s:81 120s:72 180s:64"},
		{"at most 5 pods per minute (Min)", hpa.Rules{SelectPolicy: hpa.MinChange, Policies: []hpa.Policy{percent10, pods5}}, 100, "0s:95 60s:90 120s:85 180s:80"},
		{"Min takes 10 % below 50 pods", hpa.Rules{SelectPolicy: hpa.MinChange, Policies: []hpa.Policy{percent10, pods5}}, 30, "0s:27 60s:24 120s:21 180s:18"},
		{"disabled", hpa.Rules{SelectPolicy: hpa.Disabled, Policies: []hpa.Policy{percent10}}, 100, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRun(t, spec(tc.rules), tc.from)
			if got := sequence(r.until(240, constant(hpa.MetricValue{Value: 1})), 240); got != tc.want {
				t.Errorf("counts\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// Kubernetes docs, "Stabilization window": "When the metrics indicate that
// the target should be scaled down the algorithm looks into previously
// computed desired states, and uses the highest value from the specified
// interval" (a rolling maximum); "Example: change downscale stabilization
// window" to 60 s.
func TestDocsStabilizationWindow(t *testing.T) {
	spec := func(window time.Duration) hpa.Spec {
		b := hpa.DefaultBehavior()
		b.ScaleDown.StabilizationWindow = window
		return hpa.Spec{MinReplicas: 1, MaxReplicas: 20, Behavior: b,
			Metrics: []hpa.MetricSpec{{Name: "queue", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 1}}}
	}
	// Proposals over time: 10 until 60 s, 6 until 120 s, 8 until 180 s, then 4.
	load := func(at int) []hpa.MetricValue {
		switch {
		case at < 60:
			return []hpa.MetricValue{{Value: 10}}
		case at < 120:
			return []hpa.MetricValue{{Value: 6}}
		case at < 180:
			return []hpa.MetricValue{{Value: 8}}
		}
		return []hpa.MetricValue{{Value: 4}}
	}
	t.Run("300 s: the highest proposal of the last 5 minutes", func(t *testing.T) {
		r := newRun(t, spec(300*time.Second), 10)
		// The last 10 (45 s) leaves the window at 345 s: the highest is then
		// 8, until the last 8 (165 s) leaves it at 465 s.
		if got, want := sequence(r.until(900, load), 900), "345s:8 465s:4"; got != want {
			t.Errorf("counts\n got %s\nwant %s", got, want)
		}
	})
	t.Run("60 s", func(t *testing.T) {
		r := newRun(t, spec(60*time.Second), 10)
		if got, want := sequence(r.until(900, load), 900), "105s:6 120s:8 225s:4"; got != want {
			t.Errorf("counts\n got %s\nwant %s", got, want)
		}
	})
}

// Kubernetes docs, "Implicit maintenance-mode deactivation": "If the
// target's desired replica count is set to 0, and the HPA's minimum replica
// count is greater than 0, the HPA stops adjusting the target".
func TestDocsMaintenanceMode(t *testing.T) {
	r := newRun(t, chartSpec(t), 0)
	d := r.sync(signals(5, 1e6, 600)...)
	if d.Desired != 0 || d.Reason != "ScalingDisabled" {
		t.Errorf("decision %+v, want 0, ScalingDisabled", d)
	}
}

// Kubernetes docs, "Algorithm details": "if the current metric value is
// 200m, and the desired value is 100m, the number of replicas will be
// doubled … If the current value is instead 50m, you'll halve the number of
// replicas"; walkthrough, external metrics: "one worker per 30 outstanding
// tasks".
func TestDocsAlgorithm(t *testing.T) {
	perPod := hpa.MetricSpec{Name: "packets", Source: hpa.PodsSource, Target: hpa.AverageValueTarget, Value: 0.1}
	for _, tc := range []struct {
		value float64
		want  int32
	}{{0.2, 8}, {0.05, 2}, {0.105, 4}} {
		got, err := hpa.MetricReplicas(perPod, hpa.MetricValue{PodValues: []float64{tc.value, tc.value, tc.value, tc.value}}, 4, hpa.DefaultTolerance)
		if err != nil || got != tc.want {
			t.Errorf("4 pods at %v of 0.1: %d, %v; want %d", tc.value, got, err, tc.want)
		}
	}
	queue := hpa.MetricSpec{Name: "queue_messages_ready", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 30}
	if got, err := hpa.MetricReplicas(queue, hpa.MetricValue{Value: 100}, 1, hpa.DefaultTolerance); err != nil || got != 4 {
		t.Errorf("100 tasks at 30 per worker: %d, %v; want 4", got, err)
	}
}
