package mockllm_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/shared/devstack/mockllm"
)

// streamed asks the mock at base with stream on, through the openai client,
// and returns the content of each chunk and when it came.
func streamed(t *testing.T, base, question string) ([]string, []time.Time, openai.ChatCompletionAccumulator, error) {
	t.Helper()
	c := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("test"), option.WithMaxRetries(0))
	st := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(question)},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	defer st.Close()
	var pieces []string
	var at []time.Time
	var acc openai.ChatCompletionAccumulator
	for st.Next() {
		ch := st.Current()
		acc.AddChunk(ch)
		if len(ch.Choices) > 0 && ch.Choices[0].Delta.Content != "" {
			pieces = append(pieces, ch.Choices[0].Delta.Content)
			at = append(at, time.Now())
		}
	}
	return pieces, at, acc, st.Err()
}

func TestStreamSameAnswerAsWhole(t *testing.T) {
	_, reg, base := mustServe(t, instant())
	whole := answer(t, base, msg{"user", "什么时候发货"})
	pieces, _, acc, err := streamed(t, base, "什么时候发货")
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if got := strings.Join(pieces, ""); got != whole {
		t.Errorf("streamed pieces make %q, the whole answer is %q", got, whole)
	}
	if len(pieces) < 2 {
		t.Errorf("answer came in %d piece(s), want several", len(pieces))
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != whole || acc.Choices[0].FinishReason != "stop" || acc.Usage.CompletionTokens == 0 {
		t.Errorf("accumulated completion %+v", acc.ChatCompletion)
	}
	wantRequests(t, reg, map[string]int{"ok": 1, "streamed": 1})
}

func TestStreamTokensAndDelay(t *testing.T) {
	cfg := instant()
	cfg.Tokens, cfg.TokenDelay = 40, 5*time.Millisecond
	_, _, base := mustServe(t, cfg)
	pieces, at, _, err := streamed(t, base, "hi")
	if err != nil {
		t.Fatal(err)
	}
	if len(pieces) != 40 {
		t.Fatalf("%d tokens, want 40", len(pieces))
	}
	if took := at[len(at)-1].Sub(at[0]); took < 39*cfg.TokenDelay {
		t.Errorf("40 tokens 5ms apart came within %v", took)
	}
	// The whole answer is the same 40 tokens.
	if whole := answer(t, base, msg{"user", "hi"}); whole != strings.Join(pieces, "") {
		t.Errorf("whole answer %q differs from the streamed %q", whole, strings.Join(pieces, ""))
	}
}

func TestStreamBreak(t *testing.T) {
	cfg := instant()
	cfg.StreamBreakRate, cfg.Tokens = 1, 10
	_, reg, base := mustServe(t, cfg)
	pieces, _, _, err := streamed(t, base, "hi")
	if err == nil {
		t.Fatalf("a cut stream ended without error after %d pieces", len(pieces))
	}
	if len(pieces) != 5 {
		t.Errorf("cut after %d tokens, want 5 of 10", len(pieces))
	}
	wantRequests(t, reg, map[string]int{"stream_broken": 1})
}

func TestStreamErrorsBeforeFirstChunk(t *testing.T) {
	cfg := instant()
	cfg.ErrorRate = 1
	_, _, base := mustServe(t, cfg)
	if pieces, _, _, err := streamed(t, base, "hi"); err == nil || len(pieces) != 0 {
		t.Errorf("error rate 1: %d pieces, err %v; want an error and none", len(pieces), err)
	}
	cfg = instant()
	cfg.MalformedRate = 1
	_, _, base = mustServe(t, cfg)
	if _, _, _, err := streamed(t, base, "hi"); err == nil {
		t.Error("a malformed stream was accepted")
	}
}

func TestTokens(t *testing.T) {
	for _, tt := range []struct {
		answer string
		n      int
	}{{"您好！关于「发货」", 0}, {"abc", 40}, {strings.Repeat("x", 100), 7}, {"", 0}} {
		toks := mockllm.Tokens(tt.answer, tt.n)
		if tt.n > 0 && len(toks) != tt.n {
			t.Errorf("Tokens(%q, %d) gave %d", tt.answer, tt.n, len(toks))
		}
		if joined := strings.Join(toks, ""); tt.n == 0 && joined != tt.answer || !strings.HasPrefix(joined, tt.answer) {
			t.Errorf("Tokens(%q, %d) = %q", tt.answer, tt.n, toks)
		}
	}
}
