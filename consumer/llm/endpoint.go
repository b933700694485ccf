package llm

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"sluice/shared/backoff"
	"sluice/shared/envelope"
	"sluice/shared/metric"
)

// minCallTime is the least time worth starting a call (or a retry, or a
// wait for a slot or the quota) with: less than that before the deadline,
// the request moves on to the next tier.
const minCallTime = 50 * time.Millisecond

// breakerWindow is how far back a closed breaker's failure ratio looks, at
// the least: see window.
var breakerWindow = 10 * time.Second // a variable so that tests can shorten it

// window returns how far back a closed breaker with call timeout timeout
// counts: breakerWindow, or longer than the longest call. The breaker
// counts a result in the one-second bucket in which its call started, and
// drops a result whose bucket has left the window; with a window no longer
// than the timeout, no timed-out call was ever counted, and the breaker
// never opened against an endpoint that hangs.
func window(timeout time.Duration) time.Duration {
	return max(breakerWindow, timeout+2*time.Second)
}

// breakerMinCalls is how many calls the window needs before its failure
// ratio can open the breaker: fewer say too little about the endpoint.
const breakerMinCalls = 10

// Reasons an endpoint gives up on a request without a failed call.
var (
	errBreakerOpen = errors.New("circuit breaker open")
	errNoTime      = errors.New("no time left before the deadline")
	errNoSlot      = errors.New("no free call slot before the deadline")
	errNoQuota     = errors.New("no quota before the deadline")
	errNoTurn      = errors.New("interactive requests waited for the quota until the deadline")
	errEmpty       = errors.New("empty completion")
)

type endpointConfig struct {
	name, source           string
	baseURL, apiKey, model string
}

// endpoint is one model behind one base URL with its breaker, call slots
// (and the order of the requests waiting for them) and optional quota.
type endpoint struct {
	endpointConfig
	cfg     Config
	api     openai.Client
	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	gate    *gate
	quota   quota // nil: no limit
	m       *metrics
	em      endpointMetrics
	client  *Client

	quotaWarned rate.Sometimes // the quota-unavailable warning, at most every 10 s

	failures    atomic.Int64            // failed calls since the last failure log line
	failLogged  rate.Sometimes          // the failure log line, at most every failureLogEvery
	lastFailure atomic.Pointer[failure] // the last failure the breaker counted
}

// failureLogEvery is the least time between two failure log lines of one
// endpoint: a dead endpoint fails every call, and a line per call would
// bury the log.
const failureLogEvery = 10 * time.Second

// failure is the cause of a failed call, as the log tells it.
type failure struct {
	outcome string // the metric label (classify)
	err     error
}

// attrs returns the log attributes of f: its outcome and error, and the
// code and type of an API error when it has them (such as
// "model_not_found" or "insufficient_quota").
func (f *failure) attrs() []any {
	a := []any{"outcome", f.outcome, "err", f.err}
	var apiErr *openai.Error
	if errors.As(f.err, &apiErr) {
		if apiErr.Code != "" {
			a = append(a, "code", apiErr.Code)
		}
		if apiErr.Type != "" {
			a = append(a, "type", apiErr.Type)
		}
	}
	return a
}

// transport is Go's default transport (proxy from HTTPS_PROXY and NO_PROXY,
// dial and TLS handshake timeouts, HTTP/2 where the server offers it) that
// keeps a connection for each of up to conns concurrent calls.
func transport(conns int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = conns
	t.MaxIdleConnsPerHost = conns
	return t
}

func newEndpoint(ec endpointConfig, cfg Config, q quota, c *Client) *endpoint {
	e := &endpoint{
		endpointConfig: ec,
		cfg:            cfg,
		api: openai.NewClient(
			option.WithBaseURL(strings.TrimSuffix(ec.baseURL, "/")+"/"),
			option.WithAPIKey(ec.apiKey),
			option.WithMaxRetries(0), // retries are ours: bounded by the request's deadline
			option.WithHTTPClient(&http.Client{Transport: transport(cfg.MaxConcurrent)}),
		),
		gate:   newGate(cfg.MaxConcurrent, c.bulkShare),
		quota:  q,
		m:      c.m,
		em:     c.m.endpoint(ec.name),
		client: c,

		quotaWarned: rate.Sometimes{Interval: 10 * time.Second},
		failLogged:  rate.Sometimes{Interval: failureLogEvery},
	}
	e.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        ec.name,
		MaxRequests: uint32(cfg.BreakerProbes),
		Timeout:     cfg.BreakerOpen,
		// Counts cover a rolling window in the closed state.
		Interval:     window(cfg.Timeout),
		BucketPeriod: time.Second,
		ReadyToTrip: func(n gobreaker.Counts) bool {
			if n.ConsecutiveFailures < uint32(cfg.BreakerFailures) {
				return false
			}
			if cfg.BreakerFailureRatio <= 0 {
				return true
			}
			done := n.TotalFailures + n.TotalSuccesses
			return done >= breakerMinCalls && float64(n.TotalFailures) >= cfg.BreakerFailureRatio*float64(done)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errExcluded) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			args := []any{"endpoint", name, "from", from.String(), "to", to.String()}
			if to != gobreaker.StateOpen {
				c.log.Info("llm circuit breaker", args...)
				return
			}
			// Why it opened: the failure that tripped it (recorded before
			// the breaker learns of it).
			if f := e.lastFailure.Load(); f != nil {
				args = append(args, f.attrs()...)
			}
			c.log.Warn("llm circuit breaker", args...)
		},
	})
	return e
}

// errExcluded marks an outcome the breaker ignores.
var errExcluded = errors.New("not the endpoint's fault")

// complete asks the endpoint for msgs' completion, retrying retryable
// failures while a call can still end before until. tokens is the call's
// estimated cost for the quota. With a sink, calls stream and hand it their
// pieces; a retry after a call that gave pieces resets the sink first.
func (e *endpoint) complete(ctx context.Context, until time.Time, msgs []message, tokens int, sink *resetting) (string, error) {
	var err error
	for attempt := 1; ; attempt++ {
		var text string
		var retryAfter time.Duration
		sink.reset()
		text, retryAfter, err = e.call(ctx, until, msgs, tokens, sink)
		if err == nil {
			return text, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if attempt >= e.cfg.Attempts || !retryable(err) {
			return "", err
		}
		pause := max(backoff.Linear(attempt, e.cfg.RetryBackoff, 0), retryAfter)
		if time.Until(until) < pause+minCallTime {
			return "", fmt.Errorf("%w (next attempt would start after it): %w", errNoTime, err)
		}
		if err := backoff.Sleep(ctx, pause); err != nil {
			return "", err
		}
		e.m.retries.With(e.name).Inc()
	}
}

// call makes one call. It returns the text, or an error and the pause the
// endpoint asked for before the next call (429 Retry-After).
func (e *endpoint) call(ctx context.Context, until time.Time, msgs []message, tokens int, sink *resetting) (string, time.Duration, error) {
	if e.breaker.State() == gobreaker.StateOpen {
		e.m.shortCircuits.With(e.name).Inc()
		return "", 0, errBreakerOpen
	}
	if time.Until(until) < minCallTime {
		return "", 0, errNoTime
	}
	if err := e.enter(ctx, until, tokens); err != nil {
		return "", 0, err
	}
	defer e.gate.release()
	done, err := e.breaker.Allow()
	if err != nil { // opened meanwhile, or half-open with its probes under way
		e.m.shortCircuits.With(e.name).Inc()
		return "", 0, errBreakerOpen
	}
	timeout := e.cfg.Timeout
	cut := false
	if left := time.Until(until); left < timeout {
		timeout, cut = left, true
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var content string
	if sink != nil {
		content, err = e.stream(cctx, msgs, sink)
	} else {
		content, err = e.post(cctx, msgs)
	}
	o := classify(ctx, err, cut)
	e.em.calls.With(o.outcome).Inc()
	e.em.duration.With(o.outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		e.failed(o, err)
	}
	done(o.breakerErr)
	if err != nil {
		return "", o.retryAfter, o.err
	}
	return content, 0, nil
}

// post makes a call without streaming and returns the answer.
func (e *endpoint) post(ctx context.Context, msgs []message) (string, error) {
	// The SDK sends the call (with its authentication, headers and error
	// types; retries are ours), but the request body is encoded here and
	// only the answer of the response is decoded: the SDK's generic encoding
	// and decoding of a completion cost about a fifth of the pipeline's CPU
	// under load (docs/benchmarks.md).
	body, err := json.Marshal(chatRequest{Model: e.model, Messages: msgs,
		MaxTokens: e.cfg.MaxTokens, Temperature: e.cfg.Temperature})
	if err != nil {
		return "", err
	}
	var raw []byte
	if err := e.api.Post(ctx, "chat/completions", body, &raw); err != nil {
		return "", err
	}
	return completionContent(raw)
}

// stream makes a call with streaming on (the SDK's streaming API), hands
// each piece of the answer to sink as it comes and returns the whole
// answer. A stream cut short is an error, whatever it gave: the pieces
// are void, and the retry or the next tier resets them.
func (e *endpoint) stream(ctx context.Context, msgs []message, sink *resetting) (string, error) {
	params := openai.ChatCompletionNewParams{Model: e.model, Messages: make([]openai.ChatCompletionMessageParamUnion, len(msgs))}
	for i, m := range msgs {
		switch m.Role {
		case "system":
			params.Messages[i] = openai.SystemMessage(m.Content)
		case "assistant":
			params.Messages[i] = openai.AssistantMessage(m.Content)
		default:
			params.Messages[i] = openai.UserMessage(m.Content)
		}
	}
	if e.cfg.MaxTokens != 0 {
		params.MaxTokens = openai.Int(e.cfg.MaxTokens)
	}
	if e.cfg.Temperature != 0 {
		params.Temperature = openai.Float(e.cfg.Temperature)
	}
	st := e.api.Chat.Completions.NewStreaming(ctx, params)
	defer st.Close()
	var b strings.Builder
	finished := false
	for st.Next() {
		ch := st.Current()
		if len(ch.Choices) == 0 {
			continue // a usage chunk
		}
		if piece := ch.Choices[0].Delta.Content; piece != "" {
			b.WriteString(piece)
			sink.piece(piece)
		}
		if ch.Choices[0].FinishReason != "" {
			finished = true
		}
	}
	if err := st.Err(); err != nil {
		return "", err
	}
	if b.Len() == 0 {
		return "", errEmpty
	}
	if !finished {
		// The body ended without a finish reason nor [DONE]: cut short.
		return "", fmt.Errorf("%w: stream ended without a finish reason", io.ErrUnexpectedEOF)
	}
	return b.String(), nil
}

// failed logs a failed call, at most one line every failureLogEvery with
// the count of failures since the previous line, and keeps the cause of a
// failure the breaker counts for the line of the breaker opening. A call
// whose caller went away is no failure of the endpoint's.
func (e *endpoint) failed(o outcome, err error) {
	if o.outcome == "canceled" {
		return
	}
	f := &failure{outcome: o.outcome, err: err}
	if o.breakerErr != nil && !errors.Is(o.breakerErr, errExcluded) {
		e.lastFailure.Store(f)
	}
	e.failures.Add(1)
	e.failLogged.Do(func() {
		args := append([]any{"endpoint", e.name}, f.attrs()...)
		e.client.log.Warn("llm call failed", append(args, "failures", e.failures.Swap(0))...)
	})
}

// message is one message of a chat completion request.
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatRequest is the body of a chat completion request, as the OpenAI API
// and its compatible servers take it.
type chatRequest struct {
	Model       string    `json:"model"`
	Messages    []message `json:"messages"`
	MaxTokens   int64     `json:"max_tokens,omitzero"`
	Temperature float64   `json:"temperature,omitzero"`
}

// completion is the part of a chat completion Sluice reads.
type completion struct {
	Choices []struct {
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
}

// completionContent returns the first choice's answer. It returns a JSON
// error for a malformed body and errEmpty for one without an answer.
func completionContent(raw []byte) (string, error) {
	var c completion
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", fmt.Errorf("parsing response json: %w", err)
	}
	if len(c.Choices) == 0 || c.Choices[0].Message.Content == "" {
		return "", errEmpty
	}
	return c.Choices[0].Message.Content, nil
}

// enter takes a call slot and the quota's room for a call of tokens,
// waiting for each while a call could still start before until; the caller
// releases the slot. A request waits for quota without a slot, so that
// waiting requests never hold the slots of calls that could be made. An
// interactive request asks for quota as soon as it finds room; a bulk one
// asks only while no interactive request of this process waits for quota,
// or while its lane had less than its minimum share of the recent calls
// (WithBulkMinShare): when room comes, interactive requests take it first.
// A failing quota store lets the call through.
func (e *endpoint) enter(ctx context.Context, until time.Time, tokens int) error {
	lane := laneIndex(ctx)
	waited := "" // the limit the request waited for
	for {
		if lane == laneBulk {
			if err := e.awaitTurn(ctx, until, waited); err != nil {
				return err
			}
		}
		if err := e.acquire(ctx, lane, until); err != nil {
			return err
		}
		wait, limit, err := e.take(ctx, tokens)
		switch {
		case err != nil:
			e.gate.release()
			return err
		case wait <= 0:
			e.gate.entered(lane)
			if waited != "" {
				e.m.limited.WithLabelValues(waited, "waited").Inc()
			}
			return nil
		}
		e.gate.release()
		// Other processes may take the room first; a little jitter keeps
		// the waiters from all asking again at the same instant.
		wait += jitter(wait)
		if time.Until(until) < wait+minCallTime {
			e.m.limited.WithLabelValues(limit, "fallback").Inc()
			return fmt.Errorf("%w (%s)", errNoQuota, limit)
		}
		if lane == laneInteractive && waited == "" {
			defer e.gate.waitQuota()()
		}
		waited = limit
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// jitter is added to a wait for quota: up to a tenth of it.
var jitter = func(wait time.Duration) time.Duration { return rand.N(wait/10 + time.Millisecond) } // a variable so that tests can fix it

// take asks the quota for tokens (see quota.take). A failing quota store
// lets the call through; only the end of ctx is an error.
func (e *endpoint) take(ctx context.Context, tokens int) (time.Duration, string, error) {
	if e.quota == nil {
		return 0, "", nil
	}
	wait, limit, err := e.quota.take(ctx, tokens)
	if err != nil {
		if ctx.Err() != nil {
			return 0, "", ctx.Err()
		}
		e.m.quotaErrors.Inc()
		// Counted every time, logged at most every 10 s: while Redis is
		// down this would otherwise be a line per call.
		e.quotaWarned.Do(func() { e.client.log.Warn("llm quota unavailable, calling without it", "err", err) })
		return 0, "", nil
	}
	return wait, limit, nil
}

// awaitTurn waits, for a bulk request, until no interactive request waits
// for quota, while a call could still start before until. waited is the
// limit the request waited for so far ("" none), its metric label when it
// runs out of time.
func (e *endpoint) awaitTurn(ctx context.Context, until time.Time, waited string) error {
	turn := e.gate.quotaTurn()
	select {
	case <-turn:
		return nil
	default:
	}
	t := time.NewTimer(time.Until(until) - minCallTime)
	defer t.Stop()
	select {
	case <-turn:
		return nil
	case <-t.C:
		e.m.limited.WithLabelValues(cmp.Or(waited, "priority"), "fallback").Inc()
		return errNoTurn
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acquire takes a call slot for a request of lane, waiting for one while a
// call could still start before until.
func (e *endpoint) acquire(ctx context.Context, lane int, until time.Time) error {
	if e.gate.tryAcquire() {
		return nil
	}
	t := time.NewTimer(time.Until(until) - minCallTime)
	defer t.Stop()
	waited, err := e.gate.acquire(ctx, lane, t.C)
	switch {
	case errors.Is(err, errNoSlot):
		e.m.limited.WithLabelValues("concurrency", "fallback").Inc()
	case waited:
		e.m.limited.WithLabelValues("concurrency", "waited").Inc()
	}
	return err
}

// outcome is what a call's result means.
type outcome struct {
	outcome    string        // metric label
	err        error         // returned to the retry loop; retryable() reads it
	breakerErr error         // reported to the breaker: nil success, errExcluded ignored
	retryAfter time.Duration // the endpoint's Retry-After
}

// retryableError marks failures worth another call.
type retryableError struct{ err error }

func (r retryableError) Error() string { return r.err.Error() }
func (r retryableError) Unwrap() error { return r.err }

func retryable(err error) bool {
	var r retryableError
	return errors.As(err, &r)
}

// classify reads a call's error. parent is the request's context; cut says
// the call's timeout was shortened by the request's deadline.
func classify(parent context.Context, err error, cut bool) outcome {
	var apiErr *openai.Error
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return outcome{outcome: "ok"}
	case parent.Err() != nil: // the caller went away: nobody's fault
		return outcome{outcome: "canceled", err: err, breakerErr: errExcluded}
	case errors.Is(err, context.DeadlineExceeded):
		o := outcome{outcome: "timeout", err: retryableError{err}, breakerErr: err}
		if cut {
			// The request's deadline, not the endpoint, ended the call.
			o.breakerErr = errExcluded
		}
		return o
	case errors.As(err, &apiErr):
		status := apiErr.StatusCode
		o := outcome{outcome: "error", err: err, breakerErr: err}
		switch {
		case status == http.StatusTooManyRequests:
			o.outcome, o.err = "rate_limited", retryableError{err}
			if apiErr.Response != nil {
				o.retryAfter = backoff.RetryAfter(apiErr.Response.Header, time.Now())
			}
		case status == http.StatusRequestTimeout || status == http.StatusConflict || status >= 500:
			o.err = retryableError{err}
		case status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge || status == http.StatusUnprocessableEntity:
			// This request's fault (too long, refused content): another
			// request may well succeed.
			o.outcome, o.breakerErr = "bad_request", errExcluded
		}
		return o
	case errors.Is(err, errEmpty), errors.As(err, &syntaxErr), errors.As(err, &typeErr),
		strings.Contains(err.Error(), "parsing response json"): // the SDK's wording for a body it cannot decode
		return outcome{outcome: "malformed", err: retryableError{err}, breakerErr: err}
	}
	// Connection refused or reset, EOF, TLS ...: worth another try.
	return outcome{outcome: "error", err: retryableError{err}, breakerErr: err}
}

// metrics are the client's metrics (see the package doc).
type metrics struct {
	calls         *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	retries       metric.Children[prometheus.Counter] // by endpoint
	shortCircuits metric.Children[prometheus.Counter] // by endpoint
	limited       *prometheus.CounterVec
	quotaErrors   prometheus.Counter
	answers       [2]metric.Children[prometheus.Counter] // by lane, by source
}

// outcomes are the values of a call's outcome label (see classify).
var outcomes = []string{"ok", "error", "timeout", "rate_limited", "malformed", "bad_request", "canceled"}

// endpoints are the values of the endpoint label.
var endpoints = []string{"primary", "secondary"}

func newMetrics(f promauto.Factory) *metrics {
	m := &metrics{
		calls: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_llm_calls_total", Help: "LLM calls by endpoint and outcome.",
		}, []string{"endpoint", "outcome"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_llm_call_duration_seconds", Help: "Latency of one LLM call.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"endpoint", "outcome"}),
		retries: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_llm_retries_total", Help: "LLM calls that were retries.",
		}, []string{"endpoint"}), endpoints...),
		shortCircuits: metric.Resolve(f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_llm_short_circuits_total", Help: "Requests that skipped an endpoint because its circuit breaker was open.",
		}, []string{"endpoint"}), endpoints...),
		limited: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_llm_limited_total", Help: "Calls that found no free slot or quota, by limit and what the request did.",
		}, []string{"limit", "outcome"}),
		quotaErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "sluice_llm_quota_errors_total", Help: "Quota checks that failed and let the call through.",
		}),
	}
	answers := f.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_llm_answers_total", Help: "Answers by lane and source.",
	}, []string{"lane", "source"})
	for lane, name := range laneNames {
		m.answers[lane] = metric.Resolve(answers.MustCurryWith(prometheus.Labels{"lane": name}), sources...)
		for _, s := range sources {
			m.answers[lane].With(s) // exported at zero: each source's share from the start
		}
	}
	return m
}

// sources are the values of the answers' source label.
var sources = []string{envelope.SourceLLM, envelope.SourceFallbackModel, envelope.SourceFAQ, envelope.SourceCanned}

// endpointMetrics are the call metrics of one endpoint.
type endpointMetrics struct {
	calls    metric.Children[prometheus.Counter]  // by outcome
	duration metric.Children[prometheus.Observer] // by outcome
}

func (m *metrics) endpoint(name string) endpointMetrics {
	l := prometheus.Labels{"endpoint": name}
	return endpointMetrics{
		calls:    metric.Resolve(m.calls.MustCurryWith(l), outcomes...),
		duration: metric.Resolve(m.duration.MustCurryWith(l), outcomes...),
	}
}

var (
	breakerStateDesc = prometheus.NewDesc("sluice_llm_breaker_state",
		"State of the endpoint's circuit breaker: 0 closed, 1 half-open, 2 open.", []string{"endpoint"}, nil)
	inFlightDesc = prometheus.NewDesc("sluice_llm_in_flight",
		"LLM calls under way in this process.", []string{"endpoint"}, nil)
)

// endpointCollector reports each endpoint's breaker state and calls in
// flight when scraped, so an open breaker that would turn half-open shows so.
type endpointCollector struct{ eps []*endpoint }

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- breakerStateDesc
	ch <- inFlightDesc
}

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.eps {
		// gobreaker's states are 0 closed, 1 half-open, 2 open.
		ch <- prometheus.MustNewConstMetric(breakerStateDesc, prometheus.GaugeValue, float64(e.breaker.State()), e.name)
		ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(e.gate.inUse()), e.name)
	}
}
