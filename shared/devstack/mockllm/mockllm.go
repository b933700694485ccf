// Package mockllm is an OpenAI-compatible Chat Completions server that answers
// like a shop's customer service. It stands in for the LLM vendor in `sluice
// dev`, tests and load tests, with knobs for latency (a log-normal
// distribution with a tail, plus jitter), errors, rate limiting with
// Retry-After, stalled bodies and malformed JSON, so every failure path of a
// client can be driven.
//
// Routes: POST /v1/chat/completions (also /chat/completions), GET /v1/models.
//
// A request with "stream": true is answered as OpenAI streams: Server-Sent
// Events of chat.completion.chunk objects, one per token, TokenDelay apart,
// then "data: [DONE]" (a usage chunk before it when stream_options asks).
// Latency, errors, 429s and a slow first byte apply before the first chunk;
// a malformed stream ends in a truncated chunk; StreamBreakRate cuts a
// stream after half its tokens.
//
// Metrics (on the registerer given to New): see docs/metrics.md, generated
// from the registries by tests/metrics_doc_test.go.
package mockllm

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/shared/settings"
)

// Config holds the mock's knobs.
//
// Each call is, in this order of precedence, rate limited (RateLimitRate),
// failed (ErrorRate), answered with malformed JSON (MalformedRate) or
// answered; an answer is slow (SlowRate) or not.
type Config struct {
	// Latency is the time to answer: the median when LatencyP99 is larger,
	// else the base. Jitter adds a uniform random 0..Jitter.
	Latency time.Duration
	Jitter  time.Duration
	// LatencyP99, when larger than Latency, makes the time to answer
	// log-normal with median Latency and 99th percentile LatencyP99 (capped
	// at five times LatencyP99): most calls are quick, a few very slow.
	LatencyP99 time.Duration
	// ErrorRate is the fraction (0..1) of calls answered with HTTP 500.
	ErrorRate float64
	// RateLimitRate is the fraction (0..1) of calls answered with 429 and a
	// Retry-After header of RetryAfter (rounded up to whole seconds).
	RateLimitRate float64
	RetryAfter    time.Duration
	// MalformedRate is the fraction (0..1) of calls answered 200 with a
	// truncated JSON body.
	MalformedRate float64
	// SlowRate is the fraction (0..1) of answers whose status line and
	// headers go out at once but whose body starts only SlowFirstByte
	// later: a stalled stream that a timeout on headers alone misses.
	SlowRate      float64
	SlowFirstByte time.Duration
	// TokenDelay is the time between two tokens of a streamed answer.
	TokenDelay time.Duration
	// Tokens, when positive, makes every answer exactly that many tokens
	// (the answer is padded when it is shorter, in both modes); zero
	// splits it into tokens of up to three characters.
	Tokens int
	// StreamBreakRate is the fraction (0..1) of streamed answers cut
	// (the connection closed, no [DONE]) after half their tokens.
	StreamBreakRate float64
	// Model is reported in answers. Default "sluice-mock".
	Model string
}

// DefaultConfig returns a mock that answers in about 30 ms without errors.
func DefaultConfig() Config {
	return Config{Latency: 30 * time.Millisecond, Jitter: 20 * time.Millisecond, RetryAfter: time.Second, Model: "sluice-mock"}
}

// Validate reports the first knob out of range.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(c.Latency >= 0, "mock-latency", "must not be negative")
	p.Check(c.LatencyP99 >= 0, "mock-latency-p99", "must not be negative")
	p.Check(c.LatencyP99 == 0 || c.Latency > 0, "mock-latency-p99", "latency p99 needs a latency (the median, --mock-latency)")
	p.Check(c.Jitter >= 0, "mock-jitter", "must not be negative")
	p.Check(c.ErrorRate >= 0 && c.ErrorRate <= 1, "mock-error-rate", "error rate must be within 0..1, got %v", c.ErrorRate)
	p.Check(c.RateLimitRate >= 0 && c.RateLimitRate <= 1, "mock-rate-limit-rate", "rate-limit rate must be within 0..1, got %v", c.RateLimitRate)
	p.Check(c.RetryAfter >= 0, "mock-retry-after", "must not be negative")
	p.Check(c.MalformedRate >= 0 && c.MalformedRate <= 1, "mock-malformed-rate", "malformed rate must be within 0..1, got %v", c.MalformedRate)
	p.Check(c.SlowRate >= 0 && c.SlowRate <= 1, "mock-slow-rate", "slow rate must be within 0..1, got %v", c.SlowRate)
	p.Check(c.SlowFirstByte >= 0, "mock-slow-first-byte", "must not be negative")
	p.Check(c.TokenDelay >= 0, "mock-token-delay", "must not be negative")
	p.Check(c.Tokens >= 0 && c.Tokens <= 100_000, "mock-tokens", "must be within 0..100000, got %d", c.Tokens)
	p.Check(c.StreamBreakRate >= 0 && c.StreamBreakRate <= 1, "mock-stream-break-rate", "stream break rate must be within 0..1, got %v", c.StreamBreakRate)
	return p.Err()
}

// RegisterFlags registers c's knobs on fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Latency, "mock-latency", c.Latency, "mock LLM: latency of an answer (the median when --mock-latency-p99 is larger)")
	fs.DurationVar(&c.LatencyP99, "mock-latency-p99", c.LatencyP99, "mock LLM: 99th percentile latency; when larger than --mock-latency, latency is log-normal")
	fs.DurationVar(&c.Jitter, "mock-jitter", c.Jitter, "mock LLM: uniform random latency added, 0..jitter")
	fs.Float64Var(&c.ErrorRate, "mock-error-rate", c.ErrorRate, "mock LLM: fraction of calls answered 500")
	fs.Float64Var(&c.RateLimitRate, "mock-rate-limit-rate", c.RateLimitRate, "mock LLM: fraction of calls answered 429")
	fs.DurationVar(&c.RetryAfter, "mock-retry-after", c.RetryAfter, "mock LLM: Retry-After of a 429")
	fs.Float64Var(&c.MalformedRate, "mock-malformed-rate", c.MalformedRate, "mock LLM: fraction of calls answered 200 with truncated JSON")
	fs.Float64Var(&c.SlowRate, "mock-slow-rate", c.SlowRate, "mock LLM: fraction of answers whose body starts --mock-slow-first-byte after the headers")
	fs.DurationVar(&c.SlowFirstByte, "mock-slow-first-byte", c.SlowFirstByte, "mock LLM: stall between the headers and the body of a slow answer")
	fs.DurationVar(&c.TokenDelay, "mock-token-delay", c.TokenDelay, "mock LLM: time between two tokens of a streamed answer")
	fs.IntVar(&c.Tokens, "mock-tokens", c.Tokens, "mock LLM: tokens per answer, padding short ones (0: the answer in tokens of up to 3 characters)")
	fs.Float64Var(&c.StreamBreakRate, "mock-stream-break-rate", c.StreamBreakRate, "mock LLM: fraction of streamed answers cut after half their tokens")
}

// Server is the mock's HTTP handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec
	calls    atomic.Int64
}

// New returns a mock server. It returns an error when cfg is invalid.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Model == "" {
		cfg.Model = "sluice-mock"
	}
	s := &Server{
		cfg: cfg,
		log: log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_mockllm_requests_total",
			Help: "Chat completion calls answered by the mock LLM, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		if err := reg.Register(s.requests); err != nil {
			return nil, fmt.Errorf("register mockllm metrics: %w", err)
		}
	}
	return s, nil
}

// Calls returns how many chat completion calls the mock has received.
func (s *Server) Calls() int64 { return s.calls.Load() }

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.completions)
	mux.HandleFunc("POST /chat/completions", s.completions)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
			map[string]any{"id": s.cfg.Model, "object": "model", "owned_by": "sluice"},
		}})
	})
	return mux
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type completionRequest struct {
	Model         string    `json:"model"`
	Messages      []message `json:"messages"`
	Stream        bool      `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	s.calls.Add(1)
	var req completionRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20)).Decode(&req); err != nil || len(req.Messages) == 0 {
		s.requests.WithLabelValues("bad_request").Inc()
		writeError(w, http.StatusBadRequest, "invalid_request_error", "body must be a chat completion request with messages")
		return
	}
	if !sleep(r, s.latency()) {
		return
	}
	switch p := rand.Float64(); {
	case p < s.cfg.RateLimitRate:
		s.requests.WithLabelValues("rate_limited").Inc()
		secs := int((s.cfg.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeError(w, http.StatusTooManyRequests, "rate_limit_exceeded", "mock rate limit")
		return
	case p < s.cfg.RateLimitRate+s.cfg.ErrorRate:
		s.requests.WithLabelValues("error").Inc()
		writeError(w, http.StatusInternalServerError, "server_error", "mock failure")
		return
	case p < s.cfg.RateLimitRate+s.cfg.ErrorRate+s.cfg.MalformedRate:
		s.requests.WithLabelValues("malformed").Inc()
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"您好`+"\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, `{"id":"chatcmpl-mock","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"您好`)
		return
	}
	tokens := Tokens(Answer(req.Messages), s.cfg.Tokens)
	answer := strings.Join(tokens, "")
	model := req.Model
	if model == "" {
		model = s.cfg.Model
	}
	prompt := 0
	for _, m := range req.Messages {
		prompt += utf8.RuneCountInString(m.Content)
	}
	completion := utf8.RuneCountInString(answer)
	if req.Stream {
		s.stream(w, r, &req, model, tokens, usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion})
		return
	}
	body := completionResponse{
		ID:      "chatcmpl-mock-" + strconv.FormatInt(s.calls.Load(), 10),
		Object:  "chat.completion",
		Created: time.Now().Unix(),
		Model:   model,
		Choices: []choice{{Message: responseMessage{Role: "assistant", Content: answer}, FinishReason: "stop"}},
		Usage:   usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion},
	}
	if s.cfg.SlowRate > 0 && rand.Float64() < s.cfg.SlowRate {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		if !sleep(r, s.cfg.SlowFirstByte) {
			return
		}
		s.requests.WithLabelValues("slow").Inc()
		_ = json.NewEncoder(w).Encode(body)
		return
	}
	s.requests.WithLabelValues("ok").Inc()
	writeJSON(w, http.StatusOK, body)
}

// stream answers req with tokens as OpenAI streams a completion.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, req *completionRequest, model string, tokens []string, u usage) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	flush := func() {
		if f != nil {
			f.Flush()
		}
	}
	if s.cfg.SlowRate > 0 && rand.Float64() < s.cfg.SlowRate {
		flush()
		if !sleep(r, s.cfg.SlowFirstByte) {
			return
		}
	}
	cut := len(tokens) + 1
	if s.cfg.StreamBreakRate > 0 && rand.Float64() < s.cfg.StreamBreakRate {
		cut = len(tokens) / 2
	}
	id := "chatcmpl-mock-" + strconv.FormatInt(s.calls.Load(), 10)
	created := time.Now().Unix()
	send := func(c chunk) bool {
		c.ID, c.Object, c.Created, c.Model = id, "chat.completion.chunk", created, model
		if c.Choices == nil {
			c.Choices = []chunkChoice{}
		}
		b, err := json.Marshal(c)
		if err != nil {
			return false
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		flush()
		return true
	}
	if !send(chunk{Choices: []chunkChoice{{Delta: chunkDelta{Role: "assistant"}}}}) {
		return
	}
	for i, tok := range tokens {
		if i == cut {
			s.requests.WithLabelValues("stream_broken").Inc()
			panic(http.ErrAbortHandler) // close the connection mid-stream
		}
		if i > 0 && !sleep(r, s.cfg.TokenDelay) {
			return
		}
		if !send(chunk{Choices: []chunkChoice{{Delta: chunkDelta{Content: tok}}}}) {
			return
		}
	}
	stop := "stop"
	if !send(chunk{Choices: []chunkChoice{{Delta: chunkDelta{}, FinishReason: &stop}}}) {
		return
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !send(chunk{Usage: &u}) {
		return
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
	flush()
	s.requests.WithLabelValues("streamed").Inc()
}

// Tokens splits answer into n tokens (padding a shorter answer), or, when n
// is zero, into tokens of up to three characters.
func Tokens(answer string, n int) []string {
	runes := []rune(answer)
	if n <= 0 {
		var out []string
		for i := 0; i < len(runes); i += 3 {
			out = append(out, string(runes[i:min(i+3, len(runes))]))
		}
		return out
	}
	for len(runes) < n {
		runes = append(runes, []rune(" Thank you for shopping with us.")...)
	}
	out := make([]string, n)
	for i := range n {
		out[i] = string(runes[i*len(runes)/n : (i+1)*len(runes)/n])
	}
	return out
}

// latency draws the time to answer one call.
func (s *Server) latency() time.Duration {
	d := s.cfg.Latency
	if p99 := s.cfg.LatencyP99; p99 > d && d > 0 {
		// ln(latency) is normal with mean ln(median) and a sigma that puts
		// the 99th percentile (z = 2.326) at p99.
		sigma := math.Log(float64(p99)/float64(d)) / 2.3263478740408408
		d = min(time.Duration(float64(d)*math.Exp(sigma*rand.NormFloat64())), 5*p99)
	}
	if s.cfg.Jitter > 0 {
		d += rand.N(s.cfg.Jitter)
	}
	return d
}

// sleep waits d and reports false when the client went away first.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

type topic struct {
	keywords []string
	zh, en   string
}

var topics = []topic{
	{[]string{"发货", "物流", "快递", "配送", "到货", "什么时候到", "ship", "deliver", "track"},
		"订单付款后 24 小时内发货，大促期间最迟 48 小时；发货后可在「我的订单」查看物流单号。",
		"orders ship within 24 hours of payment (48 hours during the sale); the tracking number appears under My Orders once it ships."},
	{[]string{"优惠券", "优惠", "券", "满减", "coupon", "voucher", "promo"},
		"优惠券在有效期内可用，结算页会自动选择最优券；已过期或已使用的券无法恢复。",
		"coupons work until they expire and checkout picks the best one for you; expired or used coupons cannot be restored."},
	{[]string{"退款", "refund", "money back"},
		"退款审核通过后 1–3 个工作日原路退回。",
		"refunds go back to the original payment method within 1-3 business days after approval."},
	{[]string{"退货", "换货", "return", "exchange"},
		"签收后 7 天内可无理由退货，请在订单详情页申请并按提示寄回。",
		"you can return items within 7 days of delivery; start the return from the order page and follow the shipping instructions."},
	{[]string{"发票", "invoice", "receipt"},
		"电子发票会在确认收货后开具，可在订单详情页下载。",
		"the e-invoice is issued once delivery is confirmed and can be downloaded from the order page."},
	{[]string{"会员", "积分", "member", "points", "vip"},
		"会员每消费 1 元积 1 分，积分可在下单时抵扣现金。",
		"members earn one point per unit spent, and points can be used as cash at checkout."},
}

// Answer composes the mock's reply to a conversation: it picks the topic of
// the last user message, quotes part of it back and, when the conversation
// has an earlier user turn, refers to it, so that context is visible.
func Answer(msgs []message) string {
	var last, earlier string
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role != "user" {
			continue
		}
		if last == "" {
			last = msgs[i].Content
			continue
		}
		earlier = msgs[i].Content
		break
	}
	zh := hasHan(last)
	lower := strings.ToLower(last)
	var body string
	for _, t := range topics {
		for _, k := range t.keywords {
			if strings.Contains(lower, k) {
				body = t.zh
				if !zh {
					body = t.en
				}
				break
			}
		}
		if body != "" {
			break
		}
	}
	if body == "" {
		body = "我已记录您的问题，稍后会有专人跟进。"
		if !zh {
			body = "I have noted your question and a colleague will follow up shortly."
		}
	}
	var b strings.Builder
	if zh {
		fmt.Fprintf(&b, "您好！关于「%s」：%s", clip(last, 24), body)
		if earlier != "" {
			fmt.Fprintf(&b, "（接着您之前问的「%s」）", clip(earlier, 24))
		}
		return b.String()
	}
	fmt.Fprintf(&b, "Hello! About %q: %s", clip(last, 48), body)
	if earlier != "" {
		fmt.Fprintf(&b, " (Following up on your earlier question %q.)", clip(earlier, 48))
	}
	return b.String()
}

func hasHan(s string) bool {
	for _, r := range s {
		if unicode.Is(unicode.Han, r) {
			return true
		}
	}
	return false
}

// clip shortens s to at most n characters.
func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// completionResponse is a chat completion as the OpenAI API returns it.
type completionResponse struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   usage    `json:"usage"`
}

type choice struct {
	Index        int             `json:"index"`
	Message      responseMessage `json:"message"`
	FinishReason string          `json:"finish_reason"`
}

type responseMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chunk is one chat.completion.chunk of a streamed answer.
type chunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"`
	Usage   *usage        `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int        `json:"index"`
	Delta        chunkDelta `json:"delta"`
	FinishReason *string    `json:"finish_reason"`
}

type chunkDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// writeJSON writes v as the whole body, with its length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": typ}})
}
