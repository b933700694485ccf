package consumer_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"sluice/consumer"
)

// endOffsetReads counts the reads of the requests topic's end offsets
// that reach the broker, the first request of every lag read: the
// consumers' group client and the test's producer ask for none otherwise.
type endOffsetReads struct {
	mu    sync.Mutex
	times []time.Time
}

func (e *env) countEndOffsetReads() *endOffsetReads {
	reads := &endOffsetReads{}
	e.broker.Cluster().ControlKey(kmsg.ListOffsets.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		for _, t := range req.(*kmsg.ListOffsetsRequest).Topics {
			if t.Topic == requestsTopic && len(t.Partitions) > 0 && t.Partitions[0].Timestamp == -1 {
				reads.mu.Lock()
				reads.times = append(reads.times, time.Now())
				reads.mu.Unlock()
			}
		}
		return nil, nil, false // observed only: the broker answers
	})
	return reads
}

// since returns the times of the reads from the nth on.
func (r *endOffsetReads) since(n int) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.times[min(n, len(r.times)):])
}

func (r *endOffsetReads) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.times)
}

// gauge returns the value of the gauge name of reg, for the requests
// topic when it has a topic label.
func gauge(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	return gaugeOf(tb, reg, name, requestsTopic)
}

// gaugeOf returns the value of the gauge name of reg, for topic when it
// has a topic label.
func gaugeOf(tb testing.TB, reg *prometheus.Registry, name, requestsTopic string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			topic := requestsTopic
			for _, l := range m.GetLabel() {
				if l.GetName() == "topic" {
					topic = l.GetValue()
				}
			}
			if topic == requestsTopic {
				return m.GetGauge().GetValue()
			}
		}
	}
	tb.Fatalf("%s{topic=%q} is not exported", name, requestsTopic)
	return 0
}

// waitGauges waits until ok accepts the gauges of every consumer.
func waitGauges(tb testing.TB, what string, rs []*running, ok func(lag, age, ratio float64) bool) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		all, seen := true, ""
		for i, r := range rs {
			lag, age := gauge(tb, r.reg, "sluice_consumer_group_lag"), gauge(tb, r.reg, "sluice_consumer_oldest_unfinished_age_seconds")
			ratio := gauge(tb, r.reg, "sluice_consumer_in_flight_ratio")
			seen += fmt.Sprintf(" consumer %d: lag %v, age %.1fs, in-flight ratio %v;", i, lag, age, ratio)
			all = all && ok(lag, age, ratio)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v:%s", what, waitFor, seen)
		}
		time.Sleep(20 * time.Millisecond) // the gauges change on their interval; no event to await
	}
}

// TestGroupLagSharedThroughRedis: two consumers of the group, sharing the
// lag through Redis, export the lag and the oldest record's age of a known
// backlog, both the same; only one of them reads Kafka per lag interval;
// with Redis down each reads Kafka itself; once the backlog is answered
// both export 0.
func TestGroupLagSharedThroughRedis(t *testing.T) {
	e := newEnv(t)
	e.redis.ClockTTL(true) // the lock expires as Redis's would
	reads := e.countEndOffsetReads()
	g := newGate()
	defer g.Open()
	cfg := testConfig()
	cfg.InFlight = 2
	cfg.LagInterval = 500 * time.Millisecond
	share := func(c *consumer.Consumer) { c.ShareLag(e.store.Client(), "sluicetest") }
	rs := []*running{
		e.start(t, cfg, &fakeAnswerer{AnswerFn: g.answer}, share),
		e.start(t, cfg, &fakeAnswerer{AnswerFn: g.answer}, share),
	}

	// Five records on each partition, all produced a minute ago: more than
	// the consumers' budgets of two each, none of which can finish.
	const perPartition = 5
	created := time.Now().Add(-time.Minute)
	var recs []*kgo.Record
	for p := range int32(numPartitions) {
		for i := range perPartition {
			rec := requestRecord(t, newRequest(int(p)*100+i, "backlog"), p)
			rec.Timestamp = created
			recs = append(recs, rec)
		}
	}
	e.produce(t, recs...)
	const backlog = numPartitions * perPartition

	waitGauges(t, "the whole backlog as lag, a minute old", rs, func(lag, age, _ float64) bool {
		return lag == backlog && age >= 60 && age < 60+waitFor.Seconds()
	})
	waitGauges(t, "every consumer's budget full", rs, func(_, _, ratio float64) bool { return ratio == 1 })

	// One Kafka read per interval between both: reads are at least an
	// interval apart (less the jitter of reaching the broker). Two
	// consumers reading on their own would read at most half an interval
	// apart once per interval.
	from := reads.count()
	deadline := time.Now().Add(waitFor)
	for len(reads.since(from)) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%d lag reads within %v, want 6", len(reads.since(from)), waitFor)
		}
		time.Sleep(50 * time.Millisecond) // reads come on their interval
	}
	ts := reads.since(from)
	for i := 1; i < len(ts); i++ {
		if gap := ts[i].Sub(ts[i-1]); gap < cfg.LagInterval*6/10 {
			t.Errorf("lag reads %d and %d are %v apart, want about the lag interval %v: more than one read per interval", i-1, i, gap, cfg.LagInterval)
		}
	}

	// Redis down: each consumer reads Kafka itself, and sees new records.
	e.redis.Close()
	more := make([]*kgo.Record, numPartitions)
	for p := range more {
		more[p] = requestRecord(t, newRequest(1000+p, "more"), int32(p))
	}
	e.produce(t, more...)
	waitGauges(t, "the lag read by each consumer with Redis down", rs, func(lag, age, _ float64) bool {
		return lag == backlog+numPartitions && age >= 60
	})
	if err := e.redis.Restart(); err != nil {
		t.Fatal(err)
	}

	g.Open()
	waitGauges(t, "no lag once every record is answered", rs, func(lag, age, _ float64) bool { return lag == 0 && age == 0 })
}

// TestBulkLagExported: the group's lag and oldest record's age on the bulk
// topic are exported beside the interactive topic's.
func TestBulkLagExported(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	defer g.Open()
	cfg := testConfig()
	cfg.InFlight = 1
	cfg.LagInterval = 200 * time.Millisecond
	r := e.start(t, cfg, &fakeAnswerer{AnswerFn: g.answer})
	const n = 6
	var recs []*kgo.Record
	for i := range n {
		rec := requestRecord(t, newRequest(i, "bulk"), -1)
		rec.Topic, rec.Timestamp = e.bus.BulkTopic, time.Now().Add(-time.Minute)
		recs = append(recs, rec)
	}
	e.produce(t, recs...)
	deadline := time.Now().Add(waitFor)
	for {
		lag := gaugeOf(t, r.reg, "sluice_consumer_group_lag", e.bus.BulkTopic)
		age := gaugeOf(t, r.reg, "sluice_consumer_oldest_unfinished_age_seconds", e.bus.BulkTopic)
		ilag := gauge(t, r.reg, "sluice_consumer_group_lag")
		if lag == n && age >= 60 && ilag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bulk lag %v, age %.1fs, interactive lag %v; want %d, a minute, 0", lag, age, ilag, n)
		}
		time.Sleep(20 * time.Millisecond) // the gauges change on their interval; no event to await
	}
}
