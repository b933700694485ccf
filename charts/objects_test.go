package charts

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// builtinVersions are the API versions of the built-in kinds the chart
// creates: the stable ones of every Kubernetes the chart supports.
var builtinVersions = map[string]string{
	"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "ServiceAccount": "v1",
	"Deployment": "apps/v1", "Job": "batch/v1", "PodDisruptionBudget": "policy/v1",
	"HorizontalPodAutoscaler": "autoscaling/v2", "Ingress": "networking.k8s.io/v1",
}

// crdFiles are the CRDs of the custom kinds the chart creates, vendored
// from their projects' releases (testdata/crds/README.md).
var crdFiles = []string{"keda.sh_scaledobjects.yaml", "monitoring.coreos.com_servicemonitors.yaml",
	"monitoring.coreos.com_prometheusrules.yaml"}

// crdSchema validates objects of one served version of a CRD as the
// kube-apiserver does on create: unknown fields (which it would prune, and
// reject with strict field validation), the OpenAPI schema, and the CEL
// rules (x-kubernetes-validations).
type crdSchema struct {
	structural *structuralschema.Structural
	validator  validation.SchemaValidator
	cel        *cel.Validator
}

// loadCRDs returns the schemas of crdFiles by "apiVersion Kind".
func loadCRDs(t *testing.T) map[string]*crdSchema {
	t.Helper()
	out := map[string]*crdSchema{}
	for _, f := range crdFiles {
		data, err := os.ReadFile(filepath.Join("testdata", "crds", f))
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served || v.Schema == nil {
				continue
			}
			var internal apiext.JSONSchemaProps
			if err := apiextv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
				t.Fatalf("%s %s: %v", f, v.Name, err)
			}
			s, err := structuralschema.NewStructural(&internal)
			if err != nil {
				t.Fatalf("%s %s: %v", f, v.Name, err)
			}
			sv, _, err := validation.NewSchemaValidator(&internal)
			if err != nil {
				t.Fatalf("%s %s: %v", f, v.Name, err)
			}
			out[crd.Spec.Group+"/"+v.Name+" "+crd.Spec.Names.Kind] = &crdSchema{
				structural: s, validator: sv, cel: cel.NewValidator(s, true, celconfig.PerCallLimit)}
		}
	}
	return out
}

// check returns what the kube-apiserver would refuse in the object.
func (c *crdSchema) check(js []byte) []string {
	var obj map[string]any
	if err := utiljson.Unmarshal(js, &obj); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	pruneCopy := runtime.DeepCopyJSON(obj)
	for _, p := range pruning.PruneWithOptions(pruneCopy, c.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}) {
		problems = append(problems, "unknown field "+p)
	}
	for _, e := range validation.ValidateCustomResource(nil, obj, c.validator) {
		problems = append(problems, e.Error())
	}
	if c.cel != nil {
		errs, _ := c.cel.Validate(context.Background(), nil, c.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		for _, e := range errs {
			problems = append(problems, e.Error())
		}
	}
	return problems
}

// strictDecoder decodes built-in kinds as a strict kube-apiserver does:
// unknown and duplicate fields fail.
var strictDecoder = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Strict: true})

// checkObject returns what is wrong with o for a kube-apiserver: an
// unknown kind or version, a field the type does not have, a value of the
// wrong type, a field its CRD's schema refuses, or a malformed name, label
// or annotation.
func checkObject(o Object, crds map[string]*crdSchema) []string {
	var problems []string
	if crd, ok := crds[o.APIVersion+" "+o.Kind]; ok {
		problems = append(problems, crd.check(o.JSON)...)
	} else if want, ok := builtinVersions[o.Kind]; !ok || want != o.APIVersion {
		return []string{fmt.Sprintf("%s %s is not a kind and version the chart may create", o.APIVersion, o.Kind)}
	} else if _, _, err := strictDecoder.Decode(o.JSON, nil, nil); err != nil {
		return []string{err.Error()}
	}
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(o.JSON, &meta); err != nil {
		return append(problems, err.Error())
	}
	nameFn := apivalidation.NameIsDNSSubdomain
	if o.Kind == "Service" {
		nameFn = apivalidation.NameIsDNS1035Label
	}
	meta.Metadata.Namespace = o.Namespace
	for _, e := range apivalidation.ValidateObjectMeta(&meta.Metadata, true, nameFn, field.NewPath("metadata")) {
		problems = append(problems, e.Error())
	}
	return problems
}

// TestObjectsAreValid: every object of every values set decodes strictly
// into its Kubernetes API type, or passes its CRD's schema, with valid
// metadata.
func TestObjectsAreValid(t *testing.T) {
	crds := loadCRDs(t)
	for _, set := range slices.Sorted(maps.Keys(ValueSets)) {
		t.Run(set, func(t *testing.T) {
			objs, err := RenderSet(set)
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, o := range objs {
				if seen[o.ID()] {
					t.Errorf("%s rendered twice", o.ID())
				}
				seen[o.ID()] = true
				for _, p := range checkObject(o, crds) {
					t.Errorf("%s (%s): %s", o.ID(), o.Source, p)
				}
			}
		})
	}
}

// TestObjectCheckFindsMistakes: the checks refuse what a kube-apiserver
// refuses, for built-in and custom kinds, so that passing them means
// something.
func TestObjectCheckFindsMistakes(t *testing.T) {
	crds := loadCRDs(t)
	tests := []struct {
		name, yaml, want string
	}{
		{"UnknownField", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}`, `unknown field "spec.replica"`},
		{"WrongType", `
apiVersion: v1
kind: Service
metadata: {name: x}
spec: {ports: [{port: "eighty"}]}`, "spec.ports.port of type int32"},
		{"OldVersion", `
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: x}
spec: {maxReplicas: 2, scaleTargetRef: {kind: Deployment, name: x}}`, "not a kind and version"},
		{"BadName", `
apiVersion: v1
kind: ConfigMap
metadata: {name: Not_A_Name}`, "metadata.name"},
		{"ScaledObjectUnknownField", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec: {scaleTargetRef: {name: x}, maxReplicas: 3, triggers: [{type: kafka, metadata: {topic: t}}]}`, "unknown field spec.maxReplicas"},
		{"ScaledObjectMinAboveMax", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec: {scaleTargetRef: {name: x}, minReplicaCount: 5, maxReplicaCount: 3, triggers: [{type: kafka, metadata: {topic: t}}]}`, "minReplicaCount must be less than or equal to maxReplicaCount"},
		{"ScaledObjectNoTriggers", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec: {scaleTargetRef: {name: x}}`, "spec.triggers"},
		{"ServiceMonitorWrongType", `
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x}
spec: {selector: {}, endpoints: [{port: admin, interval: 15}]}`, "spec.endpoints[0].interval"},
		{"PrometheusRuleUnknownField", `
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: x}
spec: {groups: [{name: g, rules: [{alert: A, expression: up == 0}]}]}`, "unknown field spec.groups[0].rules[0].expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, ok, err := parseObject("test", tt.yaml)
			if err != nil || !ok {
				t.Fatalf("parse: %v", err)
			}
			problems := checkObject(o, crds)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("no problem naming %q in %q", tt.want, problems)
			}
		})
	}
}

// TestPodsAreHardened: every pod runs as non-root on a read-only root
// filesystem without capabilities or privilege escalation, under seccomp
// RuntimeDefault, without a service account token, with resource requests;
// the long-running ones spread over zones and nodes.
func TestPodsAreHardened(t *testing.T) {
	for _, set := range slices.Sorted(maps.Keys(ValueSets)) {
		t.Run(set, func(t *testing.T) {
			objs, err := RenderSet(set)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				var spec corev1.PodTemplateSpec
				switch o.Kind {
				case "Deployment":
					var d appsv1.Deployment
					mustDecode(t, o, &d)
					spec = d.Spec.Template
					if set != "off" && len(spec.Spec.TopologySpreadConstraints) == 0 {
						t.Errorf("%s: no topologySpreadConstraints", o.ID())
					}
					for _, c := range spec.Spec.TopologySpreadConstraints {
						if sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector); err != nil || !sel.Matches(labels.Set(spec.Labels)) {
							t.Errorf("%s: topology spread over %s does not select the pods", o.ID(), c.TopologyKey)
						}
					}
				case "Job":
					var j batchv1.Job
					mustDecode(t, o, &j)
					spec = j.Spec.Template
				default:
					continue
				}
				pod := spec.Spec
				if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
					psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: the pod's securityContext is not non-root with seccomp RuntimeDefault", o.ID())
				}
				if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
					t.Errorf("%s: the service account token is mounted", o.ID())
				}
				for _, c := range pod.Containers {
					sc := c.SecurityContext
					switch {
					case sc == nil:
						t.Errorf("%s container %s: no securityContext", o.ID(), c.Name)
					case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
						t.Errorf("%s container %s: the root filesystem is writable", o.ID(), c.Name)
					case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
						t.Errorf("%s container %s: privilege escalation allowed", o.ID(), c.Name)
					case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
						t.Errorf("%s container %s: capabilities not dropped", o.ID(), c.Name)
					}
					if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
						t.Errorf("%s container %s: no CPU or memory request", o.ID(), c.Name)
					}
					if c.Resources.Limits.Memory().IsZero() {
						t.Errorf("%s container %s: no memory limit", o.ID(), c.Name)
					}
				}
			}
		})
	}
}

// TestObjectsFindEachOther: labels, selectors and names agree: every
// object carries the app.kubernetes.io labels; Services, disruption
// budgets and the ServiceMonitor select the pods and ports they mean; the
// autoscalers and the Ingress name objects that exist.
func TestObjectsFindEachOther(t *testing.T) {
	for _, set := range slices.Sorted(maps.Keys(ValueSets)) {
		t.Run(set, func(t *testing.T) {
			objs, err := RenderSet(set)
			if err != nil {
				t.Fatal(err)
			}
			pods := map[string]corev1.PodTemplateSpec{} // Deployments' pod templates by name
			services := map[string]corev1.Service{}
			for _, o := range objs {
				var meta struct {
					Metadata metav1.ObjectMeta `json:"metadata"`
				}
				mustDecode(t, o, &meta)
				for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
					"app.kubernetes.io/version", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"} {
					if meta.Metadata.Labels[l] == "" {
						t.Errorf("%s: no label %s", o.ID(), l)
					}
				}
				switch o.Kind {
				case "Deployment":
					var d appsv1.Deployment
					mustDecode(t, o, &d)
					if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
						t.Errorf("%s: the selector does not select its pods", o.ID())
					}
					pods[d.Name] = d.Spec.Template
				case "Service":
					var s corev1.Service
					mustDecode(t, o, &s)
					services[s.Name] = s
				}
			}
			selects := func(id string, sel labels.Selector) (matched []string) {
				for name, p := range pods {
					if sel.Matches(labels.Set(p.Labels)) {
						matched = append(matched, name)
					}
				}
				if len(matched) != 1 {
					t.Errorf("%s selects the pods of %v, want one Deployment's", id, matched)
				}
				return matched
			}
			for _, o := range objs {
				switch o.Kind {
				case "Service":
					s := services[o.Name]
					for _, name := range selects(o.ID(), labels.SelectorFromSet(s.Spec.Selector)) {
						for _, sp := range s.Spec.Ports {
							if !slices.ContainsFunc(pods[name].Spec.Containers[0].Ports, func(cp corev1.ContainerPort) bool { return cp.Name == sp.TargetPort.StrVal }) {
								t.Errorf("%s: port %s targets %q, which Deployment %s's container does not have", o.ID(), sp.Name, sp.TargetPort.String(), name)
							}
						}
					}
				case "PodDisruptionBudget":
					var p policyv1.PodDisruptionBudget
					mustDecode(t, o, &p)
					if sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err != nil {
						t.Error(err)
					} else {
						selects(o.ID(), sel)
					}
				case "HorizontalPodAutoscaler":
					var h autoscalingv2.HorizontalPodAutoscaler
					mustDecode(t, o, &h)
					if _, ok := pods[h.Spec.ScaleTargetRef.Name]; !ok || h.Spec.ScaleTargetRef.Kind != "Deployment" {
						t.Errorf("%s scales %s %s, which the chart does not create", o.ID(), h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
					}
				case "ScaledObject":
					var so struct {
						Spec struct {
							ScaleTargetRef struct{ Kind, Name string } `json:"scaleTargetRef"`
						} `json:"spec"`
					}
					mustDecode(t, o, &so)
					if _, ok := pods[so.Spec.ScaleTargetRef.Name]; !ok || so.Spec.ScaleTargetRef.Kind != "Deployment" {
						t.Errorf("%s scales %+v, which the chart does not create", o.ID(), so.Spec.ScaleTargetRef)
					}
				case "ServiceMonitor":
					var sm struct {
						Spec struct {
							Selector  metav1.LabelSelector `json:"selector"`
							Endpoints []struct {
								Port string `json:"port"`
							} `json:"endpoints"`
						} `json:"spec"`
					}
					mustDecode(t, o, &sm)
					sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
					if err != nil {
						t.Fatal(err)
					}
					var scraped []string
					for name, s := range services {
						if sel.Matches(labels.Set(s.Labels)) {
							scraped = append(scraped, name)
							for _, ep := range sm.Spec.Endpoints {
								if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
									t.Errorf("%s scrapes port %s, which Service %s does not have", o.ID(), ep.Port, name)
								}
							}
						}
					}
					slices.Sort(scraped)
					if want := []string{namePrefix(objs) + "-consumer", namePrefix(objs) + "-producer"}; !slices.Equal(scraped, want) {
						t.Errorf("%s scrapes the Services %v, want %v", o.ID(), scraped, want)
					}
				case "Ingress":
					var ing struct {
						Spec struct {
							Rules []struct {
								HTTP struct {
									Paths []struct {
										Backend struct {
											Service struct {
												Name string
												Port struct{ Name string }
											}
										}
									}
								}
							}
						}
					}
					mustDecode(t, o, &ing)
					for _, r := range ing.Spec.Rules {
						for _, p := range r.HTTP.Paths {
							s, ok := services[p.Backend.Service.Name]
							if !ok || !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == p.Backend.Service.Port.Name }) {
								t.Errorf("%s routes to %+v, which is no Service port of the chart", o.ID(), p.Backend.Service)
							}
						}
					}
				}
			}
		})
	}
}

// namePrefix returns the prefix of the objects' names: the name of the
// producer's Deployment without -producer.
func namePrefix(objs []Object) string {
	for _, o := range objs {
		if o.Kind == "Deployment" && strings.HasSuffix(o.Name, "-producer") {
			return strings.TrimSuffix(o.Name, "-producer")
		}
	}
	return ""
}

func mustDecode(t *testing.T, o Object, into any) {
	t.Helper()
	if err := yaml.Unmarshal(o.JSON, into); err != nil {
		t.Fatalf("%s: %v", o.ID(), err)
	}
}
