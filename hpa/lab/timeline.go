package lab

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/envelope"
)

// timeline collects what happened in a run, by second since the profile's
// start, and turns it into Samples at the end: questions offered and
// refused, answers and their queue waits (read from the reply records),
// and the autoscaler's view at each sync.
type timeline struct {
	start time.Time

	mu        sync.Mutex
	offered   map[int]int
	refused   map[int]int
	completed map[int]int
	waits     map[int][]float64 // ms
	allWaits  []float64
	answered  map[string]bool // request ids seen in a reply
	syncs     []syncPoint
}

// syncPoint is the autoscaler's view at one sync.
type syncPoint struct {
	t        float64
	obs      observation
	replicas int // ready consumers
	desired  int
}

func newTimeline(start time.Time) *timeline {
	return &timeline{start: start, offered: map[int]int{}, refused: map[int]int{}, completed: map[int]int{},
		waits: map[int][]float64{}, answered: map[string]bool{}}
}

func (tl *timeline) second(at time.Time) int { return int(math.Floor(at.Sub(tl.start).Seconds())) }

func (tl *timeline) offer(at time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.offered[tl.second(at)]++
}

func (tl *timeline) refuse(at time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.refused[tl.second(at)]++
}

func (tl *timeline) sync(p syncPoint) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.syncs = append(tl.syncs, p)
}

// reply records a reply the first time its request is seen (a redelivered
// request may be replied to again). The queue wait is from the request's
// creation (its UUIDv7 time) to its answer, less the LLM call's time.
func (tl *timeline) reply(r envelope.Reply) {
	id, err := uuid.Parse(r.RequestID)
	if err != nil || id.Version() != 7 || r.FinishedAt.IsZero() {
		return
	}
	sec, nsec := id.Time().UnixTime()
	created := time.Unix(sec, nsec)
	wait := float64(r.FinishedAt.Sub(created).Milliseconds() - r.LLMMs)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.answered[r.RequestID] {
		return
	}
	tl.answered[r.RequestID] = true
	s := tl.second(r.FinishedAt)
	tl.completed[s]++
	tl.waits[s] = append(tl.waits[s], max(wait, 0))
	tl.allWaits = append(tl.allWaits, max(wait, 0))
}

func (tl *timeline) seen(requestID string) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.answered[requestID]
}

// readReplies reads the reply topics from their start (the broker is the
// run's own) until ctx ends.
func (tl *timeline) readReplies(ctx context.Context, cl *kgo.Client) {
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		fs.EachRecord(func(rec *kgo.Record) {
			if r, err := envelope.DecodeReply(rec.Value); err == nil && r.Status == envelope.StatusDone {
				tl.reply(r)
			}
		})
	}
}

// samples returns one Sample per second of the run, up to end.
func (tl *timeline) samples(end float64) []Sample {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var out []Sample
	j := 0
	var last syncPoint
	for s := 0; float64(s) < end; s++ {
		t := float64(s + 1)
		for j < len(tl.syncs) && tl.syncs[j].t <= t {
			last = tl.syncs[j]
			j++
		}
		w := slices.Clone(tl.waits[s])
		slices.Sort(w)
		out = append(out, Sample{
			T: t, Offered: float64(tl.offered[s]), Completed: float64(tl.completed[s]), Refused: float64(tl.refused[s]),
			Lag: last.obs.Lag, OldestAge: last.obs.OldestAge, InFlightRatio: last.obs.InFlightRatio,
			QueueWaitP50: Quantile(w, 0.5), QueueWaitP99: Quantile(w, 0.99),
			Replicas: last.replicas, Desired: last.desired,
		})
	}
	return out
}

// waitQuantiles returns the p50 and p99 queue wait of every answer, ms.
func (tl *timeline) waitQuantiles() (p50, p99 float64) {
	tl.mu.Lock()
	w := slices.Clone(tl.allWaits)
	tl.mu.Unlock()
	slices.Sort(w)
	return Quantile(w, 0.5), Quantile(w, 0.99)
}

// serviceTime returns how long a record stayed in flight on average: the
// records in flight at each sync (ratio × pods × budget) over the answers
// per second around it, over the seconds with at least minRate answers.
func (tl *timeline) serviceTime(budget int, minRate float64) float64 {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var sum float64
	n := 0
	for _, p := range tl.syncs {
		s := int(p.t)
		rate := float64(tl.completed[s-1]+tl.completed[s]) / 2
		if rate < minRate || p.obs.Pods == 0 {
			continue
		}
		sum += p.obs.InFlightRatio * float64(p.obs.Pods*budget) / rate
		n++
	}
	if n == 0 {
		return math.NaN()
	}
	return sum / float64(n)
}
