package hpa

import (
	"fmt"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// ParseHPA reads an autoscaling/v2 HorizontalPodAutoscaler manifest (one
// YAML or JSON document, such as hpa/hpa.yaml) into a Spec, with the API
// server's defaults (SetDefaults_HorizontalPodAutoscaler and
// GenerateHPAScale{Up,Down}Rules): minReplicas 1, a CPU metric at 80 %
// utilization when there is none, and DefaultBehavior's values for every
// field of spec.behavior left out (a scale-down window left out is the
// controller's default, 300 s). Targets are read as the controller reads
// them, in thousandths, and where the controller looks first (an External
// metric with an averageValue is an AverageValue target whatever its type
// says).
//
// The error names the field: a manifest that is not an autoscaling/v2
// HorizontalPodAutoscaler, a field it does not know (a typo), a
// ContainerResource metric, per-direction tolerances that differ, or a spec
// that New would refuse (wrapping ErrInvalidSpec).
func ParseHPA(manifest []byte) (Spec, error) {
	var h autoscalingv2.HorizontalPodAutoscaler
	if err := yaml.UnmarshalStrict(manifest, &h); err != nil {
		return Spec{}, fmt.Errorf("parse HorizontalPodAutoscaler: %w", err)
	}
	if h.APIVersion != "autoscaling/v2" || h.Kind != "HorizontalPodAutoscaler" {
		return Spec{}, fmt.Errorf("parse HorizontalPodAutoscaler: apiVersion %q kind %q: want autoscaling/v2 HorizontalPodAutoscaler", h.APIVersion, h.Kind)
	}
	s := Spec{MinReplicas: 1, MaxReplicas: h.Spec.MaxReplicas}
	if h.Spec.MinReplicas != nil {
		s.MinReplicas = *h.Spec.MinReplicas
	}
	if len(h.Spec.Metrics) == 0 {
		s.Metrics = []MetricSpec{{Name: "cpu", Source: ResourceSource, Target: UtilizationTarget, Value: 80}}
	}
	for i, m := range h.Spec.Metrics {
		ms, err := metricFromAPI(m)
		if err != nil {
			return Spec{}, fmt.Errorf("parse HorizontalPodAutoscaler: spec.metrics[%d]: %w", i, err)
		}
		s.Metrics = append(s.Metrics, ms)
	}
	s.Behavior = DefaultBehavior()
	if b := h.Spec.Behavior; b != nil {
		s.Behavior.ScaleUp = rulesFromAPI(b.ScaleUp, s.Behavior.ScaleUp)
		s.Behavior.ScaleDown = rulesFromAPI(b.ScaleDown, s.Behavior.ScaleDown)
		tolerance, err := toleranceFromAPI(b)
		if err != nil {
			return Spec{}, fmt.Errorf("parse HorizontalPodAutoscaler: %w", err)
		}
		s.Tolerance = tolerance
	}
	if err := s.validate(); err != nil {
		return Spec{}, fmt.Errorf("parse HorizontalPodAutoscaler: %w", err)
	}
	return s, nil
}

// metricFromAPI converts one spec.metrics entry, choosing the target as the
// controller's computeStatusFor*Metric functions do.
func metricFromAPI(m autoscalingv2.MetricSpec) (MetricSpec, error) {
	switch m.Type {
	case autoscalingv2.ExternalMetricSourceType:
		if m.External == nil {
			return MetricSpec{}, fmt.Errorf("external: must populate information for the given metric source")
		}
		ms := MetricSpec{Name: m.External.Metric.Name, Source: ExternalSource}
		return ms, valueOrAverage(&ms, m.External.Target, true)
	case autoscalingv2.ObjectMetricSourceType:
		if m.Object == nil {
			return MetricSpec{}, fmt.Errorf("object: must populate information for the given metric source")
		}
		ms := MetricSpec{Name: m.Object.Metric.Name, Source: ObjectSource}
		return ms, valueOrAverage(&ms, m.Object.Target, false)
	case autoscalingv2.PodsMetricSourceType:
		if m.Pods == nil {
			return MetricSpec{}, fmt.Errorf("pods: must populate information for the given metric source")
		}
		if m.Pods.Target.AverageValue == nil {
			return MetricSpec{}, fmt.Errorf("pods.target.averageValue: must specify a positive target averageValue")
		}
		return MetricSpec{Name: m.Pods.Metric.Name, Source: PodsSource, Target: AverageValueTarget, Value: quantity(m.Pods.Target.AverageValue)}, nil
	case autoscalingv2.ResourceMetricSourceType:
		if m.Resource == nil {
			return MetricSpec{}, fmt.Errorf("resource: must populate information for the given metric source")
		}
		ms := MetricSpec{Name: string(m.Resource.Name), Source: ResourceSource}
		switch t := m.Resource.Target; {
		case t.AverageValue != nil: // computeStatusForResourceMetricGeneric looks at it first
			ms.Target, ms.Value = AverageValueTarget, quantity(t.AverageValue)
		case t.AverageUtilization != nil:
			ms.Target, ms.Value = UtilizationTarget, float64(*t.AverageUtilization)
		default:
			return MetricSpec{}, fmt.Errorf("resource.target: must set either a target raw value or a target utilization")
		}
		return ms, nil
	case autoscalingv2.ContainerResourceMetricSourceType:
		return MetricSpec{}, fmt.Errorf("type ContainerResource: not supported by this port")
	}
	return MetricSpec{}, fmt.Errorf("type %q: must be Pods, Object, External or Resource", m.Type)
}

// valueOrAverage sets the target of an Object or External metric. The
// controller takes an External metric's averageValue whenever it is set
// (computeStatusForExternalMetric), and an Object metric's by its type
// (computeStatusForObjectMetric).
func valueOrAverage(ms *MetricSpec, t autoscalingv2.MetricTarget, external bool) error {
	switch {
	case external && t.AverageValue != nil:
		ms.Target, ms.Value = AverageValueTarget, quantity(t.AverageValue)
	case external && t.Value != nil:
		ms.Target, ms.Value = ValueTarget, quantity(t.Value)
	case !external && t.Type == autoscalingv2.ValueMetricType && t.Value != nil:
		ms.Target, ms.Value = ValueTarget, quantity(t.Value)
	case !external && t.Type == autoscalingv2.AverageValueMetricType && t.AverageValue != nil:
		ms.Target, ms.Value = AverageValueTarget, quantity(t.AverageValue)
	default:
		return fmt.Errorf("target: neither a value target nor an average value target was set")
	}
	return nil
}

// quantity is the value the controller reads from a target: its thousandths
// (MilliValue).
func quantity(q *resource.Quantity) float64 {
	return float64(q.MilliValue()) / 1000
}

// rulesFromAPI fills the fields of r left out with those of def
// (copyHPAScalingRules).
func rulesFromAPI(r *autoscalingv2.HPAScalingRules, def Rules) Rules {
	if r == nil {
		return def
	}
	if r.SelectPolicy != nil {
		def.SelectPolicy = SelectPolicy(*r.SelectPolicy)
	}
	if r.StabilizationWindowSeconds != nil {
		def.StabilizationWindow = time.Duration(*r.StabilizationWindowSeconds) * time.Second
	}
	if r.Policies != nil {
		def.Policies = make([]Policy, len(r.Policies))
		for i, p := range r.Policies {
			def.Policies[i] = Policy{Type: PolicyType(p.Type), Value: p.Value, Period: time.Duration(p.PeriodSeconds) * time.Second}
		}
	}
	return def
}

// toleranceFromAPI reads behavior.scaleUp/scaleDown.tolerance
// (HPAConfigurableTolerance). A direction without one has the controller's
// default; the port has one tolerance, so both must come out equal, and a
// zero tolerance cannot be had (Spec.Tolerance 0 means the default).
func toleranceFromAPI(b *autoscalingv2.HorizontalPodAutoscalerBehavior) (float64, error) {
	up, down := DefaultTolerance, DefaultTolerance
	if b.ScaleUp != nil && b.ScaleUp.Tolerance != nil {
		up = b.ScaleUp.Tolerance.AsApproximateFloat64()
	}
	if b.ScaleDown != nil && b.ScaleDown.Tolerance != nil {
		down = b.ScaleDown.Tolerance.AsApproximateFloat64()
	}
	switch {
	case up != down:
		return 0, fmt.Errorf("spec.behavior.scaleUp.tolerance %v differs from spec.behavior.scaleDown.tolerance %v: this port has one tolerance", up, down)
	case up == 0:
		return 0, fmt.Errorf("spec.behavior.*.tolerance 0: not supported by this port (a zero Spec.Tolerance means the default %v)", DefaultTolerance)
	}
	return up, nil
}
