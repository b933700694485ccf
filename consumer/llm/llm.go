// Package llm answers chat requests with an OpenAI-compatible Chat
// Completions endpoint (OpenAI, DeepSeek, vLLM, Ollama, Sluice's mock) through
// the official openai-go SDK, and keeps answering when that endpoint does not.
//
// Every request gets an answer, the best one available, from the first tier
// that has one:
//
//  1. llm: the primary endpoint.
//  2. fallback_model: an optional secondary model or endpoint.
//  3. faq: the best entry of the tenant's FAQ above a score threshold
//     (package sluice/consumer/llm/faq).
//  4. canned: a fixed "we are busy, an agent will contact you" answer with
//     handoff set.
//
// A model tier makes up to Config.Attempts calls. Only retryable failures
// are retried (timeouts, connection errors, malformed responses, 408, 409,
// 429 and 5xx), after a linear backoff with jitter, or after the Retry-After
// (or retry-after-ms) the endpoint asked for when that is longer. Each call's
// timeout is Config.Timeout cut to what is left before the request's
// deadline minus Config.Reserve; a retry that could not start and get
// minCallTime before then is not made, and neither is a wait for a slot or
// the quota: the request moves on to the next tier instead. So every answer
// is ready before the deadline, with Reserve left for storing and publishing it.
//
// Each endpoint has a circuit breaker (sony/gobreaker): BreakerFailures
// consecutive failed calls open it for BreakerOpen, when also at least
// BreakerFailureRatio of the last 10 s of calls (10 or more) failed. While
// open, requests skip the endpoint at once; then BreakerProbes calls probe
// it (half-open) and close it again when they succeed. Failures that say
// nothing about the endpoint's health (400/413/422, a call cut short by the
// request's own deadline, the caller going away) do not count.
//
// Failed calls are logged as warnings "llm call failed", at most one line
// per endpoint every 10 s, with the failure's outcome (the metric label),
// its error (and the API error's code and type) and the count of failures
// since the previous line. The warning of a breaker opening names the
// failure that opened it.
//
// Each endpoint allows at most MaxConcurrent calls at once in this process.
// The primary endpoint can also have a requests-per-minute and a
// tokens-per-minute limit (RPM, TPM) that all consumer processes share
// through Redis (a GCRA in one Lua script; per process when no Redis client
// is given). A call's tokens are the prompt's estimate plus MaxTokens. When
// a slot or the quota is not free, the request waits for it as long as the
// call could still be made before the deadline, and otherwise falls back to
// the next tier without calling: it never sends a call the quota has no
// room for. When Redis fails, the quota lets calls through (the vendor's own
// 429s and the breaker still apply).
//
// Requests of the interactive lane go first (the lane comes with the
// context, WithLane): a freed slot goes to a waiting interactive request
// before any bulk one, and while an interactive request of this process
// waits for quota, bulk requests do not ask for it. A request waits for
// quota without holding a slot. A bulk request, with a deadline minutes
// away, so waits for quota and slots instead of falling back; it falls back
// only when its own deadline comes first. Across processes the shared quota
// is first come, first served.
//
// Personal data (package sluice/shared/pii) is masked in every answer; in
// the question and history sent to the model too, unless MaskPrompt is off.
// Hits are counted and audit-logged without their values.
//
// Metrics (on the registerer given to New): see docs/metrics.md, generated
// from the registries by tests/metrics_doc_test.go.
package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"

	"sluice/consumer/llm/faq"
	"sluice/shared/envelope"
	"sluice/shared/metric"
	"sluice/shared/pii"
	"sluice/shared/settings"
)

// Config holds the LLM client's settings.
type Config struct {
	// BaseURL is the OpenAI-style base including /v1; the client posts to
	// {BaseURL}/chat/completions.
	BaseURL string
	APIKey  string
	Model   string
	// MaxTokens and Temperature are sent with every call (0 leaves them out).
	MaxTokens   int64
	Temperature float64
	// Timeout bounds one call; the request's remaining deadline bounds it too.
	Timeout time.Duration
	// SystemPrompt starts every conversation whose tenant PromptsFile does
	// not name (and every conversation without PromptsFile).
	SystemPrompt string
	// PromptsFile is a YAML (or, named *.json, JSON) file of system prompts:
	// "default" for every tenant and "tenants", a map of tenant id to prompt.
	PromptsFile string
	// HistoryTokens is the estimated token budget of the history sent with
	// a question: turns are taken newest first while they fit. Default 1500.
	HistoryTokens int
	// CannedAnswer is returned, with handoff, when no tier answers.
	CannedAnswer string

	// Attempts bounds the calls to one endpoint for one request (the first
	// and its retries). Default 3.
	Attempts int
	// RetryBackoff is the pause before the first retry; the n-th pause is n
	// times it plus up to half of that in jitter, or the endpoint's
	// Retry-After when longer. Default 50 ms.
	RetryBackoff time.Duration
	// Reserve is kept free before the request's deadline for the fallbacks
	// and for storing and publishing the answer: model calls end that long
	// before the deadline. Default 250 ms.
	Reserve time.Duration

	// BreakerFailures consecutive failed calls open an endpoint's breaker.
	// Default 3.
	BreakerFailures int
	// BreakerFailureRatio, when above 0, opens the breaker only when also at
	// least this share of the endpoint's calls of the last 10 s failed, and
	// at least breakerMinCalls (10) of them: a flaky endpoint whose retries
	// mostly succeed stays in use (with consecutive failures alone, a 50 %
	// error rate trips it within a second at flash-sale traffic), while a
	// dead one is still cut off after 10 calls. 0 opens on BreakerFailures
	// consecutive failures alone. Default 0.8.
	BreakerFailureRatio float64
	// BreakerOpen is how long an open breaker stays open before it lets
	// probes through. Default 10 s.
	BreakerOpen time.Duration
	// BreakerProbes is how many calls a half-open breaker lets through; that
	// many successes close it, one failure opens it again. Default 1.
	BreakerProbes int

	// MaxConcurrent caps the calls under way to each endpoint in this
	// process. Default 256.
	MaxConcurrent int
	// RPM and TPM limit the primary endpoint's requests and tokens per
	// minute across every process sharing the Redis given to New (0: no
	// limit).
	RPM int
	TPM int

	// FallbackBaseURL, FallbackAPIKey and FallbackModel name the secondary
	// endpoint, tried when the primary fails. It is used when either the
	// base URL or the model is set; the unset one is the primary's (and so
	// is the key when the base URL is the primary's).
	FallbackBaseURL string
	FallbackAPIKey  string
	FallbackModel   string

	// FAQ selects the FAQ files of the faq tier.
	FAQ faq.Config

	// MaskPrompt masks personal data in the question and history sent to
	// the model. Answers are masked always. Default true.
	MaskPrompt bool
}

// DefaultConfig returns the defaults: the mock's model name, 10 s per call,
// 3 attempts, a breaker opening for 10 s after 3 consecutive failures.
func DefaultConfig() Config {
	return Config{
		Model:               "sluice-mock",
		MaxTokens:           512,
		Temperature:         0.3,
		Timeout:             10 * time.Second,
		SystemPrompt:        "You are the customer service assistant of an online shop. Answer briefly and politely, in the customer's language.",
		HistoryTokens:       1500,
		CannedAnswer:        "当前咨询人数较多，已为您转接人工客服，请稍候。 We are busy right now; a human agent will contact you shortly.",
		Attempts:            3,
		RetryBackoff:        50 * time.Millisecond,
		Reserve:             250 * time.Millisecond,
		BreakerFailures:     3,
		BreakerFailureRatio: 0.8,
		BreakerOpen:         10 * time.Second,
		BreakerProbes:       1,
		MaxConcurrent:       256,
		MaskPrompt:          true,
	}
}

// Validate reports every missing or malformed setting, each named by its
// flag.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(c.BaseURL != "", "llm-base-url", "is required")
	p.Check(c.BaseURL == "" || validURL(c.BaseURL), "llm-base-url", "%q must start with http:// or https://", c.BaseURL)
	p.Check(c.Model != "", "llm-model", "is required")
	p.Check(c.Timeout > 0, "llm-timeout", "must be positive")
	p.Check(c.MaxTokens >= 0, "llm-max-tokens", "must not be negative")
	p.Check(c.HistoryTokens >= 0, "llm-history-tokens", "must not be negative")
	p.Check(c.Attempts >= 1, "llm-attempts", "must be at least 1, got %d", c.Attempts)
	p.Check(c.RetryBackoff >= 0, "llm-retry-backoff", "must not be negative")
	p.Check(c.Reserve >= 0, "llm-reserve", "must not be negative")
	p.Check(c.BreakerFailures >= 1, "llm-breaker-failures", "must be at least 1, got %d", c.BreakerFailures)
	p.Check(c.BreakerFailureRatio >= 0 && c.BreakerFailureRatio <= 1, "llm-breaker-failure-ratio", "must be within 0..1, got %v", c.BreakerFailureRatio)
	p.Check(c.BreakerOpen > 0, "llm-breaker-open", "must be positive")
	p.Check(c.BreakerProbes >= 1, "llm-breaker-probes", "must be at least 1, got %d", c.BreakerProbes)
	p.Check(c.MaxConcurrent >= 1, "llm-max-concurrent", "must be at least 1, got %d", c.MaxConcurrent)
	p.Check(c.RPM >= 0, "llm-rpm", "must not be negative")
	p.Check(c.TPM >= 0, "llm-tpm", "must not be negative")
	p.Check(c.FallbackBaseURL == "" || validURL(c.FallbackBaseURL), "llm-fallback-base-url", "%q must start with http:// or https://", c.FallbackBaseURL)
	p.Check(c.FAQ.MinScore >= 0, "faq-min-score", "must not be negative")
	return p.Err()
}

func validURL(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")
}

// Answer is what the pipeline returns for one request.
type Answer struct {
	Text    string
	Source  string // envelope.Source*
	Handoff bool
	// LLMTime is the time spent on the model tiers.
	LLMTime time.Duration
}

// Option configures New beyond Config.
type Option func(*options)

type options struct {
	rdb       redis.UniversalClient
	prefix    string
	faqs      *faq.Library
	bulkShare float64
}

// WithRedis shares the RPM/TPM quota through rdb, under keys starting with
// prefix. Without it the quota is per process.
func WithRedis(rdb redis.UniversalClient, prefix string) Option {
	return func(o *options) { o.rdb, o.prefix = rdb, prefix }
}

// WithBulkMinShare gives the bulk lane share (0 to 1) of each endpoint's
// recent calls while its requests wait, however many interactive ones wait
// too: a freed call slot goes to a bulk request while the lane had less, and
// bulk requests ask for quota beside interactive ones. Without it (or with
// 0) bulk requests get a slot or quota only when no interactive request
// waits for it, which under steady interactive pressure is at their
// deadline. The consumer passes its bulk lane's share of the in-flight
// budget (SLUICE_BULK_MIN_SHARE).
func WithBulkMinShare(share float64) Option {
	return func(o *options) { o.bulkShare = share }
}

// WithFAQ uses lib for the faq tier instead of loading Config.FAQ.
func WithFAQ(lib *faq.Library) Option {
	return func(o *options) { o.faqs = lib }
}

// Client answers requests through the tiers.
type Client struct {
	cfg       Config
	log       *slog.Logger
	prompts   Prompts
	endpoints []*endpoint
	faqs      *faq.Library
	pii       *pii.Auditor
	m         *metrics
	bulkShare float64 // see WithBulkMinShare
}

// New returns a client for cfg. It reads the prompts and FAQ files cfg
// names. It returns an error when cfg is invalid, a file cannot be read or
// parsed, or the metrics cannot be registered on reg (nil skips
// registration).
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	c := &Client{cfg: cfg, log: log, prompts: Prompts{Default: cfg.SystemPrompt}, faqs: o.faqs, bulkShare: o.bulkShare}
	if cfg.PromptsFile != "" {
		p, err := LoadPrompts(cfg.PromptsFile)
		if err != nil {
			return nil, err
		}
		if p.Default == "" {
			p.Default = cfg.SystemPrompt
		}
		c.prompts = p
	}
	if c.faqs == nil {
		lib, err := faq.Load(cfg.FAQ)
		if err != nil {
			return nil, err
		}
		c.faqs = lib
	}
	auditor, err := pii.NewAuditor(log, reg)
	if err != nil {
		return nil, err
	}
	c.pii = auditor

	var q quota
	if cfg.RPM > 0 || cfg.TPM > 0 {
		if o.rdb != nil {
			q = newRedisQuota(o.rdb, o.prefix+"{llm-quota:"+cfg.Model+"}", cfg.RPM, cfg.TPM)
		} else {
			q = newLocalQuota(cfg.RPM, cfg.TPM)
		}
	}
	r := metric.NewRegisterer(reg)
	c.m = newMetrics(promauto.With(r))
	c.endpoints = append(c.endpoints, newEndpoint(endpointConfig{
		name: "primary", source: envelope.SourceLLM,
		baseURL: cfg.BaseURL, apiKey: cfg.APIKey, model: cfg.Model,
	}, cfg, q, c))
	if cfg.FallbackBaseURL != "" || cfg.FallbackModel != "" {
		sec := endpointConfig{
			name: "secondary", source: envelope.SourceFallbackModel,
			baseURL: cfg.FallbackBaseURL, apiKey: cfg.FallbackAPIKey, model: cfg.FallbackModel,
		}
		if sec.baseURL == "" {
			sec.baseURL = cfg.BaseURL
			if sec.apiKey == "" {
				sec.apiKey = cfg.APIKey
			}
		}
		if sec.model == "" {
			sec.model = cfg.Model
		}
		c.endpoints = append(c.endpoints, newEndpoint(sec, cfg, nil, c))
	}
	r.MustRegister(&endpointCollector{c.endpoints})
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("register llm metrics: %w", err)
	}
	return c, nil
}

// BreakerState returns the state of endpoint's ("primary" or "secondary")
// breaker: "closed", "half-open" or "open"; "" for an unknown endpoint.
func (c *Client) BreakerState(endpoint string) string {
	for _, e := range c.endpoints {
		if e.name == endpoint {
			return e.breaker.State().String()
		}
	}
	return ""
}

// Sink receives the pieces of an answer as a model streams them.
type Sink interface {
	// Piece is a piece of the answer, as the model gave it: personal data
	// is not masked yet.
	Piece(text string)
	// Reset voids the pieces so far: the call that gave them failed, and a
	// retry or the next tier answers instead.
	Reset()
}

// resetting passes pieces to a Sink and resets it only when it got some
// since the last reset. A nil *resetting streams nothing.
type resetting struct {
	sink Sink
	got  bool
}

func (r *resetting) piece(text string) {
	r.got = true
	r.sink.Piece(text)
}

func (r *resetting) reset() {
	if r != nil && r.got {
		r.got = false
		r.sink.Reset()
	}
}

// Answer answers req given the dialog's history, oldest first, from the
// first tier that has an answer (see the package doc); the answer's
// personal data is masked. It never returns an error for failing models:
// the last tier always answers. It returns ctx's error when ctx ends first.
func (c *Client) Answer(ctx context.Context, req *envelope.Request, history []envelope.Turn) (Answer, error) {
	return c.answerTo(ctx, req, history, nil)
}

// AnswerStreaming is Answer with the model tiers called with streaming on:
// sink gets each answer's pieces as they come, and a reset when a call
// that gave some failed; an answer from the FAQ or canned tier gives no
// pieces (after a reset when a model gave some). The pieces of the answer
// returned concatenate to its text before masking.
func (c *Client) AnswerStreaming(ctx context.Context, req *envelope.Request, history []envelope.Turn, sink Sink) (Answer, error) {
	return c.answerTo(ctx, req, history, &resetting{sink: sink})
}

func (c *Client) answerTo(ctx context.Context, req *envelope.Request, history []envelope.Turn, sink *resetting) (Answer, error) {
	ids := []slog.Attr{slog.String("request_id", req.RequestID), slog.String("tenant", req.Tenant)}
	question := c.pii.Mask(ctx, req.Text, "question", ids...)
	prompt := req.Text
	if c.cfg.MaskPrompt {
		prompt = question
		masked := make([]envelope.Turn, len(history))
		for i, t := range history {
			masked[i] = t
			masked[i].Content = pii.Mask(t.Content)
		}
		history = masked
	}
	msgs, tokens := c.messages(req.Tenant, prompt, history)
	until := req.Deadline.Add(-c.cfg.Reserve)

	start := time.Now()
	var errs []error
	for _, e := range c.endpoints {
		text, err := e.complete(ctx, until, msgs, tokens, sink)
		if err == nil {
			return c.answer(ctx, text, e.source, false, time.Since(start), ids), nil
		}
		if ctx.Err() != nil {
			return Answer{}, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", e.name, err))
	}
	took := time.Since(start)
	sink.reset()
	if ix := c.faqs.For(req.Tenant); ix != nil {
		if m, ok := ix.Best(pii.StripLabels(question)); ok {
			c.log.Debug("answered from the FAQ", append(attrsAny(ids), "score", m.Score, "err", errors.Join(errs...))...)
			return c.answer(ctx, m.Answer, envelope.SourceFAQ, false, took, ids), nil
		}
	}
	c.log.Debug("answered canned", append(attrsAny(ids), "err", errors.Join(errs...))...)
	return c.answer(ctx, c.cfg.CannedAnswer, envelope.SourceCanned, true, took, ids), nil
}

func (c *Client) answer(ctx context.Context, text, source string, handoff bool, took time.Duration, ids []slog.Attr) Answer {
	c.m.answers[laneIndex(ctx)].With(source).Inc()
	return Answer{Text: c.pii.Mask(ctx, text, "answer", ids...), Source: source, Handoff: handoff, LLMTime: took}
}

func attrsAny(as []slog.Attr) []any {
	out := make([]any, len(as))
	for i, a := range as {
		out[i] = a
	}
	return out
}

// messages builds the conversation sent to the model: the tenant's system
// prompt, the history that fits the token budget and the question. It
// returns the messages and the estimated tokens of the call (the prompt's
// and MaxTokens).
func (c *Client) messages(tenant, question string, history []envelope.Turn) ([]message, int) {
	system := c.prompts.For(tenant)
	history = fitHistory(history, c.cfg.HistoryTokens)
	msgs := make([]message, 0, len(history)+2)
	tokens := int(c.cfg.MaxTokens)
	if system != "" {
		msgs = append(msgs, message{"system", system})
		tokens += EstimateTokens(system) + messageOverhead
	}
	for _, t := range history {
		switch t.Role {
		case envelope.RoleUser, envelope.RoleAssistant:
			msgs = append(msgs, message{t.Role, t.Content})
		default:
			continue
		}
		tokens += EstimateTokens(t.Content) + messageOverhead
	}
	msgs = append(msgs, message{"user", question})
	tokens += EstimateTokens(question) + messageOverhead
	return msgs, tokens
}

// FAQs returns how many tenants have an FAQ of their own and whether there
// is a default FAQ for the others.
func (c *Client) FAQs() (own int, hasDefault bool) { return c.faqs.Tenants() }
