package producer

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// admission estimates how long a new request would wait in the queue, from
// the consumer group's lag over its recent completion rate, so that the door
// can refuse at once what cannot be answered in time.
//
// Every refresh interval it reads the requests topic's end offsets and the
// group's committed offsets (two admin requests, whatever the traffic; a
// third for start offsets while a partition has no commit). The
// completion rate is how fast the committed offsets advance, smoothed; it is
// floored at MinRate so that a burst arriving at idle consumers is not
// refused before their rate is measured. Requests this replica accepted
// since the last refresh count as lag at once: clients that retry a 503
// straight away would otherwise all get in between two refreshes, on a
// stale estimate, and miss their wait. The hot path only touches atomics.
type admission struct {
	adm      *kadm.Client
	topic    string
	group    string
	interval time.Duration
	minRate  float64

	lag      atomic.Int64
	accepted atomic.Int64 // requests this replica accepted, in all
	base     atomic.Int64 // accepted when the current lag was measured
	rate     atomic.Uint64 // float64 bits, records/s
	lastSum  int64
	lastTime time.Time

	mLag  prometheus.GaugeFunc
	mRate prometheus.GaugeFunc
	mWait prometheus.GaugeFunc
}

func newAdmission(cl *kgo.Client, topic, group string, interval time.Duration, minRate float64) *admission {
	a := &admission{adm: kadm.NewClient(cl), topic: topic, group: group, interval: interval, minRate: minRate}
	a.mLag = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_queue_lag", Help: "Requests on Kafka not yet committed by the consumers (as last measured, plus those this replica accepted since).",
	}, func() float64 { return float64(a.backlog()) })
	a.mRate = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_completion_rate", Help: "Requests/s the consumers complete (smoothed, as last measured).",
	}, func() float64 { return math.Float64frombits(a.rate.Load()) })
	a.mWait = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_estimated_wait_seconds", Help: "Estimated queue wait of a new request.",
	}, func() float64 { return a.estimate().Seconds() })
	return a
}

func (a *admission) collectors() []prometheus.Collector {
	return []prometheus.Collector{a.mLag, a.mRate, a.mWait}
}

// admitted counts a request accepted by this replica.
func (a *admission) admitted() { a.accepted.Add(1) }

// backlog returns the lag as last measured plus the requests this replica
// accepted since.
func (a *admission) backlog() int64 {
	return a.lag.Load() + max(a.accepted.Load()-a.base.Load(), 0)
}

// estimate returns the expected queue wait of a request accepted now.
func (a *admission) estimate() time.Duration {
	lag := a.backlog()
	if lag <= 0 {
		return 0
	}
	rate := max(math.Float64frombits(a.rate.Load()), a.minRate)
	if rate <= 0 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(float64(lag) / rate * float64(time.Second))
}

// run refreshes the estimate until ctx ends.
func (a *admission) run(ctx context.Context) {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		a.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *admission) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, a.interval)
	defer cancel()
	// What was accepted before the end offsets are read is in the lag.
	accepted := a.accepted.Load()
	ends, err := a.adm.ListEndOffsets(ctx, a.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return
	}
	committed, err := a.adm.FetchOffsets(ctx, a.group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		err = nil // no consumer ever committed: everything is lag
	}
	if err != nil {
		return
	}
	// A partition without a committed offset is consumed from its start.
	var starts kadm.ListedOffsets
	if len(committed.Offsets()[a.topic]) < len(ends[a.topic]) {
		if starts, err = a.adm.ListStartOffsets(ctx, a.topic); err != nil {
			return
		}
	}
	var lag, sum int64
	ends.Each(func(e kadm.ListedOffset) {
		var c int64
		if st, ok := starts.Lookup(a.topic, e.Partition); ok {
			c = st.Offset
		}
		if o, ok := committed.Lookup(a.topic, e.Partition); ok && o.Err == nil && o.At >= 0 {
			c = o.At
		}
		sum += c
		lag += max(e.Offset-c, 0)
	})
	now := time.Now()
	if !a.lastTime.IsZero() {
		secs := now.Sub(a.lastTime).Seconds()
		inst := max(float64(sum-a.lastSum), 0) / secs
		prev := math.Float64frombits(a.rate.Load())
		// Smooth over about three refreshes; a window without progress
		// while there is lag halves the rate, so stopped consumers show.
		next := 0.5*prev + 0.5*inst
		if prev == 0 {
			next = inst
		}
		a.rate.Store(math.Float64bits(next))
	}
	a.lastSum, a.lastTime = sum, now
	a.lag.Store(lag)
	a.base.Store(accepted)
}
