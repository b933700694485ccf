package consumer

import (
	"sort"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// partition tracks the records of one assigned partition that were handed to
// workers and not yet finished, so that the offset committed never passes an
// unfinished record, whatever order records finish in.
type partition struct {
	topic string
	id    int32

	// guarded by tracker.mu
	pending []entry // ascending offsets, the first is the oldest unfinished (or finished, awaiting pop)
	next    int64   // offset after the newest record added
	epoch   int32   // leader epoch of the newest record added
	mark    int64   // watermark last handed out by advance; -1 none
	open    int     // records added and not finished
	dead    bool    // revoked or lost: never mark again
	idle    chan struct{}
}

type entry struct {
	offset int64
	done   bool
}

// watermark returns the offset to commit: the oldest unfinished record, or
// the offset after the newest record when everything is finished.
func (p *partition) watermark() int64 {
	if len(p.pending) > 0 {
		return p.pending[0].offset
	}
	return p.next
}

// tracker holds the partitions of one consumer. Its methods are safe for
// concurrent use.
type tracker struct {
	mu    sync.Mutex
	parts map[tp]*partition
}

type tp struct {
	topic string
	id    int32
}

func newTracker() *tracker { return &tracker{parts: map[tp]*partition{}} }

// add registers a record handed to a worker and returns its partition.
// Records of one partition must be added in offset order.
func (t *tracker) add(r *kgo.Record) *partition {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := tp{r.Topic, r.Partition}
	p := t.parts[k]
	if p == nil || p.dead {
		p = &partition{topic: r.Topic, id: r.Partition, mark: -1}
		t.parts[k] = p
	}
	p.pending = append(p.pending, entry{offset: r.Offset})
	p.next = r.Offset + 1
	p.epoch = r.LeaderEpoch
	p.open++
	return p
}

// finish marks the record at offset of p finished. It returns the new
// commit watermark and true when the watermark advanced and p is still live.
func (t *tracker) finish(p *partition, offset int64) (kgo.EpochOffset, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := sort.Search(len(p.pending), func(i int) bool { return p.pending[i].offset >= offset })
	if i == len(p.pending) || p.pending[i].offset != offset || p.pending[i].done {
		return kgo.EpochOffset{}, false // not tracked (already finished or abandoned)
	}
	p.pending[i].done = true
	p.open--
	n := 0
	for n < len(p.pending) && p.pending[n].done {
		n++
	}
	if n > 0 {
		p.pending = p.pending[n:]
		if len(p.pending) == 0 {
			p.pending = nil // let the backing array go
		}
	}
	if p.open == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	if p.dead {
		return kgo.EpochOffset{}, false
	}
	w := p.watermark()
	if w <= p.mark {
		return kgo.EpochOffset{}, false
	}
	p.mark = w
	return kgo.EpochOffset{Epoch: p.epoch, Offset: w}, true
}

// idle returns a channel closed once the partition has no unfinished record.
func (t *tracker) idle(topic string, id int32) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parts[tp{topic, id}]
	if p == nil || p.open == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	return p.idle
}

// release forgets the partitions: nothing of them is marked again, and the
// workers still busy with their records learn it from alive. It returns the
// final watermark of each partition that had progressed.
func (t *tracker) release(parts map[string][]int32) map[string]map[int32]kgo.EpochOffset {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]map[int32]kgo.EpochOffset{}
	for topic, ids := range parts {
		for _, id := range ids {
			k := tp{topic, id}
			p := t.parts[k]
			if p == nil {
				continue
			}
			delete(t.parts, k)
			p.dead = true
			if w := p.watermark(); w > p.mark && w > 0 {
				if out[topic] == nil {
					out[topic] = map[int32]kgo.EpochOffset{}
				}
				out[topic][id] = kgo.EpochOffset{Epoch: p.epoch, Offset: w}
			}
		}
	}
	return out
}

// alive reports whether p is still assigned.
func (t *tracker) alive(p *partition) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !p.dead
}

// all returns every tracked partition, by topic.
func (t *tracker) all() map[string][]int32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string][]int32{}
	for k := range t.parts {
		out[k.topic] = append(out[k.topic], k.id)
	}
	return out
}
