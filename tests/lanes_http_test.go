package tests

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/envelope"
)

// TestBulkLaneOverHTTP: a bot whose token's claim lane is bulk asks over
// HTTP; its questions go on the bulk topic, are answered through the
// consumers (never from the hot-answer cache), in wait mode and through a
// poll, and it cannot ask in the interactive lane.
func TestBulkLaneOverHTTP(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 3})
	s.addConsumer(testConsumerConfig())
	p := s.addProducer(testProducerConfig())

	// A shopper's answer is in the hot-answer cache.
	const question = "优惠券还能用吗？"
	var first producer.DoneBody
	if code, _ := s.client(p.url, "shop-1", "alice").do(http.MethodPost, "/v1/chat", map[string]any{"text": question, "wait_ms": 20000}, &first); code != http.StatusOK || first.Source != envelope.SourceLLM {
		t.Fatalf("shopper: %d %+v", code, first)
	}

	tok, err := auth.MintLane(testSecret, "shop-1", "order-bot", envelope.LaneBulk, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bot := &client{t: t, base: p.url, token: tok, tenant: "shop-1", user: "order-bot"}
	calls := s.mock.Calls()
	var waited producer.DoneBody
	if code, _ := bot.do(http.MethodPost, "/v1/chat", map[string]any{"text": question, "wait_ms": 20000}, &waited); code != http.StatusOK ||
		waited.Status != envelope.StatusDone || waited.Source != envelope.SourceLLM {
		t.Fatalf("bulk question in wait mode: %d %+v, want answered by the LLM, not the cache", code, waited)
	}
	if s.mock.Calls() == calls {
		t.Fatal("the bulk question did not reach the LLM")
	}

	var q producer.QueuedBody
	if code, _ := bot.do(http.MethodPost, "/v1/chat", map[string]any{"text": "order 4711: shipped?", "mode": "async", "deadline_ms": 3600000}, &q); code != http.StatusAccepted {
		t.Fatalf("bulk question in async mode: %d %+v", code, q)
	}
	var polled producer.DoneBody
	if code, _ := bot.do(http.MethodGet, q.PollURL+"?wait_ms=20000", nil, &polled); code != http.StatusOK || polled.Status != envelope.StatusDone || polled.RequestID != q.RequestID {
		t.Fatalf("poll of the bulk question: %d %+v", code, polled)
	}

	if code, _ := bot.do(http.MethodPost, "/v1/chat", map[string]any{"text": question, "lane": "interactive", "mode": "async"}, nil); code != http.StatusForbidden {
		t.Fatalf("bulk token asking in the interactive lane: %d, want 403", code)
	}

	// Both bot questions are on the bulk topic, with the bulk deadline.
	reqs := requestsOn(t, s.brokers, s.bus.BulkTopic, 2)
	for _, id := range []string{waited.RequestID, q.RequestID} {
		r, ok := reqs[id]
		if !ok {
			t.Fatalf("request %s not on %s (found %d)", id, s.bus.BulkTopic, len(reqs))
		}
		if ttl := r.Deadline.Sub(r.CreatedAt); ttl != producer.DefaultConfig().BulkRequestTTL {
			t.Errorf("request %s: deadline created_at + %v, want the bulk TTL %v", id, ttl, producer.DefaultConfig().BulkRequestTTL)
		}
	}
}

// requestsOn reads topic from the start until it has n requests, and
// returns them by request id.
func requestsOn(t *testing.T, brokers []string, topic string, n int) map[string]envelope.Request {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]envelope.Request{}
	for len(out) < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			req, err := envelope.DecodeRequest(r.Value)
			if err != nil {
				t.Errorf("undecodable request at %d/%d: %v", r.Partition, r.Offset, err)
				return
			}
			out[req.RequestID] = req
		})
	}
	return out
}
