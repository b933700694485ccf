package llm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/consumer/llm"
	"sluice/consumer/llm/faq"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/envelope"
)

// fastConfig is the default config with quick retries, for tests.
func fastConfig(baseURL string) llm.Config {
	cfg := llm.DefaultConfig()
	cfg.BaseURL = baseURL
	cfg.RetryBackoff = 10 * time.Millisecond
	cfg.Reserve = 50 * time.Millisecond
	return cfg
}

type client struct {
	*llm.Client
	reg *prometheus.Registry
	log *syncBuffer
}

func mustNew(t *testing.T, cfg llm.Config, opts ...llm.Option) *client {
	t.Helper()
	buf := &syncBuffer{}
	reg := prometheus.NewRegistry()
	c, err := llm.New(cfg, slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("client log:\n%s", buf.String())
		}
	})
	return &client{Client: c, reg: reg, log: buf}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mustMock serves a mock LLM and returns it with its base URL.
func mustMock(t *testing.T, cfg mockllm.Config) (*mockllm.Server, string) {
	t.Helper()
	m, err := mockllm.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(m.Handler())
	t.Cleanup(hs.Close)
	return m, hs.URL + "/v1"
}

// scripted is an endpoint whose every call is answered by handle, given
// the call's number (from 1).
type scripted struct {
	mu       sync.Mutex
	calls    int
	inFlight int
	most     int
	bodies   []chatBody
	handle   func(n int, w http.ResponseWriter, r *http.Request)
}

type chatBody struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	MaxTokens   *int64   `json:"max_tokens"`
	Temperature *float64 `json:"temperature"`
	auth, typ   string
}

func serveScript(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) (*scripted, string) {
	t.Helper()
	s := &scripted{handle: handle}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b chatBody
		_ = json.NewDecoder(r.Body).Decode(&b)
		b.auth, b.typ = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		s.mu.Lock()
		s.calls++
		n := s.calls
		s.bodies = append(s.bodies, b)
		s.inFlight++
		s.most = max(s.most, s.inFlight)
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight--
			s.mu.Unlock()
		}()
		s.handle(n, w, r)
	}))
	t.Cleanup(hs.Close)
	return s, hs.URL + "/v1"
}

func (s *scripted) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *scripted) Most() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.most
}

func (s *scripted) Body(i int) chatBody {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bodies[i]
}

func ok(text string) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { writeCompletion(w, text) }
}

func writeCompletion(w http.ResponseWriter, text string) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"id": "c", "object": "chat.completion", "created": 1, "model": "m",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": text}}},
	})
}

func status(code int, header ...string) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = fmt.Fprintf(w, `{"error":{"message":"status %d","type":"x"}}`, code)
	}
}

func request(text string, deadline time.Duration) *envelope.Request {
	now := time.Now()
	return &envelope.Request{V: 1, RequestID: "r1", Tenant: "t", User: "u", DialogID: strings.Repeat("a", 32),
		Text: text, CreatedAt: now, Deadline: now.Add(deadline)}
}

// answer asks c with text due in deadline from now, and returns the answer
// and how long it took: a lower bound on that is a behaviour (a pause was
// kept), an upper bound would only measure the machine. A context of 30 s
// stops a call that ignores the deadline.
func answer(t *testing.T, c *client, text string, deadline time.Duration) (llm.Answer, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	a, err := c.Answer(ctx, request(text, deadline), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return a, time.Since(start)
}

// helps are the HELP texts of the metrics these tests read:
// testutil.GatherAndCompare compares them too.
var helps = map[string]string{
	"sluice_llm_calls_total":          "LLM calls by endpoint and outcome.",
	"sluice_llm_retries_total":        "LLM calls that were retries.",
	"sluice_llm_short_circuits_total": "Requests that skipped an endpoint because its circuit breaker was open.",
	"sluice_llm_limited_total":        "Calls that found no free slot or quota, by limit and what the request did.",
	"sluice_llm_quota_errors_total":   "Quota checks that failed and let the call through.",
	"sluice_llm_answers_total":        "Answers by lane and source.",
	"sluice_llm_breaker_state":        "State of the endpoint's circuit breaker: 0 closed, 1 half-open, 2 open.",
	"sluice_llm_in_flight":            "LLM calls under way in this process.",
	"sluice_pii_masked_total":         "Personal data values masked, by kind.",
}

// metricIs reports, as testutil.GatherAndCompare does, how c's metric name
// differs from series, every series it should have in the text format
// (one a line, no HELP or TYPE); nil when it does not.
func metricIs(c *client, name, series string) error {
	typ := "gauge"
	if strings.HasSuffix(name, "_total") {
		typ = "counter"
	}
	want := fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n%s", name, helps[name], name, typ, series)
	if err := testutil.GatherAndCompare(c.reg, strings.NewReader(want), name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// wantMetric fails the test when c's metric name is not series (see
// metricIs).
func wantMetric(t *testing.T, c *client, name, series string) {
	t.Helper()
	if err := metricIs(c, name, series); err != nil {
		t.Error(err)
	}
}

// callsOf is the series of sluice_llm_calls_total of n calls to endpoint
// with outcome.
func callsOf(endpoint, outcome string, n int) string {
	return fmt.Sprintf("sluice_llm_calls_total{endpoint=%q,outcome=%q} %d\n", endpoint, outcome, n)
}

// answersOf is sluice_llm_answers_total after one interactive answer from
// source.
func answersOf(source string) string {
	var b strings.Builder
	for _, s := range []string{envelope.SourceCanned, envelope.SourceFallbackModel, envelope.SourceFAQ, envelope.SourceLLM} {
		n := 0
		if s == source {
			n = 1
		}
		fmt.Fprintf(&b, "sluice_llm_answers_total{lane=\"bulk\",source=%q} 0\n", s)
		fmt.Fprintf(&b, "sluice_llm_answers_total{lane=\"interactive\",source=%q} %d\n", s, n)
	}
	return b.String()
}

func sampleFAQ(t *testing.T) llm.Option {
	t.Helper()
	ix, err := faq.NewIndex(faq.Sample(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return llm.WithFAQ(faq.NewLibrary(ix, nil))
}

func TestAnswerSendsHistory(t *testing.T) {
	_, url := mustMock(t, mockllm.Config{})
	c := mustNew(t, fastConfig(url))
	hist := []envelope.Turn{{Role: "user", Content: "优惠券还能用吗"}, {Role: "assistant", Content: "可以"}}
	a, err := c.Answer(context.Background(), request("什么时候发货", 10*time.Second), hist)
	if err != nil {
		t.Fatal(err)
	}
	if a.Source != envelope.SourceLLM || a.Handoff || !strings.Contains(a.Text, "优惠券还能用吗") {
		t.Fatalf("answer %+v does not show the history reached the model", a)
	}
}

// TestFailureModes drives each way the primary endpoint fails and checks
// the tier that answers and the calls made, with their outcomes. The
// endpoints' own timeout is an hour: a call that ends in a timeout was cut
// by the request's deadline.
func TestFailureModes(t *testing.T) {
	const faqQuestion = "优惠券还能用吗？"
	const otherQuestion = "你们老板是谁"
	hang := func(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	for _, tc := range []struct {
		name      string
		primary   func(int, http.ResponseWriter, *http.Request)
		closed    bool // the primary's address refuses connections
		secondary func(int, http.ResponseWriter, *http.Request)
		question  string
		deadline  time.Duration
		source    string
		calls     int    // primary calls
		outcomes  string // sluice_llm_calls_total
	}{
		{name: "Healthy", primary: ok("好的"), question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceLLM, calls: 1,
			outcomes: callsOf("primary", "ok", 1)},
		{name: "500ToFAQ", primary: status(500), question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 3,
			outcomes: callsOf("primary", "error", 3)},
		{name: "500ToCanned", primary: status(500), question: otherQuestion, deadline: 5 * time.Second, source: envelope.SourceCanned, calls: 3,
			outcomes: callsOf("primary", "error", 3)},
		{name: "503ToSecondary", primary: status(503), secondary: ok("备用模型"), question: otherQuestion, deadline: 5 * time.Second, source: envelope.SourceFallbackModel, calls: 3,
			outcomes: callsOf("primary", "error", 3) + callsOf("secondary", "ok", 1)},
		{name: "SecondaryFailsToo", primary: status(502), secondary: status(500), question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 3,
			outcomes: callsOf("primary", "error", 3) + callsOf("secondary", "error", 3)},
		{name: "Malformed", primary: func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"choices":[{"message":{"content":"半`))
		}, question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 3,
			outcomes: callsOf("primary", "malformed", 3)},
		{name: "EmptyCompletion", primary: ok(""), question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 3,
			outcomes: callsOf("primary", "malformed", 3)},
		{name: "ConnectionRefused", closed: true, question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 0,
			outcomes: callsOf("primary", "error", 3)},
		{name: "400NotRetried", primary: status(400), question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 1,
			outcomes: callsOf("primary", "bad_request", 1)},
		{name: "401NotRetried", primary: status(401), question: otherQuestion, deadline: 5 * time.Second, source: envelope.SourceCanned, calls: 1,
			outcomes: callsOf("primary", "error", 1)},
		{name: "429RetryAfterPastDeadline", primary: status(429, "Retry-After", "30"), question: faqQuestion, deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 1,
			outcomes: callsOf("primary", "rate_limited", 1)},
		{name: "HangsUntilDeadline", primary: hang, question: faqQuestion, deadline: 600 * time.Millisecond, source: envelope.SourceFAQ, calls: 1,
			outcomes: callsOf("primary", "timeout", 1)},
		{name: "SlowFirstByte", primary: func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}, question: otherQuestion, deadline: 600 * time.Millisecond, source: envelope.SourceCanned, calls: 1,
			outcomes: callsOf("primary", "timeout", 1)},
		{name: "FAQAfterMasking", primary: status(500), question: "我的手机号是 13812345678，优惠券还能用吗？", deadline: 5 * time.Second, source: envelope.SourceFAQ, calls: 3,
			outcomes: callsOf("primary", "error", 3)},
		{name: "DeadlinePassed", primary: ok("太晚了"), question: faqQuestion, deadline: -time.Second, source: envelope.SourceFAQ, calls: 0,
			outcomes: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *scripted
			var url string
			if tc.closed {
				hs := httptest.NewServer(http.NotFoundHandler())
				url = hs.URL + "/v1"
				hs.Close()
			} else {
				p, url = serveScript(t, tc.primary)
			}
			cfg := fastConfig(url)
			cfg.BreakerFailures = 100 // this test is about one request's tiers
			cfg.Timeout = time.Hour   // only the request's deadline ends a call
			var s *scripted
			if tc.secondary != nil {
				var surl string
				s, surl = serveScript(t, tc.secondary)
				cfg.FallbackBaseURL, cfg.FallbackModel = surl, "backup"
			}
			c := mustNew(t, cfg, sampleFAQ(t))
			a, _ := answer(t, c, tc.question, tc.deadline)
			if a.Source != tc.source {
				t.Errorf("source %q (%q), want %q", a.Source, a.Text, tc.source)
			}
			if want := tc.source == envelope.SourceCanned; a.Handoff != want || a.Text == "" {
				t.Errorf("handoff %v with text %q, want handoff %v", a.Handoff, a.Text, want)
			}
			if p != nil && p.Calls() != tc.calls {
				t.Errorf("primary got %d calls, want %d", p.Calls(), tc.calls)
			}
			if s != nil && tc.source == envelope.SourceFallbackModel && s.Body(0).Model != "backup" {
				t.Errorf("secondary called with model %q, want backup", s.Body(0).Model)
			}
			wantMetric(t, c, "sluice_llm_answers_total", answersOf(tc.source))
			wantMetric(t, c, "sluice_llm_calls_total", tc.outcomes)
		})
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		name, header, value string
		wait                time.Duration
	}{
		{"RetryAfterMs", "Retry-After-Ms", "300", 300 * time.Millisecond},
		{"RetryAfterSeconds", "Retry-After", "1", time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, url := serveScript(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					status(429, tt.header, tt.value)(n, w, r)
					return
				}
				writeCompletion(w, "第二次成功")
			})
			c := mustNew(t, fastConfig(url))
			a, took := answer(t, c, "hi", 5*time.Second)
			if a.Source != envelope.SourceLLM || s.Calls() != 2 {
				t.Fatalf("answer %+v after %d calls, want llm after 2", a, s.Calls())
			}
			if took < tt.wait {
				t.Errorf("retried after %v, before the %v the endpoint asked for", took, tt.wait)
			}
			wantMetric(t, c, "sluice_llm_retries_total", `sluice_llm_retries_total{endpoint="primary"} 1`+"\n")
			wantMetric(t, c, "sluice_llm_calls_total", callsOf("primary", "rate_limited", 1)+callsOf("primary", "ok", 1))
		})
	}
	t.Run("PastDeadlineNotRetried", func(t *testing.T) {
		// A pause past the deadline: no retry, no pause either.
		s, url := serveScript(t, status(429, "Retry-After", "60"))
		c := mustNew(t, fastConfig(url))
		a, _ := answer(t, c, "hi", 5*time.Second)
		if a.Source != envelope.SourceCanned || s.Calls() != 1 {
			t.Fatalf("answer %+v after %d calls, want canned after 1 call", a, s.Calls())
		}
		wantMetric(t, c, "sluice_llm_retries_total", "")
		wantMetric(t, c, "sluice_llm_calls_total", callsOf("primary", "rate_limited", 1))
	})
}

// TestRetriesNeverPassDeadline makes many attempts possible and checks the
// deadline (less the reserve) stops them: the attempts run out before the
// deadline does, no call reaches the endpoint after it and the answer comes
// before it. The reserve of a second leaves room for a slow machine.
func TestRetriesNeverPassDeadline(t *testing.T) {
	var mu sync.Mutex
	var arrived []time.Time
	s, url := serveScript(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived = append(arrived, time.Now())
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a slow failure
		status(500)(0, w, r)
	})
	cfg := fastConfig(url)
	cfg.Attempts, cfg.RetryBackoff, cfg.Reserve, cfg.BreakerFailures = 1000, 30*time.Millisecond, time.Second, 1000
	c := mustNew(t, cfg)
	req := request("hi", 2*time.Second)
	a, err := c.Answer(context.Background(), req, nil)
	answered := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if a.Source != envelope.SourceCanned {
		t.Fatalf("answer %+v, want canned", a)
	}
	if !answered.Before(req.Deadline) {
		t.Errorf("answered at %v, past the deadline %v", answered, req.Deadline)
	}
	if n := s.Calls(); n < 2 || n >= cfg.Attempts {
		t.Errorf("%d calls, want retries bounded by the deadline", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, at := range arrived {
		if !at.Before(req.Deadline) {
			t.Errorf("call %d arrived at %v, past the deadline %v", i+1, at, req.Deadline)
		}
	}
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	var mu sync.Mutex
	failing := true
	s, url := serveScript(t, func(n int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		f := failing
		mu.Unlock()
		if f {
			status(500)(n, w, r)
			return
		}
		writeCompletion(w, "恢复了")
	})
	cfg := fastConfig(url)
	// Open long enough for the 20 answers below on a slow machine.
	cfg.Attempts, cfg.BreakerFailures, cfg.BreakerOpen = 1, 3, time.Second
	cfg.BreakerFailureRatio = 0 // consecutive failures alone: see TestBreakerFailureRatio
	c := mustNew(t, cfg, sampleFAQ(t))
	state := func(v int) error {
		return metricIs(c, "sluice_llm_breaker_state", fmt.Sprintf("sluice_llm_breaker_state{endpoint=\"primary\"} %d\n", v))
	}

	for i := range 3 {
		if a, _ := answer(t, c, "优惠券还能用吗", 5*time.Second); a.Source != envelope.SourceFAQ {
			t.Fatalf("request %d: %+v, want faq", i, a)
		}
	}
	if err := state(2); c.BreakerState("primary") != "open" || err != nil {
		t.Fatalf("breaker %s after 3 failures, want open (2); %v", c.BreakerState("primary"), err)
	}
	// Open: no call, straight to the fallback.
	for range 20 {
		if a, _ := answer(t, c, "优惠券还能用吗", 5*time.Second); a.Source != envelope.SourceFAQ {
			t.Fatalf("with the breaker open: %+v, want faq", a)
		}
	}
	if s.Calls() != 3 {
		t.Fatalf("%d calls, want none after the breaker opened", s.Calls())
	}
	wantMetric(t, c, "sluice_llm_short_circuits_total", `sluice_llm_short_circuits_total{endpoint="primary"} 20`+"\n")

	// A failing probe opens it again.
	time.Sleep(cfg.BreakerOpen) // the breaker's own clock: nothing to await
	if err := state(1); c.BreakerState("primary") != "half-open" || err != nil {
		t.Fatalf("breaker %s after the open time, want half-open (1); %v", c.BreakerState("primary"), err)
	}
	answer(t, c, "hi", 5*time.Second)
	if s.Calls() != 4 || c.BreakerState("primary") != "open" {
		t.Fatalf("after a failed probe: %d calls, breaker %s; want 4, open", s.Calls(), c.BreakerState("primary"))
	}

	// A good probe closes it.
	mu.Lock()
	failing = false
	mu.Unlock()
	time.Sleep(cfg.BreakerOpen)
	if a, _ := answer(t, c, "hi", 5*time.Second); a.Source != envelope.SourceLLM {
		t.Fatalf("probe answer %+v, want llm", a)
	}
	if err := state(0); c.BreakerState("primary") != "closed" || err != nil {
		t.Fatalf("breaker %s after a good probe, want closed (0); %v", c.BreakerState("primary"), err)
	}
}

// TestBreakerFailureRatio checks the ratio guard: a dead endpoint is cut
// off after 10 calls, while consecutive failures among mostly good calls
// open the breaker only without the guard.
func TestBreakerFailureRatio(t *testing.T) {
	t.Run("DeadEndpoint", func(t *testing.T) {
		_, url := serveScript(t, status(500))
		cfg := fastConfig(url)
		cfg.Attempts = 1
		c := mustNew(t, cfg) // default ratio 0.8
		for range 9 {
			answer(t, c, "hi", 5*time.Second)
		}
		if st := c.BreakerState("primary"); st != "closed" {
			t.Errorf("breaker %s after 9 failed calls, want closed (fewer than 10 calls)", st)
		}
		answer(t, c, "hi", 5*time.Second)
		if st := c.BreakerState("primary"); st != "open" {
			t.Errorf("breaker %s after 10 failed calls, want open", st)
		}
	})
	for _, tc := range []struct {
		ratio float64
		want  string
	}{{0.8, "closed"}, {0, "open"}} {
		t.Run(fmt.Sprintf("MostlyGood/ratio=%v", tc.ratio), func(t *testing.T) {
			_, url := serveScript(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n <= 7 {
					writeCompletion(w, "ok")
					return
				}
				status(500)(n, w, r)
			})
			cfg := fastConfig(url)
			cfg.Attempts, cfg.BreakerFailureRatio = 1, tc.ratio
			c := mustNew(t, cfg)
			for range 10 {
				answer(t, c, "hi", 5*time.Second)
			}
			if st := c.BreakerState("primary"); st != tc.want {
				t.Errorf("breaker %s after 7 good and 3 failed calls, want %s", st, tc.want)
			}
			// Failures going on raise the share to 0.8 (28 of 35): it opens.
			for range 25 {
				answer(t, c, "hi", 5*time.Second)
			}
			if st := c.BreakerState("primary"); st != "open" {
				t.Errorf("breaker %s after mostly failures, want open", st)
			}
		})
	}
}

// TestBreakerIgnoresRequestFaults checks that failures caused by the
// request (400) or its deadline do not open the breaker.
func TestBreakerIgnoresRequestFaults(t *testing.T) {
	_, url := serveScript(t, status(400))
	cfg := fastConfig(url)
	cfg.BreakerFailureRatio = 0
	c := mustNew(t, cfg)
	for range 5 {
		answer(t, c, "hi", 5*time.Second)
	}
	if st := c.BreakerState("primary"); st != "closed" {
		t.Errorf("breaker %s after 400s, want closed", st)
	}

	_, url = serveScript(t, func(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	cfg = fastConfig(url)
	cfg.BreakerFailureRatio = 0
	c = mustNew(t, cfg)
	for range 4 {
		answer(t, c, "hi", 200*time.Millisecond) // cut short by the deadline, not the 10s timeout
	}
	if st := c.BreakerState("primary"); st != "closed" {
		t.Errorf("breaker %s after calls cut by the request deadline, want closed", st)
	}

	// A timeout of the call's own (Timeout shorter than the deadline) counts.
	cfg = fastConfig(url)
	cfg.Timeout, cfg.Attempts, cfg.BreakerFailureRatio = 50*time.Millisecond, 1, 0
	c = mustNew(t, cfg)
	for range 3 {
		answer(t, c, "hi", 5*time.Second)
	}
	if st := c.BreakerState("primary"); st != "open" {
		t.Errorf("breaker %s after 3 timeouts, want open", st)
	}
}

func TestConcurrencyCap(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	s, url := serveScript(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
			writeCompletion(w, "ok")
		case <-r.Context().Done():
		}
	})
	cfg := fastConfig(url)
	cfg.MaxConcurrent = 2
	c := mustNew(t, cfg)

	results := make(chan llm.Answer, 4)
	for range 4 {
		go func() {
			a, err := c.Answer(context.Background(), request("hi", 10*time.Second), nil)
			if err != nil {
				t.Error(err)
			}
			results <- a
		}()
	}
	<-entered
	<-entered
	// Two calls are under way; the other two wait for a slot.
	wantMetric(t, c, "sluice_llm_in_flight", `sluice_llm_in_flight{endpoint="primary"} 2`+"\n")
	select {
	case <-entered:
		t.Fatal("a third call started while two held the slots")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	for range 4 {
		if a := <-results; a.Source != envelope.SourceLLM {
			t.Errorf("answer %+v, want llm after waiting for a slot", a)
		}
	}
	if s.Most() > 2 {
		t.Errorf("%d calls at once, want at most 2", s.Most())
	}
	wantMetric(t, c, "sluice_llm_limited_total", `sluice_llm_limited_total{limit="concurrency",outcome="waited"} 2`+"\n")

	// Slots held past a request's deadline: it falls back without a call.
	block := make(chan struct{})
	defer close(block)
	holding := make(chan struct{}, 1)
	_, url = serveScript(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		holding <- struct{}{}
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	cfg = fastConfig(url)
	cfg.MaxConcurrent = 1
	c = mustNew(t, cfg)
	go func() { _, _ = c.Answer(context.Background(), request("hi", 10*time.Second), nil) }()
	<-holding
	if a, _ := answer(t, c, "hi", 300*time.Millisecond); a.Source != envelope.SourceCanned {
		t.Errorf("answer %+v, want canned", a)
	}
	wantMetric(t, c, "sluice_llm_limited_total", `sluice_llm_limited_total{limit="concurrency",outcome="fallback"} 1`+"\n")
}

func TestPIIMasked(t *testing.T) {
	const phone = "13812345678"
	for _, maskPrompt := range []bool{true, false} {
		t.Run(fmt.Sprintf("MaskPrompt=%v", maskPrompt), func(t *testing.T) {
			// The mock quotes the question back, as models do.
			s, url := serveScript(t, func(_ int, w http.ResponseWriter, r *http.Request) {
				writeCompletion(w, "好的，我们会打 "+phone+" 联系您")
			})
			cfg := fastConfig(url)
			cfg.MaskPrompt = maskPrompt
			c := mustNew(t, cfg)
			hist := []envelope.Turn{{Role: "user", Content: "我的邮箱 a@b.com"}, {Role: "assistant", Content: "好的"}}
			a, err := c.Answer(context.Background(), request("我的电话是 "+phone+"，什么时候发货", 5*time.Second), hist)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(a.Text, phone) || !strings.Contains(a.Text, "[phone]") {
				t.Errorf("answer %q not masked", a.Text)
			}
			var sent strings.Builder
			for _, m := range s.Body(0).Messages {
				sent.WriteString(m.Content + "\n")
			}
			if got := strings.Contains(sent.String(), phone) || strings.Contains(sent.String(), "a@b.com"); got == maskPrompt {
				t.Errorf("prompt sent %q: raw personal data present = %v with MaskPrompt %v", sent.String(), got, maskPrompt)
			}
			// The phone in the question and in the answer.
			wantMetric(t, c, "sluice_pii_masked_total", `
				sluice_pii_masked_total{kind="bank_card"} 0
				sluice_pii_masked_total{kind="email"} 0
				sluice_pii_masked_total{kind="id_card"} 0
				sluice_pii_masked_total{kind="phone"} 2
			`)
			log := c.log.String()
			if !strings.Contains(log, `"msg":"pii masked"`) || !strings.Contains(log, `"where":"question"`) || !strings.Contains(log, `"where":"answer"`) {
				t.Errorf("no audit lines in %s", log)
			}
			if strings.Contains(log, phone) {
				t.Errorf("log holds the phone number: %s", log)
			}
		})
	}
}

func TestTenantPrompts(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"prompts.yaml": "default: 默认提示\ntenants:\n  shop-a: 你是 A 店的客服\n",
		"prompts.json": `{"tenants":{"shop-b":"你是 B 店的客服"}}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, url := serveScript(t, ok("好的"))
	for i, tc := range []struct{ file, tenant, want string }{
		{"prompts.yaml", "shop-a", "你是 A 店的客服"},
		{"prompts.yaml", "shop-z", "默认提示"},
		{"prompts.json", "shop-b", "你是 B 店的客服"},
		{"prompts.json", "shop-z", llm.DefaultConfig().SystemPrompt}, // no default in the file
	} {
		cfg := fastConfig(url)
		cfg.PromptsFile = filepath.Join(dir, tc.file)
		c := mustNew(t, cfg)
		req := request("hi", 5*time.Second)
		req.Tenant = tc.tenant
		if _, err := c.Answer(context.Background(), req, nil); err != nil {
			t.Fatal(err)
		}
		if m := s.Body(i).Messages[0]; m.Role != "system" || m.Content != tc.want {
			t.Errorf("%s, tenant %s: first message %+v, want system %q", tc.file, tc.tenant, m, tc.want)
		}
	}
	for _, bad := range []string{"missing.yaml", "bad.yaml"} {
		_ = os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("defualt: typo\n"), 0o600)
		cfg := fastConfig(url)
		cfg.PromptsFile = filepath.Join(dir, bad)
		if _, err := llm.New(cfg, nil, nil); err == nil {
			t.Errorf("New accepted prompts file %s", bad)
		}
	}
}

// TestRequestBody: the call is an OpenAI chat completion request: model,
// messages, the configured max_tokens and temperature (left out when 0), a
// JSON body and the API key as a bearer token.
func TestRequestBody(t *testing.T) {
	s, url := serveScript(t, ok("好的"))
	cfg := fastConfig(url)
	cfg.APIKey, cfg.Model, cfg.MaxTokens, cfg.Temperature = "k-123", "gpt-x", 64, 0.5
	c := mustNew(t, cfg)
	if _, err := c.Answer(context.Background(), request("<b>优惠券</b>", 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	b := s.Body(0)
	if b.Model != "gpt-x" || b.MaxTokens == nil || *b.MaxTokens != 64 || b.Temperature == nil || *b.Temperature != 0.5 {
		t.Errorf("body model %q max_tokens %v temperature %v", b.Model, b.MaxTokens, b.Temperature)
	}
	if last := b.Messages[len(b.Messages)-1]; last.Role != "user" || last.Content != "<b>优惠券</b>" {
		t.Errorf("last message %+v", last)
	}
	if b.auth != "Bearer k-123" || !strings.HasPrefix(b.typ, "application/json") {
		t.Errorf("Authorization %q Content-Type %q", b.auth, b.typ)
	}

	cfg.MaxTokens, cfg.Temperature = 0, 0
	c = mustNew(t, cfg)
	if _, err := c.Answer(context.Background(), request("hi", 5*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	if b := s.Body(1); b.MaxTokens != nil || b.Temperature != nil {
		t.Errorf("zero settings sent: max_tokens %v temperature %v", b.MaxTokens, b.Temperature)
	}
}

func TestHistoryBudget(t *testing.T) {
	s, url := serveScript(t, ok("好的"))
	cfg := fastConfig(url)
	cfg.HistoryTokens = 40
	cfg.SystemPrompt = ""
	c := mustNew(t, cfg)
	var hist []envelope.Turn
	for i := range 10 {
		hist = append(hist,
			envelope.Turn{Role: "user", Content: fmt.Sprintf("问题%d问题", i)},                // 4 CJK + 1 other: 5 tokens, 9 with the overhead
			envelope.Turn{Role: "assistant", Content: fmt.Sprintf("answer number %d", i)}, // 15 others: 4 tokens, 8 with the overhead
		)
	}
	if _, err := c.Answer(context.Background(), request("最新的问题", 5*time.Second), hist); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range s.Body(0).Messages {
		got = append(got, m.Role+":"+m.Content)
	}
	// 40 tokens hold the newest 2 pairs (2 × (9 + 8) = 34): chronological,
	// starting with a user turn.
	want := []string{"user:问题8问题", "assistant:answer number 8", "user:问题9问题", "assistant:answer number 9", "user:最新的问题"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("messages\n %q\nwant\n %q", got, want)
	}

	cfg.HistoryTokens = 45 // room for one more assistant turn, not its question
	c = mustNew(t, cfg)
	if _, err := c.Answer(context.Background(), request("最新的问题", 5*time.Second), hist); err != nil {
		t.Fatal(err)
	}
	if first := s.Body(1).Messages[0]; first.Role != "user" || first.Content != "问题8问题" {
		t.Errorf("history starts with %+v, want the user turn 问题8问题", first)
	}
}

func TestEstimateTokens(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want int
	}{
		{"", 0},
		{"优惠券", 3},
		{"coupon", 2},
		{"优惠券 coupon", 5}, // 3 CJK + 7 other
		{"こんにちは", 5},
		{"abcd", 1},
	} {
		if got := llm.EstimateTokens(tc.s); got != tc.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tc.s, got, tc.want)
		}
	}
}

// TestCallBoundedByDeadline: a model answering in an hour, a call timeout
// of an hour, and a request due in 200 ms: the request's deadline ends the
// call.
func TestCallBoundedByDeadline(t *testing.T) {
	_, url := mustMock(t, mockllm.Config{Latency: time.Hour})
	cfg := fastConfig(url)
	cfg.Timeout = time.Hour
	c := mustNew(t, cfg)
	if a, _ := answer(t, c, "hi", 200*time.Millisecond); a.Source != envelope.SourceCanned {
		t.Fatalf("answer %+v, want canned", a)
	}
	wantMetric(t, c, "sluice_llm_calls_total", callsOf("primary", "timeout", 1))
}

func TestCanceledContext(t *testing.T) {
	_, url := serveScript(t, func(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	c := mustNew(t, fastConfig(url))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Answer(ctx, request("hi", 10*time.Second), nil); err == nil {
		t.Fatal("Answer returned no error for an ended context")
	}
	if st := c.BreakerState("primary"); st != "closed" {
		t.Errorf("breaker %s after the caller went away, want closed", st)
	}
	wantMetric(t, c, "sluice_llm_calls_total", callsOf("primary", "canceled", 1))
	if lines := logLines(t, c, "llm call failed"); len(lines) != 0 {
		t.Errorf("the caller going away was logged as the endpoint's failure: %v", lines)
	}
}

func TestConfigValidate(t *testing.T) {
	good := fastConfig("http://x/v1")
	if err := good.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	for name, edit := range map[string]func(*llm.Config){
		"NoBaseURL":        func(c *llm.Config) { c.BaseURL = "" },
		"BadBaseURL":       func(c *llm.Config) { c.BaseURL = "ftp://x" },
		"NoModel":          func(c *llm.Config) { c.Model = "" },
		"NoTimeout":        func(c *llm.Config) { c.Timeout = 0 },
		"NegativeTokens":   func(c *llm.Config) { c.MaxTokens = -1 },
		"NoAttempts":       func(c *llm.Config) { c.Attempts = 0 },
		"NegativeBackoff":  func(c *llm.Config) { c.RetryBackoff = -1 },
		"NegativeReserve":  func(c *llm.Config) { c.Reserve = -1 },
		"NoBreakerFailure": func(c *llm.Config) { c.BreakerFailures = 0 },
		"NoBreakerOpen":    func(c *llm.Config) { c.BreakerOpen = 0 },
		"NoProbes":         func(c *llm.Config) { c.BreakerProbes = 0 },
		"RatioAbove1":      func(c *llm.Config) { c.BreakerFailureRatio = 1.5 },
		"NoConcurrency":    func(c *llm.Config) { c.MaxConcurrent = 0 },
		"NegativeRPM":      func(c *llm.Config) { c.RPM = -1 },
		"BadFallbackURL":   func(c *llm.Config) { c.FallbackBaseURL = "x" },
		"NegativeMinScore": func(c *llm.Config) { c.FAQ.MinScore = -1 },
		"NegativeHistory":  func(c *llm.Config) { c.HistoryTokens = -1 },
	} {
		cfg := good
		edit(&cfg)
		if _, err := llm.New(cfg, nil, nil); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	cfg := good
	cfg.FAQ.File = filepath.Join(t.TempDir(), "missing.yaml")
	if _, err := llm.New(cfg, nil, nil); err == nil {
		t.Error("New accepted a missing FAQ file")
	}
}
