package loadgen

import (
	"context"
	"testing"
	"time"
)

// fakeClock is a clock whose time moves only when pace waits on it: to the
// time waited for, or with step set, to the first multiple of step at or
// after it, as a coarse timer would wake.
type fakeClock struct {
	now  time.Time
	step time.Duration
}

func (f *fakeClock) Now() time.Time { return f.now }

func (f *fakeClock) SleepUntil(ctx context.Context, t time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.step > 0 {
		t = t.Add(f.step - 1).Truncate(f.step)
	}
	if t.After(f.now) {
		f.now = t
	}
	return nil
}

// TestPace runs the pacing of an open loop on a clock of its own and counts
// the requests sent, in all and in a window of the run: the schedule is
// exact whatever the clock's wake-ups and the sender's delays.
func TestPace(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		rate     float64
		length   time.Duration
		step     time.Duration // the clock wakes at multiples of step
		slowSend time.Duration // every 100th send takes this long
		want     int64
		// sent with a due time in [from, to) of the run
		from, to time.Duration
		inWindow int64
	}{
		{name: "600/s", rate: 600, length: time.Second, want: 600, from: 250 * time.Millisecond, to: 750 * time.Millisecond, inWindow: 300},
		{name: "2000/s", rate: 2000, length: 1500 * time.Millisecond, want: 3000, from: time.Second, to: 1500 * time.Millisecond, inWindow: 1000},
		{name: "CoarseWakeUps", rate: 600, length: time.Second, step: 10 * time.Millisecond, want: 600, from: 250 * time.Millisecond, to: 750 * time.Millisecond, inWindow: 300},
		{name: "SlowSender", rate: 600, length: time.Second, slowSend: 50 * time.Millisecond, want: 600, from: 0, to: 500 * time.Millisecond, inWindow: 300},
		{name: "PartialInterval", rate: 3, length: 1100 * time.Millisecond, want: 4, from: time.Second, to: 1100 * time.Millisecond, inWindow: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{now: start, step: tc.step}
			var sent, inWindow int64
			var last time.Time
			n := pace(t.Context(), clk, start, start.Add(tc.length), tc.rate, func(due time.Time) {
				sent++
				if clk.now.Before(due) {
					t.Fatalf("request due at %v sent early, at %v", due.Sub(start), clk.now.Sub(start))
				}
				if due.Before(last) {
					t.Fatalf("due times out of order: %v after %v", due.Sub(start), last.Sub(start))
				}
				last = due
				if d := due.Sub(start); d >= tc.from && d < tc.to {
					inWindow++
				}
				if tc.slowSend > 0 && sent%100 == 0 {
					clk.now = clk.now.Add(tc.slowSend)
				}
			})
			if n != tc.want || sent != tc.want {
				t.Errorf("sent %d (returned %d), want %d", sent, n, tc.want)
			}
			if inWindow != tc.inWindow {
				t.Errorf("%d due in [%v, %v), want %d", inWindow, tc.from, tc.to, tc.inWindow)
			}
		})
	}
}

// TestPaceStopsWithContext: a run cut short sends nothing more.
func TestPaceStopsWithContext(t *testing.T) {
	start := time.Now()
	clk := &fakeClock{now: start}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var sent int64
	n := pace(ctx, clk, start, start.Add(time.Hour), 1000, func(time.Time) {
		if sent++; sent == 100 {
			cancel()
		}
	})
	if n != 100 || sent != 100 {
		t.Errorf("sent %d (returned %d) after the context ended at the 100th", sent, n)
	}
}
