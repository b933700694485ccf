package tests

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/producer"
	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/store"
)

var updateDocs = flag.Bool("update", false, "rewrite docs/metrics.md from the metric registries")

const metricsDoc = "../docs/metrics.md"

// TestMetricsDoc builds a producer, a consumer (with its LLM client and
// callback deliverer) and the mock LLM on registries of their own, lists
// every metric they register, and compares the list with docs/metrics.md:
// the one list of Sluice's metrics, which cannot drift from the code. Run
// with -update to rewrite the file.
func TestMetricsDoc(t *testing.T) {
	sections := []metricsSection{
		producerMetrics(t),
		consumerMetrics(t),
		mockMetrics(t),
	}
	checkLabelValues(t, sections)
	got := renderMetricsDoc(sections)
	if *updateDocs {
		if err := os.WriteFile(metricsDoc, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatalf("read %s (run go test ./tests -run TestMetricsDoc -update to create it): %v", metricsDoc, err)
	}
	if string(want) != got {
		t.Errorf("docs/metrics.md does not match the registered metrics; run go test ./tests -run TestMetricsDoc -update\n%s",
			firstDifference(string(want), got))
	}
}

// metricFamily is one registered metric.
type metricFamily struct {
	name, typ, help string
	labels          []string
	// zeroed: its labelled series are exported before their first event.
	zeroed bool
	// only says when the metric is registered at all, if not always.
	only string
}

// metricsSection is the metrics of one component.
type metricsSection struct {
	title, intro string
	families     []metricFamily
}

// descRecorder registers on a fresh registry and remembers the description
// of every collector, so that vectors without a series yet are listed too
// (Gather omits them).
type descRecorder struct {
	reg *prometheus.Registry

	mu    sync.Mutex
	descs []recordedDesc
}

type recordedDesc struct {
	desc *prometheus.Desc
	col  prometheus.Collector
}

var _ prometheus.Registerer = (*descRecorder)(nil)

func newDescRecorder() *descRecorder { return &descRecorder{reg: prometheus.NewRegistry()} }

func (r *descRecorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		r.descs = append(r.descs, recordedDesc{d, c})
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *descRecorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// mark returns how many descriptions are recorded so far.
func (r *descRecorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.descs)
}

// present returns the names of the families Gather exports now, with
// their types.
func (r *descRecorder) present(t *testing.T) map[string]string {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]string{}
	for _, mf := range mfs {
		out[mf.GetName()] = strings.ToLower(mf.GetType().String())
	}
	return out
}

// families returns the families of the descriptions recorded from index
// from on. zero lists the families exported before any event.
func (r *descRecorder) families(t *testing.T, from int, zero map[string]string) []metricFamily {
	t.Helper()
	now := r.present(t)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []metricFamily
	for _, rd := range r.descs[from:] {
		if err := rd.desc.Err(); err != nil {
			t.Fatalf("metric description %s: %v", rd.desc, err)
		}
		name, help, labels, err := parseDesc(rd.desc.String())
		if err != nil {
			t.Fatalf("%v (has client_golang's Desc.String changed?)", err)
		}
		typ := now[name]
		if typ == "" {
			typ = vecType(rd.col)
		}
		if typ == "" {
			t.Fatalf("metric %s: cannot tell its type (a collector that exports nothing yet?)", name)
		}
		_, z := zero[name]
		out = append(out, metricFamily{name: name, typ: typ, help: help, labels: labels, zeroed: z && len(labels) > 0})
	}
	return out
}

// vecType is the type of a vector, which Gather does not report before its
// first series.
func vecType(c prometheus.Collector) string {
	switch c.(type) {
	case *prometheus.CounterVec:
		return "counter"
	case *prometheus.GaugeVec:
		return "gauge"
	case *prometheus.HistogramVec:
		return "histogram"
	case *prometheus.SummaryVec:
		return "summary"
	}
	return ""
}

// parseDesc reads the name, help and label names out of Desc.String, the
// only way client_golang exposes them:
// Desc{fqName: "…", help: "…", unit: "…", constLabels: {…}, variableLabels: {…}}.
func parseDesc(s string) (name, help string, labels []string, err error) {
	bad := fmt.Errorf("unexpected metric description %s", s)
	quoted := func(rest, prefix string) (string, string, bool) {
		rest, ok := strings.CutPrefix(rest, prefix)
		if !ok {
			return "", "", false
		}
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return "", "", false
		}
		v, err := strconv.Unquote(q)
		return v, rest[len(q):], err == nil
	}
	rest, ok := s, true
	if name, rest, ok = quoted(rest, "Desc{fqName: "); !ok {
		return "", "", nil, bad
	}
	if help, rest, ok = quoted(rest, ", help: "); !ok {
		return "", "", nil, bad
	}
	if _, rest, ok = quoted(rest, ", unit: "); !ok {
		return "", "", nil, bad
	}
	consts, vars, ok := strings.Cut(strings.TrimPrefix(rest, ", constLabels: {"), "}, variableLabels: {")
	if !ok || consts != "" {
		// No Sluice metric has constant labels; a value could hold "}".
		return "", "", nil, bad
	}
	vars, ok = strings.CutSuffix(vars, "}}")
	if !ok {
		return "", "", nil, bad
	}
	for l := range strings.SplitSeq(vars, ",") {
		if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
			labels = append(labels, l)
		}
	}
	return name, help, labels, nil
}

// metricsBackend is what the services need to start: an embedded broker
// and a miniredis (the doc needs no real Redis, and miniredis leaves the
// shared one alone). It returns the Kafka settings and the Redis address.
func metricsBackend(t *testing.T) (bus.Config, string) {
	t.Helper()
	cfg := bus.DefaultConfig()
	cfg.Partitions = 2
	cfg.Brokers = []string{stacktest.Broker(t, cfg, false).Addr()}
	m, _ := stacktest.Miniredis(t)
	return cfg, m.Addr()
}

// names returns the names of fs.
func names(fs []metricFamily) map[string]bool {
	out := map[string]bool{}
	for _, f := range fs {
		out[f.name] = true
	}
	return out
}

// openProducer builds a producer with producer.Open, as the binary does,
// registering on rec; it is closed when the test ends.
func openProducer(t *testing.T, cfg producer.Config, busCfg bus.Config, redisAddr string, rec *descRecorder) *producer.Server {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // ends the readiness checks
	p, err := producer.Open(ctx, producer.Settings{
		Producer: cfg, Bus: busCfg, Redis: store.ClientConfig{Addrs: []string{redisAddr}},
		Store: store.DefaultConfig(), Auth: auth.Config{Secret: "sluice-metrics-doc-secret"},
	}, log, rec, admin.New(rec.reg, log))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func producerMetrics(t *testing.T) metricsSection {
	t.Helper()
	busCfg, redisAddr := metricsBackend(t)

	// What the producer registers without hot answers, to tell which
	// metrics depend on them.
	cold := producer.DefaultConfig()
	cold.HotTTL = 0
	recCold := newDescRecorder()
	pc := openProducer(t, cold, busCfg, redisAddr, recCold)
	always := names(recCold.families(t, 0, nil))
	pc.Close() // unregisters its Kafka client's metrics

	cfg := producer.DefaultConfig()
	cfg.ReplyPartitions = []int32{0} // no reply group to join: ready at once
	cfg.ShutdownTimeout = 5 * time.Second
	rec := newDescRecorder()
	p := openProducer(t, cfg, busCfg, redisAddr, rec)
	zero := rec.present(t)
	atOpen := rec.mark()
	// The reply reader's client is made by Run.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("producer run: %v", err)
		}
		p.Close()
	}()
	for !p.Ready() {
		select {
		case err := <-done:
			done <- err // for the deferred stop
			t.Fatalf("producer stopped at start: %v", err)
		case <-time.After(10 * time.Millisecond): // readiness has no event to await
		}
	}
	fs := rec.families(t, 0, zero)
	for i := range fs[:atOpen] {
		if !always[fs[i].name] {
			fs[i].only = "`SLUICE_HOT_TTL` > 0, the default"
		}
	}
	return metricsSection{
		title:    "Producer",
		intro:    "`sluice producer`, the HTTP ingress.",
		families: fs,
	}
}

// openConsumer builds a consumer with consumer.Open, as the binary does,
// registering on rec, and returns the families it registered. It does not
// run it.
func openConsumer(t *testing.T, busCfg bus.Config, redisAddr string, cb callback.Config, rec *descRecorder) []metricFamily {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the readiness checks
	lcfg := llm.DefaultConfig()
	lcfg.BaseURL = "http://127.0.0.1:1/v1" // never called
	c, err := consumer.Open(ctx, consumer.Settings{
		Consumer: consumer.DefaultConfig(), Bus: busCfg, Redis: store.ClientConfig{Addrs: []string{redisAddr}},
		Store: store.DefaultConfig(), LLM: lcfg, Callbacks: cb,
	}, log, rec, admin.New(rec.reg, log))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // unregisters its Kafka clients' metrics
	return rec.families(t, 0, rec.present(t))
}

func consumerMetrics(t *testing.T) metricsSection {
	t.Helper()
	busCfg, redisAddr := metricsBackend(t)
	without := names(openConsumer(t, busCfg, redisAddr, callback.DefaultConfig(), newDescRecorder()))
	cb := callback.DefaultConfig()
	cb.Policy.AllowedHosts = []string{"example.com"}
	cb.Secret = "sluice-metrics-doc-callback-secret"
	fs := openConsumer(t, busCfg, redisAddr, cb, newDescRecorder())
	for i := range fs {
		if !without[fs[i].name] {
			fs[i].only = "`SLUICE_CALLBACK_HOSTS` set, when callbacks are delivered"
		}
	}
	return metricsSection{
		title:    "Consumer",
		intro:    "`sluice consumer`, the worker: request processing, the LLM client with its fallbacks, personal-data masking and callback delivery.",
		families: fs,
	}
}

func mockMetrics(t *testing.T) metricsSection {
	t.Helper()
	rec := newDescRecorder()
	if _, err := mockllm.New(mockllm.DefaultConfig(), slog.New(slog.DiscardHandler), rec); err != nil {
		t.Fatal(err)
	}
	return metricsSection{
		title:    "Mock LLM",
		intro:    "The mock LLM when `sluice dev` runs it (`sluice mockllm` on its own has no metrics endpoint).",
		families: rec.families(t, 0, rec.present(t)),
	}
}

// kafkaRoles says what each Kafka client, sluice_kafka_<role>_*, does.
var kafkaRoles = map[string]string{
	"producer":  "the producer's: puts requests on `chat.requests`",
	"replies":   "the producer's: reads its share of `chat.replies`",
	"consumer":  "the consumer's: reads `chat.requests`, produces replies, dead letters and callback jobs",
	"callbacks": "the consumer's callback deliverer: reads `chat.callbacks`",
}

// lanes describes the lane label.
const lanes = "`interactive` (from `chat.requests`), `bulk` (from `chat.requests.bulk`)"

// lagTopics describes the topic label of the group's lag.
const lagTopics = "a lane's requests topic: `chat.requests` (interactive), `chat.requests.bulk` (bulk)"

// labelValues says what the values of a metric's labels are, where its help
// text does not. Checked: the metric and the label must be registered.
var labelValues = map[string]map[string]string{
	"sluice_http_requests_total": {
		"route": "the route pattern, e.g. `/v1/chat/:dialog_id/:request_id`, or `unmatched`",
		"code":  "the HTTP status",
	},
	"sluice_http_request_duration_seconds": {"route": "as in `sluice_http_requests_total`"},
	"sluice_producer_answered_total":       {"how": "`answered`, `timed_out`"},
	"sluice_producer_replies_total":        {"outcome": "`woke` a waiter, `no_waiter`, `invalid`"},
	"sluice_producer_store_errors_total":   {"op": "`mark_queued`, `poll`, `history`, `delete`, `hot_answer`, `stream` (a failed read of an answer stream, SSE or WebSocket, read again after a pause)"},
	"sluice_producer_rejected_total": {
		"reason": "`rate_user`, `rate_tenant`, `rate_global` (429); `queue_wait`, `backlog`, `draining`, `kafka` (503)",
	},
	"sluice_consumer_records_total": {
		"outcome": "`done`, `expired`, `duplicate` (a redelivery answered from the store), `dead_letter`, `abandoned` (left uncommitted at drain or revoke)",
	},
	"sluice_consumer_retries_total":                 {"step": "`redis_load`, `redis_complete`, `kafka_reply`, `kafka_dlq`, `kafka_callback`"},
	"sluice_consumer_group_lag":                     {"topic": lagTopics},
	"sluice_consumer_oldest_unfinished_age_seconds": {"topic": lagTopics},
	"sluice_consumer_end_to_end_seconds":            {"lane": lanes},
	"sluice_consumer_queue_wait_seconds":            {"lane": lanes},
	"sluice_consumer_callbacks_total": {
		"outcome": "`handed_over` (by the answering path), `delivered`, `failed`, `invalid` (an undecodable record; by the callback group)",
	},
	"sluice_llm_calls_total": {
		"endpoint": "`primary`, `secondary`",
		"outcome":  "`ok`, `error` (5xx and other HTTP errors, connection errors), `timeout`, `rate_limited` (429), `malformed` (undecodable or empty), `bad_request` (400, 413, 422), `canceled` (the consumer stopped)",
	},
	"sluice_llm_call_duration_seconds": {"outcome": "as in `sluice_llm_calls_total`"},
	"sluice_llm_limited_total": {
		"limit":   "`concurrency`, `rpm`, `tpm`, `priority` (a bulk request that gave way to interactive ones waiting for quota until its deadline)",
		"outcome": "`waited`, `fallback` (the next tier answered without a call)",
	},
	"sluice_llm_answers_total":         {"lane": lanes, "source": "`llm`, `fallback_model`, `faq`, `canned`"},
	"sluice_pii_masked_total":          {"kind": "`phone`, `id_card`, `bank_card`, `email`"},
	"sluice_callback_deliveries_total": {"outcome": "`delivered`, `gave_up`, `refused` (URL not allowed, or its host does not resolve, at delivery time)"},
	"sluice_callback_attempts_total":   {"result": "`ok` (2xx), `http_error`, `network_error`"},
	"sluice_mockllm_requests_total":    {"outcome": "`ok`, `slow`, `error`, `rate_limited`, `malformed`, `bad_request`"},
}

// checkLabelValues fails for a label description of a metric or label that
// is not registered, and for a Kafka client role nobody describes.
func checkLabelValues(t *testing.T, sections []metricsSection) {
	t.Helper()
	labels := map[string][]string{}
	roles := map[string]bool{}
	for _, s := range sections {
		for _, f := range s.families {
			labels[f.name] = f.labels
			if role, _, ok := kafkaFamily(f.name); ok {
				roles[role] = true
			}
		}
	}
	for name, ls := range labelValues {
		have, ok := labels[name]
		if !ok {
			t.Errorf("labelValues describes %s, which is not registered", name)
		}
		for l := range ls {
			if ok && !slices.Contains(have, l) {
				t.Errorf("labelValues describes label %s of %s, which has labels %v", l, name, have)
			}
		}
	}
	for r := range roles {
		if kafkaRoles[r] == "" {
			t.Errorf("Kafka client role %q is not described in kafkaRoles", r)
		}
	}
	for r := range kafkaRoles {
		if !roles[r] {
			t.Errorf("kafkaRoles describes %q, which no client registers", r)
		}
	}
}

var kafkaName = regexp.MustCompile(`^sluice_kafka_([a-z]+)_(.+)$`)

// kafkaFamily splits sluice_kafka_<role>_<metric>.
func kafkaFamily(name string) (role, metric string, ok bool) {
	m := kafkaName.FindStringSubmatch(name)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

func renderMetricsDoc(sections []metricsSection) string {
	var b strings.Builder
	b.WriteString(`# Metrics

<!-- Generated by tests/metrics_doc_test.go from the metrics the code
registers; do not edit. Regenerate: go test ./tests -run TestMetricsDoc -update -->

Every metric Sluice registers, as Prometheus serves them on the admin
listener's ` + "`/metrics`" + ` (` + "`SLUICE_ADMIN_ADDR`" + `). Every process also exports the
Go runtime (` + "`go_*`" + `) and process (` + "`process_*`" + `) collectors; ` + "`sluice dev`" + `
exports the union of the parts it runs. A histogram ` + "`x`" + ` is served as
` + "`x_bucket`" + `, ` + "`x_sum`" + ` and ` + "`x_count`" + `. A metric with labels has no series
until its first event, unless marked *from start* (every label value is
exported from the start, counters at 0). What to alert on:
[operations.md](operations.md#metrics).
`)
	kafka := map[string]*kafkaMetricRow{}
	for _, s := range sections {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", s.title, s.intro)
		b.WriteString("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n")
		var roles []string
		roleOnly := map[string]string{}
		fs := slices.Clone(s.families)
		sort.Slice(fs, func(i, j int) bool { return fs[i].name < fs[j].name })
		for _, f := range fs {
			if role, metric, ok := kafkaFamily(f.name); ok {
				if !slices.Contains(roles, role) {
					roles = append(roles, role)
				}
				roleOnly[role] = f.only
				row := kafka[metric]
				if row == nil {
					row = &kafkaMetricRow{metricFamily: f}
					kafka[metric] = row
				}
				if !slices.Contains(row.roles, role) {
					row.roles = append(row.roles, role)
				}
				continue
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.name, f.typ, labelCell(f), meaningCell(f))
		}
		if len(roles) > 0 {
			b.WriteString("\nKafka clients (see [below](#kafka-clients)): ")
			for i, r := range roles {
				if i > 0 {
					b.WriteString("; ")
				}
				fmt.Fprintf(&b, "`sluice_kafka_%s_*`, %s", r, kafkaRoles[r])
				if roleOnly[r] != "" {
					fmt.Fprintf(&b, " (only with %s)", roleOnly[r])
				}
			}
			b.WriteString(".\n")
		}
	}
	if len(kafka) > 0 {
		b.WriteString(`
## Kafka clients

franz-go's kprom plugin, one set per client: ` + "`sluice_kafka_<role>_<metric>`" + `;
and ` + "`requests_total`" + `, Sluice's own count of the requests each client writes.
Series by ` + "`node_id`" + ` (broker) and ` + "`topic`" + ` appear as the client connects,
writes and reads; error and disconnect counters once such an event occurs.

`)
		metrics := make([]string, 0, len(kafka))
		roles := map[string]bool{}
		for m, row := range kafka {
			metrics = append(metrics, m)
			for _, r := range row.roles {
				roles[r] = true
			}
		}
		sort.Strings(metrics)
		// A Roles column only when some client lacks some metric.
		uniform := true
		for _, row := range kafka {
			uniform = uniform && len(row.roles) == len(roles)
		}
		if uniform {
			b.WriteString("Every client has each of these.\n\n| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n")
		} else {
			b.WriteString("\n| Metric | Type | Labels | Meaning | Roles |\n|---|---|---|---|---|\n")
		}
		for _, m := range metrics {
			row := kafka[m]
			f := row.metricFamily
			// Whether a client has connected yet when the registry is
			// gathered is a race: the Kafka tables never say "from start".
			f.zeroed = false
			fmt.Fprintf(&b, "| `sluice_kafka_<role>_%s` | %s | %s | %s |", m, f.typ, labelCell(f), mdCell(f.help))
			if !uniform {
				sort.Strings(row.roles)
				fmt.Fprintf(&b, " %s |", strings.Join(row.roles, ", "))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

type kafkaMetricRow struct {
	metricFamily metricFamily
	roles        []string
}

func labelCell(f metricFamily) string {
	if len(f.labels) == 0 {
		return ""
	}
	ls := make([]string, len(f.labels))
	for i, l := range f.labels {
		ls[i] = "`" + l + "`"
	}
	s := strings.Join(ls, ", ")
	if f.zeroed {
		s += " (*from start*)"
	}
	return s
}

func meaningCell(f metricFamily) string {
	s := f.help
	if vs := labelValues[f.name]; len(vs) > 0 {
		for _, l := range f.labels {
			if v, ok := vs[l]; ok {
				s += " `" + l + "`: " + v + "."
			}
		}
	}
	if f.only != "" {
		s += " Only with " + f.only + "."
	}
	return mdCell(s)
}

// mdCell escapes what would break a table mdCell.
func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// firstDifference shows the first line where want and got differ.
func firstDifference(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  file: %s\n  code: %s", i+1, wl, gl)
		}
	}
	return ""
}
