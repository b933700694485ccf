package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"sluice/shared/auth"
)

// maxRate bounds Config.Rate: past it the pacing goroutine alone would
// take a core of its own.
const maxRate = 100000

// maxOpenInFlight bounds the requests of an open-loop run under way at
// once. Past it the target has stopped answering; further requests are
// counted as missed rather than piling up goroutines and connections.
const maxOpenInFlight = 20000

// runOpen runs c open loop: c.Rate requests a second, evenly spaced, for
// c.Warmup and then c.Duration, whatever the answers do (a closed loop
// slows down with its target and hides what a flash sale does to it).
// Only the requests due within c.Duration are counted; their latency
// counts from the moment each was due.
//
// Each request is asked by the user of the pool of c.Users that has been
// idle longest, so that the requests spread over many users and dialogs as
// a storefront's do and no dialog has two questions under way. A dialog
// opens without a dialog id, as a storefront's first question does, and
// goes on under the id its first answer names for c.Turns questions.
// Every question's text is made distinct with its number and the run's, so
// that the hot-answer cache answers none of them, in this run or the next:
// each one goes through Kafka, the consumer and the LLM.
func runOpen(ctx context.Context, c Config) (Result, error) {
	base, giveUp := context.WithCancelCause(ctx)
	defer giveUp(nil)
	// No bound on connections: an open loop does not wait for one to free.
	tr := newTransport(0, 512)
	defer tr.CloseIdleConnections()
	warm, meas := newHTTPRun(c, tr, giveUp), newHTTPRun(c, tr, giveUp)
	pool, err := newUserPool(c, time.Now())
	if err != nil {
		return Result{Target: TargetHTTP, Mode: c.Mode}, err
	}

	var (
		wg       sync.WaitGroup
		inflight atomic.Int64
		missed   int64
		maxLag   time.Duration
		began    bool
		k        int64
	)
	clk := &wallClock{}
	start := clk.Now()
	window := start.Add(c.Warmup)
	pace(base, clk, start, window.Add(c.Duration), c.Rate, func(due time.Time) {
		r := warm
		if !due.Before(window) {
			if !began {
				began = true
				if c.OnWindow != nil {
					c.OnWindow(true)
				}
			}
			r = meas
			maxLag = max(maxLag, clk.Now().Sub(due))
		}
		k++
		if inflight.Load() >= maxOpenInFlight {
			if r == meas {
				missed++
			}
			return
		}
		inflight.Add(1)
		n := k
		wg.Go(func() {
			defer inflight.Add(-1)
			r.openAsk(base, pool, n, due)
		})
	})
	wg.Wait()
	if began && c.OnWindow != nil {
		c.OnWindow(false)
	}
	res, err := meas.result(base, c.Duration.Seconds())
	res.Rate, res.Missed, res.MaxSendLagMS = c.Rate, missed, ms(maxLag)
	res.Users = pool.size()
	return res, err
}

// openQuestion is the body of an open-loop request.
type openQuestion struct {
	Text     string `json:"text"`
	DialogID string `json:"dialog_id,omitempty"`
	Mode     string `json:"mode"`
	WaitMS   int    `json:"wait_ms"`
}

// openAsk sends question k, due at due, as the pool's longest-idle user.
func (r *httpRun) openAsk(ctx context.Context, pool *userPool, k int64, due time.Time) {
	u, err := pool.take()
	if err != nil {
		r.failed.Add(1)
		r.fail("token", err.Error())
		return
	}
	defer pool.release(u)
	if u.asked >= r.c.Turns {
		u.dialog, u.asked = "", 0
	}
	first := u.dialog == ""
	// The run's nonce too: the hot-answer cache keeps a first turn's answer
	// for a minute, and the next run's question k would be this one's.
	text := r.c.Text + " #" + pool.nonce + "-" + strconv.FormatInt(k, 10)
	body, err := json.Marshal(openQuestion{Text: text, DialogID: u.dialog, Mode: r.c.Mode, WaitMS: r.c.WaitMS})
	if err != nil {
		r.failed.Add(1)
		r.fail("request", err.Error())
		return
	}
	out, _, answer := r.ask(ctx, u.token, body, due, first)
	if out != outOK {
		return // the dialog goes on without this question
	}
	u.asked++
	if first {
		var a struct {
			DialogID string `json:"dialog_id"`
		}
		if json.Unmarshal(answer, &a) == nil {
			u.dialog = a.DialogID // "" leaves the next question to open a dialog again
		}
	}
}

// openUser is one user of an open-loop run: one question at a time.
type openUser struct {
	token  string
	dialog string // "" until the first answer of a dialog names it
	asked  int    // questions answered in the dialog
}

// userPool hands out the user idle longest, and makes a new one when all
// are asking.
type userPool struct {
	c     Config
	nonce string // makes the run's user ids its own: no rate-limit state of an earlier run applies

	mu   sync.Mutex
	idle []*openUser // idle longest first
	made int
}

// newUserPool returns a pool of c.Users users, their tokens minted.
func newUserPool(c Config, now time.Time) (*userPool, error) {
	p := &userPool{c: c, nonce: strconv.FormatInt(now.UnixNano(), 36)}
	for range c.Users {
		u, err := p.make(now)
		if err != nil {
			return nil, err
		}
		p.idle = append(p.idle, u)
	}
	return p, nil
}

// make returns a new user; the caller holds mu or owns p.
func (p *userPool) make(now time.Time) (*openUser, error) {
	p.made++
	ttl := p.c.Warmup + p.c.Duration + time.Hour
	tok, err := auth.Mint(p.c.Secret, p.c.Tenant, fmt.Sprintf("open-%s-%d", p.nonce, p.made), ttl, now)
	if err != nil {
		return nil, fmt.Errorf("mint token: %w", err)
	}
	return &openUser{token: tok}, nil
}

func (p *userPool) take() (*openUser, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) > 0 {
		u := p.idle[0]
		p.idle[0] = nil
		p.idle = p.idle[1:]
		return u, nil
	}
	return p.make(time.Now())
}

func (p *userPool) release(u *openUser) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle = append(p.idle, u)
}

func (p *userPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.made
}

// clock is what pace reads and waits on: the wall clock, or a test's.
type clock interface {
	Now() time.Time
	// SleepUntil returns at t (at once when t has passed), or earlier with
	// ctx's error.
	SleepUntil(ctx context.Context, t time.Time) error
}

// wallClock is the real clock; its one timer is reused from wait to wait.
type wallClock struct{ t *time.Timer }

func (*wallClock) Now() time.Time { return time.Now() }

func (w *wallClock) SleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	if w.t == nil {
		w.t = time.NewTimer(d)
	} else {
		w.t.Reset(d)
	}
	select {
	case <-w.t.C:
		return nil
	case <-ctx.Done():
		w.t.Stop()
		return ctx.Err()
	}
}

// pace calls send for the requests of an open loop of rate requests a
// second from start until end: the i-th (from 0) is due at start + i/rate,
// and send is called with that time once clk reaches it. A request whose
// time passed while send was busy or the goroutine was not scheduled is
// sent at once, and the next keep their times: the schedule never slips.
// It returns how many it sent, ceil(rate × (end − start)) unless ctx
// ended first.
func pace(ctx context.Context, clk clock, start, end time.Time, rate float64, send func(due time.Time)) int64 {
	interval := float64(time.Second) / rate
	var i int64
	for ; ; i++ {
		due := start.Add(time.Duration(float64(i) * interval))
		if !due.Before(end) || ctx.Err() != nil {
			return i
		}
		if clk.Now().Before(due) && clk.SleepUntil(ctx, due) != nil {
			return i
		}
		send(due)
	}
}

// Pace calls send for the operations of an open loop of rate a second
// from start until end, on the wall clock, as the open-loop load does
// (pace): the i-th is due at start + i/rate, and a late one is sent at
// once without moving the next. It returns how many it sent; fewer than
// rate × (end − start) when ctx ended first.
func Pace(ctx context.Context, start, end time.Time, rate float64, send func(due time.Time)) int64 {
	return pace(ctx, &wallClock{}, start, end, rate, send)
}
