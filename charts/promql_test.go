package charts

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	"sigs.k8s.io/yaml"
)

// metric is one series name Sluice exports, from docs/metrics.md (which
// tests/metrics_doc_test.go keeps equal to the registries).
type metric struct {
	labels []string
	// values of a label, where the document enumerates them.
	values map[string][]string
}

// targetLabels are the labels Prometheus adds to every series it scrapes
// through the ServiceMonitor.
var targetLabels = []string{"job", "instance", "namespace", "pod", "service", "endpoint", "container"}

var (
	docRow      = regexp.MustCompile("^\\| `([a-z0-9_<>]+)` \\| (counter|gauge|histogram|summary) \\| ([^|]*) \\| (.*) \\|$")
	docRole     = regexp.MustCompile("`sluice_kafka_([a-z]+)_\\*`")
	backticked  = regexp.MustCompile("`([^`]+)`")
	enumeration = regexp.MustCompile("`([a-z_]+)`: (`[^.]*)")
)

// exportedMetrics returns every series name Sluice's processes export: the
// families of docs/metrics.md (a histogram x as x_bucket, x_sum, x_count;
// sluice_kafka_<role>_* for every role it names), the Go and process
// collectors.
func exportedMetrics(t *testing.T) map[string]metric {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]metric{}
	add := func(name, typ string, m metric) {
		switch typ {
		case "histogram", "summary":
			out[name+"_sum"], out[name+"_count"] = metric{labels: m.labels}, metric{labels: m.labels}
			extra := "le"
			if typ == "summary" {
				extra = "quantile"
			} else {
				name += "_bucket"
			}
			out[name] = metric{labels: append(slices.Clone(m.labels), extra), values: m.values}
		default:
			out[name] = m
		}
	}
	roles := map[string]bool{}
	for _, m := range docRole.FindAllStringSubmatch(string(data), -1) {
		roles[m[1]] = true
	}
	for line := range strings.Lines(string(data)) {
		row := docRow.FindStringSubmatch(strings.TrimSpace(line))
		if row == nil {
			continue
		}
		m := metric{values: map[string][]string{}}
		for _, l := range backticked.FindAllStringSubmatch(row[3], -1) {
			m.labels = append(m.labels, l[1])
		}
		for _, e := range enumeration.FindAllStringSubmatch(row[4], -1) {
			for _, v := range backticked.FindAllStringSubmatch(e[2], -1) {
				m.values[e[1]] = append(m.values[e[1]], v[1])
			}
		}
		if strings.Contains(row[1], "<role>") {
			for role := range roles {
				add(strings.Replace(row[1], "<role>", role, 1), row[2], m)
			}
			continue
		}
		add(row[1], row[2], m)
	}
	if len(out) < 50 || len(roles) < 2 {
		t.Fatalf("docs/metrics.md: read %d metrics of %d Kafka roles; has its table format changed?", len(out), len(roles))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		add(mf.GetName(), strings.ToLower(mf.GetType().String()), metric{})
	}
	return out
}

// promQL is an expression of the chart, with where it comes from.
type promQL struct {
	where, expr string
}

var (
	grafanaBuiltin = regexp.MustCompile(`\$__\w+`)
	grafanaVar     = regexp.MustCompile(`\$\{?\w+\}?`)
	adapterVar     = strings.NewReplacer("<<.LabelMatchers>>", `namespace="x"`, "<<.GroupBy>>", "namespace")
	labelValues    = regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)
)

// chartPromQL returns every PromQL expression objs hold: alert rules,
// KEDA Prometheus triggers, Prometheus Adapter rules (their templates
// filled in) and the Grafana dashboard's panels and variables (Grafana's
// variables filled in); and the external metrics the HPAs ask for.
func chartPromQL(t *testing.T, objs []Object) (exprs []promQL, external []autoscalingv2.MetricIdentifier) {
	t.Helper()
	for _, o := range objs {
		switch o.Kind {
		case "PrometheusRule":
			var pr struct {
				Spec struct {
					Groups []struct {
						Rules []struct{ Alert, Record, Expr string }
					}
				}
			}
			mustDecode(t, o, &pr)
			for _, g := range pr.Spec.Groups {
				for _, r := range g.Rules {
					exprs = append(exprs, promQL{o.ID() + " " + r.Alert + r.Record, r.Expr})
				}
			}
		case "ScaledObject":
			var so struct {
				Spec struct {
					Triggers []struct {
						Type     string
						Metadata map[string]string
					}
				}
			}
			mustDecode(t, o, &so)
			for i, tr := range so.Spec.Triggers {
				if tr.Type == "prometheus" {
					exprs = append(exprs, promQL{fmt.Sprintf("%s trigger %d", o.ID(), i), tr.Metadata["query"]})
				}
			}
		case "HorizontalPodAutoscaler":
			var h autoscalingv2.HorizontalPodAutoscaler
			mustDecode(t, o, &h)
			for _, m := range h.Spec.Metrics {
				if m.External != nil {
					external = append(external, m.External.Metric)
				}
			}
		case "ConfigMap":
			var cm struct{ Data map[string]string }
			mustDecode(t, o, &cm)
			if cfg, ok := cm.Data["config.yaml"]; ok && strings.HasSuffix(o.Name, "-prometheus-adapter") {
				for _, r := range adapterRules(t, cfg) {
					exprs = append(exprs, promQL{o.ID() + " seriesQuery", r.SeriesQuery})
					series := strings.SplitN(r.SeriesQuery, "{", 2)[0]
					exprs = append(exprs, promQL{o.ID() + " metricsQuery", strings.ReplaceAll(adapterVar.Replace(r.MetricsQuery), "<<.Series>>", series)})
				}
			}
			if dash, ok := cm.Data["sluice-dashboard.json"]; ok {
				for _, e := range dashboardPromQL(t, o.ID(), dash) {
					exprs = append(exprs, e)
				}
			}
		}
	}
	return exprs, external
}

// adapterRule is one rule of Prometheus Adapter's configuration.
type adapterRule struct {
	SeriesQuery string `json:"seriesQuery"`
	Resources   struct {
		Overrides map[string]struct {
			Resource string `json:"resource"`
		} `json:"overrides"`
	} `json:"resources"`
	Name struct {
		As string `json:"as"`
	} `json:"name"`
	MetricsQuery string `json:"metricsQuery"`
}

func adapterRules(t *testing.T, config string) []adapterRule {
	t.Helper()
	var cfg struct {
		ExternalRules []adapterRule `json:"externalRules"`
	}
	if err := yaml.UnmarshalStrict([]byte(config), &cfg); err != nil {
		t.Fatalf("Prometheus Adapter rules: %v", err)
	}
	return cfg.ExternalRules
}

// dashboardPromQL returns the expressions of a Grafana dashboard's panels
// and query variables.
func dashboardPromQL(t *testing.T, where, dash string) []promQL {
	t.Helper()
	var d struct {
		Panels     []any `json:"panels"`
		Templating struct {
			List []struct {
				Name, Type, Definition string
			}
		}
	}
	if err := json.Unmarshal([]byte(dash), &d); err != nil {
		t.Fatalf("%s: the dashboard is not JSON: %v", where, err)
	}
	var out []promQL
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch v := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(v)) {
				if s, ok := v[k].(string); ok && k == "expr" {
					out = append(out, promQL{where + " " + path, grafanaVar.ReplaceAllString(grafanaBuiltin.ReplaceAllString(s, "1m"), "x")})
					continue
				}
				title, _ := v["title"].(string)
				walk(v[k], strings.TrimSpace(path+" "+title))
			}
		case []any:
			for _, e := range v {
				walk(e, path)
			}
		}
	}
	walk(d.Panels, "panel")
	for _, v := range d.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			out = append(out, promQL{where + " variable " + v.Name, m[1]})
		}
	}
	return out
}

// checkPromQL parses expr and returns what is wrong with it: a syntax
// error, a metric Sluice does not export, a label the metric does not have,
// a label value the document does not list, a grouping by a label none of
// its metrics has.
func checkPromQL(expr string, exported map[string]metric) []string {
	e, err := parser.ParseExpr(expr)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	have := slices.Clone(targetLabels) // labels of the expression's metrics
	var groupings [][]string
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			names := []string{n.Name}
			var matchers []*labels.Matcher
			for _, m := range n.LabelMatchers {
				switch {
				case m.Name != labels.MetricName:
					matchers = append(matchers, m)
				case n.Name == "" && (m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp):
					names = append(names, strings.Split(m.Value, "|")...)
				}
			}
			for _, name := range names {
				if name == "" {
					continue
				}
				met, ok := exported[name]
				if !ok {
					problems = append(problems, fmt.Sprintf("%s is not a metric Sluice exports (docs/metrics.md)", name))
					continue
				}
				have = append(have, met.labels...)
				for _, m := range matchers {
					if !slices.Contains(met.labels, m.Name) && !slices.Contains(targetLabels, m.Name) {
						problems = append(problems, fmt.Sprintf("%s has no label %s", name, m.Name))
						continue
					}
					allowed, enumerated := met.values[m.Name]
					if !enumerated || m.Type == labels.MatchRegexp && !plainAlternation.MatchString(m.Value) || m.Type == labels.MatchNotRegexp {
						continue
					}
					for _, v := range strings.Split(m.Value, "|") {
						if !slices.Contains(allowed, v) {
							problems = append(problems, fmt.Sprintf("%s{%s}: %q is not one of its values %v", name, m.Name, v, allowed))
						}
					}
				}
			}
		case *parser.AggregateExpr:
			groupings = append(groupings, n.Grouping)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				groupings = append(groupings, n.VectorMatching.MatchingLabels, n.VectorMatching.Include)
			}
		}
		return nil
	})
	for _, g := range groupings {
		for _, l := range g {
			if !slices.Contains(have, l) {
				problems = append(problems, fmt.Sprintf("groups by %s, which none of its metrics has", l))
			}
		}
	}
	return problems
}

var plainAlternation = regexp.MustCompile(`^[a-z_]+(\|[a-z_]+)*$`)

// TestPromQL: every PromQL expression of every values set (alerts, KEDA
// triggers, adapter rules, the dashboard) parses with Prometheus' parser
// and names only metrics, labels and label values Sluice exports; every
// external metric an HPA asks for is served by an adapter rule, with
// labels its series have.
func TestPromQL(t *testing.T) {
	exported := exportedMetrics(t)
	hpaObjs, err := RenderSet("hpa")
	if err != nil {
		t.Fatal(err)
	}
	cfg, ok := Find(hpaObjs, "ConfigMap", ReleaseName+"-prometheus-adapter")
	if !ok {
		t.Fatal("values set hpa renders no Prometheus Adapter rules")
	}
	var cm struct{ Data map[string]string }
	mustDecode(t, cfg, &cm)
	served := map[string]adapterRule{}
	for _, r := range adapterRules(t, cm.Data["config.yaml"]) {
		served[r.Name.As] = r
		if r.Resources.Overrides["namespace"].Resource != "namespace" {
			t.Errorf("adapter rule %s is not namespaced: an HPA would see other namespaces' consumers", r.Name.As)
		}
	}
	for _, set := range slices.Sorted(maps.Keys(ValueSets)) {
		t.Run(set, func(t *testing.T) {
			objs, err := RenderSet(set)
			if err != nil {
				t.Fatal(err)
			}
			exprs, external := chartPromQL(t, objs)
			for _, e := range exprs {
				for _, p := range checkPromQL(e.expr, exported) {
					t.Errorf("%s: %s\n\t%s", e.where, p, e.expr)
				}
			}
			for _, m := range external {
				r, ok := served[m.Name]
				if !ok {
					t.Errorf("an HPA asks for external metric %s, which no adapter rule serves", m.Name)
					continue
				}
				series := strings.SplitN(r.SeriesQuery, "{", 2)[0]
				for l := range m.Selector.MatchLabels {
					if !slices.Contains(exported[series].labels, l) && !slices.Contains(targetLabels, l) {
						t.Errorf("an HPA selects %s by %s, which its series %s does not have", m.Name, l, series)
					}
				}
			}
			if set == "hpa" && len(exprs) < 40 {
				t.Errorf("found %d expressions in values set hpa; the alerts, adapter rules or dashboard went missing", len(exprs))
			}
		})
	}
}

// TestPromQLCheckFindsMistakes: the check names each kind of mistake.
func TestPromQLCheckFindsMistakes(t *testing.T) {
	exported := exportedMetrics(t)
	for _, tt := range []struct{ expr, want string }{
		{`sum(rate(sluice_http_requests_total{job="x"}[5m]`, "unclosed"},
		{`sum(rate(sluice_http_request_total[5m]))`, "sluice_http_request_total is not a metric Sluice exports"},
		{`sum(rate(sluice_llm_answers_total{outcome="llm"}[5m]))`, "sluice_llm_answers_total has no label outcome"},
		{`sum(rate(sluice_llm_answers_total{source="model"}[5m]))`, `"model" is not one of its values`},
		{`sum by (reason) (rate(sluice_consumer_records_total[5m]))`, "groups by reason"},
		{`histogram_quantile(0.99, sum by (le) (rate(sluice_consumer_end_to_end_seconds[5m])))`, "sluice_consumer_end_to_end_seconds is not a metric"},
		{`{__name__=~"sluice_producer_waiters|sluice_consumer_inflight"}`, "sluice_consumer_inflight is not a metric"},
	} {
		problems := checkPromQL(tt.expr, exported)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
			t.Errorf("%s: no problem naming %q in %q", tt.expr, tt.want, problems)
		}
	}
	if p := checkPromQL(`histogram_quantile(0.99, sum by (le) (rate(sluice_consumer_end_to_end_seconds_bucket{job="x"}[5m])))`, exported); len(p) > 0 {
		t.Errorf("a correct expression: %q", p)
	}
}
