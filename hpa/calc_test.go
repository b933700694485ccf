package hpa_test

import (
	"errors"
	"math"
	"testing"

	"sluice/hpa"
)

// The cases come from replica_calculator_test.go (TestReplicaCalc*) and
// horizontal_test.go of kubernetes/kubernetes, pkg/controller/podautoscaler,
// with the metric levels of those tests (in thousandths there) written as
// plain values. Resource cases give per-pod percentages of equal requests
// (the port's input); the Kubernetes tests' pods of unequal requests are
// replaced by pods of the same average.
func TestMetricReplicas(t *testing.T) {
	pods := func(target float64) hpa.MetricSpec {
		return hpa.MetricSpec{Name: "qps", Source: hpa.PodsSource, Target: hpa.AverageValueTarget, Value: target}
	}
	cpu := func(percent float64) hpa.MetricSpec {
		return hpa.MetricSpec{Name: "cpu", Source: hpa.ResourceSource, Target: hpa.UtilizationTarget, Value: percent}
	}
	object := func(tt hpa.TargetType, target float64) hpa.MetricSpec {
		return hpa.MetricSpec{Name: "qps", Source: hpa.ObjectSource, Target: tt, Value: target}
	}
	external := func(tt hpa.TargetType, target float64) hpa.MetricSpec {
		return hpa.MetricSpec{Name: "qps", Source: hpa.ExternalSource, Target: tt, Value: target}
	}
	perPod := func(v ...float64) hpa.MetricValue { return hpa.MetricValue{PodValues: v} }
	value := func(v float64) hpa.MetricValue { return hpa.MetricValue{Value: v} }

	tests := []struct {
		name      string // the Kubernetes test the case comes from
		metric    hpa.MetricSpec
		value     hpa.MetricValue
		current   int32
		tolerance float64
		want      int32
	}{
		// Pods, AverageValue (calcPlainMetricReplicas).
		{"TestReplicaCalcScaleUpCM", pods(15), perPod(20, 10, 30), 3, 0.1, 4},
		{"TestReplicaCalcScaleDownCM", pods(20), perPod(12, 12, 12, 12, 12), 5, 0.1, 3},
		{"TestReplicaCalcToleranceCM", pods(20), perPod(20, 21, 21), 3, 0.1, 3},
		{"TestReplicaCalcConfigurableToleranceCM (1 % tolerance)", pods(20), perPod(20, 21, 21), 3, 0.01, 4},
		{"TestPlainMetricReplicaCalcMissingMetricsNoChangeEq (ready pods only)", pods(20), perPod(20, 19, 21), 3, 0.1, 3},
		{"TestToleranceCM", pods(20), perPod(20, 20.001, 21), 3, 0.1, 3},
		// Resource, Utilization (GetResourceReplicas).
		{"TestScaleUp", cpu(30), perPod(30, 50, 70), 3, 0.1, 5},
		{"TestScaleDown", cpu(50), perPod(10, 30, 50, 25, 25), 5, 0.1, 3},
		{"TestReplicaCalcTolerance (102 % of 100 %)", cpu(100), perPod(102, 102, 102), 3, 0.1, 3},
		{"TestReplicaCalcConfigurableTolerance: outside of a 0 % tolerance", cpu(100), perPod(101, 101, 101), 3, 0, 4},
		{"TestReplicaCalcConfigurableTolerance: outside a 34 % scale-down tolerance", cpu(100), perPod(65, 65, 65), 3, 0.34, 2},
		{"TestReplicaCalcConfigurableTolerance: within a 36 % scale-down tolerance", cpu(100), perPod(65, 65, 65), 3, 0.36, 3},
		// GetResourceUtilizationRatio keeps the whole percentage: 110.9 % is
		// 110 %, within the tolerance of a 100 % target.
		{"GetResourceUtilizationRatio truncation", cpu(100), perPod(110.9, 110.9), 2, 0.1, 2},
		{"GetResourceUtilizationRatio truncation, just above", cpu(100), perPod(111, 111), 2, 0.1, 3},
		{"TestUpscaleCap (before the policy)", cpu(10), perPod(100, 200, 300), 3, 0.1, 60},
		// Resource, AverageValue (GetRawResourceReplicas).
		{"TestReplicaCalcScaleUpCM as raw resource", hpa.MetricSpec{Name: "memory", Source: hpa.ResourceSource, Target: hpa.AverageValueTarget, Value: 15}, perPod(20, 10, 30), 3, 0.1, 4},
		// Object, Value (GetObjectMetricReplicas).
		{"TestReplicaCalcScaleUpCMObject", object(hpa.ValueTarget, 15), value(20), 3, 0.1, 4},
		{"TestReplicaCalcScaleDownCMObject", object(hpa.ValueTarget, 20), value(12), 5, 0.1, 3},
		{"TestReplicaCalcToleranceCMObject", object(hpa.ValueTarget, 20), value(20.666), 3, 0.1, 3},
		{"TestReplicaCalcConfigurableToleranceCMObject", object(hpa.ValueTarget, 20), value(20.666), 3, 0.01, 4},
		{"TestScaleUpFromZeroCMObject", object(hpa.ValueTarget, 15), value(20), 0, 0.1, 2},
		{"TestScaleUpFromZeroIgnoresToleranceCMObject", object(hpa.ValueTarget, 1), value(1), 0, 0.1, 1},
		{"TestScaleDownToZeroCMObject", object(hpa.ValueTarget, 20), value(0), 5, 0.1, 0},
		{"TestReplicaCalcScaleUpOverflow", object(hpa.ValueTarget, 0.001), value(math.MaxInt64), 3, 0.1, math.MaxInt32},
		// Object, AverageValue (GetObjectPerPodMetricReplicas).
		{"TestReplicaCalcScaleUpCMPerPodObject", object(hpa.AverageValueTarget, 5), value(20), 3, 0.1, 4},
		{"TestReplicaCalcScaleDownPerPodCMObject", object(hpa.AverageValueTarget, 2), value(6), 5, 0.1, 3},
		{"TestReplicaCalcTolerancePerPodCMObject", object(hpa.AverageValueTarget, 5), value(20.166), 4, 0.1, 4},
		{"TestReplicaCalcConfigurableTolerancePerPodCMObject", object(hpa.AverageValueTarget, 5), value(20.208), 4, 0.01, 5},
		// External, Value (GetExternalMetricReplicas).
		{"TestScaleUpCMExternal", external(hpa.ValueTarget, 6.666), value(8.6), 3, 0.1, 4},
		{"TestReplicaCalcScaleDownCMExternal", external(hpa.ValueTarget, 14.334), value(8.6), 5, 0.1, 3},
		{"TestReplicaCalcToleranceCMExternal", external(hpa.ValueTarget, 8.888), value(8.6), 3, 0.1, 3},
		{"TestReplicaCalcConfigurableToleranceCMExternal", external(hpa.ValueTarget, 8.8), value(8.9), 3, 0.01, 4},
		{"TestScaleDownToZeroCMExternal", external(hpa.ValueTarget, 14.4), value(0), 5, 0.1, 0},
		// External, AverageValue (GetExternalPerPodMetricReplicas).
		{"TestReplicaCalcScaleUpPerPodCMExternal", external(hpa.AverageValueTarget, 2.15), value(8.6), 3, 0.1, 4},
		{"TestReplicaCalcScaleDownPerPodCMExternal", external(hpa.AverageValueTarget, 2.867), value(8.6), 5, 0.1, 3},
		{"TestReplicaCalcTolerancePerPodCMExternal", external(hpa.AverageValueTarget, 2.9), value(8.6), 3, 0.1, 3},
		{"TestReplicaCalcConfigurableTolerancePerPodCMExternal", external(hpa.AverageValueTarget, 2.8), value(8.6), 3, 0.01, 4},
		{"TestExternalPerPodMetricReplicaOverflow", external(hpa.AverageValueTarget, 0.001), value(math.MaxInt64), 1, 0.1, math.MaxInt32},
		{"TestExternalPerPodMetricUsageOverflow", external(hpa.AverageValueTarget, math.MaxInt64/1000), value(math.MaxInt64), 1, 0.1, 1},
		// From zero replicas the per-pod ratio is +Inf (or NaN for 0/0):
		// never within the tolerance, so the count is value/target.
		{"GetExternalPerPodMetricReplicas from zero", external(hpa.AverageValueTarget, 700), value(1500), 0, 0.1, 3},
		{"GetExternalPerPodMetricReplicas from zero, no lag", external(hpa.AverageValueTarget, 700), value(0), 0, 0.1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hpa.MetricReplicas(tc.metric, tc.value, tc.current, tc.tolerance)
			if err != nil {
				t.Fatalf("MetricReplicas: %v", err)
			}
			if got != tc.want {
				t.Errorf("MetricReplicas = %d, want %d", got, tc.want)
			}
		})
	}
}

// The values are read as the controller reads quantities, in thousandths
// rounded up (Quantity.MilliValue): against a 0.7 target (700), 0.77 is a
// ratio of exactly 1.1 and 0.6299 rounds up to 630, exactly 0.9: both within
// the tolerance.
func TestMetricReplicasThousandths(t *testing.T) {
	m := hpa.MetricSpec{Name: "sluice_consumer_in_flight_ratio", Source: hpa.ExternalSource, Target: hpa.ValueTarget, Value: 0.7}
	for _, tc := range []struct {
		value float64
		want  int32
	}{
		{0.77, 10},   // 770/700 = 1.1: within
		{0.7701, 12}, // 771/700 = 1.1014: ceil(11.014)
		{0.63, 10},   // 630/700 = 0.9: within
		{0.6299, 10}, // rounded up to 630: within
		{0.6289, 9},  // 629/700 = 0.8986: ceil(8.986)
	} {
		got, err := hpa.MetricReplicas(m, hpa.MetricValue{Value: tc.value}, 10, 0.1)
		if err != nil {
			t.Fatalf("%v: %v", tc.value, err)
		}
		if got != tc.want {
			t.Errorf("value %v: got %d, want %d", tc.value, got, tc.want)
		}
	}
}

func TestMetricReplicasErrors(t *testing.T) {
	ext := hpa.MetricSpec{Name: "lag", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 700}
	pods := hpa.MetricSpec{Name: "qps", Source: hpa.PodsSource, Target: hpa.AverageValueTarget, Value: 10}
	tests := []struct {
		name    string
		metric  hpa.MetricSpec
		value   hpa.MetricValue
		current int32
		is      error
	}{
		{"missing", ext, hpa.MetricValue{Missing: true}, 3, hpa.ErrMissingMetric},
		{"no pod values (TestReplicaCalcEmptyMetrics)", pods, hpa.MetricValue{}, 3, hpa.ErrMissingMetric},
		{"NaN value", ext, hpa.MetricValue{Value: math.NaN()}, 3, hpa.ErrMissingMetric},
		{"infinite pod value", pods, hpa.MetricValue{PodValues: []float64{1, math.Inf(1)}}, 3, hpa.ErrMissingMetric},
		{"Pods with a Value target", hpa.MetricSpec{Name: "qps", Source: hpa.PodsSource, Target: hpa.ValueTarget, Value: 1}, hpa.MetricValue{PodValues: []float64{1}}, 3, hpa.ErrInvalidSpec},
		{"External with a Utilization target", hpa.MetricSpec{Name: "x", Source: hpa.ExternalSource, Target: hpa.UtilizationTarget, Value: 50}, hpa.MetricValue{Value: 1}, 3, hpa.ErrInvalidSpec},
		{"zero target", hpa.MetricSpec{Name: "x", Source: hpa.ExternalSource, Target: hpa.ValueTarget}, hpa.MetricValue{Value: 1}, 3, hpa.ErrInvalidSpec},
		{"fractional utilization", hpa.MetricSpec{Name: "cpu", Source: hpa.ResourceSource, Target: hpa.UtilizationTarget, Value: 50.5}, hpa.MetricValue{PodValues: []float64{1}}, 3, hpa.ErrInvalidSpec},
		{"unknown source", hpa.MetricSpec{Name: "x", Source: "ContainerResource", Target: hpa.UtilizationTarget, Value: 50}, hpa.MetricValue{PodValues: []float64{1}}, 3, hpa.ErrInvalidSpec},
		{"negative current", ext, hpa.MetricValue{Value: 1}, -1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hpa.MetricReplicas(tc.metric, tc.value, tc.current, 0.1)
			if err == nil {
				t.Fatalf("MetricReplicas = %d, want an error", got)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %q", err, tc.is)
			}
		})
	}
}
