package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/bus"
	"sluice/shared/envelope"
	"sluice/shared/metric"
)

// callbackJob is a callback handed over on the callbacks topic: the done
// body to POST to URL. The record's key is the request id.
type callbackJob struct {
	V         int             `json:"v"`
	RequestID string          `json:"request_id"`
	URL       string          `json:"url"`
	Body      json.RawMessage `json:"body"`
}

// callbackBatch bounds the callbacks one deliverer works on at once.
const callbackBatch = 64

// callbackWorker delivers the callbacks handed over on the callbacks topic.
//
// Answering a request only puts its callback on the topic (a produce
// acknowledged before the request record is marked done), so a receiver
// that is slow or down holds neither an in-flight slot nor its dialog, nor
// other shops' answers. The consumer processes share the topic as the
// callback group. A worker takes up to callbackBatch records, delivers them
// concurrently (each with the deliverer's bounded retries) and commits the
// batch when all are finished: delivery is at least once (a worker that
// dies mid-batch leaves it to the next), and the receiver tells repeats by
// Sluice-Request-Id.
type callbackWorker struct {
	cl    *kgo.Client
	cb    Callbacks
	log   *slog.Logger
	drain time.Duration
	jobs  metric.Children[prometheus.Counter]
	done  chan struct{}
}

func newCallbackWorker(cfg Config, cfgBus bus.Config, cb Callbacks, log *slog.Logger, reg prometheus.Registerer, jobs metric.Children[prometheus.Counter]) (*callbackWorker, error) {
	cl, err := bus.NewClient(cfgBus, "callbacks", log, reg,
		kgo.ConsumerGroup(cfgBus.CallbackGroup),
		kgo.ConsumeTopics(cfgBus.CallbacksTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// A dead consumer's callbacks move on as soon as its requests do.
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.HeartbeatInterval(heartbeat(cfg.SessionTimeout)),
		// A batch is committed when it is finished; a rebalance waits for
		// it, up to a delivery's retries.
		kgo.BlockRebalanceOnPoll(),
		kgo.RebalanceTimeout(2*time.Minute),
	)
	if err != nil {
		return nil, err
	}
	return &callbackWorker{cl: cl, cb: cb, log: log, drain: cfg.DrainTimeout, jobs: jobs, done: make(chan struct{})}, nil
}

// run delivers callbacks until ctx ends, then lets the batch under way
// finish for up to the drain timeout.
func (w *callbackWorker) run(ctx context.Context) {
	defer close(w.done)
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(w.drain, cancel) })
	defer stop()
	for {
		fetches := w.cl.PollRecords(ctx, callbackBatch)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			w.cl.AllowRebalance()
			return
		}
		bus.LogFetchErrors(w.log, "callback fetch error", fetches)
		recs := fetches.Records()
		var wg sync.WaitGroup
		for _, r := range recs {
			wg.Go(func() { w.deliver(work, r) })
		}
		wg.Wait()
		if work.Err() == nil && len(recs) > 0 {
			cctx, ccancel := context.WithTimeout(work, 5*time.Second)
			if err := w.cl.CommitRecords(cctx, recs...); err != nil {
				w.log.Warn("commit callbacks", "err", err) // they are delivered again
			}
			ccancel()
		}
		w.cl.AllowRebalance()
		if work.Err() != nil {
			return
		}
	}
}

func (w *callbackWorker) deliver(ctx context.Context, r *kgo.Record) {
	var job callbackJob
	if err := json.Unmarshal(r.Value, &job); err != nil || job.V != 1 || job.URL == "" || job.RequestID == "" {
		w.jobs.With("invalid").Inc()
		w.log.Warn("undecodable callback record, skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
		return
	}
	if err := w.cb.Deliver(ctx, job.URL, job.RequestID, job.Body); err != nil {
		if ctx.Err() == nil {
			w.jobs.With("failed").Inc()
			w.log.Warn("callback not delivered", "request_id", job.RequestID, "err", err)
		}
		return
	}
	w.jobs.With("delivered").Inc()
}

// handOver puts the callback of req, answered by reply, on the callbacks
// topic; it returns once Kafka acknowledged it.
func (c *Consumer) handOver(ctx context.Context, req *envelope.Request, reply envelope.Reply) error {
	body, err := json.Marshal(envelope.DoneOf(reply, req.CreatedAt))
	if err != nil {
		return fmt.Errorf("encode callback body: %w", err)
	}
	value, err := json.Marshal(callbackJob{V: 1, RequestID: reply.RequestID, URL: req.Reply.CallbackURL, Body: body})
	if err != nil {
		return fmt.Errorf("encode callback: %w", err)
	}
	rec := &kgo.Record{Topic: c.bus.CallbacksTopic, Partition: envelope.AnyPartition, Key: []byte(reply.RequestID), Value: value}
	if err := c.retry(ctx, "kafka_callback", func(ctx context.Context) error {
		return c.cl.ProduceSync(ctx, rec).FirstErr()
	}); err != nil {
		return err
	}
	c.m.callbacks.With("handed_over").Inc()
	return nil
}
