// Package llm answers chat requests with an OpenAI-compatible Chat
// Completions endpoint (OpenAI, DeepSeek, vLLM, Ollama, Sluice's mock) through
// the official openai-go SDK.
//
// Metrics (on the registerer given to New):
//
//	sluice_llm_calls_total{outcome}           ok, error, timeout
//	sluice_llm_call_duration_seconds{outcome} latency of one call
//	sluice_llm_answers_total{source}          answers by source (llm, canned)
package llm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"

	"sluice/shared/envelope"
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
	// SystemPrompt starts every conversation.
	SystemPrompt string
	// CannedAnswer is returned, with handoff, when no model answers.
	CannedAnswer string
}

// DefaultConfig returns the defaults: the mock's model name, 10 s per call.
func DefaultConfig() Config {
	return Config{
		Model:        "sluice-mock",
		MaxTokens:    512,
		Temperature:  0.3,
		Timeout:      10 * time.Second,
		SystemPrompt: "You are the customer service assistant of an online shop. Answer briefly and politely, in the customer's language.",
		CannedAnswer: "当前咨询人数较多，已为您转接人工客服，请稍候。 We are busy right now; a human agent will contact you shortly.",
	}
}

// Validate reports the first missing or malformed setting.
func (c Config) Validate() error {
	switch {
	case c.BaseURL == "":
		return errors.New("LLM base URL is required")
	case !strings.HasPrefix(c.BaseURL, "http://") && !strings.HasPrefix(c.BaseURL, "https://"):
		return fmt.Errorf("LLM base URL %q must start with http:// or https://", c.BaseURL)
	case c.Model == "":
		return errors.New("LLM model is required")
	case c.Timeout <= 0:
		return errors.New("LLM timeout must be positive")
	case c.MaxTokens < 0:
		return errors.New("LLM max tokens must not be negative")
	}
	return nil
}

// Answer is what the pipeline returns for one request.
type Answer struct {
	Text    string
	Source  string // envelope.Source*
	Handoff bool
	LLMTime time.Duration
}

// Client calls the model.
type Client struct {
	cfg      Config
	log      *slog.Logger
	api      openai.Client
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	answers  *prometheus.CounterVec
}

// New returns a client for cfg. It returns an error when cfg is invalid or
// the metrics cannot be registered on reg.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg: cfg,
		log: log,
		api: openai.NewClient(
			option.WithBaseURL(strings.TrimSuffix(cfg.BaseURL, "/")+"/"),
			option.WithAPIKey(cfg.APIKey),
			option.WithMaxRetries(0), // retries are ours: bounded by the request's deadline
			option.WithHTTPClient(&http.Client{Transport: &http.Transport{
				MaxIdleConnsPerHost: 512,
				IdleConnTimeout:     90 * time.Second,
			}}),
		),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_llm_calls_total", Help: "LLM calls by outcome.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sluice_llm_call_duration_seconds", Help: "Latency of one LLM call.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_llm_answers_total", Help: "Answers by source.",
		}, []string{"source"}),
	}
	if reg != nil {
		for _, m := range []prometheus.Collector{c.calls, c.duration, c.answers} {
			if err := reg.Register(m); err != nil {
				return nil, fmt.Errorf("register llm metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Answer answers req given the dialog's history, oldest first. It never
// returns an error for a failing model: it answers with the canned handoff
// text instead. It returns ctx's error when ctx ends first.
func (c *Client) Answer(ctx context.Context, req *envelope.Request, history []envelope.Turn) (Answer, error) {
	msgs := make([]openai.ChatCompletionMessageParamUnion, 0, len(history)+2)
	if c.cfg.SystemPrompt != "" {
		msgs = append(msgs, openai.SystemMessage(c.cfg.SystemPrompt))
	}
	for _, t := range history {
		switch t.Role {
		case envelope.RoleUser:
			msgs = append(msgs, openai.UserMessage(t.Content))
		case envelope.RoleAssistant:
			msgs = append(msgs, openai.AssistantMessage(t.Content))
		}
	}
	msgs = append(msgs, openai.UserMessage(req.Text))

	start := time.Now()
	text, err := c.call(ctx, req.Deadline, msgs)
	took := time.Since(start)
	if err == nil {
		c.answers.WithLabelValues(envelope.SourceLLM).Inc()
		return Answer{Text: text, Source: envelope.SourceLLM, LLMTime: took}, nil
	}
	if ctx.Err() != nil {
		return Answer{}, ctx.Err()
	}
	c.log.Warn("llm call failed, answering canned", "request_id", req.RequestID, "err", err)
	c.answers.WithLabelValues(envelope.SourceCanned).Inc()
	return Answer{Text: c.cfg.CannedAnswer, Source: envelope.SourceCanned, Handoff: true, LLMTime: took}, nil
}

func (c *Client) call(ctx context.Context, deadline time.Time, msgs []openai.ChatCompletionMessageParamUnion) (string, error) {
	timeout := c.cfg.Timeout
	if left := time.Until(deadline); left < timeout {
		timeout = left
	}
	if timeout <= 0 {
		return "", context.DeadlineExceeded
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	params := openai.ChatCompletionNewParams{Model: c.cfg.Model, Messages: msgs}
	if c.cfg.MaxTokens > 0 {
		params.MaxTokens = openai.Int(c.cfg.MaxTokens)
	}
	if c.cfg.Temperature > 0 {
		params.Temperature = openai.Float(c.cfg.Temperature)
	}
	start := time.Now()
	resp, err := c.api.Chat.Completions.New(ctx, params)
	outcome := "ok"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		outcome = "timeout"
	case err != nil:
		outcome = "error"
	case len(resp.Choices) == 0 || resp.Choices[0].Message.Content == "":
		outcome, err = "error", errors.New("empty completion")
	}
	c.calls.WithLabelValues(outcome).Inc()
	c.duration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		return "", fmt.Errorf("chat completion: %w", err)
	}
	return resp.Choices[0].Message.Content, nil
}
