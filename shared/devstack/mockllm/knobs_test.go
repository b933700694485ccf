package mockllm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func complete(ctx context.Context, base string) (*openai.ChatCompletion, error) {
	c := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("test"), option.WithMaxRetries(0))
	return c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("什么时候发货")},
	})
}

func TestMalformedRate(t *testing.T) {
	cfg := instant()
	cfg.MalformedRate = 1
	_, reg, base := mustServe(t, cfg)
	resp, body := chat(t, base, "", msg{"user", "hi"})
	if resp.StatusCode != http.StatusOK || json.Valid(body) {
		t.Errorf("status %d, body %s: want 200 with invalid JSON", resp.StatusCode, body)
	}
	if _, err := complete(context.Background(), base); err == nil {
		t.Error("openai client accepted a malformed body")
	}
	wantRequests(t, reg, map[string]int{"malformed": 2})
}

// TestSlowFirstByte checks that headers come at once and the body only
// after the stall: a client whose deadline ends in between fails.
func TestSlowFirstByte(t *testing.T) {
	cfg := instant()
	cfg.SlowRate, cfg.SlowFirstByte = 1, time.Hour
	_, _, base := mustServe(t, cfg)

	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"messages":[{"role":"user","content":"hi"}]}`
	_, _ = conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
		itoa(len(body)) + "\r\n\r\n" + body))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("headers did not come at once: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := resp.Body.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("body byte arrived before the stall ended (n=%d, err=%v)", n, err)
	}
	conn.Close()

	// The client's deadline ends the hour's stall.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := complete(ctx, base); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("openai client: %v, want its context's deadline", err)
	}

	// With a short stall the answer arrives, counted as slow.
	cfg.SlowFirstByte = 10 * time.Millisecond
	_, reg, base := mustServe(t, cfg)
	if c, err := complete(context.Background(), base); err != nil || len(c.Choices) != 1 {
		t.Fatalf("slow answer: %v", err)
	}
	wantRequests(t, reg, map[string]int{"slow": 1})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestLatencyP99Answers(t *testing.T) {
	cfg := instant()
	cfg.Latency, cfg.LatencyP99 = time.Millisecond, 5*time.Millisecond
	_, _, base := mustServe(t, cfg)
	if _, err := complete(context.Background(), base); err != nil {
		t.Fatal(err)
	}
}
