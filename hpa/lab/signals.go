package lab

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"sluice/hpa"
)

// The consumer metrics the autoscaler reads, as the chart's Prometheus
// Adapter rules serve them (hpa/prometheus-adapter-rules.yaml): the group's
// lag and oldest age are the same on every pod (max), the in-flight ratio
// is each pod's own (avg).
const (
	metricInFlightRatio = "sluice_consumer_in_flight_ratio"
	metricGroupLag      = "sluice_consumer_group_lag"
	metricOldestAge     = "sluice_consumer_oldest_unfinished_age_seconds"
	// metricBulkLag is the bulk lane's lag averaged over 10 minutes, as
	// Prometheus Adapter serves it; the lab sends no bulk requests, so it
	// is 0 there.
	metricBulkLag = "sluice_consumer_group_lag_avg10m"
)

// Signals names the scaling signals a lab run can use.
var Signals = []string{"chart", "lag", "age", "inflight"}

// signalTargets are the targets of the scaling signals for a lab run.
type signalTargets struct {
	InFlightRatio float64 // the chart's 0.7
	LagPerPod     float64 // records per pod
	AgeSeconds    float64 // seconds
}

// defaultTargets derives the targets from the consumers' settings as
// hpa/README.md does for the chart: a pod whose in-flight budget is just
// full has a lag of budget × (1 + commit interval / (2 × LLM latency)); the
// age only fires for a queue, at a few times the LLM latency plus a commit
// interval. chartAge is the age target of the chart itself (15 s), which it
// keeps as a backstop whatever the latency.
func defaultTargets(inFlight int, commit, llm time.Duration) signalTargets {
	lag := float64(inFlight) * (1 + commit.Seconds()/(2*llm.Seconds()))
	return signalTargets{InFlightRatio: 0.7, LagPerPod: lag, AgeSeconds: 2 * (llm + commit).Seconds()}
}

// chartAgeSeconds is the chart's target of the oldest-record age.
const chartAgeSeconds = 15

// chartBulkLagPerPod is the chart's target of the bulk lane's lag per pod.
const chartBulkLagPerPod = 50000

// metricsFor returns the HPA metrics of a signal: "lag" is the seed design's
// and KEDA's Kafka trigger (lag per pod), "age" the seed's "Kafka delay"
// trigger, "inflight" the utilization of the in-flight budget, and "chart"
// what the chart's HPA uses: the three together, the age as a 15 s
// backstop, and the bulk lane's slow signal.
func metricsFor(signal string, t signalTargets) ([]hpa.MetricSpec, error) {
	inflight := hpa.MetricSpec{Name: metricInFlightRatio, Source: hpa.ExternalSource, Target: hpa.ValueTarget, Value: t.InFlightRatio}
	lag := hpa.MetricSpec{Name: metricGroupLag, Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: t.LagPerPod}
	age := hpa.MetricSpec{Name: metricOldestAge, Source: hpa.ExternalSource, Target: hpa.ValueTarget, Value: t.AgeSeconds}
	switch signal {
	case "inflight":
		return []hpa.MetricSpec{inflight}, nil
	case "lag":
		return []hpa.MetricSpec{lag}, nil
	case "age":
		return []hpa.MetricSpec{age}, nil
	case "chart":
		age.Value = chartAgeSeconds
		bulk := hpa.MetricSpec{Name: metricBulkLag, Source: hpa.ExternalSource, Target: hpa.AverageValueTarget, Value: chartBulkLagPerPod}
		return []hpa.MetricSpec{inflight, lag, age, bulk}, nil
	}
	return nil, fmt.Errorf("unknown signal %q (want %s)", signal, strings.Join(Signals, ", "))
}

// podMetrics is what one scrape of a consumer's /metrics gave.
type podMetrics struct {
	ratio, lag, age float64
	ok              bool
}

// observation is the adapter's view of the consumers at one sync.
type observation struct {
	InFlightRatio, Lag, OldestAge float64
	Pods                          int // pods scraped
}

// values returns the metric values of specs as the adapter serves them.
func (o observation) values(specs []hpa.MetricSpec) []hpa.MetricValue {
	vs := make([]hpa.MetricValue, len(specs))
	for i, m := range specs {
		if o.Pods == 0 {
			vs[i] = hpa.MetricValue{Missing: true}
			continue
		}
		switch m.Name {
		case metricInFlightRatio:
			vs[i].Value = o.InFlightRatio
		case metricGroupLag:
			vs[i].Value = o.Lag
		case metricOldestAge:
			vs[i].Value = o.OldestAge
		case metricBulkLag:
			vs[i].Value = 0 // no bulk lane in the lab
		}
	}
	return vs
}

// scrape reads the /metrics of every admin address at once, as Prometheus
// does, and aggregates them as the adapter rules do: avg of the in-flight
// ratio, max of the group's lag and age on topic. It also returns each
// address's own figures.
func scrape(ctx context.Context, cl *http.Client, addrs []string, topic string) (observation, []podMetrics) {
	ms := make([]podMetrics, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() { ms[i] = scrapeOne(ctx, cl, a, topic) })
	}
	wg.Wait()
	return aggregate(ms), ms
}

// aggregate is what the adapter rules make of the pods' figures.
func aggregate(ms []podMetrics) observation {
	var o observation
	for _, m := range ms {
		if !m.ok {
			continue
		}
		o.Pods++
		o.InFlightRatio += m.ratio
		o.Lag = max(o.Lag, m.lag)
		o.OldestAge = max(o.OldestAge, m.age)
	}
	if o.Pods > 0 {
		o.InFlightRatio /= float64(o.Pods)
	}
	return o
}

func scrapeOne(ctx context.Context, cl *http.Client, addr, topic string) podMetrics {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return podMetrics{}
	}
	resp, err := cl.Do(req)
	if err != nil {
		return podMetrics{}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return podMetrics{}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return podMetrics{}
	}
	get := func(name string, label ...string) (float64, bool) {
		for _, m := range fams[name].GetMetric() {
			if len(label) == 2 && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == label[0] && l.GetValue() == label[1]
			}) {
				continue
			}
			return m.GetGauge().GetValue(), true
		}
		return 0, false
	}
	var pm podMetrics
	var okR bool
	pm.ratio, okR = get(metricInFlightRatio)
	pm.lag, _ = get(metricGroupLag, "topic", topic)
	pm.age, _ = get(metricOldestAge, "topic", topic)
	pm.ok = okR
	return pm
}
