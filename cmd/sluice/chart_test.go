package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"sluice/charts"
	"sluice/shared/admin"
	"sluice/shared/settings"
)

// The chart's settings: which SLUICE_* variables values.schema.json lets
// the user set where (config, producer.config, consumer.config), which the
// chart sets itself, and which come from a Secret.

// secretSettings are the settings whose values are secrets: the chart takes
// them from a Secret, never from a ConfigMap.
var secretSettings = []string{"SLUICE_JWT_SECRET", "SLUICE_POLL_SECRET", "SLUICE_LLM_API_KEY",
	"SLUICE_LLM_FALLBACK_API_KEY", "SLUICE_CALLBACK_SECRET", "SLUICE_REDIS_PASSWORD"}

// chartSetSettings are set by the chart from other values (ports, the
// drain and grace periods, the partition count, the mounted key files), so
// that what depends on them (probes, Services, grace periods, the hook Job)
// cannot disagree.
var chartSetSettings = []string{"SLUICE_ADMIN_ADDR", "SLUICE_HTTP_ADDR", "SLUICE_DRAIN_DELAY",
	"SLUICE_SHUTDOWN_TIMEOUT", "SLUICE_DRAIN_TIMEOUT", "SLUICE_TOPIC_PARTITIONS", "SLUICE_JWT_PUBLIC_KEYS"}

// componentSettings are settings a component's own config may hold although
// both read them.
var componentSettings = []string{"SLUICE_LOG_LEVEL", "SLUICE_LOG_FORMAT"}

// chartSettings returns the settings values.schema.json allows in config
// (read by both services: one place, so they cannot disagree), in
// producer.config and in consumer.config (read by that one only, and the
// log settings).
func chartSettings() (common, producer, consumer []string) {
	p := producerFlags(defaultSettings(), io.Discard)
	c := consumerFlags(defaultSettings(), io.Discard)
	excluded := func(env string) bool {
		return slices.Contains(secretSettings, env) || slices.Contains(chartSetSettings, env)
	}
	p.VisitAll(func(f *flag.Flag) {
		env := settings.EnvName(f.Name)
		switch {
		case excluded(env):
		case c.Lookup(f.Name) != nil:
			common = append(common, env)
			if slices.Contains(componentSettings, env) {
				producer = append(producer, env)
				consumer = append(consumer, env)
			}
		default:
			producer = append(producer, env)
		}
	})
	c.VisitAll(func(f *flag.Flag) {
		if env := settings.EnvName(f.Name); !excluded(env) && p.Lookup(f.Name) == nil {
			consumer = append(consumer, env)
		}
	})
	slices.Sort(common)
	slices.Sort(producer)
	slices.Sort(consumer)
	return common, producer, consumer
}

const chartSchema = "../../charts/sluice/values.schema.json"

// TestChartSchemaSettings: the SLUICE_* keys values.schema.json accepts in
// config, producer.config and consumer.config are the settings of the
// commands that read them, so that a misspelt or unknown setting fails at
// `helm install` and every setting can be given. Run with -update to
// rewrite them.
func TestChartSchemaSettings(t *testing.T) {
	data, err := os.ReadFile(chartSchema)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("%s: %v", chartSchema, err)
	}
	defs := schema["definitions"].(map[string]any)
	common, producer, consumer := chartSettings()
	want := map[string][]string{"commonSettings": common, "producerSettings": producer, "consumerSettings": consumer}
	if *update {
		for def, names := range want {
			props := map[string]any{}
			for _, n := range names {
				props[n] = map[string]any{"type": "string"}
			}
			defs[def].(map[string]any)["properties"] = props
		}
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(schema); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(chartSchema, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	for def, names := range want {
		d := defs[def].(map[string]any)
		if d["additionalProperties"] != false {
			t.Errorf("definitions.%s accepts keys that are not settings (additionalProperties is not false)", def)
		}
		props, _ := d["properties"].(map[string]any)
		got := slices.Sorted(maps.Keys(props))
		if !slices.Equal(got, names) {
			t.Errorf("definitions.%s lists %v,\nthe flags say %v;\nrun go test ./cmd/sluice -run TestChartSchemaSettings -update", def, got, names)
		}
	}
}

// placeholderSecrets stand for the keys of a Secret made outside the chart:
// values its settings accept.
var placeholderSecrets = map[string]string{
	"SLUICE_JWT_SECRET":           "placeholder-jwt-secret-0123456789",
	"SLUICE_POLL_SECRET":          "placeholder-poll-secret-0123456789",
	"SLUICE_CALLBACK_SECRET":      "placeholder-callback-secret-0123456789",
	"SLUICE_LLM_API_KEY":          "placeholder",
	"SLUICE_LLM_FALLBACK_API_KEY": "placeholder",
	"SLUICE_REDIS_PASSWORD":       "placeholder",
}

// renderedChart is a rendered values set, decoded.
type renderedChart struct {
	objs       []charts.Object
	configMaps map[string]map[string]string
	secrets    map[string]map[string][]byte
}

func renderChart(t *testing.T, set string) renderedChart {
	t.Helper()
	objs, err := charts.RenderSet(set)
	if err != nil {
		t.Fatalf("render values set %s: %v", set, err)
	}
	r := renderedChart{objs: objs, configMaps: map[string]map[string]string{}, secrets: map[string]map[string][]byte{}}
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			var cm corev1.ConfigMap
			decodeObject(t, o, &cm)
			r.configMaps[cm.Name] = cm.Data
		case "Secret":
			var s corev1.Secret
			decodeObject(t, o, &s)
			r.secrets[s.Name] = s.Data
		}
	}
	return r
}

func decodeObject(t *testing.T, o charts.Object, into any) {
	t.Helper()
	if err := json.Unmarshal(o.JSON, into); err != nil {
		t.Fatalf("%s: %v", o.ID(), err)
	}
}

// env returns the environment a container of the chart gets, resolving
// envFrom ConfigMaps and secretKeyRefs (a Secret the chart does not create
// is taken to hold placeholderSecrets); from says where each came from.
func (r renderedChart) env(c corev1.Container) (env map[string]string, from map[string]string, problems []string) {
	env, from = map[string]string{}, map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			data, ok := r.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("envFrom names ConfigMap %s, which the chart does not create", ef.ConfigMapRef.Name))
			}
			for k, v := range data {
				env[ef.Prefix+k], from[ef.Prefix+k] = v, "ConfigMap "+ef.ConfigMapRef.Name
			}
		default:
			problems = append(problems, "envFrom other than a ConfigMap: a Secret's every key would become a variable")
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name], from[e.Name] = e.Value, "env"
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			from[e.Name] = "Secret " + ref.Name
			data, created := r.secrets[ref.Name]
			v, ok := data[ref.Key]
			switch {
			case ok:
				env[e.Name] = string(v)
			case created && (ref.Optional == nil || !*ref.Optional):
				problems = append(problems, fmt.Sprintf("%s: Secret %s has no key %s", e.Name, ref.Name, ref.Key))
			case !created:
				env[e.Name] = placeholderSecrets[ref.Key]
			}
		case e.ValueFrom.ResourceFieldRef != nil && e.Name == "GOMAXPROCS":
			// The CPU request rounded up: what it is on a node depends on
			// the pod's resources, which must set it.
			ref := e.ValueFrom.ResourceFieldRef
			from[e.Name] = "resourceFieldRef " + ref.Resource
			cpu, ok := c.Resources.Requests[corev1.ResourceCPU]
			switch {
			case ref.Resource != "requests.cpu" || ref.Divisor.String() != "1":
				problems = append(problems, fmt.Sprintf("GOMAXPROCS from %s with divisor %s, want requests.cpu with divisor 1: whole cores", ref.Resource, ref.Divisor.String()))
			case ref.ContainerName != "" && ref.ContainerName != c.Name:
				problems = append(problems, fmt.Sprintf("GOMAXPROCS from container %s's request, not its own", ref.ContainerName))
			case !ok:
				problems = append(problems, "GOMAXPROCS from a CPU request the container does not set: it would be the node's cores")
			default:
				env[e.Name] = strconv.FormatInt(cpu.MilliValue()/1000+min(cpu.MilliValue()%1000, 1), 10)
			}
		default:
			problems = append(problems, fmt.Sprintf("%s: valueFrom other than a secretKeyRef or GOMAXPROCS's resourceFieldRef", e.Name))
		}
	}
	return env, from, problems
}

// podTemplates returns the pod templates of the chart's workloads by
// object ID.
func (r renderedChart) podTemplates(t *testing.T) map[string]corev1.PodTemplateSpec {
	t.Helper()
	out := map[string]corev1.PodTemplateSpec{}
	for _, o := range r.objs {
		switch o.Kind {
		case "Deployment":
			var d appsv1.Deployment
			decodeObject(t, o, &d)
			out[o.ID()] = d.Spec.Template
		case "Job":
			var j batchv1.Job
			decodeObject(t, o, &j)
			out[o.ID()] = j.Spec.Template
		}
	}
	return out
}

// servedByAdmin reports whether the admin listener serves GET path.
func servedByAdmin(path string) bool {
	adm := admin.New(prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	rec := httptest.NewRecorder()
	adm.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed
}

// checkChart checks the containers of a rendered values set as
// checkCompose checks docker-compose.yml: every SLUICE_* variable is a
// setting of the subcommand the container runs, with a valid value, and the
// subcommand's settings pass its validation; no secret comes from a
// ConfigMap; the ports the settings listen on are the container's; probes
// and preStop hooks ask the admin listener for what it serves; the grace
// period covers the preStop hook and the drain after SIGTERM; the hook Job
// creates the topics the services use; the autoscalers select the
// consumers' topic, group and brokers.
func checkChart(t *testing.T, r renderedChart) (problems []string) {
	t.Helper()
	fail := func(id, format string, args ...any) {
		problems = append(problems, id+": "+fmt.Sprintf(format, args...))
	}
	for _, name := range slices.Sorted(maps.Keys(r.configMaps)) {
		for _, k := range secretSettings {
			if _, ok := r.configMaps[name][k]; ok {
				fail("ConfigMap "+name, "holds %s, a secret", k)
			}
		}
	}
	parsed := map[string]*config{} // by subcommand
	for id, pod := range r.podTemplates(t) {
		for _, c := range pod.Spec.Containers {
			cid := id + " container " + c.Name
			if len(c.Args) == 0 {
				fail(cid, "no args: the image would run its default")
				continue
			}
			if len(c.Command) > 0 {
				fail(cid, "command %v replaces the image's sluice entrypoint", c.Command)
			}
			env, from, envProblems := r.env(c)
			for _, p := range envProblems {
				fail(cid, "%s", p)
			}
			st, fs, validate, ok := serviceCommand(c.Args[0])
			if !ok || c.Args[0] == "mockllm" {
				fail(cid, "args %v: %q is not a sluice subcommand a pod runs", c.Args, c.Args[0])
				continue
			}
			for _, k := range slices.Sorted(maps.Keys(env)) {
				if !strings.HasPrefix(k, "SLUICE_") {
					continue
				}
				if fs.Lookup(settings.FlagName(k)) == nil {
					fail(cid, "%s (from %s) is not a setting of sluice %s: it would be ignored", k, from[k], c.Args[0])
				}
				if slices.Contains(secretSettings, k) && !strings.HasPrefix(from[k], "Secret ") {
					fail(cid, "%s is a secret but comes from %s", k, from[k])
				}
			}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			if err := settings.Parse(fs, c.Args[1:], lookup); err != nil {
				fail(cid, "settings: %v", err)
				continue
			}
			if err := validate(); err != nil {
				fail(cid, "settings: %v", err)
				continue
			}
			if err := st.log.validate(); err != nil {
				fail(cid, "settings: %v", err)
			}
			parsed[c.Args[0]] = st
			if c.Args[0] == "topics" {
				continue
			}
			if r.createdSecret() == "" {
				// With a Secret made outside the chart, every secret
				// setting of the command may be in it.
				for _, k := range secretSettings {
					if fs.Lookup(settings.FlagName(k)) != nil && !strings.HasPrefix(from[k], "Secret ") {
						fail(cid, "%s, a setting of sluice %s, is not taken from the existing Secret", k, c.Args[0])
					}
				}
			}
			checkPorts(cid, c, st, c.Args[0], fail)
			checkGrace(cid, pod.Spec, c, st, c.Args[0], fail)
		}
	}

	// The hook Job creates the topics the services use, as many
	// partitions as they would.
	if tp, ok := parsed["topics"]; ok {
		for _, sub := range []string{"producer", "consumer"} {
			if sv := parsed[sub]; sv != nil && (sv.bus.RequestsTopic != tp.bus.RequestsTopic || sv.bus.RepliesTopic != tp.bus.RepliesTopic ||
				sv.bus.DLQTopic != tp.bus.DLQTopic || sv.bus.CallbacksTopic != tp.bus.CallbacksTopic ||
				!slices.Equal(sv.bus.Brokers, tp.bus.Brokers) || sv.bus.Partitions != tp.bus.Partitions) {
				fail("Job topics", "creates %+v, sluice %s uses %+v", tp.bus, sub, sv.bus)
			}
		}
	}
	if cs := parsed["consumer"]; cs != nil {
		checkAutoscalers(t, r, cs, fail)
	}
	return problems
}

// createdSecret returns the name of the Secret of settings the chart
// creates, "" when it uses an existing one.
func (r renderedChart) createdSecret() string {
	for name := range r.secrets {
		if !strings.HasSuffix(name, "-jwt-keys") {
			return name
		}
	}
	return ""
}

func checkPorts(cid string, c corev1.Container, st *config, sub string, fail func(string, string, ...any)) {
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	listen := map[string]string{"admin": st.adminAddr}
	if sub == "producer" {
		listen["http"] = st.producer.Addr
	}
	for name, addr := range listen {
		_, port, _ := net.SplitHostPort(addr)
		if strconv.Itoa(int(ports[name])) != port {
			fail(cid, "listens for %s on %s, the container's port %q is %d", name, addr, name, ports[name])
		}
	}
	type get struct {
		what string
		h    *corev1.HTTPGetAction
	}
	var gets []get
	for what, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		if p == nil {
			fail(cid, "no %s", what)
			continue
		}
		gets = append(gets, get{what, p.HTTPGet})
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		fail(cid, "no preStop hook")
	} else {
		gets = append(gets, get{"preStop", c.Lifecycle.PreStop.HTTPGet})
	}
	for _, g := range gets {
		if g.h == nil {
			fail(cid, "%s is not an httpGet of the admin listener", g.what)
			continue
		}
		port := g.h.Port.IntVal
		if g.h.Port.StrVal != "" {
			port = ports[g.h.Port.StrVal]
		}
		_, adminPort, _ := net.SplitHostPort(st.adminAddr)
		if strconv.Itoa(int(port)) != adminPort {
			fail(cid, "%s asks port %s, the admin listener is on %s", g.what, g.h.Port.String(), adminPort)
		}
		if !servedByAdmin(g.h.Path) {
			fail(cid, "%s asks %s, which the admin listener does not serve", g.what, g.h.Path)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		fail(cid, "readinessProbe asks %s, not /readyz", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
		fail(cid, "livenessProbe asks %s, not /healthz", c.LivenessProbe.HTTPGet.Path)
	}
}

// graceMargin is what the grace period keeps beyond the stop's bounds.
const graceMargin = 5 * time.Second

// consumerFinish bounds what a consumer does after its drain: the final
// commit and leaving the group, up to 5 s each (consumer.finishDrain).
const consumerFinish = 10 * time.Second

// checkGrace: the grace period covers the preStop hook's bound and what the
// process does after SIGTERM. Consumer: the hook drains within
// SLUICE_DRAIN_TIMEOUT, commits and leaves the group, and SIGTERM then ends
// the process at once; should the hook fail at once, SIGTERM does the same
// work. Producer: the hook waits SLUICE_DRAIN_DELAY; after SIGTERM the
// requests in progress finish within SLUICE_SHUTDOWN_TIMEOUT.
func checkGrace(cid string, pod corev1.PodSpec, c corev1.Container, st *config, sub string, fail func(string, string, ...any)) {
	grace := 30 * time.Second // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	var preStop, afterTerm time.Duration
	switch sub {
	case "consumer":
		preStop = st.consumer.DrainTimeout + consumerFinish
	case "producer":
		preStop, afterTerm = st.producer.DrainDelay, st.producer.ShutdownTimeout
	}
	if need := preStop + afterTerm + graceMargin; grace < need {
		fail(cid, "terminationGracePeriodSeconds %v does not cover the preStop hook (%v), the stop after SIGTERM (%v) and %v: a drain would be cut off",
			grace, preStop, afterTerm, graceMargin)
	}
}

// checkAutoscalers: what the consumers' HPA and ScaledObject select is what
// the consumers use, and they ask for no more pods than partitions.
func checkAutoscalers(t *testing.T, r renderedChart, cs *config, fail func(string, string, ...any)) {
	t.Helper()
	for _, o := range r.objs {
		switch {
		case o.Kind == "HorizontalPodAutoscaler" && strings.HasSuffix(o.Name, "-consumer"):
			var h autoscalingv2.HorizontalPodAutoscaler
			decodeObject(t, o, &h)
			for _, m := range h.Spec.Metrics {
				if m.External == nil || m.External.Metric.Selector == nil {
					continue
				}
				if topic, ok := m.External.Metric.Selector.MatchLabels["topic"]; ok && topic != cs.bus.RequestsTopic && topic != cs.bus.BulkTopic {
					fail(o.ID(), "%s selects topic %q, the consumers read %q and %q", m.External.Metric.Name, topic, cs.bus.RequestsTopic, cs.bus.BulkTopic)
				}
			}
			if h.Spec.MaxReplicas > cs.bus.Partitions {
				fail(o.ID(), "maxReplicas %d exceeds the %d partitions", h.Spec.MaxReplicas, cs.bus.Partitions)
			}
		case o.Kind == "ScaledObject":
			var so struct {
				Spec struct {
					MaxReplicaCount int32 `json:"maxReplicaCount"`
					Triggers        []struct {
						Type     string            `json:"type"`
						Metadata map[string]string `json:"metadata"`
					} `json:"triggers"`
				} `json:"spec"`
			}
			decodeObject(t, o, &so)
			for _, tr := range so.Spec.Triggers {
				if tr.Type != "kafka" {
					continue
				}
				want := map[string]string{"bootstrapServers": strings.Join(cs.bus.Brokers, ","),
					"consumerGroup": cs.bus.Group, "topic": cs.bus.RequestsTopic}
				for k, v := range want {
					if tr.Metadata[k] != v {
						fail(o.ID(), "kafka trigger %s %q, the consumers use %q", k, tr.Metadata[k], v)
					}
				}
			}
			if so.Spec.MaxReplicaCount > cs.bus.Partitions {
				fail(o.ID(), "maxReplicaCount %d exceeds the %d partitions", so.Spec.MaxReplicaCount, cs.bus.Partitions)
			}
		}
	}
}

// TestChartContainers: for every values set, the chart's pods would start
// with settings their subcommands accept, probe what the admin listener
// serves and drain within their grace period.
func TestChartContainers(t *testing.T) {
	for _, set := range slices.Sorted(maps.Keys(charts.ValueSets)) {
		t.Run(set, func(t *testing.T) {
			r := renderChart(t, set)
			if n := len(r.podTemplates(t)); n < 2 {
				t.Fatalf("%d workloads rendered, want the producer and consumer at least", n)
			}
			for _, p := range checkChart(t, r) {
				t.Error(p)
			}
		})
	}
}

// TestChartCheckFindsMistakes: the check names each mistake of a broken
// rendering.
func TestChartCheckFindsMistakes(t *testing.T) {
	r := renderChart(t, "default")
	for i, o := range r.objs {
		switch o.ID() {
		case "ConfigMap/sluice-consumer":
			var cm corev1.ConfigMap
			decodeObject(t, o, &cm)
			cm.Data["SLUICE_REDIS_ADRR"] = "redis:6379"
			cm.Data["SLUICE_DRAIN_TIMEOUT"] = "40s"
			cm.Data["SLUICE_LLM_API_KEY"] = "sk-in-a-configmap"
			r.configMaps[cm.Name] = cm.Data
		case "ConfigMap/sluice-producer":
			r.configMaps[o.Name]["SLUICE_IN_FLIGHT"] = "512"
			r.configMaps[o.Name]["SLUICE_ADMIN_ADDR"] = ":9091"
		case "Deployment/sluice-producer":
			var d appsv1.Deployment
			decodeObject(t, o, &d)
			d.Spec.Template.Spec.Containers[0].LivenessProbe.HTTPGet.Path = "/health"
			r.objs[i] = reencode(t, o, &d)
		case "Job/sluice-topics":
			var j batchv1.Job
			decodeObject(t, o, &j)
			for k, e := range j.Spec.Template.Spec.Containers[0].Env {
				if e.Name == "SLUICE_TOPIC_PARTITIONS" {
					j.Spec.Template.Spec.Containers[0].Env[k].Value = "6"
				}
			}
			r.objs[i] = reencode(t, o, &j)
		}
	}
	problems := checkChart(t, r)
	for _, want := range []string{
		"Deployment/sluice-consumer container consumer: SLUICE_REDIS_ADRR (from ConfigMap sluice-consumer) is not a setting of sluice consumer",
		"ConfigMap sluice-consumer: holds SLUICE_LLM_API_KEY, a secret",
		"Deployment/sluice-consumer container consumer: terminationGracePeriodSeconds 40s does not cover the preStop hook (50s)",
		"Deployment/sluice-producer container producer: SLUICE_IN_FLIGHT (from ConfigMap sluice-producer) is not a setting of sluice producer",
		"Deployment/sluice-producer container producer: listens for admin on :9091, the container's port \"admin\" is 9090",
		"Deployment/sluice-producer container producer: livenessProbe asks /health, not /healthz",
		"Job topics: creates",
	} {
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.HasPrefix(p, want) }) {
			t.Errorf("no problem starting %q in\n%s", want, strings.Join(problems, "\n"))
		}
	}
}

func reencode(t *testing.T, o charts.Object, v any) charts.Object {
	t.Helper()
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	o.JSON = js
	return o
}

// TestChartGoMaxProcs: with goMaxProcsFromCPURequest, the producer's and
// the consumer's GOMAXPROCS is their CPU request rounded up (500m: 1);
// without it, Go's own.
func TestChartGoMaxProcs(t *testing.T) {
	for _, set := range slices.Sorted(maps.Keys(charts.ValueSets)) {
		t.Run(set, func(t *testing.T) {
			vals, err := charts.Values(set)
			if err != nil {
				t.Fatal(err)
			}
			on := true // the chart's default; the set may turn it off
			if v, ok := vals["goMaxProcsFromCPURequest"].(bool); ok {
				on = v
			}
			r := renderChart(t, set)
			seen := 0
			for id, pod := range r.podTemplates(t) {
				for _, c := range pod.Spec.Containers {
					if len(c.Args) == 0 || (c.Args[0] != "producer" && c.Args[0] != "consumer") {
						continue
					}
					seen++
					env, _, problems := r.env(c)
					for _, p := range problems {
						t.Errorf("%s: %s", id, p)
					}
					got, ok := env["GOMAXPROCS"]
					switch {
					case on && got != "1":
						t.Errorf("%s container %s: GOMAXPROCS %q (set %v), want 1: its 500m request rounded up", id, c.Name, got, ok)
					case !on && ok:
						t.Errorf("%s container %s: GOMAXPROCS %q with goMaxProcsFromCPURequest off", id, c.Name, got)
					}
				}
			}
			if seen < 2 {
				t.Errorf("%d producer and consumer containers rendered, want both", seen)
			}
		})
	}
}
