package consumer

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func rec(topic string, part int32, offset int64) *kgo.Record {
	return &kgo.Record{Topic: topic, Partition: part, Offset: offset}
}

// step finishes one offset and says what finish must hand out: the new
// watermark, or -1 for "no mark". The first finish of a partition may hand
// out its oldest unfinished offset (the position it started from): that
// commit is a no-op, never a skip.
type step struct {
	finish int64
	mark   int64
}

func TestTrackerFinish(t *testing.T) {
	tests := []struct {
		name  string
		add   []int64
		steps []step
	}{
		{
			name:  "InOrder",
			add:   []int64{0, 1, 2},
			steps: []step{{0, 1}, {1, 2}, {2, 3}},
		},
		{
			name:  "ReverseOrder",
			add:   []int64{0, 1, 2},
			steps: []step{{2, 0}, {1, -1}, {0, 3}},
		},
		{
			name:  "MiddleFirst",
			add:   []int64{0, 1, 2, 3},
			steps: []step{{1, 0}, {0, 2}, {3, -1}, {2, 4}},
		},
		{
			// Offsets need not be contiguous (compaction, transaction markers):
			// the watermark is the next unfinished offset, then the one after
			// the newest.
			name:  "Gaps",
			add:   []int64{5, 9, 20},
			steps: []step{{9, 5}, {5, 20}, {20, 21}},
		},
		{
			name:  "NonZeroStart",
			add:   []int64{100},
			steps: []step{{100, 101}},
		},
		{
			name:  "FinishTwiceIgnored",
			add:   []int64{0, 1},
			steps: []step{{0, 1}, {0, -1}, {1, 2}, {1, -1}, {0, -1}},
		},
		{
			name:  "FinishTwiceBeforeWatermarkMoves",
			add:   []int64{0, 1, 2},
			steps: []step{{1, 0}, {1, -1}, {0, 2}, {2, 3}},
		},
		{
			name:  "UntrackedOffsetIgnored",
			add:   []int64{0, 2},
			steps: []step{{1, -1}, {7, -1}, {2, 0}, {0, 3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker()
			var p *partition
			unfinished := map[int64]bool{}
			for _, o := range tt.add {
				r := rec("t", 0, o)
				r.LeaderEpoch = 7
				p = tr.add(r)
				unfinished[o] = true
			}
			for i, s := range tt.steps {
				eo, ok := tr.finish(p, s.finish)
				delete(unfinished, s.finish)
				got := int64(-1)
				if ok {
					got = eo.Offset
					if eo.Epoch != 7 {
						t.Errorf("step %d: epoch %d, want 7", i, eo.Epoch)
					}
				}
				if got != s.mark {
					t.Fatalf("step %d: finish(%d) marked %d, want %d", i, s.finish, got, s.mark)
				}
				for o := range unfinished {
					if ok && eo.Offset > o {
						t.Fatalf("step %d: mark %d passes unfinished offset %d", i, eo.Offset, o)
					}
				}
			}
		})
	}
}

func TestTrackerRelease(t *testing.T) {
	t.Run("FinalWatermarks", func(t *testing.T) {
		tr := newTracker()
		// a/0: fully finished, its last mark was handed out already.
		a0 := tr.add(rec("a", 0, 0))
		tr.add(rec("a", 0, 1))
		// a/1: nothing finished, first record at 10: commit 10 is progress.
		a1 := tr.add(rec("a", 1, 10))
		tr.add(rec("a", 1, 11))
		// a/2: nothing finished from offset 0: nothing to commit.
		a2 := tr.add(rec("a", 2, 0))
		// b/0: newest finished but the oldest still open: its watermark
		// stays at 3, and what finish handed out is all release may commit.
		b0 := tr.add(rec("b", 0, 3))
		tr.add(rec("b", 0, 4))
		// b/1: not released.
		b1 := tr.add(rec("b", 1, 0))

		if _, ok := tr.finish(a0, 0); !ok {
			t.Fatal("a/0 finish 0: no mark")
		}
		if eo, ok := tr.finish(a0, 1); !ok || eo.Offset != 2 {
			t.Fatalf("a/0 finish 1: %v %v, want 2", eo, ok)
		}
		if eo, ok := tr.finish(b0, 4); ok && eo.Offset > 3 {
			t.Fatalf("b/0 finish 4 marked %d, past open offset 3", eo.Offset)
		}

		final := tr.release(map[string][]int32{"a": {0, 1, 2, 9}, "b": {0}, "missing": {0}})
		want := map[string]map[int32]int64{"a": {1: 10}}
		got := map[string]map[int32]int64{}
		for topic, ps := range final {
			for id, eo := range ps {
				if got[topic] == nil {
					got[topic] = map[int32]int64{}
				}
				got[topic][id] = eo.Offset
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("release = %v, want %v", got, want)
		}

		for name, p := range map[string]*partition{"a/0": a0, "a/1": a1, "a/2": a2, "b/0": b0} {
			if tr.alive(p) {
				t.Errorf("%s alive after release", name)
			}
		}
		if !tr.alive(b1) {
			t.Error("b/1 not alive, it was not released")
		}
		// Workers that finish records of released partitions mark nothing.
		if eo, ok := tr.finish(a1, 10); ok {
			t.Errorf("finish on released a/1 marked %v", eo)
		}
		if eo, ok := tr.finish(b0, 3); ok {
			t.Errorf("finish on released b/0 marked %v", eo)
		}
		if eo, ok := tr.finish(b1, 0); !ok || eo.Offset != 1 {
			t.Errorf("finish on live b/1: %v %v, want 1", eo, ok)
		}
		if got := tr.all(); !slices.Equal(got["b"], []int32{1}) || len(got) != 1 {
			t.Errorf("all() = %v, want only b/1", got)
		}
	})

	t.Run("ReassignedStartsFresh", func(t *testing.T) {
		tr := newTracker()
		old := tr.add(rec("a", 0, 0))
		tr.add(rec("a", 0, 1))
		tr.release(map[string][]int32{"a": {0}})
		// The partition comes back (to this member) and is consumed from the
		// committed offset; the old worker's finish must not move it.
		p := tr.add(rec("a", 0, 0))
		if p == old {
			t.Fatal("re-added partition reuses the released state")
		}
		if _, ok := tr.finish(old, 1); ok {
			t.Fatal("finish on the released incarnation marked")
		}
		if _, ok := tr.finish(old, 0); ok {
			t.Fatal("finish on the released incarnation marked")
		}
		if eo, ok := tr.finish(p, 0); !ok || eo.Offset != 1 {
			t.Fatalf("finish on the new incarnation: %v %v, want 1", eo, ok)
		}
	})
}

func TestTrackerIdle(t *testing.T) {
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	tr := newTracker()
	if !closed(tr.idle("a", 0)) {
		t.Fatal("idle of an unknown partition is not closed")
	}
	p := tr.add(rec("a", 0, 0))
	tr.add(rec("a", 0, 1))
	tr.add(rec("a", 0, 2))
	idle := tr.idle("a", 0)
	if closed(idle) {
		t.Fatal("idle closed with 3 open records")
	}
	tr.finish(p, 2)
	tr.finish(p, 2) // twice: must not count as another record
	if closed(idle) {
		t.Fatal("idle closed with 2 open records")
	}
	tr.finish(p, 0)
	if closed(idle) {
		t.Fatal("idle closed with 1 open record")
	}
	if idle2 := tr.idle("a", 0); idle2 != idle {
		t.Fatal("second idle call returned another channel while records are open")
	}
	tr.finish(p, 1)
	if !closed(idle) {
		t.Fatal("idle not closed after the last open record finished")
	}
	tr.finish(p, 1) // no double close
	if !closed(tr.idle("a", 0)) {
		t.Fatal("idle of a partition with nothing open is not closed")
	}

	// A partition released while a record is open becomes idle when that
	// record finishes (a rebalance waits for it).
	q := tr.add(rec("a", 1, 0))
	idle = tr.idle("a", 1)
	tr.release(map[string][]int32{"a": {1}})
	if closed(idle) {
		t.Fatal("idle closed by release with a record open")
	}
	tr.finish(q, 0)
	if !closed(idle) {
		t.Fatal("idle not closed after the released partition's last record finished")
	}
}

// TestTrackerRandom adds ascending offsets with random gaps to several
// partitions while several goroutines finish them in random order, and checks
// every mark handed out against a model of what is still unfinished.
func TestTrackerRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SLUICE_TRACKER_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SLUICE_TRACKER_SEED: %v", err)
		}
		seed = n
	}
	t.Logf("seed %d (rerun with SLUICE_TRACKER_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	const (
		parts    = 3
		perPart  = 400
		finishGo = 6
	)
	type job struct {
		part   int
		p      *partition
		offset int64
	}
	type model struct {
		unfinished map[int64]bool // added (or about to be) and whose finish has not begun
		highest    int64          // highest mark returned so far
		marks      int
	}
	var (
		mu     sync.Mutex
		models [parts]model
		last   [parts]int64
	)
	for i := range models {
		models[i] = model{unfinished: map[int64]bool{}, highest: -1}
	}
	minUnfinished := func(m *model) int64 {
		lo := int64(-1)
		for o := range m.unfinished {
			if lo < 0 || o < lo {
				lo = o
			}
		}
		return lo
	}

	tr := newTracker()
	jobs := make(chan job, 64)
	errs := make(chan error, finishGo)
	var wg sync.WaitGroup
	for range finishGo {
		wg.Go(func() {
			for j := range jobs {
				m := &models[j.part]
				// Take the offset out of the model before finishing it: every
				// offset still in the model has not begun finishing, so no mark
				// may pass it. Marks returned before this call started were
				// handed out before this one, so this one must be higher.
				mu.Lock()
				delete(m.unfinished, j.offset)
				before := m.highest
				mu.Unlock()

				eo, ok := tr.finish(j.p, j.offset)
				if !ok {
					continue
				}
				mu.Lock()
				lo := minUnfinished(m)
				var err error
				switch {
				case eo.Offset <= before:
					err = fmt.Errorf("partition %d: finish(%d) marked %d, not above the earlier mark %d", j.part, j.offset, eo.Offset, before)
				case lo >= 0 && eo.Offset > lo:
					err = fmt.Errorf("partition %d: finish(%d) marked %d, past unfinished offset %d", j.part, j.offset, eo.Offset, lo)
				}
				m.highest = max(m.highest, eo.Offset)
				m.marks++
				mu.Unlock()
				if err != nil {
					errs <- err
					for range jobs { // let the producer finish
					}
					return
				}
			}
		})
	}

	// Add in offset order per partition, in batches, and hand each batch out
	// shuffled while earlier batches are still being finished.
	next := [parts]int64{}
	for i := range next {
		next[i] = rng.Int64N(1000)
	}
	remaining := [parts]int{perPart, perPart, perPart}
	for {
		var open []int
		for i, n := range remaining {
			if n > 0 {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			break
		}
		part := open[rng.IntN(len(open))]
		n := min(remaining[part], 1+rng.IntN(40))
		remaining[part] -= n
		batch := make([]job, 0, n)
		for range n {
			o := next[part]
			next[part] += 1 + rng.Int64N(3) // gaps: 0, 1 or 2 missing offsets
			mu.Lock()
			models[part].unfinished[o] = true
			mu.Unlock()
			p := tr.add(&kgo.Record{Topic: "chat.requests", Partition: int32(part), Offset: o})
			batch = append(batch, job{part: part, p: p, offset: o})
			last[part] = o
		}
		rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		for _, j := range batch {
			jobs <- j
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	for i := range parts {
		m := &models[i]
		if len(m.unfinished) != 0 {
			t.Errorf("partition %d: %d offsets never finished", i, len(m.unfinished))
		}
		if m.highest != last[i]+1 {
			t.Errorf("partition %d: final mark %d, want last offset + 1 = %d", i, m.highest, last[i]+1)
		}
		t.Logf("partition %d: %d marks, last offset %d", i, m.marks, last[i])
	}
	select {
	case <-tr.idle("chat.requests", 0):
	default:
		t.Error("partition 0 not idle after everything finished")
	}
	// Everything was marked already: release has nothing more to commit.
	if final := tr.release(map[string][]int32{"chat.requests": {0, 1, 2}}); len(final) != 0 {
		t.Errorf("release after all marks = %v, want nothing", final)
	}
}
