package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"sluice/shared/auth"
	"sluice/shared/backoff"
	"sluice/shared/envelope"
)

// outcome is how one request ended, for the user's next step.
type outcome int

const (
	outCut     outcome = iota // the run ended while it was under way
	outOK                     // 200 or 202
	outRefused                // 429 or 503
	outFailed                 // transport error or another status
)

// httpRun is the state the users of one http run share.
type httpRun struct {
	c      Config
	hc     *http.Client
	url    string
	giveUp context.CancelCauseFunc

	begun                             atomic.Int64 // requests begun, for Count
	answered, queued, refused, failed atomic.Int64
	lat                               latencies
	fails                             *failures
}

// newHTTPRun returns the state of a run whose users share tr; giveUp
// cancels the run.
func newHTTPRun(c Config, tr *http.Transport, giveUp context.CancelCauseFunc) *httpRun {
	return &httpRun{
		c:      c,
		hc:     &http.Client{Transport: tr, Timeout: time.Duration(c.WaitMS)*time.Millisecond + c.Timeout},
		url:    strings.TrimSuffix(c.URL, "/") + "/v1/chat",
		giveUp: giveUp,
		fails:  newFailures(),
	}
}

// newTransport returns the HTTP transport of a run: at most conns
// connections (0: no bound), idle ones kept up to idle.
func newTransport(conns, idle int) *http.Transport {
	return &http.Transport{
		// A dead host must fail a request, not hang it until the run ends.
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: idle,
		MaxConnsPerHost:     conns,
	}
}

// runHTTP runs c.Users closed-loop users against c.URL until c.Duration or
// c.Count is reached, ctx ends, or they give up.
func runHTTP(ctx context.Context, c Config) (Result, error) {
	base, giveUp := context.WithCancelCause(ctx)
	defer giveUp(nil)
	runCtx, cancel := context.WithTimeout(base, c.Duration)
	defer cancel()

	tr := newTransport(c.Users, c.Users)
	defer tr.CloseIdleConnections()
	r := newHTTPRun(c, tr, giveUp)
	tokens := make([]string, c.Users)
	for u := range tokens {
		tok, err := auth.Mint(c.Secret, c.Tenant, fmt.Sprintf("user-%d", u), c.Duration+time.Hour, time.Now())
		if err != nil {
			return Result{Target: TargetHTTP}, fmt.Errorf("mint token: %w", err)
		}
		tokens[u] = tok
	}
	var wg sync.WaitGroup
	start := time.Now()
	for _, tok := range tokens {
		wg.Go(func() { r.user(runCtx, tok) })
	}
	wg.Wait()
	return r.result(base, time.Since(start).Seconds())
}

// result returns what the run measured in secs, and why it failed: it gave
// up (base's cause), or nothing was answered.
func (r *httpRun) result(base context.Context, secs float64) (Result, error) {
	c := r.c
	res := Result{Target: TargetHTTP, Mode: c.Mode, Users: c.Users, Seconds: secs,
		Answered: r.answered.Load(), Queued: r.queued.Load(), Refused: r.refused.Load(), Errors: r.failed.Load()}
	res.Sent = res.Answered + res.Queued + res.Refused + res.Errors
	res.PerSecond = perSecond(res.Answered, secs)
	if c.Mode != "wait" {
		res.AcceptedPS = perSecond(res.Queued, secs)
	}
	r.lat.fill(&res)
	r.fails.fill(&res)
	switch {
	case errors.Is(context.Cause(base), ErrGaveUp):
		return res, fmt.Errorf("%w for %s with none answered in between (%d errors, %d refused in all)%s",
			ErrGaveUp, c.GiveUp, res.Errors, res.Refused, res.why())
	case res.Answered+res.Queued > 0:
		return res, nil
	case res.Sent == 0:
		return res, fmt.Errorf("%w: no request finished within the run", ErrNothingAnswered)
	default:
		return res, fmt.Errorf("%w: %d requests refused, %d failed%s", ErrNothingAnswered, res.Refused, res.Errors, res.why())
	}
}

// user asks, waits for the answer and asks again until ctx ends or the
// count is reached, pausing after failures and refusals.
func (r *httpRun) user(ctx context.Context, tok string) {
	var body []byte
	failures := 0 // consecutive
	for n := 0; ctx.Err() == nil; n++ {
		if n%r.c.Turns == 0 {
			body, _ = json.Marshal(map[string]any{"text": r.c.Text, "dialog_id": envelope.NewDialogID(), "mode": r.c.Mode, "wait_ms": r.c.WaitMS})
		}
		if r.c.Count > 0 && r.begun.Add(1) > int64(r.c.Count) {
			return
		}
		out, retryAfter, _ := r.ask(ctx, tok, body, time.Time{}, false)
		var pause time.Duration
		switch {
		case out == outCut:
			return
		case out == outOK:
			failures = 0
		case out == outRefused && r.c.RetryAfterMax == 0:
			// Ask again at once, as a client that ignores Retry-After.
		case out == outRefused && retryAfter > 0:
			pause = min(retryAfter, r.c.RetryAfterMax)
		default: // failed, or refused without saying for how long
			failures++
			pause = backoff.Exponential(failures, r.c.Backoff, r.c.BackoffMax)
		}
		if pause > 0 && backoff.Sleep(ctx, pause) != nil {
			return
		}
	}
}

// ask sends one request and counts how it ended. For a refusal it also
// returns the Retry-After, 0 when there is none; for a success, the body
// when keep is set. Its latency counts from due, or when it is zero from
// the moment it is sent.
func (r *httpRun) ask(ctx context.Context, tok string, body []byte, due time.Time, keep bool) (outcome, time.Duration, []byte) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		r.failed.Add(1)
		r.fail("request", err.Error())
		return outFailed, 0, nil
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	t0 := due
	if t0.IsZero() {
		t0 = time.Now()
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return r.transportError(ctx, err), 0, nil
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusAccepted:
		var kept []byte
		if keep {
			kept, err = io.ReadAll(resp.Body)
		} else {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		if err != nil {
			return r.transportError(ctx, err), 0, nil
		}
		took := time.Since(t0)
		r.lat.add(took)
		if r.c.OnAnswer != nil {
			r.c.OnAnswer(t0, took, resp.StatusCode)
		}
		if resp.StatusCode == http.StatusOK {
			r.answered.Add(1)
		} else {
			r.queued.Add(1)
		}
		r.fails.succeeded()
		return outOK, 0, kept
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil && ctx.Err() != nil {
		return outCut, 0, nil
	}
	kind := "http_" + strconv.Itoa(resp.StatusCode)
	text := statusText(resp.StatusCode, b)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		r.refused.Add(1)
		r.fail(kind, text)
		return outRefused, backoff.RetryAfter(resp.Header, time.Now()), nil
	}
	r.failed.Add(1)
	r.fail(kind, text)
	return outFailed, 0, nil
}

// transportError counts err unless the run's end caused it.
func (r *httpRun) transportError(ctx context.Context, err error) outcome {
	if ctx.Err() != nil {
		return outCut
	}
	r.failed.Add(1)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the method and URL, the same in every one
	}
	r.fail("transport", err.Error())
	return outFailed
}

// fail records a failure, and gives the run up when requests have been
// failing for the give-up time with none succeeding in between.
func (r *httpRun) fail(kind, text string) {
	if d := r.fails.add(kind, text, time.Now()); r.c.GiveUp > 0 && d >= r.c.GiveUp {
		r.giveUp(ErrGaveUp)
	}
}

// statusText describes an error response: its status, and the title and
// detail of its problem body (or the start of whatever body it has).
func statusText(status int, body []byte) string {
	s := strconv.Itoa(status)
	var p struct{ Title, Detail string }
	if json.Unmarshal(body, &p) != nil || p.Title == "" && p.Detail == "" {
		p.Title = http.StatusText(status)
		if first, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n"); first != "" {
			if len(first) > 200 {
				first = strings.ToValidUTF8(first[:200], "")
			}
			p.Detail = first
		}
	}
	if p.Title != "" {
		s += " " + p.Title
	}
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s
}
