package hpa

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// These tests port the unit tests of horizontal_test.go in
// kubernetes/kubernetes, pkg/controller/podautoscaler, that reach into the
// controller's state (recommendations, scale events): each case names the
// test and, for table tests, the case it comes from.

var now0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// generateScalingRules follows the helper of horizontal_test.go: a Pods
// and/or a Percent policy (left out when its value is 0), selectPolicy Max.
func generateScalingRules(pods, podsPeriod, percent, percentPeriod, window int32) Rules {
	r := Rules{StabilizationWindow: time.Duration(window) * time.Second, SelectPolicy: MaxChange}
	if pods != 0 {
		r.Policies = append(r.Policies, Policy{Type: PodsPolicy, Value: pods, Period: time.Duration(podsPeriod) * time.Second})
	}
	if percent != 0 {
		r.Policies = append(r.Policies, Policy{Type: PercentPolicy, Value: percent, Period: time.Duration(percentPeriod) * time.Second})
	}
	return r
}

// generateEventsUniformDistribution follows the helper of horizontal_test.go:
// the events spread over the last periodSeconds, each in the middle of its
// segment, the first the oldest (whole seconds, as the helper's
// time.Duration conversion truncates).
func generateEventsUniformDistribution(raw []int32, periodSeconds int, now time.Time) []timestampedScaleEvent {
	events := make([]timestampedScaleEvent, len(raw))
	segment := float64(periodSeconds) / float64(len(raw))
	for i, change := range raw {
		boundary := time.Duration(float64(periodSeconds) - segment*float64(i+1) + segment/2)
		events[i] = timestampedScaleEvent{replicaChange: change, timestamp: now.Add(-time.Second * boundary)}
	}
	return events
}

func ptrRules(r Rules) *Rules { return &r }

// TestScalingWithRules ports TestScalingWithRules: the policies' limits on a
// prenormalized count, with earlier scale events of either direction.
func TestScalingWithRules(t *testing.T) {
	tests := []struct {
		name               string
		scaleUpEvents      []timestampedScaleEvent
		scaleDownEvents    []timestampedScaleEvent
		min, max           int32
		scaleUpRules       *Rules // nil: the default rules (GenerateHPAScaleUpRules(nil))
		scaleDownRules     *Rules
		current, prenormal int32
		want               int32
		wantReason         string
	}{
		{name: "prenormalized desired replicas within range", current: 5, prenormal: 7, min: 3, max: 8, want: 7, wantReason: "DesiredWithinRange"},
		{name: "prenormalized desired replicas < minReplicas", current: 3, prenormal: 1, min: 2, max: 8, want: 2, wantReason: "TooFewReplicas"},
		{name: "maxReplicas is the limit because maxReplicas < scaleUpLimit", current: 20, prenormal: 1000, min: 1, max: 10, want: 10, wantReason: "TooManyReplicas"},
		{name: "desired replica count is more than the maximum replica count", current: 100, prenormal: 1000, min: 100, max: 150, want: 150, wantReason: "TooManyReplicas"},
		{name: "scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", current: 3, prenormal: 1000, min: 1, max: 2000,
			scaleUpRules: ptrRules(generateScalingRules(0, 0, 1, 60, 0)), want: 4, wantReason: "ScaleUpLimit"},
		{name: "scaleDownLimit is the limit because scaleDownLimit > minReplicas with user defined policies", current: 1000, prenormal: 3, min: 3, max: 2000,
			scaleDownRules: ptrRules(generateScalingRules(20, 60, 0, 0, 0)), want: 980, wantReason: "ScaleDownLimit"},
		{name: "scaleUp with default behavior", min: 1, max: 1000, current: 10, prenormal: 50, want: 20, wantReason: "ScaleUpLimit"},
		{name: "scaleUp with pods policy larger than percent policy", min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(100, 60, 100, 60, 0)),
			current: 10, prenormal: 500, want: 110, wantReason: "ScaleUpLimit"},
		{name: "scaleUp with percent policy larger than pods policy", min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(2, 60, 100, 60, 0)),
			current: 10, prenormal: 500, want: 20, wantReason: "ScaleUpLimit"},
		{name: "scaleUp with spec MaxReplicas limitation with large pod policy", min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(100, 60, 0, 0, 0)),
			current: 10, prenormal: 50, want: 50, wantReason: "DesiredWithinRange"},
		{name: "scaleUp with pod policy limitation", min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(30, 60, 0, 0, 0)),
			current: 10, prenormal: 50, want: 40, wantReason: "ScaleUpLimit"},
		{name: "scaleUp with percent policy limitation", min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(0, 0, 200, 60, 0)),
			current: 10, prenormal: 50, want: 30, wantReason: "ScaleUpLimit"},
		{name: "scaleDown with percent policy larger than pod policy", min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(20, 60, 1, 60, 300)),
			current: 100, prenormal: 2, want: 80, wantReason: "ScaleDownLimit"},
		{name: "scaleDown with pod policy larger than percent policy", min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(2, 60, 1, 60, 300)),
			current: 100, prenormal: 2, want: 98, wantReason: "ScaleDownLimit"},
		{name: "scaleDown with spec MinReplicas limitation with large pod policy", min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(100, 60, 0, 0, 300)),
			current: 10, prenormal: 0, want: 1, wantReason: "TooFewReplicas"},
		{name: "scaleDown with spec MinReplicas limitation with large percent policy", min: 5, max: 1000, scaleDownRules: ptrRules(generateScalingRules(0, 0, 100, 60, 300)),
			current: 10, prenormal: 2, want: 5, wantReason: "TooFewReplicas"},
		{name: "scaleDown with pod policy limitation", min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(5, 60, 0, 0, 300)),
			current: 10, prenormal: 2, want: 5, wantReason: "ScaleDownLimit"},
		{name: "scaleDown with percent policy limitation", min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(0, 0, 50, 60, 300)),
			current: 10, prenormal: 5, want: 5, wantReason: "DesiredWithinRange"},
		{name: "scaleUp with spec MaxReplicas limitation with large pod policy and events", scaleUpEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 200, scaleUpRules: ptrRules(generateScalingRules(300, 60, 0, 0, 0)), current: 100, prenormal: 500, want: 200, wantReason: "TooManyReplicas"},
		{name: "scaleUp with spec MaxReplicas limitation with large percent policy and events", scaleUpEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 200, scaleUpRules: ptrRules(generateScalingRules(0, 0, 10000, 60, 0)), current: 100, prenormal: 500, want: 200, wantReason: "TooManyReplicas"},
		{name: "scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events", scaleUpEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(5, 120, 0, 0, 0)), current: 100, prenormal: 500, want: 100, wantReason: "ScaleUpLimit"},
		{name: "scaleUp with pod policy and previous scale up events", scaleUpEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(150, 120, 0, 0, 0)), current: 100, prenormal: 500, want: 235, wantReason: "ScaleUpLimit"},
		{name: "scaleUp with percent policy and previous scale up events", scaleUpEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(0, 0, 200, 120, 0)), current: 100, prenormal: 500, want: 255, wantReason: "ScaleUpLimit"},
		{name: "scaleUp with percent policy and previous scale up and down events",
			scaleUpEvents: generateEventsUniformDistribution([]int32{4}, 120, now0), scaleDownEvents: generateEventsUniformDistribution([]int32{2}, 120, now0),
			min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(0, 0, 300, 300, 0)), current: 6, prenormal: 24, want: 16, wantReason: "ScaleUpLimit"},
		{name: "scaleDown with default policy and previous events", scaleDownEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 1000, current: 10, prenormal: 5, want: 5, wantReason: "DesiredWithinRange"},
		{name: "scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", scaleDownEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(115, 120, 0, 0, 300)), current: 100, prenormal: 0, want: 1, wantReason: "TooFewReplicas"},
		{name: "scaleDown with spec MinReplicas limitation with large pod policy and previous events", scaleDownEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 5, max: 1000, scaleDownRules: ptrRules(generateScalingRules(130, 120, 0, 0, 300)), current: 100, prenormal: 0, want: 5, wantReason: "TooFewReplicas"},
		{name: "scaleDown with spec MinReplicas limitation with large percent policy and previous events", scaleDownEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 5, max: 1000, scaleDownRules: ptrRules(generateScalingRules(0, 0, 100, 120, 300)), current: 100, prenormal: 2, want: 5, wantReason: "TooFewReplicas"},
		{name: "scaleDown with pod policy limitation and previous events", scaleDownEvents: generateEventsUniformDistribution([]int32{1, 5, 9}, 120, now0),
			min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(5, 120, 0, 0, 300)), current: 100, prenormal: 2, want: 100, wantReason: "ScaleDownLimit"},
		{name: "scaleDown with percent policy limitation and previous events", scaleDownEvents: generateEventsUniformDistribution([]int32{2, 4, 6}, 120, now0),
			min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(0, 0, 50, 120, 300)), current: 100, prenormal: 0, want: 56, wantReason: "ScaleDownLimit"},
		{name: "scaleDown with percent policy and previous scale up and down events",
			scaleUpEvents: generateEventsUniformDistribution([]int32{2}, 120, now0), scaleDownEvents: generateEventsUniformDistribution([]int32{4}, 120, now0),
			min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(0, 0, 50, 180, 0)), current: 10, prenormal: 1, want: 6, wantReason: "ScaleDownLimit"},
		{name: "scaleDown with previous events preventing further scale down", scaleDownEvents: generateEventsUniformDistribution([]int32{10, 10, 10}, 120, now0),
			min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(0, 0, 10, 120, 300)), current: 100, prenormal: 0, want: 100, wantReason: "ScaleDownLimit"},
		{name: "scaleDown with with previous events still allowing more scale down", scaleDownEvents: generateEventsUniformDistribution([]int32{10, 10, 10}, 120, now0),
			min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(0, 0, 1000, 120, 300)), current: 10, prenormal: 5, want: 5, wantReason: "DesiredWithinRange"},
		{name: "check 'outdated' flag for events for one behavior for up", scaleUpEvents: generateEventsUniformDistribution([]int32{8, 12, 9, 11}, 120, now0),
			min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(1000, 60, 0, 0, 0)), current: 100, prenormal: 200, want: 200, wantReason: "DesiredWithinRange"},
		{name: "check that events were marked 'outdated' for two different policies in the behavior for up", scaleUpEvents: generateEventsUniformDistribution([]int32{8, 12, 9, 11}, 120, now0),
			min: 1, max: 1000, scaleUpRules: ptrRules(generateScalingRules(1000, 30, 100, 60, 0)), current: 100, prenormal: 200, want: 200, wantReason: "DesiredWithinRange"},
		{name: "check 'outdated' flag for events for one behavior for down", scaleDownEvents: generateEventsUniformDistribution([]int32{8, 12, 9, 11}, 120, now0),
			min: 1, max: 1000, scaleDownRules: ptrRules(generateScalingRules(1000, 60, 0, 0, 300)), current: 100, prenormal: 5, want: 5, wantReason: "DesiredWithinRange"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := DefaultBehavior()
			if tc.scaleUpRules != nil {
				b.ScaleUp = *tc.scaleUpRules
			}
			if tc.scaleDownRules != nil {
				b.ScaleDown = *tc.scaleDownRules
			}
			a := &Autoscaler{
				spec:            Spec{MinReplicas: tc.min, MaxReplicas: tc.max, Behavior: b},
				scaleUpEvents:   tc.scaleUpEvents,
				scaleDownEvents: tc.scaleDownEvents,
			}
			got, reason := a.convertDesiredReplicasWithBehaviorRate(tc.current, tc.prenormal, now0)
			if got != tc.want || reason != tc.wantReason {
				t.Errorf("got %d (%s), want %d (%s)", got, reason, tc.want, tc.wantReason)
			}
		})
	}
}

// TestCalculateScaleLimits ports TestCalculateScaleUpLimitWithScalingRules
// and TestCalculateScaleDownLimitWithBehaviors: selectPolicy Min picks the
// policy of the smallest change.
func TestCalculateScaleLimits(t *testing.T) {
	rules := Rules{StabilizationWindow: 300 * time.Second, SelectPolicy: MinChange, Policies: []Policy{
		{Type: PodsPolicy, Value: 2, Period: 60 * time.Second},
		{Type: PercentPolicy, Value: 50, Period: 60 * time.Second},
	}}
	if got := calculateScaleUpLimitWithScalingRules(1, nil, nil, rules, now0); got != 2 {
		t.Errorf("scale-up limit from 1 = %d, want 2", got)
	}
	if got := calculateScaleDownLimitWithBehaviors(5, nil, nil, rules, now0); got != 3 {
		t.Errorf("scale-down limit from 5 = %d, want 3", got)
	}
	rules.SelectPolicy = Disabled
	if got := calculateScaleUpLimitWithScalingRules(7, nil, nil, rules, now0); got != 7 {
		t.Errorf("disabled scale-up limit from 7 = %d, want 7", got)
	}
	if got := calculateScaleDownLimitWithBehaviors(7, nil, nil, rules, now0); got != 7 {
		t.Errorf("disabled scale-down limit from 7 = %d, want 7", got)
	}
}

// TestStoreScaleEvents ports TestStoreScaleEvents (the cases with a
// behavior: the port always has one): which stored event a new one
// replaces, and which are marked outdated.
func TestStoreScaleEvents(t *testing.T) {
	ev := func(change int32, age int, outdated bool) timestampedScaleEvent {
		return timestampedScaleEvent{replicaChange: change, timestamp: now0.Add(-time.Duration(age) * time.Second), outdated: outdated}
	}
	type want struct {
		change   int32
		outdated bool
	}
	tests := []struct {
		name       string
		prev       []timestampedScaleEvent
		rules      Rules
		wantChange int64 // getReplicasChangePerPeriod(60 s) before the store
		want       []want
	}{
		{"empty entries with two-policy-behavior", nil, generateScalingRules(10, 60, 100, 60, 0), 0, []want{{5, false}}},
		{"one outdated entry to be replaced with behavior", []timestampedScaleEvent{ev(7, 61, false)}, generateScalingRules(10, 60, 100, 60, 0), 0, []want{{5, false}}},
		{"one actual entry to be not touched with behavior", []timestampedScaleEvent{ev(7, 58, false)}, generateScalingRules(10, 60, 100, 60, 0), 7, []want{{7, false}, {5, false}}},
		{"two entries, one of them to be replaced", []timestampedScaleEvent{ev(7, 61, false), ev(6, 59, false)}, generateScalingRules(10, 60, 0, 0, 0), 6, []want{{5, false}, {6, false}}},
		{"replace one entry, use policies with different periods",
			[]timestampedScaleEvent{ev(8, 29, false), ev(6, 59, false), ev(7, 61, false), ev(9, 61, false)}, generateScalingRules(10, 60, 100, 30, 0), 14,
			[]want{{8, false}, {6, false}, {7, true}, {5, false}}},
		{"two entries, both actual", []timestampedScaleEvent{ev(7, 58, false), ev(6, 59, false)}, generateScalingRules(10, 120, 100, 30, 0), 13,
			[]want{{7, false}, {6, false}, {5, false}}},
	}
	for _, tc := range tests {
		for _, up := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/up=%v", tc.name, up), func(t *testing.T) {
				a := &Autoscaler{spec: Spec{Behavior: Behavior{ScaleUp: tc.rules, ScaleDown: tc.rules}}}
				events, next := &a.scaleUpEvents, int32(15)
				if !up {
					events, next = &a.scaleDownEvents, 5
				}
				*events = append([]timestampedScaleEvent(nil), tc.prev...)
				if got := getReplicasChangePerPeriod(60*time.Second, *events, now0); got != tc.wantChange {
					t.Errorf("change in the last 60 s = %d, want %d", got, tc.wantChange)
				}
				a.storeScaleEvent(10, next, now0)
				if len(*events) != len(tc.want) {
					t.Fatalf("%d events stored, want %d: %+v", len(*events), len(tc.want), *events)
				}
				for i, e := range *events {
					if e.replicaChange != tc.want[i].change || e.outdated != tc.want[i].outdated {
						t.Errorf("event %d = {%d outdated=%v}, want {%d outdated=%v}", i, e.replicaChange, e.outdated, tc.want[i].change, tc.want[i].outdated)
					}
				}
			})
		}
	}
}

// TestNormalizeDesiredReplicasWithBehavior ports the test of that name: the
// stabilized count and the recommendations kept (the windows left out of a
// case are 0 there too).
func TestNormalizeDesiredReplicasWithBehavior(t *testing.T) {
	rec := func(r int32, age time.Duration) timestampedRecommendation {
		return timestampedRecommendation{r, now0.Add(-age)}
	}
	tests := []struct {
		name              string
		recommendations   []timestampedRecommendation
		current, prenorm  int32
		want              int32
		wantKept          []int32 // nil: not checked, as in the Kubernetes case
		upWindow, downWin time.Duration
	}{
		{"empty recommendations for scaling down", []timestampedRecommendation{}, 100, 5, 5, []int32{5}, 0, 0},
		{"simple scale down stabilization", []timestampedRecommendation{rec(4, 2*time.Minute), rec(5, time.Minute)}, 100, 3, 5, []int32{4, 5, 3}, 0, 3 * time.Minute},
		{"simple scale up stabilization", []timestampedRecommendation{rec(4, 2*time.Minute), rec(5, time.Minute)}, 1, 7, 4, []int32{4, 5, 7}, 5 * time.Minute, 0},
		{"no scale down stabilization", []timestampedRecommendation{rec(1, 2*time.Minute), rec(2, time.Minute)}, 100, 3, 3, []int32{1, 2, 3}, 5 * time.Minute, 0},
		{"no scale up stabilization", []timestampedRecommendation{rec(4, 2*time.Minute), rec(5, time.Minute)}, 1, 3, 3, []int32{4, 5, 3}, 0, 5 * time.Minute},
		{"no scale down stabilization, reuse recommendation element", []timestampedRecommendation{rec(10, 10*time.Minute), rec(9, 9*time.Minute)}, 100, 3, 3, []int32{10, 3}, 0, 0},
		{"no scale up stabilization, reuse recommendation element", []timestampedRecommendation{rec(10, 10*time.Minute), rec(9, 9*time.Minute)}, 1, 100, 100, []int32{10, 100}, 0, 0},
		{"scale down stabilization, reuse one of obsolete recommendation element",
			[]timestampedRecommendation{rec(10, 10*time.Minute), rec(4, time.Minute), rec(5, 2*time.Minute), rec(9, 9*time.Minute)}, 100, 3, 5, []int32{10, 4, 5, 3}, 0, 3 * time.Minute},
		{"scale up stabilization, reuse one of obsolete recommendation element",
			[]timestampedRecommendation{rec(10, 100*time.Minute), rec(6, time.Minute), rec(5, 2*time.Minute), rec(9, 3*time.Minute)}, 1, 100, 5, []int32{100, 6, 5, 9}, 300 * time.Second, 0},
		{"scale up and down stabilization, do not scale up when prenormalized rec goes down",
			[]timestampedRecommendation{rec(2, 100*time.Minute), rec(3, 3*time.Minute)}, 2, 1, 2, nil, 300 * time.Second, 300 * time.Second},
		{"scale up and down stabilization, do not scale down when prenormalized rec goes up",
			[]timestampedRecommendation{rec(2, 100*time.Minute), rec(1, 3*time.Minute)}, 2, 3, 2, nil, 300 * time.Second, 300 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := &Autoscaler{
				spec:            Spec{Behavior: Behavior{ScaleUp: Rules{StabilizationWindow: tc.upWindow}, ScaleDown: Rules{StabilizationWindow: tc.downWin}}},
				recommendations: tc.recommendations,
			}
			got, _ := a.stabilizeRecommendationWithBehaviors(tc.current, tc.prenorm, now0)
			if got != tc.want {
				t.Errorf("stabilized %d, want %d", got, tc.want)
			}
			if tc.wantKept == nil {
				return
			}
			var kept []int32
			for _, r := range a.recommendations {
				kept = append(kept, r.recommendation)
			}
			if fmt.Sprint(kept) != fmt.Sprint(tc.wantKept) {
				t.Errorf("recommendations kept %v, want %v", kept, tc.wantKept)
			}
		})
	}
}

// TestSyncControllerCases ports the reconcile tests of horizontal_test.go
// (testCase.runTest): one sync from a given count and metric levels. Those
// tests run without spec.behavior, on the controller's legacy path; the port
// runs DefaultBehavior, which allows the same counts in these cases. The
// Kubernetes metric levels are in thousandths; CPU levels are given here as
// percentages of the pods' requests. "recommendations: []" in a Kubernetes
// case (no initial recommendation) is emptyHistory here.
func TestSyncControllerCases(t *testing.T) {
	cpu := func(percent float64) MetricSpec {
		return MetricSpec{Name: "cpu", Source: ResourceSource, Target: UtilizationTarget, Value: percent}
	}
	qps := func(s SourceType, tt TargetType, target float64) MetricSpec {
		return MetricSpec{Name: "qps", Source: s, Target: tt, Value: target}
	}
	pods := func(v ...float64) MetricValue { return MetricValue{PodValues: v} }
	value := func(v float64) MetricValue { return MetricValue{Value: v} }
	missing := MetricValue{Missing: true}

	tests := []struct {
		name         string
		min, max     int32
		current      int32
		metrics      []MetricSpec
		values       []MetricValue
		scaleUpRules *Rules
		emptyHistory bool
		history      []timestampedRecommendation
		want         int32
		wantReason   string
		wantMissing  bool // Sync's error wraps ErrMissingMetric
	}{
		{name: "TestScaleUp", min: 2, max: 6, current: 3, metrics: []MetricSpec{cpu(30)}, values: []MetricValue{pods(30, 50, 70)}, want: 5, wantReason: "DesiredWithinRange"},
		{name: "TestScaleUpCM", min: 2, max: 6, current: 3, metrics: []MetricSpec{qps(PodsSource, AverageValueTarget, 15)}, values: []MetricValue{pods(20, 10, 30)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestScaleUpCMObject", min: 2, max: 6, current: 3, metrics: []MetricSpec{qps(ObjectSource, ValueTarget, 15)}, values: []MetricValue{value(20)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestScaleUpPerPodCMObject", min: 2, max: 6, current: 3, metrics: []MetricSpec{qps(ObjectSource, AverageValueTarget, 10)}, values: []MetricValue{value(40)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestScaleUpCMExternal", min: 2, max: 6, current: 3, metrics: []MetricSpec{qps(ExternalSource, ValueTarget, 6.666)}, values: []MetricValue{value(8.6)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestScaleUpPerPodCMExternal", min: 2, max: 6, current: 3, metrics: []MetricSpec{qps(ExternalSource, AverageValueTarget, 2.222)}, values: []MetricValue{value(8.6)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestEventCreated", min: 1, max: 5, current: 1, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(100)}, want: 2, wantReason: "DesiredWithinRange"},
		{name: "TestEventNotCreated", min: 1, max: 5, current: 2, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(50, 50)}, want: 2, wantReason: "DesiredWithinRange"},
		{name: "TestUpscaleCap", min: 1, max: 100, current: 3, metrics: []MetricSpec{cpu(10)}, values: []MetricValue{pods(100, 200, 300)},
			scaleUpRules: ptrRules(generateScalingRules(0, 0, 700, 60, 0)), want: 24, wantReason: "ScaleUpLimit"},
		{name: "TestUpscaleCapGreaterThanMaxReplicas", min: 1, max: 20, current: 3, metrics: []MetricSpec{cpu(10)}, values: []MetricValue{pods(100, 200, 300)},
			scaleUpRules: ptrRules(generateScalingRules(0, 0, 700, 60, 0)), want: 20, wantReason: "TooManyReplicas"},
		{name: "TestScaleDown", min: 2, max: 6, current: 5, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(10, 30, 50, 25, 25)}, emptyHistory: true, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestScaleDownWithScalingRules", min: 2, max: 6, current: 5, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(10, 30, 50, 25, 25)},
			scaleUpRules: ptrRules(generateScalingRules(0, 0, 100, 15, 30)), emptyHistory: true, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestScaleDownStabilizeInitialSize", min: 2, max: 6, current: 5, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(10, 30, 50, 25, 25)}, want: 5, wantReason: "ScaleDownStabilized"},
		{name: "TestScaleDownCM", min: 2, max: 6, current: 5, metrics: []MetricSpec{qps(PodsSource, AverageValueTarget, 20)}, values: []MetricValue{pods(12, 12, 12, 12, 12)}, emptyHistory: true, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestScaleDownCMObject", min: 2, max: 6, current: 5, metrics: []MetricSpec{qps(ObjectSource, ValueTarget, 20)}, values: []MetricValue{value(12)}, emptyHistory: true, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestScaleDownPerPodCMObject", min: 2, max: 6, current: 5, metrics: []MetricSpec{qps(ObjectSource, AverageValueTarget, 20)}, values: []MetricValue{value(60)}, emptyHistory: true, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestScaleDownCMExternal", min: 2, max: 6, current: 5, metrics: []MetricSpec{qps(ExternalSource, ValueTarget, 14.4)}, values: []MetricValue{value(8.6)}, emptyHistory: true, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestScaleDownPerPodCMExternal", min: 2, max: 6, current: 5, metrics: []MetricSpec{qps(ExternalSource, AverageValueTarget, 3)}, values: []MetricValue{value(8.6)}, emptyHistory: true, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestMissingReports (one pod reports)", min: 1, max: 5, current: 4, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(100)}, emptyHistory: true, want: 2, wantReason: "DesiredWithinRange"},
		{name: "TestTolerance", min: 1, max: 5, current: 3, metrics: []MetricSpec{cpu(100)}, values: []MetricValue{pods(102, 102, 102)}, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestToleranceCM", min: 1, max: 5, current: 3, metrics: []MetricSpec{qps(PodsSource, AverageValueTarget, 20)}, values: []MetricValue{pods(20, 20.001, 21)}, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestToleranceCMObject", min: 1, max: 5, current: 3, metrics: []MetricSpec{qps(ObjectSource, ValueTarget, 20)}, values: []MetricValue{value(20.05)}, want: 3, wantReason: "DesiredWithinRange"},
		{name: "TestToleranceCMExternal", min: 2, max: 6, current: 4, metrics: []MetricSpec{qps(ExternalSource, ValueTarget, 8.666)}, values: []MetricValue{value(8.6)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestTolerancePerPodCMObject", min: 2, max: 6, current: 4, metrics: []MetricSpec{qps(ObjectSource, AverageValueTarget, 2.2)}, values: []MetricValue{value(8.6)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestTolerancePerPodCMExternal", min: 2, max: 6, current: 4, metrics: []MetricSpec{qps(ExternalSource, AverageValueTarget, 2.2)}, values: []MetricValue{value(8.6)}, want: 4, wantReason: "DesiredWithinRange"},
		{name: "TestMinReplicas", min: 2, max: 5, current: 3, metrics: []MetricSpec{cpu(90)}, values: []MetricValue{pods(1, 9.5, 1)}, emptyHistory: true, want: 2, wantReason: "TooFewReplicas"},
		{name: "TestScaleUpRCImmediately", min: 2, max: 6, current: 1, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(0)}, want: 2, wantReason: "BelowMinReplicas"},
		{name: "TestScaleDownRCImmediately", min: 2, max: 5, current: 6, metrics: []MetricSpec{cpu(50)}, values: []MetricValue{pods(800, 950, 100)}, want: 5, wantReason: "AboveMaxReplicas"},
		{name: "TestStabilizeDownscale", min: 1, max: 5, current: 4, metrics: []MetricSpec{cpu(100)}, values: []MetricValue{pods(50, 50, 50)},
			history: []timestampedRecommendation{{10, now0.Add(-10 * time.Minute)}, {4, now0.Add(-time.Minute)}}, want: 4, wantReason: "ScaleDownStabilized"},
		{name: "TestScaleUpOneMetricEmpty", min: 2, max: 6, current: 3, metrics: []MetricSpec{cpu(30), qps(ExternalSource, ValueTarget, 0.1)}, values: []MetricValue{pods(30, 40, 50), missing},
			want: 4, wantReason: "DesiredWithinRange", wantMissing: true},
		{name: "TestNoScaleDownOneMetricEmpty", min: 2, max: 6, current: 5, metrics: []MetricSpec{cpu(50), qps(ExternalSource, ValueTarget, 1)}, values: []MetricValue{pods(10, 30, 50, 25, 25), missing},
			emptyHistory: true, want: 5, wantReason: "FailedGetExternalMetric", wantMissing: true},
		{name: "TestEmptyMetrics", min: 2, max: 6, current: 4, metrics: []MetricSpec{cpu(100)}, values: []MetricValue{pods()}, want: 4, wantReason: "FailedGetResourceMetric", wantMissing: true},
		{name: "TestConditionFailedGetMetrics (FailedGetPodsMetric)", min: 1, max: 100, current: 3, metrics: []MetricSpec{qps(PodsSource, AverageValueTarget, 15)}, values: []MetricValue{missing},
			want: 3, wantReason: "FailedGetPodsMetric", wantMissing: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := DefaultBehavior()
			if tc.scaleUpRules != nil {
				b.ScaleUp = *tc.scaleUpRules
			}
			a, err := New(Spec{MinReplicas: tc.min, MaxReplicas: tc.max, Metrics: tc.metrics, Behavior: b}, func() time.Time { return now0 })
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.history != nil:
				a.recommendations = tc.history
			case tc.emptyHistory:
				a.recommendations = []timestampedRecommendation{}
			}
			d, err := a.Sync(tc.current, tc.values)
			if tc.wantMissing != errors.Is(err, ErrMissingMetric) {
				t.Errorf("Sync error %v, want one wrapping ErrMissingMetric: %v", err, tc.wantMissing)
			} else if !tc.wantMissing && err != nil {
				t.Errorf("Sync: %v", err)
			}
			if d.Desired != tc.want || d.Reason != tc.wantReason {
				t.Errorf("Sync = %d (%s), want %d (%s); decision %+v", d.Desired, d.Reason, tc.want, tc.wantReason, d)
			}
			// The scale event is recorded when, and only when, the count changes.
			events := len(a.scaleUpEvents) + len(a.scaleDownEvents)
			if changed := d.Desired != tc.current; changed != (events == 1) || events > 1 {
				t.Errorf("%d scale events recorded for %d → %d", events, tc.current, d.Desired)
			}
		})
	}
}
