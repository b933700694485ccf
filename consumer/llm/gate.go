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
// waits for quota, bulk requests do not ask for it (quotaTurn).
type gate struct {
	mu    sync.Mutex
	cap   int
	used  int                // slots taken, including those handed to a waiter
	queue [2][]chan struct{} // waiting for a slot, by lane, longest first; closed when handed one
	quota int                // interactive requests waiting for quota
	clear chan struct{}      // closed when quota falls to 0; nil while it is 0
}

func newGate(slots int) *gate { return &gate{cap: slots} }

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

// release gives a slot back: to the first interactive waiter, else to the
// first bulk one, else to the pool.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *gate) releaseLocked() {
	for lane, q := range g.queue {
		if len(q) > 0 {
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
// quota (at once when none does).
func (g *gate) quotaTurn() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.quota == 0 {
		return closed
	}
	if g.clear == nil {
		g.clear = make(chan struct{})
	}
	return g.clear
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
