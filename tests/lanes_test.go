package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/envelope"
)

// produceBulk puts n requests of dialogs of their own on the bulk topic,
// straight to Kafka as an order bot does, each with a deadline of ttl;
// their replies go to any partition of the replies topic.
func (s *stack) produceBulk(t *testing.T, n int, ttl time.Duration) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	now := time.Now().UTC()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		req := envelope.Request{V: envelope.Version, RequestID: fmt.Sprintf("backlog-%d-%d", now.UnixNano(), i),
			Tenant: "shop-1", User: "order-bot", DialogID: newDialog(), Text: fmt.Sprintf("order %d: shipped?", i),
			CreatedAt: now, Deadline: now.Add(ttl), Reply: envelope.ReplyTo{Topic: s.bus.RepliesTopic, Partition: -1}}
		v, err := json.Marshal(&req)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: s.bus.BulkTopic, Key: []byte(req.Key()), Value: v})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestBulkDeadlineOutlastsBacklog: a bot's question with the bulk lane's
// 10-minute deadline, asked behind a bulk backlog that takes longer than
// the interactive lane's TTL to drain, is answered, not expired. (Time is
// compressed: a 1 s interactive TTL, a 50 ms LLM, 4 slots: 300 records
// ahead take about 4 s.)
func TestBulkDeadlineOutlastsBacklog(t *testing.T) {
	const backlog, slots, llmLatency = 300, 4, 50 * time.Millisecond
	s := newStack(t, backends()[0], stackOptions{partitions: 3, mock: mockllmConfig(llmLatency, 0)})
	pcfg := testProducerConfig()
	pcfg.RequestTTL = time.Second
	p := s.addProducer(pcfg)
	if ttl := producer.DefaultConfig().BulkRequestTTL; ttl < 10*time.Minute {
		t.Fatalf("the default bulk TTL is %v, want at least 10m", ttl)
	}
	s.produceBulk(t, backlog, 10*time.Minute)

	tok, err := auth.MintLane(testSecret, "shop-1", "order-bot", envelope.LaneBulk, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bot := &client{t: t, base: p.url, token: tok, tenant: "shop-1", user: "order-bot"}
	var q producer.QueuedBody
	if code, _ := bot.do(http.MethodPost, "/v1/chat", map[string]any{"text": "order 4711: where is it?", "mode": "async"}, &q); code != http.StatusAccepted {
		t.Fatalf("bulk question behind the backlog: %d %+v", code, q)
	}
	asked := time.Now()
	ccfg := testConsumerConfig()
	ccfg.InFlight = slots
	s.addConsumer(ccfg)

	var done producer.DoneBody
	for done.Status == "" {
		code, _ := bot.do(http.MethodGet, q.PollURL+"?wait_ms=20000", nil, &done)
		switch {
		case code == http.StatusAccepted:
			done = producer.DoneBody{}
		case code != http.StatusOK:
			t.Fatalf("poll: %d", code)
		}
		if time.Since(asked) > time.Minute {
			t.Fatal("not answered within a minute")
		}
	}
	took := time.Since(asked)
	if done.Status != envelope.StatusDone || done.Source != envelope.SourceLLM || done.RequestID != q.RequestID {
		t.Fatalf("bulk question behind the backlog: %+v, want done by the LLM", done)
	}
	// The premise: it waited longer than an interactive question may.
	if took <= pcfg.RequestTTL {
		t.Fatalf("answered in %v, within the interactive TTL %v: the backlog was not ahead of it", took, pcfg.RequestTTL)
	}
	t.Logf("answered after %v behind %d bulk records", took.Round(time.Millisecond), backlog)
}

// TestBulkBacklogDoesNotDelayShoppers: with a bulk backlog that takes the
// consumer many seconds to drain, shoppers' wait-mode questions are
// answered within a bound close to the LLM's latency, while the backlog
// is still there.
func TestBulkBacklogDoesNotDelayShoppers(t *testing.T) {
	const backlog, slots, llmLatency = 2000, 8, 50 * time.Millisecond // about 12 s to drain
	const bound, shoppers = 2 * time.Second, 10
	s := newStack(t, backends()[0], stackOptions{partitions: 3, mock: mockllmConfig(llmLatency, 0)})
	p := s.addProducer(testProducerConfig())
	s.produceBulk(t, backlog, 10*time.Minute)
	ccfg := testConsumerConfig()
	ccfg.InFlight = slots
	s.addConsumer(ccfg)
	// The backlog is being answered: the budget is full of bulk records.
	for s.mock.Calls() < 2*slots {
		time.Sleep(10 * time.Millisecond) // a counter has no event to await
	}
	shop := s.client(p.url, "shop-1", "alice")
	for i := range shoppers {
		start := time.Now()
		var done producer.DoneBody
		code, _ := shop.do(http.MethodPost, "/v1/chat", map[string]any{"text": fmt.Sprintf("优惠券还能用吗？ #%d", i), "wait_ms": 10000}, &done)
		took := time.Since(start)
		if code != http.StatusOK || done.Status != envelope.StatusDone {
			t.Fatalf("shopper %d: %d %+v", i, code, done)
		}
		if took > bound {
			t.Errorf("shopper %d answered in %v behind the bulk backlog, want within %v", i, took.Round(time.Millisecond), bound)
		}
	}
	if calls := s.mock.Calls(); calls >= backlog {
		t.Fatalf("the backlog was drained (%d LLM calls) before the shoppers were answered: nothing was ahead of them", calls)
	}
}
