package producer

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
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
// stale estimate, and miss their wait. The hot path only touches atomics
// (and reads the clock).
//
// A wait-mode request shorter than the estimate is still admitted while the
// answers this replica just gave took less than a quarter of its wait
// (answersFast).
type admission struct {
	adm      *kadm.Client
	topic    string
	group    string
	interval time.Duration
	minRate  float64

	lag      atomic.Int64
	accepted atomic.Int64 // requests this replica accepted, in all
	base     atomic.Int64 // accepted when the current lag was measured
	answers  answerTimes
	observed atomic.Int64  // when an answer time was last recorded, unix ns
	probed   atomic.Int64  // when a probe was last let in, unix ns
	rate     atomic.Uint64 // float64 bits, records/s
	stalled  atomic.Int64  // partitions left out of the lag as stalled
	parts    map[int32]*partitionProgress
	lastTime time.Time
	lastLag  int64 // lag of the live partitions at the last refresh
}

// partitionProgress is what admission remembers of a partition of the
// requests topic.
type partitionProgress struct {
	committed int64
	progress  time.Time // when its commit last moved, or it had no lag
}

func newAdmission(f promauto.Factory, cl *kgo.Client, topic, group string, interval time.Duration, minRate float64) *admission {
	a := &admission{adm: kadm.NewClient(cl), topic: topic, group: group, interval: interval, minRate: minRate}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_queue_lag", Help: "Requests of the interactive lane (chat.requests) on Kafka not yet committed by the consumers (as last measured, plus those this replica accepted since).",
	}, func() float64 { return float64(a.backlog()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_completion_rate", Help: "Requests/s the consumers complete (smoothed, as last measured).",
	}, func() float64 { return math.Float64frombits(a.rate.Load()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_estimated_wait_seconds", Help: "Estimated queue wait of a new request of the interactive lane.",
	}, func() float64 { return a.estimate().Seconds() })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_producer_stalled_partitions",
		Help: "Partitions of the requests topic whose commit has not moved for a while although others did (their consumer died or hangs), left out of the queue wait estimate.",
	}, func() float64 { return float64(a.stalled.Load()) })
	return a
}

// stallAfter is how long a partition with lag may go without a commit
// while others commit before it is counted as stalled.
func (a *admission) stallAfter() time.Duration { return max(3*a.interval, 3*time.Second) }

// update takes a measure of the requests topic, committed and end offset by
// partition, taken at now, and sets the lag and the completion rate of the
// live partitions.
//
// A partition is stalled when it has lag and its commit has not moved for
// stallAfter while another partition's did: its consumer died and the group
// has not yet given it to another (up to the session timeout and a
// rebalance), or its oldest record hangs. A new request hashes to it only
// once in as many partitions, so its lag would make the door refuse
// everything that live consumers could answer; it is left out, and shown in
// sluice_producer_stalled_partitions. When no partition commits, none is
// left out: nothing is being answered.
//
// The completion rate is how fast the live partitions' commits advance,
// smoothed. A window that ends with no lag only raises it: the consumers
// finished all they had, so what completed is what was let in, not what they
// can do; while the door refuses, taking it would starve the estimate for
// ever.
func (a *admission) update(now time.Time, offsets map[int32][2]int64) {
	if a.parts == nil {
		a.parts = map[int32]*partitionProgress{}
	}
	anyMoved := false
	for p, o := range offsets {
		st := a.parts[p]
		if st == nil {
			st = &partitionProgress{committed: o[0], progress: now}
			a.parts[p] = st
		}
		if o[0] > st.committed || o[0] >= o[1] {
			st.progress = now
		}
		if o[0] > st.committed {
			anyMoved = true
		}
	}
	recent := false
	for _, st := range a.parts {
		recent = recent || now.Sub(st.progress) < a.stallAfter()
	}
	var lag, done int64
	var stalled int64
	for p, o := range offsets {
		st := a.parts[p]
		if recent && o[0] < o[1] && now.Sub(st.progress) >= a.stallAfter() {
			stalled++
		} else {
			lag += o[1] - o[0]
			done += max(o[0]-st.committed, 0)
		}
		st.committed = max(st.committed, o[0])
	}
	if !a.lastTime.IsZero() && (a.lastLag > 0 || anyMoved) {
		inst := float64(done) / now.Sub(a.lastTime).Seconds()
		prev := math.Float64frombits(a.rate.Load())
		next := inst
		switch {
		case lag == 0:
			// The consumers finished all they had: what completed is what
			// arrived, a lower bound of what they can do.
			next = max(prev, inst)
		case prev != 0:
			// Smooth over about three refreshes; a window without
			// progress while there is lag halves the rate, so stopped
			// consumers show.
			next = 0.5*prev + 0.5*inst
		}
		a.rate.Store(math.Float64bits(next))
	}
	a.lastTime, a.lastLag = now, lag
	a.stalled.Store(stalled)
	a.lag.Store(lag)
}

// observe records how long a wait-mode request accepted by this replica
// took to be answered.
func (a *admission) observe(took time.Duration) {
	a.answers.add(took)
	a.observed.Store(time.Now().UnixNano())
}

// answerTimes keeps the last len(slots) answer times, lock-free: the hot
// path stores one, and only a request the estimate would refuse reads them.
type answerTimes struct {
	next  atomic.Uint64
	slots [16]atomic.Int64 // ns; 0 while unused
}

func (r *answerTimes) add(took time.Duration) {
	i := (r.next.Add(1) - 1) % uint64(len(r.slots))
	r.slots[i].Store(max(int64(took), 1))
}

// median returns the median of the recorded answer times, or false when
// none was recorded. A median, not a mean: one answer slowed by a
// collection pause or a cold connection must not make every answer look
// slow, nor one fast answer a queue look short.
func (r *answerTimes) median() (time.Duration, bool) {
	var buf [len(r.slots)]int64
	n := 0
	for i := range r.slots {
		if v := r.slots[i].Load(); v > 0 {
			buf[n] = v
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	ts := buf[:n]
	slices.Sort(ts)
	return time.Duration(ts[n/2]), true
}

// answersFast reports whether this replica's recent wait-mode answers
// (the last one within 10 s) took, by their median, less than a quarter
// of wait.
//
// The lag over the completion rate measures the time to a commit, not to
// an answer: while the consumers have room, it is their commit delay and
// processing time (about half the commit interval plus the answer time),
// however short the queue, and while the door refuses, the rate it divides
// by is what the door let through, not what the consumers can do. A
// wait-mode request shorter than that estimate would be refused for ever at
// a low rate. What the requests just answered took says whether there is a
// queue at all.
func (a *admission) answersFast(wait time.Duration) bool {
	if !a.fresh() {
		return false
	}
	m, ok := a.answers.median()
	return ok && m < wait/4
}

// fresh reports whether this replica has an answer time from the last 10 s.
func (a *admission) fresh() bool {
	at := a.observed.Load()
	return at != 0 && time.Since(time.Unix(0, at)) <= 10*time.Second
}

// probeEvery is how often a replica without a recent answer time lets in a
// wait-mode request the estimate would refuse.
const probeEvery = 100 * time.Millisecond

// probe reports whether a wait-mode request the estimate would refuse may
// go in anyway to measure what answers take: one every probeEvery while
// this replica has no recent answer time. Without it, a replica started
// under steady load, whose estimate is above a short wait, would refuse
// every such request and never learn that answers are fast.
func (a *admission) probe() bool {
	if a.fresh() {
		return false
	}
	now, last := time.Now().UnixNano(), a.probed.Load()
	return now-last >= int64(probeEvery) && a.probed.CompareAndSwap(last, now)
}

// admitted counts a request accepted by this replica.
func (a *admission) admitted() { a.accepted.Add(1) }

// backlog returns the lag as last measured plus the requests this replica
// accepted since. Between two measures it overstates the lag by what the
// consumers completed meanwhile (at most a refresh interval's worth):
// counted against a flood, it errs on the side of refusing; a short wait
// under steady traffic is admitted on what the answers take (answersFast).
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
	offsets := map[int32][2]int64{} // partition: committed, end
	ends.Each(func(e kadm.ListedOffset) {
		var c int64
		if st, ok := starts.Lookup(a.topic, e.Partition); ok {
			c = st.Offset
		}
		if o, ok := committed.Lookup(a.topic, e.Partition); ok && o.Err == nil && o.At >= 0 {
			c = o.At
		}
		offsets[e.Partition] = [2]int64{c, e.Offset}
	})
	a.update(time.Now(), offsets)
	a.base.Store(accepted)
}
