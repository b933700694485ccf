package mockllm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/shared/devstack/mockllm"
)

// instant is a mock that answers at once and never fails.
func instant() mockllm.Config { return mockllm.Config{RetryAfter: time.Second} }

func mustServe(tb testing.TB, cfg mockllm.Config) (*mockllm.Server, *prometheus.Registry, string) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	s, err := mockllm.New(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		tb.Fatalf("mockllm.New: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	tb.Cleanup(srv.Close)
	return s, reg, srv.URL
}

type msg struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int    `json:"index"`
		Message      msg    `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

type apiError struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	} `json:"error"`
}

func post(tb testing.TB, url string, body []byte) *http.Response {
	tb.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("POST %s: %v", url, err)
	}
	tb.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func chat(tb testing.TB, base string, model string, msgs ...msg) (*http.Response, []byte) {
	tb.Helper()
	b, _ := json.Marshal(map[string]any{"model": model, "messages": msgs})
	resp := post(tb, base+"/v1/chat/completions", b)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, body
}

func answer(tb testing.TB, base string, msgs ...msg) string {
	tb.Helper()
	resp, body := chat(tb, base, "", msgs...)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		tb.Fatalf("decode completion: %v: %s", err, body)
	}
	if len(c.Choices) != 1 {
		tb.Fatalf("%d choices, want 1: %s", len(c.Choices), body)
	}
	return c.Choices[0].Message.Content
}

// wantRequests fails the test unless sluice_mockllm_requests_total in reg
// holds exactly the series of want, counts by outcome.
func wantRequests(tb testing.TB, reg prometheus.Gatherer, want map[string]int) {
	tb.Helper()
	var b strings.Builder
	b.WriteString("# HELP sluice_mockllm_requests_total Chat completion calls answered by the mock LLM, by outcome.\n" +
		"# TYPE sluice_mockllm_requests_total counter\n")
	for outcome, n := range want {
		fmt.Fprintf(&b, "sluice_mockllm_requests_total{outcome=%q} %d\n", outcome, n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(b.String()), "sluice_mockllm_requests_total"); err != nil {
		tb.Error(err)
	}
}

func TestCompletionShape(t *testing.T) {
	_, reg, base := mustServe(t, instant())
	question := "Where is my parcel? I want to track it"
	resp, body := chat(t, base, "gpt-test",
		msg{"system", "You are a shop assistant."},
		msg{"user", question})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != "chat.completion" || !strings.HasPrefix(c.ID, "chatcmpl-") || c.Created == 0 {
		t.Errorf("envelope = id %q object %q created %d", c.ID, c.Object, c.Created)
	}
	if c.Model != "gpt-test" {
		t.Errorf("model = %q, want the requested gpt-test", c.Model)
	}
	if len(c.Choices) != 1 {
		t.Fatalf("choices = %d", len(c.Choices))
	}
	ch := c.Choices[0]
	if ch.Index != 0 || ch.FinishReason != "stop" || ch.Message.Role != "assistant" {
		t.Errorf("choice = %+v", ch)
	}
	if !strings.Contains(ch.Message.Content, `"`+question+`"`) {
		t.Errorf("answer %q does not quote the question", ch.Message.Content)
	}
	if !strings.Contains(ch.Message.Content, "ship within 24 hours") {
		t.Errorf("answer %q is not about shipping", ch.Message.Content)
	}
	if c.Usage.PromptTokens <= 0 || c.Usage.CompletionTokens <= 0 || c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens {
		t.Errorf("usage = %+v", c.Usage)
	}
	wantRequests(t, reg, map[string]int{"ok": 1})
}

func TestDefaultModel(t *testing.T) {
	cfg := instant()
	cfg.Model = "mock-x"
	_, _, base := mustServe(t, cfg)
	_, body := chat(t, base, "", msg{"user", "hi"})
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Model != "mock-x" {
		t.Errorf("model = %q, want the configured mock-x", c.Model)
	}

	resp, err := http.Get(base + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&models); err != nil || resp.StatusCode != 200 {
		t.Fatalf("models: %d %v", resp.StatusCode, err)
	}
	if len(models.Data) != 1 || models.Data[0].ID != "mock-x" {
		t.Errorf("models = %+v", models.Data)
	}
}

// TestOpenAIClient checks the mock with the client the consumer uses.
func TestOpenAIClient(t *testing.T) {
	_, _, base := mustServe(t, instant())
	c := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("test"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "sluice-mock",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("我要退款")},
	})
	if err != nil {
		t.Fatalf("openai client: %v", err)
	}
	if len(res.Choices) != 1 || !strings.Contains(res.Choices[0].Message.Content, "退款") {
		t.Errorf("choices = %+v", res.Choices)
	}
}

func TestAnswers(t *testing.T) {
	_, _, base := mustServe(t, instant())
	tests := []struct {
		name     string
		msgs     []msg
		contains []string
		excludes []string
	}{
		{
			name:     "ChineseQuotesQuestion",
			msgs:     []msg{{"user", "我的快递什么时候到？"}},
			contains: []string{"您好", "「我的快递什么时候到？」", "24 小时内发货"},
			excludes: []string{"Hello", "接着您之前问的"},
		},
		{
			name:     "ChineseRefersToEarlierTurn",
			msgs:     []msg{{"system", "客服"}, {"user", "优惠券怎么用"}, {"assistant", "结算页自动选择"}, {"user", "退款多久到账"}},
			contains: []string{"「退款多久到账」", "原路退回", "接着您之前问的「优惠券怎么用」"},
		},
		{
			name:     "EnglishRefersToEarlierTurn",
			msgs:     []msg{{"user", "Can I use a coupon?"}, {"assistant", "Yes."}, {"user", "And how do returns work?"}},
			contains: []string{`About "And how do returns work?"`, "return items within 7 days", `earlier question "Can I use a coupon?"`},
		},
		{
			name:     "OnlyTheLatestEarlierTurn",
			msgs:     []msg{{"user", "first question"}, {"user", "second question"}, {"user", "third question"}},
			contains: []string{`About "third question"`, `earlier question "second question"`},
			excludes: []string{"first question"},
		},
		{
			name:     "LastUserMessageWinsOverAssistant",
			msgs:     []msg{{"user", "invoice please"}, {"assistant", "refund"}},
			contains: []string{`About "invoice please"`, "e-invoice"},
			excludes: []string{"earlier question"},
		},
		{
			name:     "UnknownTopic",
			msgs:     []msg{{"user", "天气怎么样"}},
			contains: []string{"「天气怎么样」", "稍后会有专人跟进"},
		},
		{
			name:     "LongQuestionClipped",
			msgs:     []msg{{"user", strings.Repeat("会员", 20)}},
			contains: []string{"「" + strings.Repeat("会员", 12) + "…」", "积分"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := answer(t, base, tt.msgs...)
			for _, s := range tt.contains {
				if !strings.Contains(got, s) {
					t.Errorf("answer %q does not contain %q", got, s)
				}
			}
			for _, s := range tt.excludes {
				if strings.Contains(got, s) {
					t.Errorf("answer %q contains %q", got, s)
				}
			}
		})
	}
}

func wantAPIError(t *testing.T, resp *http.Response, body []byte, status int, typ string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d: %s", resp.StatusCode, status, body)
	}
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, body)
	}
	if e.Error.Type != typ || e.Error.Message == "" {
		t.Errorf("error = %+v, want type %q with a message", e.Error, typ)
	}
}

func TestErrorRate(t *testing.T) {
	cfg := instant()
	cfg.ErrorRate = 1
	s, reg, base := mustServe(t, cfg)
	for range 3 {
		resp, body := chat(t, base, "", msg{"user", "hi"})
		wantAPIError(t, resp, body, http.StatusInternalServerError, "server_error")
	}
	if s.Calls() != 3 {
		t.Errorf("calls %d, want 3", s.Calls())
	}
	wantRequests(t, reg, map[string]int{"error": 3})

	// The openai client sees an API error with the status.
	c := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("test"), option.WithMaxRetries(0))
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusInternalServerError {
		t.Errorf("openai client error = %v, want a 500 *openai.Error", err)
	}
}

func TestRateLimitRate(t *testing.T) {
	cfg := instant()
	cfg.RateLimitRate = 1
	cfg.ErrorRate = 0
	cfg.RetryAfter = 1500 * time.Millisecond
	_, reg, base := mustServe(t, cfg)
	resp, body := chat(t, base, "", msg{"user", "hi"})
	wantAPIError(t, resp, body, http.StatusTooManyRequests, "rate_limit_exceeded")
	if got := resp.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2 (1.5 s rounded up)", got)
	}
	wantRequests(t, reg, map[string]int{"rate_limited": 1})
}

func TestBadRequest(t *testing.T) {
	s, reg, base := mustServe(t, instant())
	for _, tt := range []struct {
		name string
		body string
	}{
		{"NotJSON", "hello"},
		{"Empty", ""},
		{"NoMessages", `{"model":"m","messages":[]}`},
		{"MessagesMissing", `{"model":"m"}`},
		{"MessagesWrongType", `{"messages":"hi"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, base+"/v1/chat/completions", []byte(tt.body))
			body, _ := io.ReadAll(resp.Body)
			wantAPIError(t, resp, body, http.StatusBadRequest, "invalid_request_error")
		})
	}
	if s.Calls() != 5 {
		t.Errorf("calls %d, want 5", s.Calls())
	}
	wantRequests(t, reg, map[string]int{"bad_request": 5})
}

func TestCalls(t *testing.T) {
	s, _, base := mustServe(t, instant())
	if s.Calls() != 0 {
		t.Fatalf("Calls before any request = %d", s.Calls())
	}
	answer(t, base, msg{"user", "a"})
	answer(t, base, msg{"user", "b"})
	// The unversioned route is the same endpoint.
	b, _ := json.Marshal(map[string]any{"messages": []msg{{"user", "c"}}})
	if resp := post(t, base+"/chat/completions", b); resp.StatusCode != http.StatusOK {
		t.Errorf("/chat/completions status %d", resp.StatusCode)
	}
	if resp, err := http.Get(base + "/v1/models"); err == nil {
		resp.Body.Close()
	}
	if got := s.Calls(); got != 3 {
		t.Errorf("Calls = %d, want 3 (models not counted)", got)
	}
	resp, err := http.Get(base + "/v1/chat/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET completions = %d, want 405", resp.StatusCode)
	}
}

// TestLatencyAbandonedOnCancel checks that a slow answer stops when the caller
// goes away: srv.Close waits for every handler, so it would hang otherwise.
func TestLatencyAbandonedOnCancel(t *testing.T) {
	cfg := instant()
	cfg.Latency = time.Hour
	s, err := mockllm.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 1)
	h := s.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		h.ServeHTTP(w, r)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		b, _ := json.Marshal(map[string]any{"messages": []msg{{"user", "hi"}}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/chat/completions", bytes.NewReader(b))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client error = %v, want context.Canceled", err)
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("handler still waiting out its latency after the client left")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := mockllm.DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig invalid: %v", err)
	}
	tests := []struct {
		name string
		edit func(c *mockllm.Config)
		msg  string
	}{
		{"NegativeLatency", func(c *mockllm.Config) { c.Latency = -time.Millisecond }, "latency"},
		{"NegativeJitter", func(c *mockllm.Config) { c.Jitter = -time.Millisecond }, "SLUICE_MOCK_JITTER"},
		{"ErrorRateBelow0", func(c *mockllm.Config) { c.ErrorRate = -0.1 }, "error rate"},
		{"ErrorRateAbove1", func(c *mockllm.Config) { c.ErrorRate = 1.01 }, "error rate"},
		{"RateLimitBelow0", func(c *mockllm.Config) { c.RateLimitRate = -1 }, "rate-limit rate"},
		{"RateLimitAbove1", func(c *mockllm.Config) { c.RateLimitRate = 2 }, "rate-limit rate"},
		{"NegativeRetryAfter", func(c *mockllm.Config) { c.RetryAfter = -time.Second }, "SLUICE_MOCK_RETRY_AFTER"},
		{"NegativeLatencyP99", func(c *mockllm.Config) { c.LatencyP99 = -time.Second }, "SLUICE_MOCK_LATENCY_P99"},
		{"P99WithoutMedian", func(c *mockllm.Config) { c.Latency, c.LatencyP99 = 0, time.Second }, "latency p99"},
		{"MalformedAbove1", func(c *mockllm.Config) { c.MalformedRate = 1.5 }, "malformed rate"},
		{"SlowBelow0", func(c *mockllm.Config) { c.SlowRate = -0.5 }, "slow rate"},
		{"NegativeSlowFirstByte", func(c *mockllm.Config) { c.SlowFirstByte = -time.Second }, "SLUICE_MOCK_SLOW_FIRST_BYTE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mockllm.DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Validate = %v, want an error about %s", err, tt.msg)
			}
			if s, err := mockllm.New(c, slog.New(slog.DiscardHandler), nil); err == nil || s != nil {
				t.Errorf("New = %v, %v; want nil and an error", s, err)
			}
		})
	}
	t.Run("Bounds", func(t *testing.T) {
		c := mockllm.DefaultConfig()
		c.ErrorRate, c.RateLimitRate = 1, 0
		if err := c.Validate(); err != nil {
			t.Errorf("rates 1 and 0 refused: %v", err)
		}
	})
	t.Run("RegisterTwice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := mockllm.New(instant(), nil, reg); err != nil {
			t.Fatal(err)
		}
		if _, err := mockllm.New(instant(), nil, reg); err == nil {
			t.Error("second New on the same registerer succeeded, want a registration error")
		}
	})
}
