package charts

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
)

var update = flag.Bool("update", false, "rewrite the chart README's values table and hpa/'s manifests from the chart")

// TestValuesSchemaRefuses: values.schema.json refuses unknown keys, wrong
// types and settings outside their place, naming the value, before
// anything is rendered.
func TestValuesSchemaRefuses(t *testing.T) {
	for _, tt := range []struct {
		name   string
		values string
		want   string
	}{
		{"UnknownKey", `replica: 3`, "additional properties 'replica' not allowed"},
		{"UnknownNestedKey", `consumer: {autoscaling: {maxReplica: 10}}`, "additional properties 'maxReplica' not allowed"},
		{"MisspeltSetting", `config: {SLUICE_REDIS_ADRR: "redis:6379"}`, "additional properties 'SLUICE_REDIS_ADRR' not allowed"},
		{"SettingOfTheOtherCommand", `producer: {config: {SLUICE_IN_FLIGHT: "512"}}`, "additional properties 'SLUICE_IN_FLIGHT' not allowed"},
		{"SecretInConfig", `config: {SLUICE_REDIS_PASSWORD: hunter2}`, "additional properties 'SLUICE_REDIS_PASSWORD' not allowed"},
		{"ChartSetSetting", `consumer: {config: {SLUICE_DRAIN_TIMEOUT: 40s}}`, "additional properties 'SLUICE_DRAIN_TIMEOUT' not allowed"},
		{"SettingNotAString", `consumer: {config: {SLUICE_IN_FLIGHT: 512}}`, "/consumer/config/SLUICE_IN_FLIGHT"},
		{"PortAsString", `ports: {admin: "9090"}`, "/ports/admin"},
		{"UnknownMode", `consumer: {autoscaling: {mode: auto}}`, "/consumer/autoscaling/mode"},
		{"TargetNotANumber", `consumer: {autoscaling: {hpa: {lagPerPod: lots}}}`, "/consumer/autoscaling/hpa/lagPerPod"},
		{"NoPartitions", `topics: {partitions: 0}`, "/topics/partitions"},
		{"ZeroReplicationFactor", `topics: {replicationFactor: 0}`, "/topics/replicationFactor"},
		{"BadDisruptionBudget", `consumer: {pdb: {maxUnavailable: half}}`, "/consumer/pdb/maxUnavailable"},
		{"LabelSelectorInSpread", `producer: {topologySpreadConstraints: [{topologyKey: zone, maxSkew: 1, whenUnsatisfiable: ScheduleAnyway, labelSelector: {}}]}`, "additional properties 'labelSelector' not allowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(withValues(t, tt.values))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// TestChartRefuses: values the schema cannot judge, which would install a
// Sluice that does not work, fail the install with a message that says
// what to set.
func TestChartRefuses(t *testing.T) {
	for _, tt := range []struct {
		name   string
		values string
		want   string
	}{
		{"NoBrokers", `config: {SLUICE_KAFKA_BROKERS: ""}`, "config.SLUICE_KAFKA_BROKERS is required"},
		{"NoRedis", `config: {SLUICE_REDIS_ADDR: ""}`, "config.SLUICE_REDIS_ADDR is required"},
		{"NoModel", `consumer: {config: {SLUICE_LLM_MODEL: ""}}`, "consumer.config.SLUICE_LLM_MODEL is required"},
		{"NoTokenKey", `secrets: {values: {SLUICE_JWT_SECRET: ""}}`, "the producer needs a token key"},
		{"KeyFilesWithoutSecret", `jwtPublicKeys: {files: [a.pem]}`, "jwtPublicKeys.existingSecret, which is empty"},
		{"ConsumerGraceTooShort", `consumer: {drainTimeoutSeconds: 30}`, "consumer.terminationGracePeriodSeconds 40 is shorter than the drain"},
		{"ProducerGraceTooShort", `producer: {terminationGracePeriodSeconds: 30}`, "producer.terminationGracePeriodSeconds 30 is shorter than"},
		{"MoreConsumersThanPartitions", `topics: {partitions: 12}`, "maxReplicas 300 exceeds topics.partitions 12"},
		{"MinAboveMax", `consumer: {autoscaling: {minReplicas: 20, maxReplicas: 10}}`, "minReplicas 20 exceeds maxReplicas 10"},
		{"HPAWithoutTarget", `consumer: {autoscaling: {hpa: {inFlightRatio: "", lagPerPod: ""}}}`, "needs a target"},
		{"KEDAWithoutTrigger", `consumer: {autoscaling: {mode: keda, keda: {kafka: {enabled: false}}}}`, "needs a trigger"},
		{"KEDAPrometheusWithoutServer", `consumer: {autoscaling: {mode: keda, keda: {prometheus: {enabled: true}}}}`, "serverAddress is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(withValues(t, tt.values))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// withValues returns the values set default with more merged over it.
func withValues(t *testing.T, more string) map[string]any {
	t.Helper()
	vals, err := Values("default")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(more), &m); err != nil {
		t.Fatal(err)
	}
	return mergeValues(vals, m)
}

// TestAutoscaling: the consumers scale as the seed design says, on their
// own signals, in the mode the values choose: up by doubling at most every
// 15 s, down by at most 10 % a minute after 5 minutes stable, between 2
// and 300 pods; the producer on CPU.
func TestAutoscaling(t *testing.T) {
	wantBehavior := autoscalingv2.HorizontalPodAutoscalerBehavior{
		ScaleUp: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr(int32(0)), SelectPolicy: ptr(autoscalingv2.MaxChangePolicySelect),
			Policies: []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15}}},
		ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr(int32(300)), SelectPolicy: ptr(autoscalingv2.MaxChangePolicySelect),
			Policies: []autoscalingv2.HPAScalingPolicy{{Type: autoscalingv2.PercentScalingPolicy, Value: 10, PeriodSeconds: 60}}},
	}
	behaviorJSON, _ := json.Marshal(wantBehavior)
	for _, set := range slices.Sorted(maps.Keys(ValueSets)) {
		t.Run(set, func(t *testing.T) {
			objs, err := RenderSet(set)
			if err != nil {
				t.Fatal(err)
			}
			vals, _ := Values(set)
			mode := "hpa"
			if m, ok := dig(vals, "consumer", "autoscaling", "mode").(string); ok {
				mode = m
			}
			consumer := ReleaseName + "-consumer"
			if set == "existing-secret" {
				consumer = "chat-consumer"
			}
			hpa, hasHPA := Find(objs, "HorizontalPodAutoscaler", consumer)
			so, hasSO := Find(objs, "ScaledObject", consumer)
			dep, _ := Find(objs, "Deployment", consumer)
			var d appsv1.Deployment
			mustDecode(t, dep, &d)
			switch mode {
			case "hpa":
				if !hasHPA || hasSO {
					t.Fatalf("mode hpa: HPA %v, ScaledObject %v", hasHPA, hasSO)
				}
				var h autoscalingv2.HorizontalPodAutoscaler
				mustDecode(t, hpa, &h)
				if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != 2 || h.Spec.MaxReplicas != 300 {
					t.Errorf("replicas %v..%d, want 2..300", h.Spec.MinReplicas, h.Spec.MaxReplicas)
				}
				if got, _ := json.Marshal(h.Spec.Behavior); !bytes.Equal(got, behaviorJSON) {
					t.Errorf("behavior %s,\nwant %s", got, behaviorJSON)
				}
				for _, m := range h.Spec.Metrics {
					if m.Type != autoscalingv2.ExternalMetricSourceType || !strings.HasPrefix(m.External.Metric.Name, "sluice_consumer_") {
						t.Errorf("the consumers scale on %+v, not on a consumer signal", m)
					}
				}
			case "keda":
				if hasHPA || !hasSO {
					t.Fatalf("mode keda: HPA %v, ScaledObject %v", hasHPA, hasSO)
				}
				var s struct {
					Spec struct {
						MinReplicaCount, MaxReplicaCount int32
						Advanced                         struct {
							HorizontalPodAutoscalerConfig struct {
								Behavior json.RawMessage
							}
						}
					}
				}
				mustDecode(t, so, &s)
				if s.Spec.MinReplicaCount != 2 || s.Spec.MaxReplicaCount != 300 {
					t.Errorf("replicas %d..%d, want 2..300", s.Spec.MinReplicaCount, s.Spec.MaxReplicaCount)
				}
				var b autoscalingv2.HorizontalPodAutoscalerBehavior
				if err := json.Unmarshal(s.Spec.Advanced.HorizontalPodAutoscalerConfig.Behavior, &b); err != nil {
					t.Fatal(err)
				}
				if got, _ := json.Marshal(b); !bytes.Equal(got, behaviorJSON) {
					t.Errorf("behavior %s,\nwant %s", got, behaviorJSON)
				}
			case "off":
				if hasHPA || hasSO {
					t.Fatalf("mode off: HPA %v, ScaledObject %v", hasHPA, hasSO)
				}
			}
			// A Deployment an autoscaler drives has no replicas, or each
			// upgrade would reset the count.
			if autoscaled := mode != "off"; autoscaled != (d.Spec.Replicas == nil) {
				t.Errorf("mode %s, Deployment replicas %v", mode, d.Spec.Replicas)
			}
			if p, ok := Find(objs, "HorizontalPodAutoscaler", strings.TrimSuffix(consumer, "-consumer")+"-producer"); ok {
				var h autoscalingv2.HorizontalPodAutoscaler
				mustDecode(t, p, &h)
				if len(h.Spec.Metrics) != 1 || h.Spec.Metrics[0].Resource == nil || h.Spec.Metrics[0].Resource.Name != "cpu" {
					t.Errorf("the producer scales on %+v, not on CPU", h.Spec.Metrics)
				}
			} else if set != "off" {
				t.Error("no HorizontalPodAutoscaler of the producer")
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestChecksumsRoll: a change of a component's settings or of the Secret
// changes the checksum annotation of the pods that read it, so that an
// upgrade restarts them; a change of the other's does not.
func TestChecksumsRoll(t *testing.T) {
	annotations := func(more string) map[string]map[string]string {
		objs, err := Render(withValues(t, more))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]map[string]string{}
		for _, o := range objs {
			if o.Kind == "Deployment" {
				var d appsv1.Deployment
				mustDecode(t, o, &d)
				out[d.Name] = d.Spec.Template.Annotations
			}
		}
		return out
	}
	base := annotations(`{}`)
	for _, tt := range []struct {
		values, annotation string
		changes            []string
	}{
		{`consumer: {config: {SLUICE_IN_FLIGHT: "512"}}`, "checksum/config", []string{"sluice-consumer"}},
		{`producer: {config: {SLUICE_USER_RATE: "60/m"}}`, "checksum/config", []string{"sluice-producer"}},
		{`config: {SLUICE_LOG_LEVEL: debug}`, "checksum/config", []string{"sluice-consumer", "sluice-producer"}},
		{`secrets: {values: {SLUICE_LLM_API_KEY: sk-rotated}}`, "checksum/secret", []string{"sluice-consumer", "sluice-producer"}},
	} {
		got := annotations(tt.values)
		for _, name := range []string{"sluice-consumer", "sluice-producer"} {
			if base[name][tt.annotation] == "" {
				t.Fatalf("%s has no %s annotation", name, tt.annotation)
			}
			if changed := got[name][tt.annotation] != base[name][tt.annotation]; changed != slices.Contains(tt.changes, name) {
				t.Errorf("%s: %s of %s changed: %v", tt.values, tt.annotation, name, changed)
			}
		}
	}
}

// TestGrafanaDashboard: the dashboard ConfigMap carries the sidecar's
// label and the chart's dashboard, queries the configured data source and
// needs no import step.
func TestGrafanaDashboard(t *testing.T) {
	objs, err := RenderSet("hpa")
	if err != nil {
		t.Fatal(err)
	}
	o, ok := Find(objs, "ConfigMap", ReleaseName+"-dashboard")
	if !ok {
		t.Fatal("no dashboard ConfigMap")
	}
	var cm struct {
		Metadata struct{ Labels map[string]string }
		Data     map[string]string
	}
	mustDecode(t, o, &cm)
	if cm.Metadata.Labels["grafana_dashboard"] != "1" {
		t.Errorf("labels %v: the Grafana sidecar looks for grafana_dashboard: \"1\"", cm.Metadata.Labels)
	}
	src, err := chartFiles.ReadFile("sluice/dashboards/sluice-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	dash := cm.Data["sluice-dashboard.json"]
	if want := strings.ReplaceAll(string(src), "${DS_PROMETHEUS}", "prometheus"); strings.TrimSpace(dash) != strings.TrimSpace(want) {
		t.Error("the ConfigMap's dashboard is not the chart's with the data source filled in")
	}
	if strings.Contains(dash, "${") {
		t.Error("the dashboard keeps an import variable, which the sidecar does not fill in")
	}
	var v any
	if err := json.Unmarshal([]byte(dash), &v); err != nil {
		t.Errorf("the dashboard is not JSON: %v", err)
	}
}

// TestHPAFiles: hpa/'s manifests are what the chart renders, not copies
// kept by hand. Run with -update to regenerate them.
func TestHPAFiles(t *testing.T) {
	files, err := HPAFiles()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "hpa")
	for name, want := range files {
		path := filepath.Join(dir, name)
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%v (generate: go test ./charts -run TestHPAFiles -update)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("hpa/%s differs from what the chart renders; go test ./charts -run TestHPAFiles -update", name)
		}
	}
	yamls, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, p := range yamls {
		if _, ok := files[filepath.Base(p)]; !ok {
			t.Errorf("%s is not generated from the chart: a copy nobody keeps up to date", p)
		}
	}
}

const chartReadme = "sluice/README.md"

// TestValuesTable: every value of values.yaml is documented by a comment
// (its own, or its parent's when none of the parent's keys has one), and
// the chart README's values table is generated from those comments, with
// each value's type from values.schema.json and its default. Run with
// -update to regenerate the table.
func TestValuesTable(t *testing.T) {
	data, err := chartFiles.ReadFile("sluice/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	schemaData, err := chartFiles.ReadFile("sluice/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(schemaData, &schema); err != nil {
		t.Fatal(err)
	}
	var rows []string
	var walk func(n *yaml.Node, path string, covered bool)
	walk = func(n *yaml.Node, path string, covered bool) {
		anyDocumented := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			anyDocumented = anyDocumented || n.Content[i].HeadComment != ""
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := strings.TrimPrefix(path+"."+key.Value, ".")
			doc := comment(key.HeadComment)
			switch {
			case doc != "":
				rows = append(rows, fmt.Sprintf("| `%s` | %s | %s | %s |", p, schemaType(schema, p), defaultOf(val), doc))
			case anyDocumented || !covered:
				t.Errorf("values.yaml: %s has no comment", p)
			}
			if val.Kind == yaml.MappingNode {
				walk(val, p, doc != "" || covered && !anyDocumented)
			}
		}
	}
	walk(doc.Content[0], "", false)
	table := "| Key | Type | Default | Description |\n|---|---|---|---|\n" + strings.Join(rows, "\n") + "\n"

	readme, err := os.ReadFile(chartReadme)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- values table: generated from values.yaml by go test ./charts -run TestValuesTable -update -->\n", "<!-- end of values table -->"
	before, rest, ok1 := strings.Cut(string(readme), begin)
	_, after, ok2 := strings.Cut(rest, end)
	if !ok1 || !ok2 {
		t.Fatalf("%s has no values table markers %q ... %q", chartReadme, begin, end)
	}
	want := before + begin + table + end + after
	if *update {
		if err := os.WriteFile(chartReadme, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(readme) != want {
		t.Errorf("the values table of %s differs from values.yaml; go test ./charts -run TestValuesTable -update", chartReadme)
	}
}

// comment returns a key's head comment as one line of Markdown.
func comment(head string) string {
	var words []string
	for line := range strings.Lines(head) {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if line != "" {
			words = append(words, line)
		}
	}
	return strings.ReplaceAll(strings.Join(words, " "), "|", `\|`)
}

// defaultOf renders a value's default for the table.
func defaultOf(n *yaml.Node) string {
	var v any
	if err := n.Decode(&v); err != nil {
		return "?"
	}
	if m, ok := v.(map[string]any); ok && len(m) > 0 && n.Content[0].HeadComment != "" {
		return "" // a section: its keys have rows of their own
	}
	js, _ := json.Marshal(v)
	if len(js) > 60 {
		return "see values.yaml"
	}
	return "`" + string(js) + "`"
}

// schemaType returns the type values.schema.json gives the value at path.
func schemaType(schema map[string]any, path string) string {
	defs, _ := schema["definitions"].(map[string]any)
	node := schema
	resolve := func(n map[string]any) map[string]any {
		for {
			ref, ok := n["$ref"].(string)
			if !ok {
				return n
			}
			n, _ = defs[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
		}
	}
	for _, k := range strings.Split(path, ".") {
		props, _ := resolve(node)["properties"].(map[string]any)
		next, ok := props[k].(map[string]any)
		if !ok {
			return "?"
		}
		node = next
	}
	node = resolve(node)
	switch typ := node["type"].(type) {
	case string:
		return typ
	case []any:
		var s []string
		for _, x := range typ {
			s = append(s, fmt.Sprint(x))
		}
		return strings.Join(s, " or ")
	}
	if alts, ok := node["oneOf"].([]any); ok {
		var s []string
		for _, a := range alts {
			a := resolve(a.(map[string]any))
			if typ, ok := a["type"].(string); ok {
				s = append(s, typ)
			} else if c, ok := a["const"]; ok {
				s = append(s, fmt.Sprint(c))
			}
		}
		return strings.Join(s, " or ")
	}
	if enum, ok := node["enum"].([]any); ok {
		var s []string
		for _, e := range enum {
			s = append(s, fmt.Sprintf("`%v`", e))
		}
		return strings.Join(s, ", ")
	}
	return "?"
}

// TestDocumentedInstalls: every `helm install` command of the README,
// operations.md and the chart's README installs: its values (--set,
// --set-string, -f of a file the same block writes) pass the schema and
// the chart's checks.
func TestDocumentedInstalls(t *testing.T) {
	found := 0
	for _, doc := range []string{"../README.md", "../docs/operations.md", "sluice/README.md"} {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, block := range shellBlocks(string(data)) {
			cmd, ok := helmInstall(block)
			if !ok {
				continue
			}
			found++
			args, err := shellWords(commandSubstitution.ReplaceAllString(cmd, "0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatalf("%s: %v\n%s", doc, err, cmd)
			}
			vals := map[string]any{}
			for i := 0; i < len(args); i++ {
				next := func() string {
					i++
					if i == len(args) {
						t.Fatalf("%s: %s needs a value", doc, args[i-1])
					}
					return args[i]
				}
				switch args[i] {
				case "-f", "--values":
					name := next()
					file, ok := heredoc(block, name)
					if !ok {
						t.Fatalf("%s: the block does not write %s", doc, name)
					}
					var v map[string]any
					if err := yaml.Unmarshal([]byte(file), &v); err != nil {
						t.Fatalf("%s: %s: %v", doc, name, err)
					}
					vals = mergeValues(vals, v)
				case "--set":
					if err := strvals.ParseInto(next(), vals); err != nil {
						t.Fatalf("%s: %v", doc, err)
					}
				case "--set-string":
					if err := strvals.ParseIntoString(next(), vals); err != nil {
						t.Fatalf("%s: %v", doc, err)
					}
				}
			}
			if _, err := Render(vals); err != nil {
				t.Errorf("%s: the documented install fails: %v\n%s", doc, err, cmd)
			}
		}
	}
	if found < 3 {
		t.Errorf("found %d helm install commands in the documents, want one each in the README, operations.md and the chart's README", found)
	}
}

var commandSubstitution = regexp.MustCompile(`\$\([^)]*\)`)

// shellBlocks returns the contents of a Markdown document's ```sh blocks.
func shellBlocks(doc string) []string {
	var blocks []string
	var cur *strings.Builder
	for line := range strings.Lines(doc) {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line)
		}
	}
	return blocks
}

// helmInstall returns the helm install command of a shell block, its
// continuation lines joined.
func helmInstall(block string) (string, bool) {
	i := strings.Index(block, "helm install ")
	if i < 0 {
		return "", false
	}
	var cmd strings.Builder
	for line := range strings.Lines(block[i:]) {
		line = strings.TrimRight(line, "\n")
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cmd.WriteString(s + " ")
			continue
		}
		cmd.WriteString(line)
		break
	}
	return cmd.String(), true
}

// heredoc returns what a block writes to name with cat > name <<'END'.
func heredoc(block, name string) (string, bool) {
	m := regexp.MustCompile(`(?m)^cat > ` + regexp.QuoteMeta(name) + ` <<'(\w+)'\n`).FindStringSubmatchIndex(block)
	if m == nil {
		return "", false
	}
	end := block[m[2]:m[3]]
	body, _, ok := strings.Cut(block[m[1]:], "\n"+end+"\n")
	return body, ok
}

// shellWords splits a command as a POSIX shell would, quotes and
// backslashes included (no expansions).
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words, inWord = append(words, w.String()), false
				w.Reset()
			}
			continue
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unclosed ' in %s", s)
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, fmt.Errorf("unclosed \" in %s", s)
			}
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
		default:
			w.WriteByte(c)
		}
		inWord = true
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}
