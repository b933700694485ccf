// Package bus builds the franz-go clients and topics Sluice runs on.
//
// Kafka client metrics are exported through franz-go's kprom plugin with its
// defaults, one subsystem per role: sluice_kafka_<role>_* (connections opened,
// closed and failed, bytes written and read, and request errors, by broker).
// Client logs of level warn and above go through kslog to the process's slog
// logger.
package bus

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"sluice/shared/settings"
)

// Config names the cluster, topics and group.
type Config struct {
	Brokers []string
	// RequestsTopic receives chat requests. Default "chat.requests".
	RequestsTopic string
	// RepliesTopic receives the answers for the HTTP ingress. Default "chat.replies".
	RepliesTopic string
	// DLQTopic receives request records that cannot be processed. Default
	// "chat.requests.dlq".
	DLQTopic string
	// Group is the consumer group of the consumers. Default "sluice".
	Group string
	// ReplyGroup is the consumer group in which the ingress replicas share
	// the replies topic. Default "sluice-replies".
	ReplyGroup string
	// CallbacksTopic holds the callbacks the consumers hand over for
	// delivery, so that a slow or dead receiver does not hold up answering.
	// Default "chat.callbacks".
	CallbacksTopic string
	// CallbackGroup is the consumer group of the callback deliverers (in
	// the consumer processes). Default "sluice-callbacks".
	CallbackGroup string
	// Partitions is the partition count used when Sluice creates the topics.
	// Default 12.
	Partitions int32
	// ReplicationFactor for created topics; -1 is the broker's default.
	ReplicationFactor int16
}

// DefaultConfig returns the default topics and group on a local broker.
func DefaultConfig() Config {
	return Config{
		Brokers:           []string{"127.0.0.1:9092"},
		RequestsTopic:     "chat.requests",
		RepliesTopic:      "chat.replies",
		DLQTopic:          "chat.requests.dlq",
		Group:             "sluice",
		ReplyGroup:        "sluice-replies",
		CallbacksTopic:    "chat.callbacks",
		CallbackGroup:     "sluice-callbacks",
		Partitions:        12,
		ReplicationFactor: -1,
	}
}

// Validate reports every missing or malformed setting, each named by its
// flag.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(len(c.Brokers) > 0, "kafka-brokers", "is required")
	for _, b := range c.Brokers {
		_, port, err := net.SplitHostPort(b)
		p.Check(err == nil && port != "", "kafka-brokers", "%q is not host:port", b)
	}
	for flag, name := range map[string]string{"requests-topic": c.RequestsTopic, "replies-topic": c.RepliesTopic,
		"dlq-topic": c.DLQTopic, "callbacks-topic": c.CallbacksTopic,
		"consumer-group": c.Group, "reply-group": c.ReplyGroup, "callback-group": c.CallbackGroup} {
		p.Check(name != "", flag, "must not be empty")
	}
	p.Check(c.Group == "" || c.Group != c.ReplyGroup && c.Group != c.CallbackGroup, "consumer-group",
		"the consumer, reply and callback groups must differ")
	p.Check(c.ReplyGroup == "" || c.ReplyGroup != c.CallbackGroup, "reply-group", "the reply and callback groups must differ")
	p.Check(c.Partitions >= 1 && c.Partitions <= 10000, "topic-partitions", "must be from 1 to 10000, got %d", c.Partitions)
	return p.Err()
}

// RegisterFlags registers c's settings on fs, with c's values as defaults.
// The broker list has no default: a service must be told where Kafka is.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var(settings.List{P: &c.Brokers}, "kafka-brokers", "Kafka bootstrap brokers, comma-separated host:port")
	fs.StringVar(&c.RequestsTopic, "requests-topic", c.RequestsTopic, "topic of chat requests")
	fs.StringVar(&c.RepliesTopic, "replies-topic", c.RepliesTopic, "topic of replies for the HTTP ingress")
	fs.StringVar(&c.DLQTopic, "dlq-topic", c.DLQTopic, "dead-letter topic of unprocessable request records")
	fs.StringVar(&c.Group, "consumer-group", c.Group, "consumer group of the consumers")
	fs.StringVar(&c.ReplyGroup, "reply-group", c.ReplyGroup, "consumer group in which ingress replicas share the replies topic")
	fs.StringVar(&c.CallbacksTopic, "callbacks-topic", c.CallbacksTopic, "topic on which consumers hand callbacks over for delivery")
	fs.StringVar(&c.CallbackGroup, "callback-group", c.CallbackGroup, "consumer group of the callback deliverers")
	fs.Var(partitionCount{&c.Partitions}, "topic-partitions", "partitions of topics Sluice creates")
}

// partitionCount is a flag of a partition count, 1 to 10000.
type partitionCount struct{ p *int32 }

func (v partitionCount) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(int(*v.p))
}

func (v partitionCount) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 10000 {
		return errors.New("must be a number from 1 to 10000")
	}
	*v.p = int32(n)
	return nil
}

// NewClient returns a client for cfg's brokers whose logs go to log and whose
// metrics are registered on reg under the subsystem "kafka_<role>". It does
// not contact the cluster; call Ping for that.
func NewClient(cfg Config, role string, log *slog.Logger, reg prometheus.Registerer, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID("sluice-" + role),
		// The client's info logs (metadata refreshes, assignments) drown the
		// service's own; warnings and errors stay.
		kgo.WithLogger(kslog.New(slog.New(atLeast{log.Handler(), slog.LevelWarn}).With("kafka", role))),
	}
	if reg != nil {
		base = append(base, kgo.WithHooks(kprom.NewMetrics("sluice", kprom.Registerer(reg), kprom.Subsystem("kafka_"+role))))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// EnsureTopics creates the requests, replies and DLQ topics when missing.
// Existing topics are left as they are.
func EnsureTopics(ctx context.Context, cl *kgo.Client, cfg Config) error {
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, cfg.Partitions, cfg.ReplicationFactor, nil,
		cfg.RequestsTopic, cfg.RepliesTopic, cfg.DLQTopic, cfg.CallbacksTopic)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// CreateTopics connects to cfg's brokers and creates Sluice's topics when
// missing, within 15 s; the error names the brokers it could not use.
func CreateTopics(ctx context.Context, cfg Config, log *slog.Logger) error {
	cl, err := NewClient(cfg, "admin", log, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cl, cfg); err != nil {
		return fmt.Errorf("kafka at %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	return nil
}

// LogFetchErrors logs the errors of fetches as warnings with msg, except
// the cancellation of a poll.
func LogFetchErrors(log *slog.Logger, msg string, fetches kgo.Fetches) {
	fetches.EachError(func(topic string, p int32, err error) {
		if !errors.Is(err, context.Canceled) {
			log.Warn(msg, "topic", topic, "partition", p, "err", err)
		}
	})
}

// ReplyPartitioner sends a record to its Partition when that is set (>= 0)
// and within the topic, otherwise where Kafka's default partitioner (murmur2
// of the key) would. Replies use it to honour a request's reply.partition.
// outOfRange, when not nil, is called (on the producing goroutine, so it must
// be quick) for a record whose Partition the topic does not have.
func ReplyPartitioner(outOfRange func(topic string, partition int32, partitions int)) kgo.Partitioner {
	keyed := kgo.StickyKeyPartitioner(nil)
	return kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
		tp := keyed.ForTopic(topic)
		return func(r *kgo.Record, n int) int {
			if r.Partition >= 0 && int(r.Partition) < n {
				return int(r.Partition)
			}
			if r.Partition >= 0 && outOfRange != nil {
				outOfRange(topic, r.Partition, n)
			}
			return tp.Partition(r, n)
		}
	})
}

// atLeast passes on records at or above min (and what h itself enables).
type atLeast struct {
	slog.Handler
	min slog.Level
}

func (a atLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= a.min && a.Handler.Enabled(ctx, l)
}

func (a atLeast) WithAttrs(attrs []slog.Attr) slog.Handler {
	return atLeast{a.Handler.WithAttrs(attrs), a.min}
}

func (a atLeast) WithGroup(name string) slog.Handler {
	return atLeast{a.Handler.WithGroup(name), a.min}
}
