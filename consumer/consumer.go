// Package consumer is Sluice's worker: it reads chat requests from Kafka as a
// member of a consumer group, answers them with the LLM, keeps each dialog's
// history in Redis and publishes the replies.
//
// Records of different dialogs (record keys) are processed concurrently, up to
// an in-flight budget per process that is independent of the partition count;
// records of one dialog run strictly one after another, in offset order. A
// partition's offset is committed only up to its oldest unfinished record, so
// a crash re-delivers exactly the records that were not finished. Effects are
// idempotent on the request id: a re-delivered request republishes the stored
// reply without calling the LLM or touching the history again.
//
// A consumer stops by draining (at the end of Run's context, or earlier
// through Drain, a Kubernetes preStop hook's GET /drain): it finishes what
// is in flight, commits and leaves its group. Every consumer process exports
// the whole group's lag on each lane's topic for autoscalers, read by one
// process per interval (see groupLag).
//
// Metrics (on the registerer given to New): see docs/metrics.md, generated
// from the registries by tests/metrics_doc_test.go.
package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/time/rate"

	"sluice/consumer/llm"
	"sluice/shared/admin"
	"sluice/shared/backoff"
	"sluice/shared/bus"
	"sluice/shared/envelope"
	"sluice/shared/metric"
	"sluice/shared/pii"
	"sluice/shared/settings"
	"sluice/shared/store"
)

// Config holds the consumer's settings.
type Config struct {
	// InFlight is the most records a process works on at once. Default 256.
	InFlight int
	// CommitInterval is how often marked offsets are committed. Default 1 s.
	CommitInterval time.Duration
	// DrainTimeout bounds how long a stopping consumer finishes in-flight work.
	// Default 25 s (Kubernetes gives 30 s by default).
	DrainTimeout time.Duration
	// RevokeTimeout bounds how long a rebalance waits for the in-flight work
	// of revoked partitions. Default 10 s.
	RevokeTimeout time.Duration
	// RetryBackoff is the first pause after a transient Redis or Kafka error;
	// it grows linearly up to 2 s. Default 100 ms.
	RetryBackoff time.Duration
	// SessionTimeout is the consumer group session timeout: how soon the
	// partitions of a consumer that died without leaving go to the others.
	// Default 6 s, Apache Kafka's smallest by default
	// (group.min.session.timeout.ms); the broker refuses smaller ones.
	SessionTimeout time.Duration
	// OrderBy is what records are serialized by: "key" (default: one dialog
	// at a time, many dialogs of a partition in parallel) or "partition"
	// (one record at a time per partition, as most Kafka consumers do; for
	// comparison only).
	OrderBy string
	// LagInterval is how often the consumer group's lag on each lane's
	// topic is read for sluice_consumer_group_lag and
	// sluice_consumer_oldest_unfinished_age_seconds: by one consumer
	// process per interval, shared through Redis. Default 5 s.
	LagInterval time.Duration
	// BulkMinShare is the share of the in-flight budget the bulk lane keeps
	// however busy the interactive lane is, so that bots are never starved.
	// Default 0.1.
	BulkMinShare float64
	// Lanes is LanesTwo (default: the interactive lane first, the bulk
	// lane with its minimum share) or LanesSingle (both topics served as
	// one lane, in fetch order, without priority or minimum share: the
	// design before the two lanes, for comparison only).
	Lanes string
	// Stream publishes the pieces of the answer to a request that asks for
	// them (a client streams it) as the model gives them, to the request's
	// answer stream; off, such requests get their whole answer there as
	// one piece. Default true.
	Stream bool
	// StreamFlush is how long pieces gather before they are written: a
	// piece that comes StreamFlush after the last write goes out at once
	// with those before it, so a fast model costs a Redis command per
	// StreamFlush, not per token; pieces held for a batch are written
	// StreamFlush after the last write also when the model pauses.
	// Default 50 ms.
	StreamFlush time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		InFlight:       256,
		CommitInterval: time.Second,
		DrainTimeout:   25 * time.Second,
		RevokeTimeout:  10 * time.Second,
		RetryBackoff:   100 * time.Millisecond,
		SessionTimeout: 6 * time.Second,
		OrderBy:        OrderByKey,
		LagInterval:    5 * time.Second,
		BulkMinShare:   0.1,
		Lanes:          LanesTwo,
		Stream:         true,
		StreamFlush:    50 * time.Millisecond,
	}
}

// Values of Config.Lanes.
const (
	LanesTwo    = "two"
	LanesSingle = "single"
)

// Values of Config.OrderBy.
const (
	OrderByKey       = "key"
	OrderByPartition = "partition"
)

// Validate reports every setting out of range, each named by its flag.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(c.InFlight >= 1, "in-flight", "in-flight budget must be at least 1, got %d", c.InFlight)
	p.Check(c.CommitInterval > 0, "commit-interval", "must be positive")
	p.Check(c.DrainTimeout > 0, "drain-timeout", "must be positive")
	p.Check(c.RevokeTimeout > 0, "revoke-timeout", "must be positive")
	p.Check(c.RetryBackoff > 0, "retry-backoff", "must be positive")
	p.Check(c.SessionTimeout >= time.Second, "session-timeout", "must be at least 1s")
	p.Check(c.OrderBy == OrderByKey || c.OrderBy == OrderByPartition, "order-by", "must be %q or %q, got %q", OrderByKey, OrderByPartition, c.OrderBy)
	p.Check(c.LagInterval >= 100*time.Millisecond, "lag-interval", "must be at least 100ms")
	p.Check(c.BulkMinShare >= 0 && c.BulkMinShare <= 0.5, "bulk-min-share", "must be from 0 to 0.5 (the interactive lane goes first), got %g", c.BulkMinShare)
	p.Check(c.Lanes == LanesTwo || c.Lanes == LanesSingle, "lanes", "must be %q or %q, got %q", LanesTwo, LanesSingle, c.Lanes)
	p.Check(c.StreamFlush >= 0 && c.StreamFlush <= 5*time.Second, "stream-flush", "must be within 0..5s, got %v", c.StreamFlush)
	return p.Err()
}

// RegisterFlags registers c's settings on fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.InFlight, "in-flight", c.InFlight, "records a consumer process works on at once")
	fs.DurationVar(&c.CommitInterval, "commit-interval", c.CommitInterval, "how often finished offsets are committed")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long a stopping consumer finishes in-flight work")
	fs.DurationVar(&c.RevokeTimeout, "revoke-timeout", c.RevokeTimeout, "how long a rebalance waits for work of revoked partitions")
	fs.DurationVar(&c.RetryBackoff, "retry-backoff", c.RetryBackoff, "first pause after a transient Redis or Kafka error; it grows linearly up to 2s")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", c.SessionTimeout, "consumer group session timeout")
	fs.StringVar(&c.OrderBy, "order-by", c.OrderBy, "serialize records by dialog (key) or, for comparison, one at a time per partition (partition)")
	fs.DurationVar(&c.LagInterval, "lag-interval", c.LagInterval, "how often the consumer group's lag is read from Kafka (by one consumer per interval, shared through Redis)")
	fs.BoolVar(&c.Stream, "stream", c.Stream, "publish answers' pieces as the model streams them, for requests that ask (SSE clients); off, they get the whole answer as one piece")
	fs.DurationVar(&c.StreamFlush, "stream-flush", c.StreamFlush, "how long answer pieces gather before one write to the answer stream")
	fs.Float64Var(&c.BulkMinShare, "bulk-min-share", c.BulkMinShare, "share of the in-flight budget the bulk lane keeps however busy the interactive lane is (0 to 0.5)")
	fs.StringVar(&c.Lanes, "lanes", c.Lanes, "two: the interactive lane first, bulk with its minimum share; single: both topics as one lane in fetch order, no priority (the design before the lanes, for comparison only)")
}

// bulkMin is how many records of the bulk lane may be in flight whatever
// the interactive lane does: BulkMinShare of the budget, at least one when
// the share is not 0, but never the whole budget (a budget of one goes to
// the interactive lane first); none with a single lane.
func (c Config) bulkMin() int {
	if c.BulkMinShare <= 0 || c.Lanes == LanesSingle {
		return 0
	}
	return min(max(int(math.Ceil(c.BulkMinShare*float64(c.InFlight))), 1), c.InFlight-1)
}

// refusedSession returns a settings error when the group coordinator
// refused the session timeout: the consumer could never join, and retrying
// would only hide it.
func refusedSession(fetches kgo.Fetches) error {
	for _, fe := range fetches.Errors() {
		var gs *kgo.ErrGroupSession
		if errors.As(fe.Err, &gs) && errors.Is(gs.Err, kerr.InvalidSessionTimeout) {
			return settings.Errorf("session-timeout", "the broker refused it (%v); Apache Kafka allows group.min.session.timeout.ms (default 6s) to group.max.session.timeout.ms (default 30m)", gs.Err)
		}
	}
	return nil
}

// heartbeat is the group heartbeat interval for a session timeout: a
// sixth of it, at most 3 s (the client's default). Members learn of a
// rebalance at their next heartbeat, so with 6 s the partitions of a dead
// member are served again about 7 s after it died, not 9.
func heartbeat(session time.Duration) time.Duration {
	return max(100*time.Millisecond, min(3*time.Second, session/6))
}

// Answerer answers one request given the dialog's history, oldest first. It
// returns an error only when ctx ends.
type Answerer interface {
	Answer(ctx context.Context, req *envelope.Request, history []envelope.Turn) (llm.Answer, error)
}

// Store is the state the consumer keeps in Redis.
type Store interface {
	// Load returns the request's stored result (State "" when none) and the
	// dialog's history, oldest first.
	Load(ctx context.Context, d store.Dialog, requestID string) (store.Result, []envelope.Turn, error)
	Complete(ctx context.Context, d store.Dialog, reply envelope.Reply, created time.Time, turns ...envelope.Turn) (envelope.Reply, bool, error)
}

// Callbacks delivers the done body of a request to its callback URL. It
// returns nil once delivered, or the error after its bounded retries.
type Callbacks interface {
	Deliver(ctx context.Context, url, requestID string, body []byte) error
}

var _ Store = (*store.Redis)(nil)
var _ Answerer = (*llm.Client)(nil)

// Consumer processes chat requests.
type Consumer struct {
	cfg      Config
	bus      bus.Config
	log      *slog.Logger
	cl       *kgo.Client
	store    Store
	llm      Answerer
	streams  Streams           // nil: the store has no answer streams
	streamer StreamingAnswerer // nil: the Answerer does not stream, or Config.Stream is off

	streamWarned rate.Sometimes  // the stream write failure warning, at most every 10 s
	cbWorker     *callbackWorker // delivers the callbacks handed over; nil: callbacks are not delivered
	reg          prometheus.Registerer
	now          func() time.Time

	tracker *tracker
	markMu  sync.Mutex // orders marks against partition release

	mu   sync.Mutex
	keys map[string][]*work // records waiting behind the running one, by key

	inflight       atomic.Int64
	inflightBulk   atomic.Int64 // of inflight, records of the bulk lane
	slotTime       atomic.Int64 // how long a record holds its slot, a moving average in ns; 0 until one finished
	lanes          *lanes
	fallbackWarned rate.Sometimes // the reply partition fallback warning, at most every 10 s
	freed          chan struct{}
	idle           chan *work     // unbuffered: a send succeeds when a worker waits
	wg             sync.WaitGroup // key runs under way
	ready          atomic.Bool
	lag            lagReaders // of the interactive and the bulk topic

	// A drain is asked for by Drain or by the end of Run's context, and
	// happens once.
	draining  atomic.Bool   // readiness false
	drainAsk  chan struct{} // closed by Drain
	askOnce   sync.Once
	drained   chan struct{} // closed once the drain finished, report set
	drainOnce sync.Once
	report    admin.DrainReport

	release func() error // closes what Open made for the consumer; nil after New

	work     context.Context // ends on hard stop
	stopWork context.CancelFunc

	m metrics
}

type work struct {
	rec  *kgo.Record
	part *partition
	key  string
	got  time.Time
}

// metrics are the consumer's metrics (see the package doc).
type metrics struct {
	records            metric.Children[prometheus.Counter] // by outcome
	paused             prometheus.Gauge
	process            prometheus.Histogram
	queueWait          [2]prometheus.Observer              // by lane
	e2e                [2]prometheus.Observer              // by lane
	retries            metric.Children[prometheus.Counter] // by step
	commits            prometheus.Counter
	partitionFallbacks prometheus.Counter
	callbacks          metric.Children[prometheus.Counter] // by outcome
	streamWrites       metric.Children[prometheus.Counter] // by outcome
}

// newMetrics makes the consumer's metrics with f; inflight reads the
// records in flight, of at most budget.
// newMetrics registers the consumer's metrics; inflight and interactive
// count the records in flight, all and the interactive lane's.
func newMetrics(f promauto.Factory, inflight, interactive func() float64, budget int) metrics {
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_consumer_in_flight", Help: "Records handed to workers and not finished.",
	}, inflight)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_consumer_in_flight_ratio",
		Help: "Records of the interactive lane in flight over the in-flight budget (0 to 1), this process's: it leads the group lag, which grows without bound only once the budgets are full. Bulk records, which take what the interactive lane leaves, do not count: a bulk backlog alone does not make pods look busy.",
	}, func() float64 { return interactive() / float64(budget) })
	e2e := f.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sluice_consumer_end_to_end_seconds", Help: "From the request's created_at to its reply produced, by lane.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"lane"})
	wait := f.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sluice_consumer_queue_wait_seconds", Help: "From a request record's timestamp (its producing) to the start of its processing, by lane.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 18), // up to about 11 min: a bulk request's deadline
	}, []string{"lane"})
	return metrics{
		e2e:       [2]prometheus.Observer{e2e.WithLabelValues(envelope.LaneInteractive), e2e.WithLabelValues(envelope.LaneBulk)},
		queueWait: [2]prometheus.Observer{wait.WithLabelValues(envelope.LaneInteractive), wait.WithLabelValues(envelope.LaneBulk)},
		records: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_consumer_records_total", Help: "Request records finished, by outcome.",
		}, []string{"outcome"}), "done", "expired", "duplicate", "dead_letter", "abandoned"),
		paused: f.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_consumer_paused", Help: "1 while the in-flight budget is full: fetched records wait for a slot (records of the interactive lane first).",
		}),
		process: f.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_consumer_process_duration_seconds", Help: "From poll to reply produced.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		retries: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_consumer_retries_total", Help: "Transient Redis or Kafka failures retried, by step.",
		}, []string{"step"}), "redis_load", "redis_complete", "kafka_reply", "kafka_dlq", "kafka_callback"),
		commits: f.NewCounter(prometheus.CounterOpts{
			Name: "sluice_consumer_commit_errors_total", Help: "Failed offset commits.",
		}),
		callbacks: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_consumer_callbacks_total",
			Help: "Callbacks handed over on the callbacks topic, and delivered, failed (after the deliverer's retries) or invalid there.",
		}, []string{"outcome"}), "handed_over", "delivered", "failed", "invalid"),
		streamWrites: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_consumer_stream_writes_total",
			Help: "Writes to answer streams (pieces batched, then done), by outcome; a failed one is not retried, its readers fall back to the stored answer.",
		}, []string{"outcome"}), "ok", "failed"),
		partitionFallbacks: f.NewCounter(prometheus.CounterOpts{
			Name: "sluice_consumer_reply_partition_fallbacks_total",
			Help: "Replies whose requested reply.partition the reply topic does not have, sent to the key's partition instead.",
		}),
	}
}

// New returns a consumer of cfgBus's requests topic in its group. It creates
// the Kafka client but does not contact the cluster before Run. It returns an
// error for an invalid configuration or when metrics cannot be registered.
func New(cfg Config, cfgBus bus.Config, st Store, ans Answerer, log *slog.Logger, reg prometheus.Registerer) (*Consumer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfgBus.Validate(); err != nil {
		return nil, err
	}
	c := &Consumer{
		cfg: cfg, bus: cfgBus, log: log, store: st, llm: ans, now: time.Now, reg: reg,
		tracker: newTracker(),
		keys:    map[string][]*work{},
		freed:   make(chan struct{}, 1),
		idle:    make(chan *work),

		fallbackWarned: rate.Sometimes{Interval: 10 * time.Second},
		streamWarned:   rate.Sometimes{Interval: 10 * time.Second},
		lag: lagReaders{newGroupLag(cfgBus, cfgBus.RequestsTopic, cfg.LagInterval, log),
			newGroupLag(cfgBus, cfgBus.BulkTopic, cfg.LagInterval, log)},
		drainAsk: make(chan struct{}),
		drained:  make(chan struct{}),
	}
	c.streams, _ = st.(Streams)
	if sa, ok := ans.(StreamingAnswerer); ok && cfg.Stream {
		c.streamer = sa
	}
	c.lanes = &lanes{c: c, dispatch: c.dispatch}
	c.work, c.stopWork = context.WithCancel(context.Background())
	r := metric.NewRegisterer(reg)
	c.m = newMetrics(promauto.With(r), func() float64 { return float64(c.inflight.Load()) },
		func() float64 { return float64(c.inflight.Load() - c.inflightBulk.Load()) }, cfg.InFlight)
	r.MustRegister(laneCollector{c})
	r.MustRegister(c.lag)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("register consumer metrics: %w", err)
	}
	cl, err := bus.NewClient(cfgBus, "consumer", log, reg,
		kgo.ConsumerGroup(cfgBus.Group),
		kgo.ConsumeTopics(cfgBus.RequestsTopic, cfgBus.BulkTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(cfg.SessionTimeout),
		// How long a rebalance waits for members to rejoin: enough for our
		// revoke (its wait, then a commit of at most 5 s), and no more, so
		// that a member killed mid-rebalance holds the others up seconds,
		// not the client's default minute.
		kgo.RebalanceTimeout(cfg.RevokeTimeout+5*time.Second+cfg.SessionTimeout),
		kgo.HeartbeatInterval(heartbeat(cfg.SessionTimeout)),
		kgo.BlockRebalanceOnPoll(),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(cfg.CommitInterval),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.FetchMaxBytes(16<<20),
		// A paused lane's topic is fetched again only once the fetch under
		// way returns: bound how long an empty fetch waits for records.
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.RecordPartitioner(bus.ReplyPartitioner(c.partitionFallback)),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()),
		kgo.ProducerLinger(0),
		kgo.AllowAutoTopicCreation(), // a bot's own reply topic
	)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	adm := kadm.NewClient(cl)
	for _, g := range c.lag {
		g.adm = adm
	}
	return c, nil
}

// ShareLag makes the consumer processes of the group read the group's lag
// from Kafka once per lag interval between them, sharing the figures
// through rdb under keys starting with prefix (see groupLag). Without it,
// every process reads Kafka every interval. Call it before Run.
func (c *Consumer) ShareLag(rdb redis.UniversalClient, prefix string) {
	c.lag.share(rdb, prefix)
}

// partitionFallback counts a reply whose reply.partition its topic lacks
// and warns, at most every 10 s: the requester (a bot reading one partition
// of its own topic, say) may be waiting on a partition that never gets it.
func (c *Consumer) partitionFallback(topic string, partition int32, partitions int) {
	c.m.partitionFallbacks.Inc()
	c.fallbackWarned.Do(func() {
		c.log.Warn("reply.partition beyond the reply topic: reply sent to the key's partition",
			"topic", topic, "partition", partition, "partitions", partitions)
	})
}

// SetCallbacks makes the consumer deliver callbacks through cb: a request
// that names a callback URL has its callback handed over on the callbacks
// topic, and a worker of the callback group delivers it (see
// callbackWorker). Without it, such requests are answered on the reply
// topic only. Call it before Run.
func (c *Consumer) SetCallbacks(cb Callbacks) error {
	w, err := newCallbackWorker(c.cfg, c.bus, cb, c.log, c.reg, c.m.callbacks)
	if err != nil {
		return err
	}
	c.cbWorker = w
	return nil
}

// Client returns the consumer's Kafka client.
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Ready reports whether the consumer is running, not draining, and a
// member of its group.
func (c *Consumer) Ready() bool {
	if !c.ready.Load() || c.draining.Load() {
		return false
	}
	_, generation := c.cl.GroupMetadata()
	return generation >= 0
}

// Run consumes until ctx ends or Drain is called, then drains: it stops
// fetching, lets in-flight work finish for up to the drain timeout,
// commits what finished and leaves the group. Drained by Drain, it then
// waits for ctx to end and returns at once. It returns an error when the
// cluster cannot be reached at start, or the group refuses the session
// timeout.
func (c *Consumer) Run(ctx context.Context) error {
	// A Drain waiting on a Run that ends without draining is answered.
	defer c.finishDrain(admin.DrainReport{Drained: true})
	if err := c.cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka ping: %w", err)
	}
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() { c.lag.run(lagCtx); close(lagDone) }()
	defer func() { stopLag(); <-lagDone }()

	// consume ends with ctx or when a drain is asked for.
	consume, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-c.drainAsk:
			stop()
		case <-consume.Done():
		}
	}()
	c.ready.Store(true)
	if c.cbWorker != nil {
		go c.cbWorker.run(consume)
	}
	c.log.Info("consumer running", "group", c.bus.Group, "topic", c.bus.RequestsTopic, "bulk_topic", c.bus.BulkTopic, "in_flight", c.cfg.InFlight, "bulk_min_share", c.cfg.BulkMinShare, "lanes", c.cfg.Lanes)
	if err := c.lanes.run(consume); err != nil {
		c.ready.Store(false)
		return err
	}
	c.lanes.drop(nil) // never started: the next owner fetches them
	c.finishDrain(c.drain())
	<-ctx.Done() // at once unless Drain asked for the drain
	return nil
}

// fetchMaxWait is how long the brokers hold a fetch that finds no
// records: the longest a resumed lane waits for its first fetch.
const fetchMaxWait = 250 * time.Millisecond

// Lanes, as indexes of lanes.held.
const (
	interactive = iota
	bulk
)

// laneCollector exports the per-lane gauges.
type laneCollector struct{ c *Consumer }

var (
	laneInFlightDesc = prometheus.NewDesc("sluice_consumer_lane_in_flight",
		"Records handed to workers and not finished, by lane.", []string{"lane"}, nil)
	laneHeldDesc = prometheus.NewDesc("sluice_consumer_held_records",
		"Records fetched and waiting for a slot of the in-flight budget, by lane (at most twice the budget in all).", []string{"lane"}, nil)
)

func (lc laneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- laneInFlightDesc
	ch <- laneHeldDesc
}

func (lc laneCollector) Collect(ch chan<- prometheus.Metric) {
	c := lc.c
	b := float64(c.inflightBulk.Load())
	ch <- prometheus.MustNewConstMetric(laneInFlightDesc, prometheus.GaugeValue, float64(c.inflight.Load())-b, "interactive")
	ch <- prometheus.MustNewConstMetric(laneInFlightDesc, prometheus.GaugeValue, b, "bulk")
	ch <- prometheus.MustNewConstMetric(laneHeldDesc, prometheus.GaugeValue, float64(c.lanes.heldOf(interactive)), "interactive")
	ch <- prometheus.MustNewConstMetric(laneHeldDesc, prometheus.GaugeValue, float64(c.lanes.heldOf(bulk)), "bulk")
}

// lanes takes records from the two lanes into the in-flight budget,
// interactive first. The consumer drains what the client fetched into
// held records, at most twice the budget, even while the budget is full
// (the client fetches again only once its fetched records are taken), and
// starts held records as slots free: the interactive lane's first, except
// for the bulk lane's minimum share of the budget (Config.BulkMinShare),
// which bulk records keep whenever some are held; and when no interactive
// record is waiting, bulk records take every free slot.
//
// Fetching a lane's topic is paused while enough of it is held: the bulk
// lane's at its minimum share while interactive records wait (a budget's
// worth otherwise), the interactive lane's at a budget's worth. The client
// drops a paused topic's fetched records and fetches them again later, so
// a bulk backlog waits in Kafka, not in memory.
//
// Held records are not in the tracker and never marked: a revoked
// partition's are dropped (its new owner fetches them from the committed
// offset), and so are all at a drain.
//
// With Config.Lanes single, every record is held in the interactive lane,
// whose fetching pauses and resumes both topics: one lane in fetch order,
// as the consumer was before the two lanes.
type lanes struct {
	c        *Consumer
	dispatch func(r *kgo.Record, now time.Time) // starts a record: Consumer.dispatch
	paused   [2]bool

	mu     sync.Mutex       // held is also dropped by revoke and lost
	held   [2][]*kgo.Record // fetched and not started, by lane, in fetch order
	bulkAt time.Time        // the pace of bulk starts: see bulkTokens
}

// topics returns the topics whose records lane holds.
func (l *lanes) topics(lane int) []string {
	switch {
	case lane == bulk:
		return []string{l.c.bus.BulkTopic}
	case l.c.cfg.Lanes == LanesSingle:
		return []string{l.c.bus.RequestsTopic, l.c.bus.BulkTopic}
	}
	return []string{l.c.bus.RequestsTopic}
}

// laneOf returns the lane that holds r: its own, but for the one lane of
// LanesSingle.
func (l *lanes) laneOf(r *kgo.Record) int {
	if l.c.cfg.Lanes == LanesSingle {
		return interactive
	}
	return l.c.lane(r.Topic)
}

// run takes and starts records until ctx ends or the client is closed. It
// returns the error that must stop Run.
func (l *lanes) run(ctx context.Context) error {
	c := l.c
	for ctx.Err() == nil {
		free := c.cfg.InFlight - int(c.inflight.Load())
		c.m.paused.Set(b2f(free <= 0))
		room := 2*c.cfg.InFlight - l.heldCount()
		got := 0
		if room > 0 {
			n, closed, err := l.take(nil, room)
			if closed || err != nil {
				return err
			}
			got = n
		}
		started, wake := 0, time.Time{}
		if free > 0 {
			started, wake = l.start(free)
		}
		l.fetchControl()
		if got > 0 || started > 0 {
			continue
		}
		// A freed slot matters to the wait only when something is held or
		// the budget is full; otherwise only new records can change anything.
		if closed, err := l.wait(ctx, room, free <= 0 || l.heldCount() > 0, wake); closed || err != nil {
			return err
		}
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// maxSlotTime caps what one record's time in its slot counts for the pace of
// bulk starts: a bulk request may wait minutes for LLM quota, which says
// nothing about how soon the other slots free.
const maxSlotTime = 2 * time.Second

// slotHeld counts d, the time a record held its slot, into the moving
// average of slot times (a weight of 1/16: about the last few dozen
// records).
func (c *Consumer) slotHeld(d time.Duration) {
	d = min(max(d, 0), maxSlotTime)
	if old := c.slotTime.Load(); old == 0 {
		c.slotTime.Store(int64(max(d, 1)))
	} else {
		c.slotTime.Store(old + (int64(d)-old)/16) // a lost update only loses a sample
	}
}

// bulkSpacing is the time between bulk starts when they are paced: the
// time a slot is held, over the budget. Bulk records started together
// would finish together, and with a model of steady latency free their
// slots together again, call after call: a shopper's question fetched
// just after such a wave finds the budget full and waits for the next
// one, up to a whole call (docs/benchmarks.md, "Two lanes"). Spaced over
// one slot time, bulk starts keep completions spread, so a slot frees
// every bulkSpacing, and the pace is the budget's whole rate: bulk never
// runs slower for it once its slots are taken. Until a record finished,
// a slot is taken to be held for a second. It is at least a microsecond
// (records that end at once, abandoned ones, must not make it 0).
func (c *Consumer) bulkSpacing() time.Duration {
	held := time.Duration(c.slotTime.Load())
	if held <= 0 {
		held = time.Second
	}
	return max(held/time.Duration(c.cfg.InFlight), time.Microsecond)
}

// wait waits for the next records, which it holds, while there is room to
// hold more, for a slot to free when onFreed (or there is no room), and
// until wake, unless that is zero.
func (l *lanes) wait(ctx context.Context, room int, onFreed bool, wake time.Time) (closed bool, err error) {
	var timer <-chan time.Time
	if !wake.IsZero() {
		t := time.NewTimer(time.Until(wake))
		defer t.Stop()
		timer = t.C
	}
	if room <= 0 {
		select {
		case <-l.c.freed:
		case <-timer:
		case <-ctx.Done():
		}
		return false, nil
	}
	if !onFreed && timer == nil {
		_, closed, err = l.take(ctx, room)
		return closed, err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	freed := l.c.freed
	if !onFreed {
		freed = nil
	}
	go func() {
		// The signal is taken, not put back: the next round counts the free
		// slots itself, and a signal put back would wake every wait at once,
		// for ever (an idle consumer spun at 1.2 cores).
		select {
		case <-freed:
			cancel()
		case <-timer:
			cancel()
		case <-pctx.Done():
		}
	}()
	_, closed, err = l.take(pctx, room)
	return closed, err
}

// take polls up to most records (without waiting when ctx is nil) and
// holds them by lane. It returns how many it got.
func (l *lanes) take(ctx context.Context, most int) (got int, closed bool, err error) {
	c := l.c
	fetches := c.cl.PollRecords(ctx, most)
	defer c.cl.AllowRebalance()
	if fetches.IsClientClosed() {
		return 0, true, nil
	}
	if err := refusedSession(fetches); err != nil {
		return 0, false, err
	}
	bus.LogFetchErrors(c.log, "fetch error", fetches)
	l.mu.Lock()
	defer l.mu.Unlock()
	fetches.EachRecord(func(r *kgo.Record) {
		lane := l.laneOf(r)
		l.held[lane] = append(l.held[lane], r)
		got++
	})
	return got, false, nil
}

// start starts up to free held records: interactive first, but for the
// slots the bulk lane's minimum share has unused while bulk records are
// held; bulk records take what is left when no interactive one waits, as
// fast as their pace allows (Consumer.bulkSpacing; the minimum share's
// slots are not paced). When the pace holds back a bulk record that could
// start, it returns when it may (zero otherwise): a full budget waits for
// a freed slot, not for the pace.
func (l *lanes) start(free int) (n int, wake time.Time) {
	c := l.c
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	owed := max(c.cfg.bulkMin()-int(c.inflightBulk.Load()), 0)
	reserve := 0
	if len(l.held[bulk]) > 0 {
		reserve = min(owed, free)
	}
	n = l.startLane(interactive, free-reserve, now)
	free -= n
	allow := owed
	if len(l.held[interactive]) == 0 {
		allow = free
	}
	allow = min(allow, free)
	b := l.startLane(bulk, min(allow, max(l.bulkTokens(now), owed)), now)
	l.takeBulk(b, now)
	if b < allow && len(l.held[bulk]) > 0 {
		wake = l.bulkNext(now)
	}
	return n + b, wake
}

// bulkBurst is how many bulk starts the pace lets through at once after a
// pause: a few, so that a budget's worth never starts together.
func (l *lanes) bulkBurst() int { return max(l.c.cfg.InFlight/32, 1) }

// bulkTokens returns how many bulk records the pace lets start at now: a
// generic cell rate, one per Consumer.bulkSpacing, up to bulkBurst saved.
func (l *lanes) bulkTokens(now time.Time) int {
	if l.c.cfg.Lanes == LanesSingle {
		return l.c.cfg.InFlight // one lane, in fetch order: nothing is paced
	}
	every := l.c.bulkSpacing()
	at := l.bulkFrom(now, every)
	return max(int(now.Sub(at)/every), 0)
}

// bulkFrom is the time from which bulk starts are counted: the last start's
// share of the pace, but no earlier than a burst ago.
func (l *lanes) bulkFrom(now time.Time, every time.Duration) time.Time {
	earliest := now.Add(-time.Duration(l.bulkBurst()) * every)
	if l.bulkAt.Before(earliest) {
		return earliest
	}
	return l.bulkAt
}

// takeBulk counts n bulk starts at now against the pace.
func (l *lanes) takeBulk(n int, now time.Time) {
	if n == 0 || l.c.cfg.Lanes == LanesSingle {
		return
	}
	every := l.c.bulkSpacing()
	l.bulkAt = l.bulkFrom(now, every).Add(time.Duration(n) * every)
}

// bulkNext returns when the pace lets the next bulk record start.
func (l *lanes) bulkNext(now time.Time) time.Time {
	every := l.c.bulkSpacing()
	return l.bulkFrom(now, every).Add(every)
}

// startLane starts up to n held records of lane, oldest first. Call with
// l.mu held.
func (l *lanes) startLane(lane, n int, now time.Time) int {
	n = max(min(n, len(l.held[lane])), 0)
	for _, r := range l.held[lane][:n] {
		l.dispatch(r, now)
	}
	l.held[lane] = l.held[lane][n:]
	if len(l.held[lane]) == 0 {
		l.held[lane] = nil
	}
	return n
}

// fetchControl pauses a lane's topic while enough of it is held and
// resumes it once it runs short.
func (l *lanes) fetchControl() {
	c := l.c
	l.mu.Lock()
	hi, hb := len(l.held[interactive]), len(l.held[bulk])
	l.mu.Unlock()
	bulkCap := c.cfg.InFlight
	if hi > 0 {
		bulkCap = max(c.cfg.bulkMin(), 1)
	}
	// Pause at the cap, resume at half of it: a resumed topic is fetched
	// only once the fetch under way returns (up to fetchMaxWait when the
	// other lane has nothing), which the held half covers.
	for lane, held := range [2]int{hi, hb} {
		limit := [2]int{c.cfg.InFlight, bulkCap}[lane]
		switch {
		case held >= limit && !l.paused[lane]:
			c.cl.PauseFetchTopics(l.topics(lane)...)
			l.paused[lane] = true
		case held <= limit/2 && l.paused[lane]:
			c.cl.ResumeFetchTopics(l.topics(lane)...)
			l.paused[lane] = false
		}
	}
}

func (l *lanes) heldOf(lane int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held[lane])
}

func (l *lanes) heldCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.held[interactive]) + len(l.held[bulk])
}

// drop forgets the held records of parts (revoked or lost), or all of
// them when parts is nil.
func (l *lanes) drop(parts map[string][]int32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for lane, held := range l.held {
		if parts == nil {
			l.held[lane] = nil
			continue
		}
		kept := held[:0]
		for _, r := range held {
			if !slices.Contains(parts[r.Topic], r.Partition) {
				kept = append(kept, r)
			}
		}
		l.held[lane] = kept
	}
}

// Drain drains the consumer as the end of Run's context does (Kubernetes'
// preStop hook calls it through GET /drain, before SIGTERM): readiness
// turns false at once, fetching stops, the records in flight finish for up
// to the drain timeout (their replies produced), what finished is committed
// and the consumer leaves its group, so that its partitions move to the
// others before the process exits. Run then only waits for its context.
// Drain returns the drain's report once it finished, or a report with
// Drained false when ctx ends first; every call waits for the same drain.
func (c *Consumer) Drain(ctx context.Context) admin.DrainReport {
	c.askOnce.Do(func() {
		c.draining.Store(true)
		close(c.drainAsk)
	})
	select {
	case <-c.drained:
		return c.report
	case <-ctx.Done():
		return admin.DrainReport{InFlightLeft: c.inflight.Load()}
	}
}

// finishDrain sets the drain's report and answers the Drain calls, once.
func (c *Consumer) finishDrain(r admin.DrainReport) {
	c.drainOnce.Do(func() {
		c.report = r
		close(c.drained)
	})
}

// drain waits for in-flight work up to the drain timeout, abandons the
// rest, commits what finished and leaves the group.
func (c *Consumer) drain() admin.DrainReport {
	start := time.Now()
	c.draining.Store(true)
	c.ready.Store(false)
	c.log.Info("consumer draining", "in_flight", c.inflight.Load(), "timeout", c.cfg.DrainTimeout)
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	t := time.NewTimer(c.cfg.DrainTimeout)
	defer t.Stop()
	var left int64
	select {
	case <-done:
	case <-t.C:
		left = c.inflight.Load()
		c.log.Warn("drain timeout: abandoning unfinished records, they stay uncommitted", "in_flight", left)
		c.stopWork()
		<-done
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.cl.CommitMarkedOffsets(ctx); err != nil {
		c.m.commits.Inc()
		c.log.Error("final commit", "err", err)
	}
	// Leaving now, not at Close, moves the partitions while the process
	// waits for its SIGTERM. The group's revoke commits again: nothing new.
	if err := c.cl.LeaveGroupContext(ctx); err != nil {
		c.log.Warn("leave group", "err", err)
	}
	if c.cbWorker != nil {
		<-c.cbWorker.done // its batch under way, up to the drain timeout
		lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.cbWorker.cl.LeaveGroupContext(lctx); err != nil {
			c.log.Warn("leave callback group", "err", err)
		}
		lcancel()
	}
	took := time.Since(start)
	c.log.Info("consumer drained", "took", took, "abandoned", left)
	return admin.DrainReport{Drained: left == 0, InFlightLeft: left, TookMS: took.Milliseconds()}
}

// Close leaves the group and closes the Kafka client. Call it after Run
// returned.
func (c *Consumer) Close() {
	c.stopWork()
	c.cl.CloseAllowingRebalance()
	if c.cbWorker != nil {
		c.cbWorker.cl.CloseAllowingRebalance()
	}
	if c.release != nil {
		_ = c.release()
	}
}

// dispatch hands r to the worker of its key, starting one when none runs.
func (c *Consumer) dispatch(r *kgo.Record, now time.Time) {
	w := &work{rec: r, part: c.tracker.add(r), key: string(r.Key), got: now}
	switch {
	case c.cfg.OrderBy == OrderByPartition:
		w.key = fmt.Sprintf("\x00%s/%d", r.Topic, r.Partition)
	case len(r.Key) == 0:
		w.key = fmt.Sprintf("\x00%s/%d/%d", r.Topic, r.Partition, r.Offset) // unordered
	}
	c.inflight.Add(1)
	if r.Topic == c.bus.BulkTopic {
		c.inflightBulk.Add(1)
	}
	c.mu.Lock()
	if q, busy := c.keys[w.key]; busy {
		c.keys[w.key] = append(q, w)
		c.mu.Unlock()
		return
	}
	c.keys[w.key] = nil
	c.mu.Unlock()
	c.wg.Add(1)
	select {
	case c.idle <- w: // a parked worker takes it
	default:
		go c.worker(w)
	}
}

// workerIdle is how long a worker waits for another key before it exits.
const workerIdle = time.Second

// worker runs the key of w, then waits a while to run another key's. Reusing
// a worker keeps the stack it grew in the LLM call (starting a goroutine per
// key spent about 4 % of the CPU under load growing stacks).
func (c *Consumer) worker(w *work) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		c.runKey(w)
		idle.Reset(workerIdle)
		select {
		case w = <-c.idle:
		case <-idle.C:
			return
		case <-c.work.Done():
			return
		}
	}
}

// runKey processes w and then every record queued behind it for its key.
func (c *Consumer) runKey(w *work) {
	defer c.wg.Done()
	for w != nil {
		c.handle(w)
		c.mu.Lock()
		q := c.keys[w.key]
		if len(q) == 0 {
			delete(c.keys, w.key)
			w = nil
		} else {
			w, c.keys[w.key] = q[0], q[1:]
		}
		c.mu.Unlock()
	}
}

func (c *Consumer) handle(w *work) {
	defer func() {
		if w.rec.Topic == c.bus.BulkTopic {
			c.inflightBulk.Add(-1)
		}
		c.slotHeld(time.Since(w.got))
		c.inflight.Add(-1)
		select {
		case c.freed <- struct{}{}:
		default:
		}
	}()
	if !c.tracker.alive(w.part) {
		c.m.records.With("abandoned").Inc()
		return // revoked while queued: its new owner processes it
	}
	c.m.queueWait[c.lane(w.rec.Topic)].Observe(max(w.got.Sub(w.rec.Timestamp), 0).Seconds())
	outcome, err := c.process(c.work, w.rec)
	if err != nil && c.work.Err() == nil && permanent(err) && !errors.Is(err, errDeadLettered) && !errors.Is(err, errDeadLetterLost) {
		// Retrying cannot help: the record goes to the DLQ rather than
		// stopping its partition's commits for ever.
		if err = c.deadLetter(c.work, w.rec, err); err == nil {
			err = errDeadLettered
		}
	}
	switch {
	case errors.Is(err, errDeadLettered):
		outcome, err = "dead_letter", nil
	case errors.Is(err, errDeadLetterLost):
		outcome, err = "dead_letter_lost", nil
	}
	if err != nil {
		c.m.records.With("abandoned").Inc()
		c.log.Warn("record abandoned uncommitted", "partition", w.rec.Partition, "offset", w.rec.Offset, "err", err)
		return
	}
	c.m.records.With(outcome).Inc()
	c.m.process.Observe(time.Since(w.got).Seconds())
	if eo, ok := c.tracker.finish(w.part, w.rec.Offset); ok {
		c.markMu.Lock()
		if c.tracker.alive(w.part) {
			c.cl.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{w.part.topic: {w.part.id: eo}})
		}
		c.markMu.Unlock()
	}
}

// process runs the pipeline for one record and returns its outcome. It
// returns an error only when ctx ended before the record was finished.
func (c *Consumer) process(ctx context.Context, r *kgo.Record) (string, error) {
	req, err := envelope.DecodeRequest(r.Value)
	if err == nil {
		err = c.checkReplyTopic(&req)
	}
	if err != nil {
		if err := c.deadLetter(ctx, r, err); err != nil {
			return "", err
		}
		return "dead_letter", nil
	}
	d := store.DialogOf(&req)

	// One round trip: a redelivered request is recognised by its stored
	// result, and the history is there for the usual case.
	var res store.Result
	var history []envelope.Turn
	if err := c.retry(ctx, "redis_load", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, storeAttemptTimeout)
		defer cancel()
		var err error
		res, history, err = c.store.Load(ctx, d, req.RequestID)
		return err
	}); err != nil {
		return "", err
	}
	// A request that asks for its pieces gets them on its answer stream,
	// which always ends with done once the result is stored.
	var pieces *pieceWriter
	if req.Stream && c.streams != nil {
		pieces = c.newPieceWriter(ctx, d, req.RequestID)
		defer pieces.stop() // a failed request's held pieces are not written after it
	}
	if res.Final() {
		pieces.finishIf(res.Reply, req.CreatedAt)
		return "duplicate", c.publish(ctx, r, &req, res.Reply)
	}

	if req.Expired(c.now()) {
		reply := envelope.NewReply(&req, envelope.StatusExpired, c.now().UTC())
		stored, _, err := c.complete(ctx, d, &req, reply)
		if err != nil {
			return "", err
		}
		pieces.finishIf(stored, req.CreatedAt)
		return "expired", c.publish(ctx, r, &req, stored)
	}

	// The lane orders the request's waits for the LLM's slots and quota.
	lctx := llm.WithLane(ctx, c.laneOf(r.Topic))
	var ans llm.Answer
	if pieces != nil && c.streamer != nil {
		ans, err = c.streamer.AnswerStreaming(lctx, &req, history, pieces)
	} else {
		ans, err = c.llm.Answer(lctx, &req, history)
	}
	if err != nil {
		return "", err
	}
	finished := c.now().UTC()
	reply := envelope.NewReply(&req, envelope.StatusDone, finished)
	// Personal data never reaches the reply or the history, whatever the
	// Answerer did (llm.Client masks and counts already; masking is idempotent).
	reply.Answer, reply.Source, reply.Handoff, reply.LLMMs = pii.Mask(ans.Text), ans.Source, ans.Handoff, ans.LLMTime.Milliseconds()
	stored, fresh, err := c.complete(ctx, d, &req, reply,
		envelope.Turn{Role: envelope.RoleUser, Content: pii.Mask(req.Text), RequestID: req.RequestID, At: req.CreatedAt.UTC()},
		envelope.Turn{Role: envelope.RoleAssistant, Content: reply.Answer, RequestID: req.RequestID, At: finished},
	)
	if err != nil {
		return "", err
	}
	pieces.finishIf(stored, req.CreatedAt)
	outcome := "done"
	if !fresh {
		outcome = "duplicate"
	}
	return outcome, c.publish(ctx, r, &req, stored)
}

// laneOf returns the lane of a record of topic (envelope.Lane*).
func (c *Consumer) laneOf(topic string) string {
	return [2]string{envelope.LaneInteractive, envelope.LaneBulk}[c.lane(topic)]
}

// lane returns the lane of a record of topic, as an index: interactive or
// bulk.
func (c *Consumer) lane(topic string) int {
	if topic == c.bus.BulkTopic {
		return bulk
	}
	return interactive
}

// complete stores the reply (and turns) and returns the reply that is stored,
// with fresh false when an earlier delivery of the request had stored one.
func (c *Consumer) complete(ctx context.Context, d store.Dialog, req *envelope.Request, reply envelope.Reply, turns ...envelope.Turn) (stored envelope.Reply, fresh bool, err error) {
	err = c.retry(ctx, "redis_complete", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, storeAttemptTimeout)
		defer cancel()
		var err error
		stored, fresh, err = c.store.Complete(ctx, d, reply, req.CreatedAt, turns...)
		return err
	})
	return stored, fresh, err
}

// checkReplyTopic refuses a reply topic that is one of Sluice's own input
// topics: a reply there would come back as a request (or a callback) and
// be dead-lettered after the LLM was paid for.
func (c *Consumer) checkReplyTopic(req *envelope.Request) error {
	switch req.Reply.Topic {
	case c.bus.RequestsTopic, c.bus.BulkTopic, c.bus.DLQTopic, c.bus.CallbacksTopic:
		return fmt.Errorf("reply.topic %q is one of Sluice's own topics (requests, dead letters or callbacks): the reply would loop back", req.Reply.Topic)
	}
	return nil
}

// storeAttemptTimeout bounds one attempt of a store step, so that a Redis
// that hangs (rather than refusing connections) is retried like one that is
// down. Completing is idempotent, so an attempt given up on that went
// through after all is harmless.
const storeAttemptTimeout = 5 * time.Second

// publish produces the reply where the request asked for it.
func (c *Consumer) publish(ctx context.Context, src *kgo.Record, req *envelope.Request, reply envelope.Reply) error {
	value, err := json.Marshal(reply)
	if err != nil {
		return fmt.Errorf("encode reply: %w", err)
	}
	rec := &kgo.Record{
		Topic:     req.Reply.Topic,
		Partition: req.Reply.Partition,
		Key:       []byte(reply.RequestID),
		Value:     value,
	}
	for _, h := range src.Headers {
		if h.Key == envelope.HeaderTraceparent {
			rec.Headers = append(rec.Headers, h)
		}
	}
	if err := c.retry(ctx, "kafka_reply", func(ctx context.Context) error {
		return c.cl.ProduceSync(ctx, rec).FirstErr()
	}); err == nil {
		if c.cbWorker != nil && req.Reply.CallbackURL != "" {
			if err := c.handOver(ctx, req, reply); err != nil {
				return err
			}
		}
	} else {
		if !permanent(err) || ctx.Err() != nil {
			return err
		}
		// The result is stored (a poll finds it); the reply cannot be
		// delivered where the request asked, so the request goes to the
		// DLQ instead of blocking its dialog forever.
		if err := c.deadLetter(ctx, src, fmt.Errorf("publish reply to %s/%d: %w", rec.Topic, rec.Partition, err)); err != nil {
			return err
		}
		return errDeadLettered
	}
	if !req.CreatedAt.IsZero() {
		c.m.e2e[c.lane(src.Topic)].Observe(time.Since(req.CreatedAt).Seconds())
	}
	return nil
}

// deadLetter sends a record that cannot be processed to the DLQ topic with
// the reason in a header and where it came from. A copy that cannot be
// produced whole (over the client's or the topic's record size, once the
// headers are added) is produced truncated, with the reason and the
// original's size, so that it can be fetched from its source. It returns
// nil when a copy was produced, errDeadLetterLost when none could be (the
// record is finished all the same: a partition never stops for one record),
// or the error that ended the retries (ctx ended).
func (c *Consumer) deadLetter(ctx context.Context, r *kgo.Record, cause error) error {
	c.log.Warn("dead-lettering request record", "partition", r.Partition, "offset", r.Offset, "err", cause)
	source := kgo.RecordHeader{Key: HeaderSource, Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)}
	whole := &kgo.Record{
		Topic:     c.bus.DLQTopic,
		Partition: envelope.AnyPartition,
		Key:       r.Key,
		Value:     r.Value,
		Headers: append(append([]kgo.RecordHeader(nil), r.Headers...),
			kgo.RecordHeader{Key: envelope.HeaderError, Value: []byte(cause.Error())}, source),
	}
	err := c.produceDLQ(ctx, whole)
	if err == nil || ctx.Err() != nil || !permanent(err) {
		return err
	}
	size := len(r.Value)
	for _, h := range r.Headers {
		size += len(h.Key) + len(h.Value)
	}
	c.log.Warn("dead-letter copy refused whole, producing it truncated", "partition", r.Partition, "offset", r.Offset, "bytes", size, "err", err)
	cut := &kgo.Record{
		Topic:     c.bus.DLQTopic,
		Partition: envelope.AnyPartition,
		Key:       r.Key[:min(len(r.Key), dlqKeep)],
		Value:     r.Value[:min(len(r.Value), dlqKeep)],
		Headers: []kgo.RecordHeader{
			{Key: envelope.HeaderError, Value: fmt.Appendf(nil, "%v (dead-letter copy truncated to %d bytes of value, headers dropped: the whole copy was refused: %v; the original is at %s)", cause, dlqKeep, err, source.Value)},
			source,
			{Key: HeaderTruncated, Value: strconv.AppendInt(nil, int64(size), 10)},
		},
	}
	if err := c.produceDLQ(ctx, cut); err == nil || ctx.Err() != nil || !permanent(err) {
		return err
	}
	c.log.Error("no dead-letter copy could be produced; the record is skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
	return errDeadLetterLost
}

func (c *Consumer) produceDLQ(ctx context.Context, rec *kgo.Record) error {
	return c.retry(ctx, "kafka_dlq", func(ctx context.Context) error {
		return c.cl.ProduceSync(ctx, rec).FirstErr()
	})
}

// Headers of dead-letter records besides envelope.HeaderError.
const (
	// HeaderSource is topic/partition/offset of the original record.
	HeaderSource = "sluice-source"
	// HeaderTruncated, on a copy cut to fit, is the original's size in
	// bytes (value and headers).
	HeaderTruncated = "sluice-truncated"
)

// dlqKeep is how much of a key and value a truncated dead-letter copy keeps.
const dlqKeep = 64 << 10

func (c *Consumer) retry(ctx context.Context, step string, fn func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanent(err) {
			return err
		}
		c.m.retries.With(step).Inc()
		if attempt == 1 || attempt%10 == 0 {
			c.log.Warn("transient failure, retrying", "step", step, "attempt", attempt, "err", err)
		}
		if err := backoff.Sleep(ctx, backoff.Linear(attempt, c.cfg.RetryBackoff, 2*time.Second)); err != nil {
			return err
		}
	}
}

// errDeadLettered reports that a record went to the DLQ instead of being
// answered on its reply topic; the record is finished.
var errDeadLettered = errors.New("dead-lettered")

// errDeadLetterLost reports that a record could not be processed and no
// dead-letter copy of it could be produced; the record is finished.
var errDeadLetterLost = errors.New("dead-letter copy lost")

// permanent reports whether retrying err cannot help: a Kafka error the
// protocol marks as not retriable (illegal topic name, record too large,
// authorization), a topic that still does not exist after the client's own
// metadata retries (a bot's reply topic on a cluster without auto-creation),
// or a closed client.
func permanent(err error) bool {
	if errors.Is(err, kgo.ErrClientClosed) || errors.Is(err, kerr.UnknownTopicOrPartition) {
		return true
	}
	var ke *kerr.Error
	return errors.As(err, &ke) && !ke.Retriable
}

// revoked runs while the group takes partitions away: it lets their
// in-flight work finish up to the revoke timeout, commits, and forgets them.
func (c *Consumer) revoked(ctx context.Context, cl *kgo.Client, parts map[string][]int32) {
	c.lanes.drop(parts)
	t := time.NewTimer(c.cfg.RevokeTimeout)
	defer t.Stop()
wait:
	for topic, ids := range parts {
		for _, id := range ids {
			select {
			case <-c.tracker.idle(topic, id):
			case <-t.C:
				c.log.Warn("revoke timeout: abandoning unfinished records of revoked partitions")
				break wait
			case <-c.work.Done():
				break wait
			}
		}
	}
	c.markMu.Lock()
	final := c.tracker.release(parts)
	if len(final) > 0 {
		cl.MarkCommitOffsets(final)
	}
	c.markMu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cl.CommitMarkedOffsets(cctx); err != nil {
		c.m.commits.Inc()
		c.log.Warn("commit on revoke", "err", err)
	}
}

// lost forgets partitions taken away without a chance to commit.
func (c *Consumer) lost(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
	c.lanes.drop(parts)
	c.markMu.Lock()
	c.tracker.release(parts)
	c.markMu.Unlock()
}
