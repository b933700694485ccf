package llm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/shared/envelope"
)

// Time in these tests is synctest's fake clock: a wait of minutes takes no
// time, and the order of wake-ups is the order of the fake instants.

// roomEvery is a quota of one call per period and no burst, on the clock
// of the caller (the fake one in a synctest bubble).
type roomEvery struct {
	mu     sync.Mutex
	period time.Duration
	next   time.Time // when the next call may be made
}

func (q *roomEvery) take(context.Context, int) (time.Duration, string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	if now.Before(q.next) {
		return q.next.Sub(now), "rpm", nil
	}
	q.next = now.Add(q.period)
	return 0, "", nil
}

// testEndpoint returns the primary endpoint of a client with q as its
// quota, slots call slots and opts. It is never called: the tests go
// through enter.
func testEndpoint(t *testing.T, q quota, slots int, opts ...Option) *endpoint {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BaseURL = "http://127.0.0.1:1/v1"
	cfg.MaxConcurrent = slots
	c, err := New(cfg, nil, prometheus.NewRegistry(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	e := c.endpoints[0]
	e.quota = q
	return e
}

func bulkCtx() context.Context {
	return WithLane(context.Background(), envelope.LaneBulk)
}

func TestLaneOf(t *testing.T) {
	for _, tc := range []struct {
		ctx  context.Context
		want string
	}{
		{context.Background(), envelope.LaneInteractive},
		{WithLane(context.Background(), envelope.LaneInteractive), envelope.LaneInteractive},
		{WithLane(context.Background(), "express"), envelope.LaneInteractive},
		{bulkCtx(), envelope.LaneBulk},
	} {
		if got := LaneOf(tc.ctx); got != tc.want {
			t.Errorf("LaneOf(%v) = %q, want %q", tc.ctx, got, tc.want)
		}
	}
}

// TestSlotGoesToInteractiveFirst: a freed call slot goes to the waiting
// interactive request, although a bulk one waited longer; the next to the
// bulk one.
func TestSlotGoesToInteractiveFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := testEndpoint(t, nil, 1)
		if err := e.enter(context.Background(), time.Now().Add(time.Hour), 1); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 2)
		enter := func(ctx context.Context) {
			if err := e.enter(ctx, time.Now().Add(time.Hour), 1); err != nil {
				t.Error(err)
			}
			got <- LaneOf(ctx)
		}
		go enter(bulkCtx())
		synctest.Wait() // the bulk request waits
		go enter(context.Background())
		synctest.Wait()
		e.gate.release()
		synctest.Wait()
		if lane := <-got; lane != envelope.LaneInteractive {
			t.Fatalf("the freed slot went to the %s request, want the interactive one", lane)
		}
		select {
		case lane := <-got:
			t.Fatalf("%s request got a slot while none was free", lane)
		default:
		}
		e.gate.release()
		if lane := <-got; lane != envelope.LaneBulk {
			t.Fatalf("the next slot went to the %s request, want the bulk one", lane)
		}
		e.gate.release()
		if n := e.gate.inUse(); n != 0 {
			t.Errorf("%d slots in use after every request released its own", n)
		}
		if n := limited(e, "concurrency", "waited"); n != 2 {
			t.Errorf("sluice_llm_limited_total{limit=concurrency,outcome=waited} = %g, want 2", n)
		}
	})
}

// TestSlotWaitEndsBeforeDeadline: a request that gets no slot before its
// deadline (less the least call time) gives up with errNoSlot and leaves
// the queue, so that the next freed slot is not lost on it.
func TestSlotWaitEndsBeforeDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := testEndpoint(t, nil, 1)
		if err := e.enter(context.Background(), time.Now().Add(time.Hour), 1); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := e.enter(bulkCtx(), start.Add(time.Second), 1)
		if !errors.Is(err, errNoSlot) || time.Since(start) != time.Second-minCallTime {
			t.Fatalf("enter = %v after %v, want errNoSlot after %v", err, time.Since(start), time.Second-minCallTime)
		}
		e.gate.release()
		if n := e.gate.inUse(); n != 0 {
			t.Errorf("%d slots in use, want 0: the slot went to a request that had given up", n)
		}
	})
}

// TestBulkWaitsForQuota: with the quota's next room 30 s away, an
// interactive request (deadline 2 s) falls back at once, a bulk one
// (deadline 10 min) waits for the room and calls.
func TestBulkWaitsForQuota(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := &roomEvery{period: 30 * time.Second}
		e := testEndpoint(t, q, 4)
		if err := e.enter(context.Background(), time.Now().Add(2*time.Second), 1); err != nil {
			t.Fatal(err)
		}
		e.gate.release()

		start := time.Now()
		err := e.enter(context.Background(), start.Add(2*time.Second), 1)
		if !errors.Is(err, errNoQuota) || time.Since(start) != 0 {
			t.Fatalf("interactive: %v after %v, want errNoQuota at once", err, time.Since(start))
		}
		if err := e.enter(bulkCtx(), start.Add(10*time.Minute), 1); err != nil {
			t.Fatalf("bulk: %v, want a call after waiting", err)
		}
		// 30 s and at most a tenth of it in jitter.
		if took := time.Since(start); took < 30*time.Second || took > 33*time.Second+time.Millisecond {
			t.Errorf("bulk called after %v, want when the room came, 30 s", took)
		}
		e.gate.release()
		for limit, want := range map[string]float64{"fallback": 1, "waited": 1} {
			if n := limited(e, "rpm", limit); n != want {
				t.Errorf("sluice_llm_limited_total{limit=rpm,outcome=%s} = %g, want %g", limit, n, want)
			}
		}
	})
}

// lateForInteractive tells interactive requests to wait half a second
// longer than the room is away, so that a bulk request waiting for the same
// room wakes first: the room is free when it asks.
type lateForInteractive struct{ *roomEvery }

func (q lateForInteractive) take(ctx context.Context, tokens int) (time.Duration, string, error) {
	wait, limit, err := q.roomEvery.take(ctx, tokens)
	if wait > 0 && LaneOf(ctx) == envelope.LaneInteractive {
		wait += 500 * time.Millisecond
	}
	return wait, limit, err
}

// TestFreedQuotaGoesToInteractiveFirst: a bulk request waits for the
// quota's next room; an interactive one comes later and waits for the same
// room, and wakes after the bulk one. The room goes to the interactive
// request all the same, the next to the bulk one.
func TestFreedQuotaGoesToInteractiveFirst(t *testing.T) {
	noJitter(t)
	synctest.Test(t, func(t *testing.T) {
		e := testEndpoint(t, lateForInteractive{&roomEvery{period: 10 * time.Second}}, 4)
		start := time.Now()
		if err := e.enter(context.Background(), start.Add(time.Minute), 1); err != nil {
			t.Fatal(err)
		}
		e.gate.release()

		type entered struct {
			lane string
			at   time.Duration
		}
		got := make(chan entered, 2)
		enter := func(ctx context.Context, deadline time.Duration) {
			if err := e.enter(ctx, time.Now().Add(deadline), 1); err != nil {
				t.Error(err)
			}
			got <- entered{LaneOf(ctx), time.Since(start)}
			e.gate.release()
		}
		time.Sleep(time.Second)
		go enter(bulkCtx(), 10*time.Minute)
		time.Sleep(time.Second)
		go enter(context.Background(), 15*time.Second)
		first, second := <-got, <-got
		if first.lane != envelope.LaneInteractive || second.lane != envelope.LaneBulk {
			t.Fatalf("quota went to %s at %v, then %s at %v: want interactive first", first.lane, first.at, second.lane, second.at)
		}
		if first.at != 10500*time.Millisecond || second.at != 20500*time.Millisecond {
			t.Errorf("calls at %v and %v, want 10.5 s (when the interactive request asked) and 10 s later", first.at, second.at)
		}
	})
}

// noJitter takes the jitter out of quota waits until the test ends.
func noJitter(t *testing.T) {
	old := jitter
	jitter = func(time.Duration) time.Duration { return 0 }
	t.Cleanup(func() { jitter = old })
}

// TestBulkGivesWayUntilItsDeadline: a bulk request whose deadline comes
// while interactive requests still wait for quota falls back then, counted
// under the limit it waited for.
func TestBulkGivesWayUntilItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := testEndpoint(t, &roomEvery{period: time.Minute}, 4)
		done := e.gate.waitQuota() // an interactive request waits
		defer done()
		start := time.Now()
		err := e.enter(bulkCtx(), start.Add(5*time.Minute), 1)
		if !errors.Is(err, errNoTurn) || time.Since(start) != 5*time.Minute-minCallTime {
			t.Fatalf("bulk: %v after %v, want errNoTurn at its deadline less %v", err, time.Since(start), minCallTime)
		}
		if n := limited(e, "priority", "fallback"); n != 1 {
			t.Errorf("sluice_llm_limited_total{limit=priority,outcome=fallback} = %g, want 1", n)
		}
		if n := e.gate.inUse(); n != 0 {
			t.Errorf("%d slots in use, want 0", n)
		}
	})
}

// limited reads sluice_llm_limited_total{limit,outcome} of e.
func limited(e *endpoint, limit, outcome string) float64 {
	return testutil.ToFloat64(e.m.limited.WithLabelValues(limit, outcome))
}

// TestBulkKeepsItsMinimumShare: six interactive requests always wait (for a
// call slot, or for quota) beside three bulk ones. With no minimum share the
// bulk lane gets nothing before its deadline; with a share of 0.2 it gets
// about a fifth of the calls, and the interactive lane the rest.
func TestBulkKeepsItsMinimumShare(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots int
		quota func() quota // nil: none
	}{
		{"call slots", 1, func() quota { return nil }},
		{"quota", 8, func() quota { return &roomEvery{period: time.Second} }},
	} {
		for _, share := range []float64{0, 0.2} {
			t.Run(fmt.Sprintf("%s, share %g", tc.name, share), func(t *testing.T) {
				noJitter(t)
				synctest.Test(t, func(t *testing.T) {
					e := testEndpoint(t, tc.quota(), tc.slots, WithBulkMinShare(share))
					var mu sync.Mutex
					var calls [2]int
					start := time.Now()
					var wg sync.WaitGroup
					ask := func(ctx context.Context, deadline time.Duration) {
						defer wg.Done()
						for time.Since(start) < 10*time.Minute {
							if err := e.enter(ctx, time.Now().Add(deadline), 1); err != nil {
								time.Sleep(100 * time.Millisecond) // fell back: the next question
								continue
							}
							mu.Lock()
							calls[laneIndex(ctx)]++
							mu.Unlock()
							time.Sleep(time.Second) // the call
							e.gate.release()
						}
					}
					for range 6 {
						wg.Add(1)
						go ask(context.Background(), 5*time.Second)
					}
					for range 3 {
						wg.Add(1)
						go ask(bulkCtx(), 20*time.Minute)
					}
					wg.Wait()
					total := float64(calls[laneInteractive] + calls[laneBulk])
					got := float64(calls[laneBulk]) / total
					t.Logf("interactive %d calls, bulk %d (%.3f)", calls[laneInteractive], calls[laneBulk], got)
					if total < 500 {
						t.Errorf("%g calls in 10 min, want the slots or the quota used (about 600)", total)
					}
					if share == 0 && got > 0.01 {
						t.Errorf("bulk had %.3f of the calls with no minimum share, want none but the first while shoppers wait", got)
					}
					if share > 0 && (got < share*0.9 || got > share*1.25) {
						t.Errorf("bulk had %.3f of the calls, want about its minimum share %g", got, share)
					}
				})
			})
		}
	}
}
