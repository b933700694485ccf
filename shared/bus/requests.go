package bus

import (
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"sluice/shared/metric"
)

// requestCounter counts the requests a client writes to the brokers, by
// request key: sluice_kafka_<role>_requests_total{key}. kprom counts
// batches, records and bytes, not requests; yet a request per record is
// what costs a broker, and the clients, the most (a produce and a fetch
// request per answer on each hop), so the requests per answer are what
// batching has to cut (docs/benchmarks.md, "CPU per answer").
type requestCounter struct {
	names    [kmsg.MaxKey + 1]string // by key, the label value
	children metric.Children[prometheus.Counter]
}

var _ kgo.HookBrokerWrite = (*requestCounter)(nil)

func newRequestCounter(reg prometheus.Registerer, role string) (*requestCounter, error) {
	r := metric.NewRegisterer(reg)
	vec := promauto.With(r).NewCounterVec(prometheus.CounterOpts{
		Namespace: "sluice",
		Subsystem: "kafka_" + role,
		Name:      "requests_total",
		Help: "Requests written to the brokers, by the Kafka protocol's request key in lower case " +
			"(produce, fetch, metadata, offset_commit, heartbeat, ...); against produce_records_total and " +
			"fetch_records_total, how well requests batch.",
	}, []string{"key"})
	if err := r.Err(); err != nil {
		return nil, err
	}
	c := &requestCounter{}
	for k := range c.names {
		c.names[k] = snake(kmsg.NameForKey(int16(k)))
	}
	c.children = metric.Resolve[prometheus.Counter](vec, c.names[:]...)
	return c, nil
}

// OnBrokerWrite counts a request written whole.
func (c *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil || key < 0 || int(key) >= len(c.names) {
		return
	}
	c.children.With(c.names[key]).Inc()
}

// snake turns a request name into a label value: "OffsetCommit" into
// "offset_commit", "SASLHandshake" into "sasl_handshake".
func snake(name string) string {
	rs := []rune(name)
	var b strings.Builder
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 &&
			(unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
