package tests

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"sluice/producer"
	"sluice/shared/envelope"
)

// TestTwoTurnDialog asks two turns of one dialog over HTTP and checks both
// answers, the four history turns and the two reply records, on every backend.
func TestTwoTurnDialog(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			s := newStack(t, b, stackOptions{})
			s.addConsumer(testConsumerConfig())
			p := s.addProducer(testProducerConfig())
			twoTurns(t, s, p)
		})
	}
}

func twoTurns(t *testing.T, s *stack, p *runningProducer) {
	c := s.client(p.url, "shop-1", "alice")
	dialog := newDialog()

	var first producer.DoneBody
	code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "优惠券还能用吗", "dialog_id": dialog, "wait_ms": 20000}, &first)
	if code != http.StatusOK || first.Status != envelope.StatusDone || first.Source != envelope.SourceLLM {
		t.Fatalf("turn 1: %d %+v", code, first)
	}
	if !strings.Contains(first.Answer, "优惠券") || first.DialogID != dialog {
		t.Fatalf("turn 1 answer does not address the question: %+v", first)
	}

	var second producer.DoneBody
	code, _ = c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "那什么时候发货？", "dialog_id": dialog, "wait_ms": 20000}, &second)
	if code != http.StatusOK || second.Status != envelope.StatusDone {
		t.Fatalf("turn 2: %d %+v", code, second)
	}
	// The mock refers to the previous user turn it was sent: the second
	// answer proves the first turn was in the LLM's context.
	if !strings.Contains(second.Answer, "发货") || !strings.Contains(second.Answer, "优惠券还能用吗") {
		t.Fatalf("turn 2 answer lacks the first turn's context: %q", second.Answer)
	}

	var hist producer.DialogBody
	if code, _ := c.do(http.MethodGet, "/v1/dialogs/"+dialog, nil, &hist); code != http.StatusOK {
		t.Fatalf("history: %d", code)
	}
	roles := make([]string, len(hist.Turns))
	for i, turn := range hist.Turns {
		roles[i] = turn.Role
	}
	if !slices.Equal(roles, []string{"user", "assistant", "user", "assistant"}) {
		t.Fatalf("history roles %v, want user/assistant twice", roles)
	}
	if hist.Turns[0].Content != "优惠券还能用吗" || hist.Turns[1].Content != first.Answer ||
		hist.Turns[2].RequestID != second.RequestID || hist.Turns[3].Content != second.Answer {
		t.Fatalf("history does not hold the dialog: %+v", hist.Turns)
	}

	// Another user naming the same dialog id sees an empty dialog of their own.
	var other producer.DialogBody
	s.client(p.url, "shop-1", "mallory").do(http.MethodGet, "/v1/dialogs/"+dialog, nil, &other)
	if len(other.Turns) != 0 {
		t.Fatalf("another user sees %d turns of alice's dialog", len(other.Turns))
	}

	counts := replyCounts(t, s.brokers, s.bus.RepliesTopic, []string{first.RequestID, second.RequestID}, 30*time.Second)
	if counts[first.RequestID] != 1 || counts[second.RequestID] != 1 || len(counts) != 2 {
		t.Fatalf("reply records %v, want exactly one per request", counts)
	}
}

// TestAsyncPoll accepts a request in async mode and long-polls its poll_url.
func TestAsyncPoll(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 3})
	s.addConsumer(testConsumerConfig())
	p := s.addProducer(testProducerConfig())
	c := s.client(p.url, "shop-1", "bob")

	var q producer.QueuedBody
	code, h := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "can I still return it?", "mode": "async"}, &q)
	if code != http.StatusAccepted || q.Status != envelope.StatusQueued || !envelope.ValidDialogID(q.DialogID) {
		t.Fatalf("async: %d %+v", code, q)
	}
	if h.Get("Location") != q.PollURL || !strings.HasPrefix(q.PollURL, "/v1/chat/"+q.DialogID+"/") {
		t.Fatalf("Location %q, poll_url %q", h.Get("Location"), q.PollURL)
	}
	var done producer.DoneBody
	if code, _ := c.do(http.MethodGet, q.PollURL+"?wait_ms=20000", nil, &done); code != http.StatusOK || done.Status != envelope.StatusDone || done.RequestID != q.RequestID {
		t.Fatalf("poll: %d %+v", code, done)
	}
	if !strings.Contains(done.Answer, "return") {
		t.Fatalf("answer %q does not address the question", done.Answer)
	}
	// Someone else's poll of the same URL is indistinguishable from unknown.
	if code, _ := s.client(p.url, "shop-1", "eve").do(http.MethodGet, q.PollURL, nil, nil); code != http.StatusNotFound {
		t.Fatalf("another user's poll: %d, want 404", code)
	}
	if code, _ := s.client(p.url, "shop-2", "bob").do(http.MethodGet, q.PollURL, nil, nil); code != http.StatusNotFound {
		t.Fatalf("another tenant's poll: %d, want 404", code)
	}
}
