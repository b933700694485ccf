package llm

import (
	"context"
	"slices"
	"sync"
	"time"

	"sluice/shared/envelope"
)

// Lanes, as indexes: the order in which an endpoint serves waiting requests.
const (
	laneInteractive = iota
	laneBulk
)

// laneNames are the lane label's values, by index.
var laneNames = [2]string{envelope.LaneInteractive, envelope.LaneBulk}

type laneKey struct{}

// WithLane returns ctx carrying lane (envelope.LaneInteractive or
// envelope.LaneBulk), the lane of the request Answer is given with it: it
// orders the request's waits for call slots and quota, and labels its
// answer's metrics. A context without a lane, or with another value, is
// interactive.
func WithLane(ctx context.Context, lane string) context.Context {
	return context.WithValue(ctx, laneKey{}, lane)
}

// LaneOf returns the lane ctx carries (see WithLane): envelope.LaneBulk or
// envelope.LaneInteractive.
func LaneOf(ctx context.Context) string { return laneNames[laneIndex(ctx)] }

func laneIndex(ctx context.Context) int {
	if l, _ := ctx.Value(laneKey{}).(string); l == envelope.LaneBulk {
		return laneBulk
	}
	return laneInteractive
}

// gate holds an endpoint's call slots and orders the requests that wait:
// a freed slot goes to the interactive request waiting longest, to a bulk
// one only when no interactive one waits; and while an interactive request
// waits for quota, bulk requests do not ask for it (quotaTurn). Both but
// while the bulk lane is owed its minimum share of the recent calls
// (owedBulk).
type gate struct {
	mu    sync.Mutex
	cap   int
	used  int                // slots taken, including those handed to a waiter
	queue [2][]chan struct{} // waiting for a slot, by lane, longest first; closed when handed one
	quota int                // interactive requests waiting for quota
	clear chan struct{}      // closed when quota falls to 0 or the bulk lane is owed; nil while neither waits for it

	share  float64    // the bulk lane's minimum share of calls; 0: none
	served [2]float64 // calls that entered, by lane, halved every servedWindow: the recent ones
}

// servedWindow is about how many recent calls the bulk lane's share is
// counted over: the counts are halved when their sum reaches it.
const servedWindow = 200

func newGate(slots int, bulkShare float64) *gate { return &gate{cap: slots, share: bulkShare} }

// entered counts a call of lane that entered (had its slot and quota).
func (g *gate) entered(lane int) {
	if g.share <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.served[lane]++
	if g.served[laneInteractive]+g.served[laneBulk] >= servedWindow {
		g.served[laneInteractive] /= 2
		g.served[laneBulk] /= 2
	}
	if g.clear != nil && g.owedBulkLocked() {
		close(g.clear) // the bulk requests waiting their turn ask now
		g.clear = nil
	}
}

// owedBulkLocked tells whether the bulk lane had less than its share of
// the recent calls. Call with g.mu held.
func (g *gate) owedBulkLocked() bool {
	return g.share > 0 && g.served[laneBulk] < g.share*(g.served[laneInteractive]+g.served[laneBulk]+1)
}

// inUse returns the slots taken.
func (g *gate) inUse() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.used
}

// tryAcquire takes a slot when one is free.
func (g *gate) tryAcquire() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.used < g.cap { // nobody waits: a freed slot is handed to a waiter
		g.used++
		return true
	}
	return false
}

// acquire takes a slot for a request of lane, waiting for one until expire
// fires or ctx ends. It returns whether it waited, and errNoSlot or ctx's
// error when it got none.
func (g *gate) acquire(ctx context.Context, lane int, expire <-chan time.Time) (waited bool, err error) {
	g.mu.Lock()
	if g.used < g.cap { // nobody waits: a freed slot is handed to a waiter
		g.used++
		g.mu.Unlock()
		return false, nil
	}
	w := make(chan struct{})
	g.queue[lane] = append(g.queue[lane], w)
	g.mu.Unlock()
	select {
	case <-w:
		return true, nil
	case <-expire:
		err = errNoSlot
	case <-ctx.Done():
		err = ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-w: // handed a slot meanwhile: pass it on
		g.releaseLocked()
	default:
		g.queue[lane] = slices.DeleteFunc(g.queue[lane], func(c chan struct{}) bool { return c == w })
	}
	return false, err
}

// release gives a slot back: to the first interactive waiter (the first
// bulk one while the bulk lane is owed its share), else to the first bulk
// one, else to the pool.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *gate) releaseLocked() {
	order := [2]int{laneInteractive, laneBulk}
	if len(g.queue[laneBulk]) > 0 && g.owedBulkLocked() {
		order = [2]int{laneBulk, laneInteractive}
	}
	for _, lane := range order {
		if q := g.queue[lane]; len(q) > 0 {
			close(q[0])
			g.queue[lane] = q[1:]
			return
		}
	}
	g.used--
}

// waitQuota counts an interactive request as waiting for quota until the
// returned func is called.
func (g *gate) waitQuota() (done func()) {
	g.mu.Lock()
	g.quota++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.quota--
			if g.quota == 0 && g.clear != nil {
				close(g.clear)
				g.clear = nil
			}
		})
	}
}

// quotaTurn returns a channel closed once no interactive request waits for
// quota, or the bulk lane is owed its share (at once when either holds).
func (g *gate) quotaTurn() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.quota == 0 || g.owedBulkLocked() {
		return closed
	}
	if g.clear == nil {
		g.clear = make(chan struct{})
	}
	return g.clear
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
