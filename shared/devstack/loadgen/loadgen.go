// Package loadgen generates load against Sluice and measures it: how many
// requests were answered, how fast, and what failed. `sluice loadgen` is its
// command; docs/benchmarks.md holds the figures measured with it.
//
// Two targets:
//
//   - http: closed-loop users against POST /v1/chat. Each user asks, waits
//     for the answer, asks again, and starts a new dialog every Turns
//     questions. Its bearer token is minted with Secret.
//     With Rate set, open loop instead: Rate requests a second, each sent
//     when its time comes whatever the earlier ones do, by the user of
//     Users that has been idle longest (see runOpen).
//   - kafka: Count v1 requests produced straight to the requests topic, as a
//     bot would, then the replies topic read until every one is answered:
//     the consumers alone are measured.
//
// An http run does not hammer a target that fails, and stops by itself when
// there is nothing to measure:
//
//   - a user whose request failed (a transport error such as connection
//     refused, or an HTTP error status) pauses before its next request,
//     Backoff doubling per consecutive failure up to BackoffMax, with jitter;
//   - a 429 or 503 counts as refused, not as an error; with a Retry-After the
//     user waits that long, at most RetryAfterMax, before asking again;
//   - when requests kept failing for GiveUp with none succeeding in between,
//     the run stops with ErrGaveUp;
//   - a run that ends without a single answer returns ErrNothingAnswered.
//
// A kafka run stops when no reply came for ReplyTimeout, and returns
// ErrNothingAnswered when none came at all.
//
// Either way Run returns the figures measured so far, with the first
// distinct failures (HTTP status and problem title and detail, or the
// transport error) and how often each occurred.
package loadgen

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sync"
	"time"

	"sluice/shared/bus"
	"sluice/shared/envelope"
	"sluice/shared/settings"
)

// Targets of a run.
const (
	TargetHTTP  = "http"
	TargetKafka = "kafka"
)

// DefaultKafkaCount is the number of requests a kafka run produces when
// Config.Count is 0.
const DefaultKafkaCount = 5000

// maxFailures is how many distinct failures a Result keeps.
const maxFailures = 5

// ErrNothingAnswered is returned by Run when the run ended without a single
// answer: no 200 or 202 from the API, no reply on the replies topic.
var ErrNothingAnswered = errors.New("nothing was answered")

// ErrGaveUp is returned by Run when requests kept failing for Config.GiveUp
// with none succeeding in between: the target is down or refuses everything.
var ErrGaveUp = errors.New("gave up: every request failed")

// Config configures a run. DefaultConfig gives the defaults.
type Config struct {
	// Target is TargetHTTP or TargetKafka.
	Target string

	// URL is the API's base URL (target http).
	URL string
	// Users ask concurrently, each one request at a time (target http).
	Users int
	// Duration bounds the run (target http).
	Duration time.Duration
	// Count stops the run after this many requests; 0 runs for Duration
	// (target http). Target kafka produces Count requests, or
	// DefaultKafkaCount when 0.
	Count int
	// Mode of the requests: "wait" or "async" (target http).
	Mode string
	// WaitMS is the wait_ms of wait-mode requests (target http).
	WaitMS int
	// Secret is the HS256 secret the users' tokens are minted with (target
	// http).
	Secret string
	// Tenant of the users (and of the kafka target's requests).
	Tenant string
	// Text is the question asked.
	Text string
	// Turns is how many questions a user asks in one dialog before it
	// starts a new one (target http).
	Turns int
	// Timeout bounds one HTTP request on top of its wait_ms. Default 10 s.
	Timeout time.Duration

	// Backoff is a user's pause after a failed request; it doubles with
	// each consecutive failure up to BackoffMax, plus up to half of it at
	// random. Defaults 50 ms and 1 s.
	Backoff, BackoffMax time.Duration
	// RetryAfterMax bounds the Retry-After a refused user (429, 503)
	// honours. 0 makes refused users ask again at once, as the admission
	// measurements in docs/operations.md did. Default 5 s.
	RetryAfterMax time.Duration
	// GiveUp stops the run with ErrGaveUp when requests kept failing this
	// long with none succeeding in between; 0 never gives up. Default 5 s.
	GiveUp time.Duration

	// Rate, when positive, makes an http run open loop: this many
	// requests a second, evenly spaced, for Warmup and then Duration; only
	// the requests sent within Duration are counted. Users are then the
	// distinct users the requests are spread over.
	Rate float64
	// Warmup is the uncounted start of an open-loop run.
	Warmup time.Duration
	// OnWindow, when set, is called as an open-loop run's counted window
	// begins (begin true: before its first request is sent) and ends
	// (begin false: once every request of it has finished), from the
	// run's own goroutine: `sluice bench` reads the processes' CPU time
	// there. It holds up the requests while it runs.
	OnWindow func(begin bool)
	// OnAnswer, when set, is called for each answered (200) or queued
	// (202) request of an http run, warm-up included, with the moment its
	// latency counts from (see Result.P50MS), the latency and the status,
	// from the request's goroutine: `sluice bench --lanes` draws latency
	// over time from it.
	OnAnswer func(from time.Time, took time.Duration, status int)

	// Kafka names the cluster and topics (target kafka). The client is built
	// by bus.NewClient, so it has the settings every Sluice client has.
	Kafka bus.Config
	// Dialogs the kafka target's requests are spread over.
	Dialogs int
	// ReplyTimeout ends a kafka run when no reply came for this long; it
	// also bounds the delivery of each request record. Default 30 s.
	ReplyTimeout time.Duration

	// Hold, target ws: open this many idle WebSockets, hold them for
	// Duration, and report what they cost the producer whose Prometheus
	// metrics MetricsURL serves (its admin listener's /metrics).
	Hold       int
	MetricsURL string
}

// DefaultConfig returns the defaults: 200 users for 20 s against
// 127.0.0.1:8080 in wait mode; target kafka on 127.0.0.1:9092. Secret is
// empty; the command fills in the development secret of `sluice dev`.
func DefaultConfig() Config {
	return Config{
		Target:        TargetHTTP,
		URL:           "http://127.0.0.1:8080",
		Users:         200,
		Duration:      20 * time.Second,
		Mode:          "wait",
		WaitMS:        5000,
		Tenant:        "loadtest",
		Text:          "优惠券还能用吗？",
		Turns:         4,
		Timeout:       10 * time.Second,
		Backoff:       50 * time.Millisecond,
		BackoffMax:    time.Second,
		RetryAfterMax: 5 * time.Second,
		GiveUp:        5 * time.Second,
		Kafka:         bus.DefaultConfig(),
		Dialogs:       1000,
		ReplyTimeout:  30 * time.Second,
	}
}

// Validate reports every setting of c that is missing or out of range for
// its target, each named by its flag (see RegisterFlags).
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(envelope.ValidID(c.Tenant), "tenant", "%q must be 1-%d of [A-Za-z0-9._@|+-]", c.Tenant, envelope.MaxIDLen)
	p.Check(c.Text != "", "text", "must not be empty")
	p.Check(c.Count >= 0, "count", "must not be negative, got %d", c.Count)
	p.Check(c.RetryAfterMax >= 0, "retry-after-max", "must not be negative, got %v", c.RetryAfterMax)
	p.Check(c.GiveUp >= 0, "give-up-after", "must not be negative, got %v", c.GiveUp)
	if c.Backoff <= 0 || c.BackoffMax < c.Backoff {
		p.Add(fmt.Errorf("backoff must be positive and at most its cap, got %v capped at %v", c.Backoff, c.BackoffMax))
	}
	switch c.Target {
	case TargetHTTP, TargetWS:
		u, err := url.Parse(c.URL)
		p.Check(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "url",
			"%q must be http:// or https:// and name a host", c.URL)
		p.Check(c.Users >= 1, "users", "must be at least 1, got %d", c.Users)
		p.Check(c.Duration > 0, "duration", "must be positive, got %v", c.Duration)
		p.Check(c.Turns >= 1, "turns", "must be at least 1, got %d", c.Turns)
		p.Check(c.Secret != "", "jwt-secret", "is required to mint the users' tokens")
		if c.Timeout <= 0 {
			p.Add(fmt.Errorf("request timeout must be positive, got %v", c.Timeout))
		}
		if c.Target == TargetWS {
			p.Check(c.Hold >= 0 && c.Hold <= maxHold, "hold", "must be from 0 to %d connections, got %d", maxHold, c.Hold)
			p.Check(c.Hold == 0 || c.MetricsURL != "", "metrics-url", "is required with --hold: the producer's admin /metrics, to read its memory")
			break
		}
		p.Check(c.Mode == "wait" || c.Mode == "async", "mode", "%q must be wait or async", c.Mode)
		p.Check(c.WaitMS >= 0, "wait-ms", "must not be negative, got %d", c.WaitMS)
		p.Check(c.Rate >= 0 && c.Rate <= maxRate, "rate", "must be from 0 (closed loop) to %d requests/s, got %g", maxRate, c.Rate)
		p.Check(c.Warmup >= 0, "warmup", "must not be negative, got %v", c.Warmup)
	case TargetKafka:
		p.Add(c.Kafka.Validate())
		p.Check(c.Dialogs >= 1, "dialogs", "must be at least 1, got %d", c.Dialogs)
		p.Check(c.ReplyTimeout > 0, "reply-timeout", "must be positive, got %v", c.ReplyTimeout)
	default:
		p.Check(false, "target", "unknown target %q (want %s, %s or %s)", c.Target, TargetHTTP, TargetWS, TargetKafka)
	}
	return p.Err()
}

// RegisterFlags registers c's settings on fs, with c's values as defaults,
// and the Kafka settings of c.Kafka.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", c.Target, "http: closed-loop users against the API; ws: closed-loop users streaming answers over GET /v1/ws (time to first piece and to the whole answer), or with --hold idle connections; kafka: requests produced straight to Kafka, replies counted")
	fs.IntVar(&c.Hold, "hold", c.Hold, "target ws: open this many idle WebSockets, hold them --duration, and report the producer's memory per connection (needs --metrics-url)")
	fs.StringVar(&c.MetricsURL, "metrics-url", c.MetricsURL, "target ws --hold: the producer's admin /metrics URL, e.g. http://127.0.0.1:9090/metrics")
	fs.StringVar(&c.URL, "url", c.URL, "API base URL (target http)")
	fs.IntVar(&c.Users, "users", c.Users, "concurrent users, each asking, waiting for the answer, asking again (target http); with --rate, the distinct users the requests are spread over")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long to run (target http)")
	fs.IntVar(&c.Count, "count", c.Count, fmt.Sprintf("stop after this many requests (0: duration only; target kafka: requests to produce, default %d)", DefaultKafkaCount))
	fs.StringVar(&c.Mode, "mode", c.Mode, "request mode: wait or async (target http)")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "open loop: send this many requests a second, each when its time comes, whatever the answers do (target http; 0: closed-loop users)")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "with --rate: run this long before --duration, uncounted")
	fs.IntVar(&c.WaitMS, "wait-ms", c.WaitMS, "wait_ms of wait-mode requests")
	fs.StringVar(&c.Secret, "jwt-secret", c.Secret, "HS256 secret to mint the users' tokens with")
	fs.StringVar(&c.Tenant, "tenant", c.Tenant, "tenant of the users")
	fs.StringVar(&c.Text, "text", c.Text, "question to ask")
	fs.IntVar(&c.Turns, "turns", c.Turns, "questions a user asks in one dialog before starting a new one (target http)")
	fs.DurationVar(&c.RetryAfterMax, "retry-after-max", c.RetryAfterMax, "longest Retry-After of a 429 or 503 a user waits before asking again; 0 asks again at once (target http)")
	fs.DurationVar(&c.GiveUp, "give-up-after", c.GiveUp, "stop with an error when requests kept failing this long with none answered in between; 0 never (target http)")
	fs.IntVar(&c.Dialogs, "dialogs", c.Dialogs, "distinct dialogs (target kafka)")
	fs.DurationVar(&c.ReplyTimeout, "reply-timeout", c.ReplyTimeout, "stop when no reply came for this long (target kafka)")
	c.Kafka.RegisterFlags(fs)
}

// Run runs the load c describes until its duration or count is reached, ctx
// ends, or it gives up, and returns what it measured. The error is
// ErrGaveUp or ErrNothingAnswered (wrapped, naming the most frequent
// failure), an invalid configuration, or a Kafka set-up error; the Result
// holds the figures measured so far in every case. log receives the Kafka
// client's warnings.
func Run(ctx context.Context, c Config, log *slog.Logger) (Result, error) {
	if err := c.Validate(); err != nil {
		return Result{Target: c.Target}, err
	}
	switch {
	case c.Target == TargetKafka:
		return runKafka(ctx, c, log)
	case c.Target == TargetWS:
		return runWS(ctx, c)
	case c.Rate > 0:
		return runOpen(ctx, c)
	}
	return runHTTP(ctx, c)
}

// Result is what a run measured. Its JSON is the line `sluice loadgen
// --json` prints.
type Result struct {
	Target string `json:"target"`
	Mode   string `json:"mode,omitempty"`
	Users  int    `json:"users,omitempty"`
	// Rate is the offered rate of an open-loop run, requests/s.
	Rate    float64 `json:"rate,omitempty"`
	Seconds float64 `json:"seconds"`
	// Sent counts the requests that finished: answered, queued, refused
	// or failed (target kafka: every request, produced or not).
	Sent int64 `json:"sent"`
	// Answered counts 200s (target kafka: replies).
	Answered int64 `json:"answered"`
	// Queued counts 202s: accepted, answer to poll.
	Queued int64 `json:"queued"`
	// Refused counts 429s and 503s: the API shed the load.
	Refused int64 `json:"refused"`
	// Errors counts every other failure: transport errors, other HTTP
	// statuses (target kafka: records that could not be produced).
	Errors int64 `json:"errors"`
	// Missed counts the requests an open-loop run did not send because
	// maxOpenInFlight were under way: the target had stopped answering.
	Missed int64 `json:"missed,omitempty"`
	// MaxSendLagMS is how late the latest open-loop request was sent
	// after its time: the load generator's own delay.
	MaxSendLagMS float64 `json:"max_send_lag_ms,omitempty"`
	PerSecond    float64 `json:"answered_per_second"`
	AcceptedPS   float64 `json:"accepted_per_second,omitempty"`
	// Latency of answered and queued requests (target kafka: from produce
	// to reply; open loop: from the time the request was due, so that a
	// late load generator does not hide a slow target).
	P50MS float64 `json:"p50_ms"`
	P90MS float64 `json:"p90_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
	// FirstP50MS...: target ws, the time from the ask to the answer's
	// first piece (P50MS... are to its done frame).
	FirstP50MS float64 `json:"first_p50_ms,omitempty"`
	FirstP90MS float64 `json:"first_p90_ms,omitempty"`
	FirstP99MS float64 `json:"first_p99_ms,omitempty"`
	FirstMaxMS float64 `json:"first_max_ms,omitempty"`
	// Conns and what follows: target ws with --hold, the idle WebSockets
	// held and the producer's memory before and after they opened.
	Conns             int     `json:"conns,omitempty"`
	RSSBeforeMB       float64 `json:"rss_before_mb,omitempty"`
	RSSAfterMB        float64 `json:"rss_after_mb,omitempty"`
	HeapBeforeMB      float64 `json:"heap_before_mb,omitempty"`
	HeapAfterMB       float64 `json:"heap_after_mb,omitempty"`
	RSSPerConnKB      float64 `json:"rss_per_conn_kb,omitempty"`
	HeapPerConnKB     float64 `json:"heap_per_conn_kb,omitempty"`
	GoroutinesPerConn float64 `json:"goroutines_per_conn,omitempty"`
	// ErrorKinds counts refusals and errors by kind: "transport",
	// "http_<status>", "produce".
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
	// Failures are the first distinct failures, in the order met, with
	// how often each occurred; at most five.
	Failures []Failure `json:"failures,omitempty"`
}

// Failure is one distinct failure of a run.
type Failure struct {
	// Kind is the key it is counted under in Result.ErrorKinds.
	Kind string `json:"kind"`
	// Text is the HTTP status with the problem's title and detail, or the
	// transport or produce error.
	Text  string `json:"text"`
	Count int64  `json:"count"`
}

func (f Failure) String() string { return fmt.Sprintf("%s (%d×)", f.Text, f.Count) }

// failures counts failures by kind and keeps the first distinct ones.
type failures struct {
	mu     sync.Mutex
	kinds  map[string]int64
	first  []Failure
	streak time.Time // first failure since the last success; zero after one
}

func newFailures() *failures { return &failures{kinds: map[string]int64{}} }

// add counts a failure and returns for how long requests have been failing
// with none succeeding in between.
func (f *failures) add(kind, text string, now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kinds[kind]++
	if i := slices.IndexFunc(f.first, func(x Failure) bool { return x.Kind == kind && x.Text == text }); i >= 0 {
		f.first[i].Count++
	} else if len(f.first) < maxFailures {
		f.first = append(f.first, Failure{Kind: kind, Text: text, Count: 1})
	}
	if f.streak.IsZero() {
		f.streak = now
	}
	return now.Sub(f.streak)
}

// succeeded ends the current streak of failures.
func (f *failures) succeeded() {
	f.mu.Lock()
	f.streak = time.Time{}
	f.mu.Unlock()
}

func (f *failures) fill(r *Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.kinds) > 0 {
		r.ErrorKinds = maps.Clone(f.kinds)
	}
	r.Failures = slices.Clone(f.first)
}

// why names the most frequent of r's distinct failures for an error
// message, "" when nothing failed.
func (r Result) why() string {
	if len(r.Failures) == 0 {
		return ""
	}
	top := r.Failures[0]
	for _, f := range r.Failures[1:] {
		if f.Count > top.Count {
			top = f
		}
	}
	return "; most frequent: " + top.String()
}

// latencies collects the latencies of successful requests.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) fill(r *Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.d)
	pct := func(p float64) float64 {
		if len(l.d) == 0 {
			return 0
		}
		i := min(int(p*float64(len(l.d))), len(l.d)-1)
		return ms(l.d[i])
	}
	r.P50MS, r.P90MS, r.P99MS = pct(0.50), pct(0.90), pct(0.99)
	if len(l.d) > 0 {
		r.MaxMS = ms(l.d[len(l.d)-1])
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// perSecond is n over secs, 0 for an empty run.
func perSecond(n int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}
