package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/bus"
	"sluice/shared/envelope"
)

// runKafka produces the requests over c.Dialogs dialogs straight to the
// requests topic, as a bot would, and reads the replies topic until every
// one is answered, no reply came for c.ReplyTimeout, or ctx ends.
func runKafka(ctx context.Context, c Config, log *slog.Logger) (Result, error) {
	count := c.Count
	if count == 0 {
		count = DefaultKafkaCount
	}
	res := Result{Target: TargetKafka}
	cl, err := bus.NewClient(c.Kafka, "loadgen", log, nil,
		kgo.DefaultProduceTopic(c.Kafka.RequestsTopic),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()),
		// Room for every request: producing never waits, so the clock
		// measures the consumers, not this loop.
		kgo.MaxBufferedRecords(count+1),
		// A request not on the broker by then will not be answered either
		// (franz-go allows no less than 1 s).
		kgo.RecordDeliveryTimeout(max(c.ReplyTimeout, time.Second)))
	if err != nil {
		return res, err
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return res, fmt.Errorf("kafka %s: %w", strings.Join(c.Kafka.Brokers, ","), err)
	}
	// Replies are read from the topic's end as it is before anything is
	// produced: none is missed, none of an earlier run is counted.
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, c.Kafka.RepliesTopic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return res, fmt.Errorf("replies topic %s: %w", c.Kafka.RepliesTopic, err)
	}
	from := map[string]map[int32]kgo.Offset{c.Kafka.RepliesTopic: {}}
	ends.Each(func(o kadm.ListedOffset) { from[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset) })
	rd, err := bus.NewClient(c.Kafka, "loadgen", log, nil, kgo.ConsumePartitions(from))
	if err != nil {
		return res, err
	}
	defer rd.Close()

	run := envelope.NewDialogID()[:8] // 8 random hex characters tell this run's request ids apart
	prefix := "lg-" + run + "-"
	dialogs := make([]string, c.Dialogs)
	for i := range dialogs {
		dialogs[i] = envelope.NewDialogID()
	}
	fails := newFailures()
	var (
		sentAt           = make(map[string]time.Time, count) // read and written on this goroutine only
		failed, settled  atomic.Int64
		replyTopic       = c.Kafka.RepliesTopic
		start            = time.Now()
		deadline         = start.Add(10 * time.Minute)
		pollCtx, wakeAll = context.WithCancel(ctx)
	)
	defer wakeAll()
	for i := range count {
		req := envelope.Request{V: 1, RequestID: fmt.Sprintf("%s%d", prefix, i), Tenant: c.Tenant, User: "bot",
			DialogID: dialogs[i%len(dialogs)], Text: c.Text, CreatedAt: time.Now().UTC(), Deadline: deadline,
			Reply: envelope.ReplyTo{Topic: replyTopic, Partition: envelope.AnyPartition}}
		v, _ := json.Marshal(&req)
		sentAt[req.RequestID] = time.Now()
		cl.Produce(ctx, &kgo.Record{Key: []byte(req.Key()), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				fails.add("produce", err.Error(), time.Now())
			}
			if settled.Add(1) == int64(count) && failed.Load() > 0 {
				wakeAll() // the reader waits for fewer replies now
			}
		})
	}

	var lat latencies
	seen := make(map[string]bool, count)
	last := time.Now() // of the last reply of this run
	stalled := false
	for len(seen)+int(failed.Load()) < count && ctx.Err() == nil {
		wait := c.ReplyTimeout - time.Since(last)
		if wait <= 0 {
			stalled = true
			break
		}
		base := pollCtx
		if pollCtx.Err() != nil {
			base = ctx
		}
		fctx, fcancel := context.WithTimeout(base, wait)
		fetches := rd.PollFetches(fctx)
		fcancel()
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				log.Warn("loadgen: fetch replies", "topic", topic, "partition", p, "err", err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			id := string(r.Key)
			if !strings.HasPrefix(id, prefix) || seen[id] {
				return
			}
			seen[id] = true
			last = time.Now()
			lat.add(last.Sub(sentAt[id]))
		})
	}
	secs := time.Since(start).Seconds()
	res.Seconds = secs
	res.Sent = int64(count)
	res.Answered = int64(len(seen))
	res.Errors = failed.Load()
	res.PerSecond = perSecond(res.Answered, secs)
	lat.fill(&res)
	fails.fill(&res)
	switch {
	case res.Answered > 0 && !stalled:
		return res, nil
	case res.Answered > 0:
		return res, fmt.Errorf("no reply for %s; %d of %d answered", c.ReplyTimeout, res.Answered, count)
	case stalled:
		return res, fmt.Errorf("%w: no reply on %s within %s to any of %d requests (are consumers running?)%s",
			ErrNothingAnswered, replyTopic, c.ReplyTimeout, count, res.why())
	case res.Errors > 0:
		return res, fmt.Errorf("%w: %d of %d requests could not be produced%s", ErrNothingAnswered, res.Errors, count, res.why())
	default:
		return res, fmt.Errorf("%w: stopped before any reply: %w", ErrNothingAnswered, context.Cause(ctx))
	}
}
