package consumer_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

// mockURL serves a mock LLM with cfg until the test ends and returns its base URL.
func mockURL(tb testing.TB, cfg mockllm.Config) string {
	tb.Helper()
	m, err := mockllm.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	tb.Cleanup(srv.Close)
	return srv.URL + "/v1"
}

// streamingLLM is an llm.Client on the mock at base, with mod applied.
func streamingLLM(tb testing.TB, base string, mod func(*llm.Config)) *llm.Client {
	tb.Helper()
	cfg := llm.DefaultConfig()
	cfg.BaseURL, cfg.RetryBackoff = base, time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	c, err := llm.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func tokenMock(tokens int) mockllm.Config {
	cfg := mockllm.Config{RetryAfter: time.Second, Tokens: tokens}
	return cfg
}

// streamOf reads the whole answer stream of req, checks the contract the
// readers rely on (deltas numbered from 0 after each reset, one done at the
// end, the deltas after the last reset make its answer) and returns the
// entries' kinds and the done body.
func streamOf(tb testing.TB, e *env, req envelope.Request) ([]string, envelope.Done, []store.StreamEntry) {
	tb.Helper()
	entries, err := e.store.ReadStream(context.Background(), store.DialogOf(&req), req.RequestID, "0", 10000, 0)
	if err != nil {
		tb.Fatal(err)
	}
	var kinds []string
	var text strings.Builder
	seq := 0
	for _, en := range entries {
		kinds = append(kinds, en.Kind)
		switch en.Kind {
		case store.StreamDelta:
			if en.Seq != seq {
				tb.Errorf("delta seq %d, want %d", en.Seq, seq)
			}
			seq++
			text.WriteString(en.Text)
		case store.StreamReset:
			seq = 0
			text.Reset()
		}
	}
	if len(entries) == 0 || entries[len(entries)-1].Kind != store.StreamDone {
		tb.Fatalf("stream does not end with done: %v", kinds)
	}
	var done envelope.Done
	if err := json.Unmarshal([]byte(entries[len(entries)-1].Text), &done); err != nil {
		tb.Fatal(err)
	}
	if done.Answer != text.String() {
		tb.Errorf("deltas after the last reset make %q, done's answer is %q", text.String(), done.Answer)
	}
	return kinds, done, entries
}

func count(kinds []string, kind string) int {
	n := 0
	for _, k := range kinds {
		if k == kind {
			n++
		}
	}
	return n
}

// ask sends req and returns its reply and its answer stream (see streamOf).
func (e *env) ask(tb testing.TB, req envelope.Request) (envelope.Reply, []string, envelope.Done) {
	tb.Helper()
	replies := e.reader(tb, repliesTopic)
	e.produceRequests(tb, req)
	reply := replies.replies(tb, 1)[req.RequestID][0]
	kinds, done, _ := streamOf(tb, e, req)
	return reply, kinds, done
}

func streamReq(n int, text string) envelope.Request {
	req := newRequest(n, text)
	req.Stream = true
	return req
}

func TestStreamPiecesMakeTheAnswer(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.StreamFlush = 0 // every piece its own write
	e.start(t, cfg, streamingLLM(t, mockURL(t, tokenMock(20)), nil))
	replies := e.reader(t, repliesTopic)
	req := streamReq(1, "When does my order ship?")
	e.produceRequests(t, req)
	reply := replies.replies(t, 1)[req.RequestID][0]
	kinds, done, _ := streamOf(t, e, req)
	if done.Answer != reply.Answer || done.Status != envelope.StatusDone || done.RequestID != req.RequestID {
		t.Errorf("done %+v, reply %+v", done, reply)
	}
	if n := count(kinds, store.StreamDelta); n < 10 {
		t.Errorf("%d deltas for 20 tokens written one by one: %v", n, kinds)
	}
	if count(kinds, store.StreamReset) != 0 {
		t.Errorf("a reset without a failure: %v", kinds)
	}
	if h := e.history(t, req); len(h) != 2 || h[1].Content != reply.Answer {
		t.Errorf("history %+v", h)
	}
}

func TestStreamMasksPiecesAcrossTokens(t *testing.T) {
	e := newEnv(t)
	e.start(t, testConfig(), streamingLLM(t, mockURL(t, tokenMock(0)), func(c *llm.Config) { c.MaskPrompt = false }))
	replies := e.reader(t, repliesTopic)
	// The mock quotes the question back: the number comes in 3-character tokens.
	req := streamReq(2, "call me on 13812345678 or mail a.b@shop.example.com")
	e.produceRequests(t, req)
	reply := replies.replies(t, 1)[req.RequestID][0]
	_, done, entries := streamOf(t, e, req)
	if !strings.Contains(done.Answer, "[phone]") || !strings.Contains(done.Answer, "[email]") || done.Answer != reply.Answer {
		t.Errorf("answer %q not masked like the reply %q", done.Answer, reply.Answer)
	}
	for _, en := range entries {
		if en.Kind == store.StreamDelta && (strings.ContainsAny(en.Text, "0123456789") || strings.Contains(en.Text, "@")) {
			t.Errorf("a piece carries personal data: %q", en.Text)
		}
	}
}

func TestStreamResetOnRetryAndFallback(t *testing.T) {
	e := newEnv(t)
	broken := tokenMock(10)
	broken.StreamBreakRate = 1 // every stream cut after 5 tokens
	llmc := streamingLLM(t, mockURL(t, broken), func(c *llm.Config) {
		c.Attempts = 2
		c.FallbackBaseURL = mockURL(t, tokenMock(10))
	})
	cfg := testConfig()
	cfg.StreamFlush = 0 // every piece written at once: each cut call's pieces are out
	e.start(t, cfg, llmc)
	reply, kinds, done := e.ask(t, streamReq(3, "refund please"))
	if reply.Source != envelope.SourceFallbackModel || done.Source != envelope.SourceFallbackModel {
		t.Errorf("source %q / %q, want the fallback model's", reply.Source, done.Source)
	}
	// Two cut calls of the primary, each reset, then the secondary's answer.
	if count(kinds, store.StreamReset) != 2 || kinds[len(kinds)-2] != store.StreamDelta {
		t.Errorf("entries %v: want the pieces of each cut call followed by a reset, then the answer", kinds)
	}
}

func TestStreamPiecesNotWrittenAreDroppedNotReset(t *testing.T) {
	e := newEnv(t)
	broken := tokenMock(10)
	broken.StreamBreakRate = 1
	cfg := testConfig()
	cfg.StreamFlush = 5 * time.Second // nothing but the first piece is written before the end
	e.start(t, cfg, streamingLLM(t, mockURL(t, broken), func(c *llm.Config) {
		c.Attempts = 2
		c.FallbackBaseURL = mockURL(t, tokenMock(10))
	}))
	// The first call's first piece went out: one reset; the second cut
	// call's pieces never left, so they need none.
	if _, kinds, _ := e.ask(t, streamReq(8, "refund please")); count(kinds, store.StreamReset) != 1 {
		t.Errorf("entries %v: want exactly one reset", kinds)
	}
}

func TestStreamCannedAfterPiecesIsReset(t *testing.T) {
	e := newEnv(t)
	broken := tokenMock(10)
	broken.StreamBreakRate = 1
	e.start(t, testConfig(), streamingLLM(t, mockURL(t, broken), func(c *llm.Config) { c.Attempts = 1 }))
	reply, kinds, done := e.ask(t, streamReq(4, "hello"))
	if reply.Source != envelope.SourceCanned || done.Answer != reply.Answer {
		t.Errorf("reply %+v, done %+v", reply, done)
	}
	if got := strings.Join(kinds[len(kinds)-3:], " "); got != "reset delta done" {
		t.Errorf("entries %v: want the cut call's pieces, a reset, the canned answer as one piece, done", kinds)
	}
}

func TestStreamRedeliveredFinishedIsOnePiece(t *testing.T) {
	e := newEnv(t)
	f := &fakeAnswerer{}
	e.start(t, testConfig(), f)
	req := streamReq(5, "again")
	reply := envelope.NewReply(&req, envelope.StatusDone, time.Now().UTC())
	reply.Answer, reply.Source = "the stored answer", envelope.SourceLLM
	if _, _, err := e.store.Complete(context.Background(), store.DialogOf(&req), reply, req.CreatedAt); err != nil {
		t.Fatal(err)
	}
	replies := e.reader(t, repliesTopic)
	e.produceRequests(t, req)
	replies.replies(t, 1)
	kinds, done, _ := streamOf(t, e, req)
	if strings.Join(kinds, " ") != "delta done" || done.Answer != "the stored answer" {
		t.Errorf("redelivered finished request streams %v %+v", kinds, done)
	}
	if len(f.Calls()) != 0 {
		t.Errorf("the model was asked again: %+v", f.Calls())
	}
}

func TestStreamNonStreamingAnswererAndNotAsked(t *testing.T) {
	e := newEnv(t)
	e.start(t, testConfig(), &fakeAnswerer{})
	replies := e.reader(t, repliesTopic)
	asked, plain := streamReq(6, "q1"), newRequest(7, "q2")
	e.produceRequests(t, asked, plain)
	replies.replies(t, 2)
	if kinds, done, _ := streamOf(t, e, asked); strings.Join(kinds, " ") != "delta done" || done.Answer != answerText(&asked) {
		t.Errorf("an Answerer that does not stream: %v %+v", kinds, done)
	}
	if entries, err := e.store.ReadStream(context.Background(), store.DialogOf(&plain), plain.RequestID, "0", 10, 0); err != nil || len(entries) != 0 {
		t.Errorf("a request that did not ask has a stream: %+v, %v", entries, err)
	}
}

func TestStreamConfigValidate(t *testing.T) {
	cfg := consumer.DefaultConfig()
	cfg.StreamFlush = -time.Second
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "stream-flush") {
		t.Errorf("negative stream flush: %v", err)
	}
}
