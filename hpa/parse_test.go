package hpa_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"sluice/hpa"
)

// hpa.yaml is the chart's HPA of the consumers: min 2, max 300, the three
// consumer signals of the interactive lane and the bulk lane's slow one as
// External metrics, up by 100 % per 15 s, down by 10 %
// per 60 s after a 300 s window.
func TestParseHPAChart(t *testing.T) {
	got := chartSpec(t)
	want := hpa.Spec{
		MinReplicas: 2,
		MaxReplicas: 300,
		Metrics: []hpa.MetricSpec{
			{Name: "sluice_consumer_in_flight_ratio", Source: hpa.ExternalSource, Target: hpa.ValueTarget, Value: 0.7},
			{Name: "sluice_consumer_group_lag", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 700},
			{Name: "sluice_consumer_oldest_unfinished_age_seconds", Source: hpa.ExternalSource, Target: hpa.ValueTarget, Value: 15},
			{Name: "sluice_consumer_group_lag_avg10m", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 50000},
		},
		Behavior: hpa.Behavior{
			ScaleUp: hpa.Rules{StabilizationWindow: 0, SelectPolicy: hpa.MaxChange, Policies: []hpa.Policy{
				{Type: hpa.PercentPolicy, Value: 100, Period: 15 * time.Second},
			}},
			ScaleDown: hpa.Rules{StabilizationWindow: 300 * time.Second, SelectPolicy: hpa.MaxChange, Policies: []hpa.Policy{
				{Type: hpa.PercentPolicy, Value: 10, Period: 60 * time.Second},
			}},
		},
		Tolerance: hpa.DefaultTolerance,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseHPA(hpa.yaml)\n got %+v\nwant %+v", got, want)
	}
	if _, err := hpa.New(got, nil); err != nil {
		t.Errorf("New(parsed spec): %v", err)
	}
}

const manifestHead = `apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
`

// The API server's defaults: minReplicas 1, CPU at 80 % when there is no
// metric, the default rules for a behavior left out and for each field left
// out of a direction (GenerateHPAScaleUpRules, GenerateHPAScaleDownRules).
func TestParseHPADefaults(t *testing.T) {
	t.Run("no behavior, no metrics", func(t *testing.T) {
		s, err := hpa.ParseHPA([]byte(manifestHead + "  maxReplicas: 10\n"))
		if err != nil {
			t.Fatal(err)
		}
		want := hpa.Spec{MinReplicas: 1, MaxReplicas: 10, Behavior: hpa.DefaultBehavior(),
			Metrics: []hpa.MetricSpec{{Name: "cpu", Source: hpa.ResourceSource, Target: hpa.UtilizationTarget, Value: 80}}}
		if !reflect.DeepEqual(s, want) {
			t.Errorf("got %+v\nwant %+v", s, want)
		}
	})
	t.Run("partial behavior", func(t *testing.T) {
		s, err := hpa.ParseHPA([]byte(manifestHead + `  maxReplicas: 10
  metrics:
  - type: Pods
    pods: {metric: {name: packets-per-second}, target: {type: AverageValue, averageValue: 1k}}
  - type: Object
    object:
      metric: {name: requests-per-second}
      describedObject: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: main-route}
      target: {type: Value, value: 10k}
  - type: Resource
    resource: {name: memory, target: {type: AverageValue, averageValue: 500Mi}}
  behavior:
    scaleDown:
      selectPolicy: Disabled
    scaleUp:
      stabilizationWindowSeconds: 60
`))
		if err != nil {
			t.Fatal(err)
		}
		def := hpa.DefaultBehavior()
		wantUp := def.ScaleUp
		wantUp.StabilizationWindow = time.Minute
		wantDown := def.ScaleDown
		wantDown.SelectPolicy = hpa.Disabled
		if !reflect.DeepEqual(s.Behavior, hpa.Behavior{ScaleUp: wantUp, ScaleDown: wantDown}) {
			t.Errorf("behavior %+v", s.Behavior)
		}
		wantMetrics := []hpa.MetricSpec{
			{Name: "packets-per-second", Source: hpa.PodsSource, Target: hpa.AverageValueTarget, Value: 1000},
			{Name: "requests-per-second", Source: hpa.ObjectSource, Target: hpa.ValueTarget, Value: 10000},
			{Name: "memory", Source: hpa.ResourceSource, Target: hpa.AverageValueTarget, Value: 500 * 1024 * 1024},
		}
		if !reflect.DeepEqual(s.Metrics, wantMetrics) {
			t.Errorf("metrics %+v", s.Metrics)
		}
	})
	t.Run("equal tolerances", func(t *testing.T) {
		s, err := hpa.ParseHPA([]byte(manifestHead + `  maxReplicas: 10
  behavior:
    scaleUp: {tolerance: "0.05"}
    scaleDown: {tolerance: 50m}
`))
		if err != nil {
			t.Fatal(err)
		}
		if s.Tolerance != 0.05 {
			t.Errorf("tolerance %v, want 0.05", s.Tolerance)
		}
	})
}

func TestParseHPAErrors(t *testing.T) {
	tests := []struct {
		name     string
		manifest string
		mention  string // a part of the error naming the problem
		invalid  bool   // wraps ErrInvalidSpec
	}{
		{"not YAML", "{", "parse", false},
		{"autoscaling/v1", strings.Replace(manifestHead, "autoscaling/v2", "autoscaling/v1", 1) + "  maxReplicas: 3\n", "autoscaling/v1", false},
		{"a Deployment", "apiVersion: apps/v1\nkind: Deployment\n", "Deployment", false},
		{"unknown field", manifestHead + "  maxReplicas: 3\n  maxReplica: 4\n", "maxReplica", false},
		{"container resource", manifestHead + `  maxReplicas: 3
  metrics:
  - type: ContainerResource
    containerResource: {name: cpu, container: app, target: {type: Utilization, averageUtilization: 60}}
`, "ContainerResource", false},
		{"external without target", manifestHead + `  maxReplicas: 3
  metrics:
  - type: External
    external: {metric: {name: lag}, target: {type: AverageValue}}
`, "spec.metrics[0]", false},
		{"max below min", manifestHead + "  minReplicas: 5\n  maxReplicas: 3\n", "spec.maxReplicas", true},
		{"min zero", manifestHead + "  minReplicas: 0\n  maxReplicas: 3\n", "spec.minReplicas", true},
		{"negative target", manifestHead + `  maxReplicas: 3
  metrics:
  - type: External
    external: {metric: {name: lag}, target: {type: Value, value: "-1"}}
`, "spec.metrics[0].value", true},
		{"no policies", manifestHead + `  maxReplicas: 3
  behavior:
    scaleUp: {policies: []}
`, "spec.behavior.scaleUp.policies", true},
		{"policy period too long", manifestHead + `  maxReplicas: 3
  behavior:
    scaleDown:
      policies: [{type: Pods, value: 1, periodSeconds: 1801}]
`, "spec.behavior.scaleDown.policies[0].periodSeconds", true},
		{"window too long", manifestHead + `  maxReplicas: 3
  behavior:
    scaleDown: {stabilizationWindowSeconds: 3601}
`, "spec.behavior.scaleDown.stabilizationWindowSeconds", true},
		{"differing tolerances", manifestHead + `  maxReplicas: 3
  behavior:
    scaleUp: {tolerance: "0.05"}
`, "tolerance", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := hpa.ParseHPA([]byte(tc.manifest))
			if err == nil {
				t.Fatalf("ParseHPA = %+v, want an error", s)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
			if tc.invalid != errors.Is(err, hpa.ErrInvalidSpec) {
				t.Errorf("error %q wraps ErrInvalidSpec: %v, want %v", err, !tc.invalid, tc.invalid)
			}
		})
	}
}

// New refuses what the API server's validation refuses, naming the field.
func TestNewValidation(t *testing.T) {
	valid := func() hpa.Spec {
		return hpa.Spec{MinReplicas: 2, MaxReplicas: 10, Behavior: hpa.DefaultBehavior(),
			Metrics: []hpa.MetricSpec{{Name: "lag", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 700}}}
	}
	if _, err := hpa.New(valid(), nil); err != nil {
		t.Fatalf("New(valid): %v", err)
	}
	tests := []struct {
		name    string
		change  func(*hpa.Spec)
		mention string
	}{
		{"min 0", func(s *hpa.Spec) { s.MinReplicas = 0 }, "spec.minReplicas"},
		{"max below min", func(s *hpa.Spec) { s.MaxReplicas = 1 }, "spec.maxReplicas"},
		{"no metrics", func(s *hpa.Spec) { s.Metrics = nil }, "spec.metrics"},
		{"no metric name", func(s *hpa.Spec) { s.Metrics[0].Name = "" }, "spec.metrics[0].name"},
		{"Pods with Value", func(s *hpa.Spec) { s.Metrics[0].Source = hpa.PodsSource; s.Metrics[0].Target = hpa.ValueTarget }, "spec.metrics[0]"},
		{"zero target", func(s *hpa.Spec) { s.Metrics[0].Value = 0 }, "spec.metrics[0].value"},
		{"no scale-up policy", func(s *hpa.Spec) { s.Behavior.ScaleUp.Policies = nil }, "spec.behavior.scaleUp.policies"},
		{"zero policy value", func(s *hpa.Spec) { s.Behavior.ScaleDown.Policies[0].Value = 0 }, "spec.behavior.scaleDown.policies[0].value"},
		{"zero period", func(s *hpa.Spec) { s.Behavior.ScaleUp.Policies[1].Period = 0 }, "spec.behavior.scaleUp.policies[1].periodSeconds"},
		{"unknown policy type", func(s *hpa.Spec) { s.Behavior.ScaleUp.Policies[0].Type = "Replicas" }, "spec.behavior.scaleUp.policies[0].type"},
		{"unknown select policy", func(s *hpa.Spec) { s.Behavior.ScaleDown.SelectPolicy = "Most" }, "spec.behavior.scaleDown.selectPolicy"},
		{"negative window", func(s *hpa.Spec) { s.Behavior.ScaleUp.StabilizationWindow = -time.Second }, "spec.behavior.scaleUp.stabilizationWindowSeconds"},
		{"negative tolerance", func(s *hpa.Spec) { s.Tolerance = -0.1 }, "spec.tolerance"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := valid()
			tc.change(&s)
			_, err := hpa.New(s, nil)
			if !errors.Is(err, hpa.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("New: error %v, want ErrInvalidSpec naming %s", err, tc.mention)
			}
		})
	}
}

// New keeps its own copy of the spec: a caller reusing its slices does not
// change the autoscaler.
func TestNewCopiesSpec(t *testing.T) {
	spec := hpa.Spec{MinReplicas: 1, MaxReplicas: 100, Behavior: hpa.DefaultBehavior(),
		Metrics: []hpa.MetricSpec{{Name: "lag", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 10}}}
	a, err := hpa.New(spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec.Metrics[0].Value = 1
	spec.Behavior.ScaleUp.Policies[0].Value = 1000
	d, err := a.Sync(1, []hpa.MetricValue{{Value: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Proposal != 10 || d.Desired != 5 {
		t.Errorf("decision %+v, want proposal 10 (target 10), desired 5 (+4 pods)", d)
	}
}

func TestSyncInputErrors(t *testing.T) {
	a, err := hpa.New(hpa.Spec{MinReplicas: 1, MaxReplicas: 10, Behavior: hpa.DefaultBehavior(),
		Metrics: []hpa.MetricSpec{{Name: "lag", Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: 10}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := a.Sync(3, nil); err == nil || d.Desired != 3 {
		t.Errorf("Sync without values = %+v, %v; want current and an error", d, err)
	}
	if d, err := a.Sync(-1, []hpa.MetricValue{{Value: 1}}); err == nil || d.Desired != -1 {
		t.Errorf("Sync(-1) = %+v, %v; want an error", d, err)
	}
}
