package consumer

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/bus"
)

// laneSim drives the lanes scheduler alone on synctest's fake clock: records
// arrive into the held lists as the client would fetch them, every started
// record takes latency (a fixed-latency LLM), and the loop starts held
// records as run does, every millisecond.
type laneSim struct {
	l       *lanes
	c       *Consumer
	latency time.Duration

	done      chan int // the lane of a finished record
	answered  [2]int
	started   [2]int           // by the current start
	maxWait   [2]time.Duration // from arrival to start
	violation string           // the first start that broke the priority rule
}

func newLaneSim(inFlight int, share float64, latency time.Duration) *laneSim {
	cfg := DefaultConfig()
	cfg.InFlight, cfg.BulkMinShare = inFlight, share
	c := &Consumer{cfg: cfg, bus: bus.Config{RequestsTopic: "chat.requests", BulkTopic: "chat.requests.bulk"}}
	s := &laneSim{c: c, latency: latency, done: make(chan int, inFlight)}
	s.l = &lanes{c: c, dispatch: s.dispatch}
	return s
}

func (s *laneSim) dispatch(r *kgo.Record, now time.Time) {
	lane := interactive
	if r.Topic == s.c.bus.BulkTopic {
		lane = bulk
		s.c.inflightBulk.Add(1)
	}
	s.c.inflight.Add(1)
	s.maxWait[lane] = max(s.maxWait[lane], now.Sub(r.Timestamp))
	s.started[lane]++
	go func() {
		time.Sleep(s.latency)
		s.done <- lane
	}()
}

// The counters of records in flight change in the loop's goroutine only:
// dispatch adds, collect takes away.

// arrive holds n records of lane that arrived now.
func (s *laneSim) arrive(lane, n int) {
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	for range n {
		s.l.held[lane] = append(s.l.held[lane], &kgo.Record{Topic: s.l.topics(lane)[0], Timestamp: time.Now()})
	}
}

// run runs the simulation for d, interactive records arriving at perSecond.
func (s *laneSim) run(d time.Duration, perSecond int) {
	start := time.Now()
	arrived := 0
	for time.Since(start) < d {
		if due := int(time.Since(start).Seconds() * float64(perSecond)); due > arrived {
			s.arrive(interactive, due-arrived)
			arrived = due
		}
		s.collect()
		owed := max(s.c.cfg.bulkMin()-int(s.c.inflightBulk.Load()), 0)
		s.started = [2]int{}
		s.l.start(s.c.cfg.InFlight - int(s.c.inflight.Load()))
		s.check(owed)
		time.Sleep(time.Millisecond)
	}
	time.Sleep(s.latency) // the last calls end
	s.collect()
}

func (s *laneSim) collect() {
	for {
		select {
		case lane := <-s.done:
			s.answered[lane]++
			s.c.slotHeld(s.latency)
			if lane == bulk {
				s.c.inflightBulk.Add(-1)
			}
			s.c.inflight.Add(-1)
		default:
			return
		}
	}
}

// check records the first time a start broke the rules: while interactive
// records wait, every slot is used, and bulk records start only for the
// slots the bulk lane is owed (owed before the start) of its minimum share;
// while bulk records wait, the lane has at least its share, or the budget
// is full.
func (s *laneSim) check(owed int) {
	if s.violation != "" {
		return
	}
	s.l.mu.Lock()
	hi, hb := len(s.l.held[interactive]), len(s.l.held[bulk])
	s.l.mu.Unlock()
	inBulk, in := int(s.c.inflightBulk.Load()), int(s.c.inflight.Load())
	full := in >= s.c.cfg.InFlight
	switch {
	case hi > 0 && !full:
		s.violation = "a free slot stayed unused while interactive records waited"
	case hi > 0 && s.started[bulk] > owed:
		s.violation = fmt.Sprintf("%d bulk records started while interactive records waited, with the bulk lane owed %d", s.started[bulk], owed)
	case hb > 0 && inBulk < s.c.cfg.bulkMin() && !full:
		s.violation = "the bulk lane had less than its minimum share while bulk records waited"
	}
}

// TestLanesPriorityAndMinimumShare runs the scheduler for a fake minute
// with a 300 ms LLM and a budget of 10 (about 33 answers/s), a bulk backlog
// that never runs out, and shoppers at half the capacity, then at one and a
// half times it.
func TestLanesPriorityAndMinimumShare(t *testing.T) {
	const latency, budget, share = 300 * time.Millisecond, 10, 0.2 // bulk keeps 2 slots
	capacity := float64(budget) / latency.Seconds()
	for _, tc := range []struct {
		name      string
		perSecond int
		// the least answers of each lane in the minute
		wantInteractive, wantBulk float64
	}{
		// No shoppers: paced, bulk still takes the whole budget.
		{"bulk alone", 0, 0, capacity * 60 * 0.97},
		// Shoppers all answered; bulk takes what is left (about 17/s).
		{"half", 16, 16 * 59, (capacity - 16) * 60 * 0.9},
		// Shoppers get all but the bulk lane's share; bulk its 2 slots.
		{"overload", 50, (capacity - 2/latency.Seconds()) * 60 * 0.95, 2 / latency.Seconds() * 60 * 0.95},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newLaneSim(budget, share, latency)
				s.arrive(bulk, 100000)
				s.run(time.Minute, tc.perSecond)
				if s.violation != "" {
					t.Error(s.violation)
				}
				got := s.answered
				if float64(got[interactive]) < tc.wantInteractive || float64(got[bulk]) < tc.wantBulk {
					t.Errorf("answered %d interactive and %d bulk records in a minute, want at least %.0f and %.0f",
						got[interactive], got[bulk], tc.wantInteractive, tc.wantBulk)
				}
				// Below capacity a shopper waits for the next slot to free.
				// Paced bulk starts keep the slots freeing one by one, every
				// latency/budget (30 ms), instead of all together once a
				// call (a wait of up to 292 ms unpaced).
				if most := 2 * latency / budget; tc.perSecond < int(capacity) && s.maxWait[interactive] > most {
					t.Errorf("an interactive record waited %v for a slot, want at most %v", s.maxWait[interactive], most)
				}
				t.Logf("interactive %d (longest wait %v), bulk %d", got[interactive], s.maxWait[interactive], got[bulk])
			})
		})
	}
}

// TestBulkMinNeverTakesTheWholeBudget: the bulk lane's minimum share is at
// least one slot, but never the whole budget, which would keep shoppers
// out while any bulk record is held.
func TestBulkMinNeverTakesTheWholeBudget(t *testing.T) {
	for _, tc := range []struct {
		inFlight int
		share    float64
		want     int
	}{{256, 0.1, 26}, {10, 0.2, 2}, {4, 0.01, 1}, {2, 0.5, 1}, {1, 0.1, 0}, {8, 0, 0}} {
		cfg := DefaultConfig()
		cfg.InFlight, cfg.BulkMinShare = tc.inFlight, tc.share
		if got := cfg.bulkMin(); got != tc.want {
			t.Errorf("bulkMin of a budget of %d with share %g = %d, want %d", tc.inFlight, tc.share, got, tc.want)
		}
	}
	cfg := DefaultConfig()
	cfg.BulkMinShare = 1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "bulk-min-share") {
		t.Errorf("a bulk minimum share of the whole budget: %v, want an error naming bulk-min-share", err)
	}
}

// TestBulkSpacingIsNeverZero: records that end at once (abandoned ones)
// cannot make the pace's spacing 0, which it divides by.
func TestBulkSpacingIsNeverZero(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InFlight = 10000
	c := &Consumer{cfg: cfg}
	if got := c.bulkSpacing(); got != time.Second/10000 {
		t.Errorf("spacing before any record finished %v, want a second over the budget", got)
	}
	for range 100 {
		c.slotHeld(0)
	}
	l := &lanes{c: c}
	if got := c.bulkSpacing(); got <= 0 {
		t.Fatalf("spacing %v after records that held their slots for no time", got)
	}
	if n := l.bulkTokens(time.Now()); n < 1 {
		t.Errorf("%d bulk starts allowed after a pause, want at least one", n)
	}
}
