package hpa

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// SourceType is the type of a metric source, spec.metrics[].type.
type SourceType string

// The metric sources the port computes (ContainerResource is not ported).
const (
	PodsSource     SourceType = "Pods"
	ObjectSource   SourceType = "Object"
	ExternalSource SourceType = "External"
	ResourceSource SourceType = "Resource"
)

// TargetType is the type of a metric target, spec.metrics[].*.target.type.
type TargetType string

// The metric target types.
const (
	ValueTarget        TargetType = "Value"
	AverageValueTarget TargetType = "AverageValue"
	UtilizationTarget  TargetType = "Utilization"
)

// MetricSpec is one entry of spec.metrics.
//
// The valid combinations are those of the Kubernetes API validation: Pods
// with AverageValue; Resource with Utilization or AverageValue; Object and
// External with Value or AverageValue.
type MetricSpec struct {
	Name   string
	Source SourceType
	Target TargetType
	// Value is the target value, averageValue, or averageUtilization (a whole
	// percentage of the pods' request).
	Value float64
}

// MetricValue is what the metrics API returned for one MetricSpec at this sync.
type MetricValue struct {
	// Value is the metric's value for Object and External metrics (for
	// AverageValue targets the total, which the controller divides by the
	// replica count).
	Value float64
	// PodValues holds one value per ready pod for Pods and Resource metrics
	// (for a Resource Utilization target, the pod's usage in percent of its
	// request).
	PodValues []float64
	// Missing says the metric could not be read this sync.
	Missing bool
}

// PolicyType is the type of a scaling policy.
type PolicyType string

// The scaling policy types.
const (
	PodsPolicy    PolicyType = "Pods"
	PercentPolicy PolicyType = "Percent"
)

// Policy is one scaling policy: at most Value pods, or Value percent of the
// count at the start of the period, added (or removed) per Period.
type Policy struct {
	Type   PolicyType
	Value  int32
	Period time.Duration
}

// SelectPolicy says which policy limits when a direction has several.
type SelectPolicy string

// The policy selections. The empty SelectPolicy is taken as MaxChange, the
// API default.
const (
	MaxChange SelectPolicy = "Max"
	MinChange SelectPolicy = "Min"
	Disabled  SelectPolicy = "Disabled"
)

// Rules are the scaling rules of one direction (HPAScalingRules).
type Rules struct {
	StabilizationWindow time.Duration
	SelectPolicy        SelectPolicy
	Policies            []Policy
}

// Behavior is spec.behavior: the rules of each direction.
type Behavior struct {
	ScaleUp, ScaleDown Rules
}

// DefaultBehavior returns the Kubernetes defaults of spec.behavior
// (GenerateHPAScaleUpRules and GenerateHPAScaleDownRules of
// pkg/apis/autoscaling/v2/defaults.go, with the controller's default
// --horizontal-pod-autoscaler-downscale-stabilization of 5 minutes): scale up
// with no window, by the larger of 4 pods and 100 % per 15 s; scale down
// after a 300 s window, by up to 100 % per 15 s.
func DefaultBehavior() Behavior {
	return Behavior{
		ScaleUp: Rules{
			StabilizationWindow: 0,
			SelectPolicy:        MaxChange,
			Policies: []Policy{
				{Type: PodsPolicy, Value: 4, Period: 15 * time.Second},
				{Type: PercentPolicy, Value: 100, Period: 15 * time.Second},
			},
		},
		ScaleDown: Rules{
			StabilizationWindow: 300 * time.Second,
			SelectPolicy:        MaxChange,
			Policies: []Policy{
				{Type: PercentPolicy, Value: 100, Period: 15 * time.Second},
			},
		},
	}
}

// DefaultTolerance is the controller's default tolerance
// (--horizontal-pod-autoscaler-tolerance): no change while the ratio of a
// metric to its target is within 10 % of 1.
const DefaultTolerance = 0.1

// Spec is the part of an HPA's spec that decides replica counts.
type Spec struct {
	MinReplicas, MaxReplicas int32
	Metrics                  []MetricSpec
	Behavior                 Behavior
	// Tolerance is the controller's tolerance; 0 means DefaultTolerance.
	Tolerance float64
}

// The limits of the Kubernetes API validation
// (pkg/apis/autoscaling/validation: MaxPeriodSeconds,
// MaxStabilizationWindowSeconds).
const (
	maxPeriod              = 1800 * time.Second
	maxStabilizationWindow = 3600 * time.Second
)

// ErrInvalidSpec is wrapped by the errors of New and ParseHPA when a spec
// breaks a rule of the Kubernetes API validation; the message names the
// fields.
var ErrInvalidSpec = errors.New("invalid HPA spec")

// validate checks s as validateHorizontalPodAutoscalerSpec of the API server
// does (with the HPAScaleToZero feature off), plus the rule that there is at
// least one metric: the API server would default an empty list to CPU at
// 80 %, which only ParseHPA does here. Every problem is listed, each with its
// field path.
func (s Spec) validate() error {
	var errs []string
	add := func(field, format string, args ...any) {
		errs = append(errs, field+": "+fmt.Sprintf(format, args...))
	}
	if s.MinReplicas < 1 {
		add("spec.minReplicas", "%d: must be greater than or equal to 1", s.MinReplicas)
	}
	if s.MaxReplicas < 1 {
		add("spec.maxReplicas", "%d: must be greater than 0", s.MaxReplicas)
	}
	if s.MaxReplicas < s.MinReplicas {
		add("spec.maxReplicas", "%d: must be greater than or equal to spec.minReplicas (%d)", s.MaxReplicas, s.MinReplicas)
	}
	if len(s.Metrics) == 0 {
		add("spec.metrics", "must specify at least one metric")
	}
	for i, m := range s.Metrics {
		validateMetric(m, fmt.Sprintf("spec.metrics[%d]", i), add)
	}
	validateRules(s.Behavior.ScaleUp, "spec.behavior.scaleUp", add)
	validateRules(s.Behavior.ScaleDown, "spec.behavior.scaleDown", add)
	if s.Tolerance < 0 || math.IsNaN(s.Tolerance) || math.IsInf(s.Tolerance, 0) {
		add("spec.tolerance", "%v: must be a finite number >= 0 (0 means %v)", s.Tolerance, DefaultTolerance)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, strings.Join(errs, "; "))
	}
	return nil
}

// validateMetric checks one metric as validateMetricSpec and
// validateMetricTarget do: a name, a target type the source takes, a
// positive target (a whole percentage for Utilization).
func validateMetric(m MetricSpec, path string, add func(field, format string, args ...any)) {
	if m.Name == "" {
		add(path+".name", "must specify a metric name")
	}
	if !validTarget(m.Source, m.Target) {
		add(path, "source %q with target %q: %s", m.Source, m.Target, validTargets(m.Source))
		return
	}
	switch {
	case math.IsNaN(m.Value) || math.IsInf(m.Value, 0):
		add(path+".value", "%v: must be a finite number", m.Value)
	case m.Target == UtilizationTarget && (m.Value < 1 || m.Value != math.Trunc(m.Value) || m.Value > math.MaxInt32):
		add(path+".value", "%v: averageUtilization must be a whole percentage greater than 0", m.Value)
	case m.Value <= 0:
		add(path+".value", "%v: must be positive", m.Value)
	}
}

// validateRules checks one direction as validateScalingRules and
// validateScalingPolicy do.
func validateRules(r Rules, path string, add func(field, format string, args ...any)) {
	if r.StabilizationWindow < 0 || r.StabilizationWindow > maxStabilizationWindow {
		add(path+".stabilizationWindowSeconds", "%v: must be between 0 and %v", r.StabilizationWindow, maxStabilizationWindow)
	}
	switch r.SelectPolicy {
	case "", MaxChange, MinChange, Disabled:
	default:
		add(path+".selectPolicy", "%q: must be Max, Min or Disabled", r.SelectPolicy)
	}
	if len(r.Policies) == 0 {
		add(path+".policies", "must specify at least one policy")
	}
	for i, p := range r.Policies {
		pp := fmt.Sprintf("%s.policies[%d]", path, i)
		if p.Type != PodsPolicy && p.Type != PercentPolicy {
			add(pp+".type", "%q: must be Pods or Percent", p.Type)
		}
		if p.Value <= 0 {
			add(pp+".value", "%d: must be greater than zero", p.Value)
		}
		if p.Period <= 0 || p.Period > maxPeriod {
			add(pp+".periodSeconds", "%v: must be greater than zero and at most %v", p.Period, maxPeriod)
		}
	}
}

func validTarget(s SourceType, t TargetType) bool {
	switch s {
	case PodsSource:
		return t == AverageValueTarget
	case ResourceSource:
		return t == UtilizationTarget || t == AverageValueTarget
	case ObjectSource, ExternalSource:
		return t == ValueTarget || t == AverageValueTarget
	}
	return false
}

func validTargets(s SourceType) string {
	switch s {
	case PodsSource:
		return "a Pods metric takes an AverageValue target"
	case ResourceSource:
		return "a Resource metric takes a Utilization or AverageValue target"
	case ObjectSource, ExternalSource:
		return "an Object or External metric takes a Value or AverageValue target"
	}
	return "the source must be Pods, Object, External or Resource"
}

// clone returns a copy of s that shares no slice with it, so that a caller
// changing its Spec after New does not change the Autoscaler.
func (s Spec) clone() Spec {
	s.Metrics = append([]MetricSpec(nil), s.Metrics...)
	s.Behavior.ScaleUp.Policies = append([]Policy(nil), s.Behavior.ScaleUp.Policies...)
	s.Behavior.ScaleDown.Policies = append([]Policy(nil), s.Behavior.ScaleDown.Policies...)
	return s
}
