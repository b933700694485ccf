package tests

import (
	"net/http"
	"strings"
	"testing"

	"sluice/producer"
	"sluice/shared/envelope"
)

// TestHotAnswers: a frequent first-turn question opening another dialog of
// the tenant is answered from the cache without the pipeline; the dialog
// keeps its turns; follow-ups and dialogs with history never are.
func TestHotAnswers(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 3})
	s.addConsumer(testConsumerConfig())
	p := s.addProducer(testProducerConfig())

	var first producer.DoneBody
	if code, _ := s.client(p.url, "shop-1", "alice").do(http.MethodPost, "/v1/chat", map[string]any{"text": "优惠券还能用吗？", "wait_ms": 20000}, &first); code != http.StatusOK || first.Source != envelope.SourceLLM {
		t.Fatalf("first ask: %d %+v", code, first)
	}
	calls := s.mock.Calls()

	bob := s.client(p.url, "shop-1", "bob")
	var hit producer.DoneBody
	if code, _ := bob.do(http.MethodPost, "/v1/chat", map[string]any{"text": "优惠券 还能用吗?", "wait_ms": 20000}, &hit); code != http.StatusOK || hit.Source != envelope.SourceCache || hit.Answer != first.Answer {
		t.Fatalf("same question, new dialog: %d %+v", code, hit)
	}
	if s.mock.Calls() != calls {
		t.Fatal("a cache hit called the LLM")
	}
	var hist producer.DialogBody
	bob.do(http.MethodGet, "/v1/dialogs/"+hit.DialogID, nil, &hist)
	if len(hist.Turns) != 2 || hist.Turns[1].Content != first.Answer {
		t.Fatalf("cached answer not in the dialog's history: %+v", hist.Turns)
	}
	// A follow-up in that dialog goes through the pipeline, with context.
	var follow producer.DoneBody
	bob.do(http.MethodPost, "/v1/chat", map[string]any{"text": "优惠券还能用吗？", "dialog_id": hit.DialogID, "wait_ms": 20000}, &follow)
	if follow.Source != envelope.SourceLLM {
		t.Fatalf("the same question in a dialog with history came from %q", follow.Source)
	}
	// A question holding personal data is neither kept nor served.
	var pd producer.DoneBody
	for range 2 {
		s.client(p.url, "shop-1", "erin").do(http.MethodPost, "/v1/chat", map[string]any{"text": "我的手机号13812345678还能用优惠券吗", "wait_ms": 20000}, &pd)
		if pd.Source == envelope.SourceCache {
			t.Fatal("a question with a phone number was answered from the cache")
		}
	}
	var ph producer.DialogBody
	s.client(p.url, "shop-1", "erin").do(http.MethodGet, "/v1/dialogs/"+pd.DialogID, nil, &ph)
	for _, turn := range ph.Turns {
		if strings.Contains(turn.Content, "13812345678") {
			t.Fatalf("history holds the raw phone number: %q", turn.Content)
		}
	}
	// Another tenant never sees the first tenant's answers.
	var other producer.DoneBody
	s.client(p.url, "shop-2", "bob").do(http.MethodPost, "/v1/chat", map[string]any{"text": "优惠券还能用吗？", "wait_ms": 20000}, &other)
	if other.Source == envelope.SourceCache {
		t.Fatal("a hot answer crossed tenants")
	}
}
