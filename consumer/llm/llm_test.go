package llm_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/consumer/llm"
	"sluice/shared/envelope"
	"sluice/shared/mockllm"
)

func mustClient(t *testing.T, mock mockllm.Config) (*llm.Client, *mockllm.Server) {
	t.Helper()
	m, err := mockllm.New(mock, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(m.Handler())
	t.Cleanup(hs.Close)
	cfg := llm.DefaultConfig()
	cfg.BaseURL = hs.URL + "/v1"
	c, err := llm.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return c, m
}

func request(text string, deadline time.Duration) *envelope.Request {
	now := time.Now()
	return &envelope.Request{V: 1, RequestID: "r1", Tenant: "t", User: "u", DialogID: strings.Repeat("a", 32),
		Text: text, CreatedAt: now, Deadline: now.Add(deadline)}
}

func TestAnswerSendsHistory(t *testing.T) {
	c, _ := mustClient(t, mockllm.Config{})
	hist := []envelope.Turn{{Role: "user", Content: "优惠券还能用吗"}, {Role: "assistant", Content: "可以"}}
	a, err := c.Answer(context.Background(), request("什么时候发货", 10*time.Second), hist)
	if err != nil {
		t.Fatal(err)
	}
	if a.Source != envelope.SourceLLM || a.Handoff || !strings.Contains(a.Text, "优惠券还能用吗") {
		t.Fatalf("answer %+v does not show the history reached the model", a)
	}
}

func TestFailingModelAnswersCanned(t *testing.T) {
	c, m := mustClient(t, mockllm.Config{ErrorRate: 1})
	a, err := c.Answer(context.Background(), request("hi", 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Source != envelope.SourceCanned || !a.Handoff || a.Text == "" || m.Calls() != 1 {
		t.Fatalf("answer %+v after %d calls, want canned with handoff after 1", a, m.Calls())
	}
}

func TestCallBoundedByDeadline(t *testing.T) {
	c, _ := mustClient(t, mockllm.Config{Latency: 5 * time.Second})
	start := time.Now()
	a, err := c.Answer(context.Background(), request("hi", 200*time.Millisecond), nil)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second || a.Source != envelope.SourceCanned {
		t.Fatalf("answer %+v after %v, want canned soon after the 200ms deadline", a, took)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []llm.Config{
		{},
		{BaseURL: "ftp://x", Model: "m", Timeout: time.Second},
		{BaseURL: "http://x", Timeout: time.Second},
		{BaseURL: "http://x", Model: "m"},
	} {
		if _, err := llm.New(cfg, slog.New(slog.DiscardHandler), nil); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", cfg)
		}
	}
}
