package tests

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"sluice/producer"
	"sluice/shared/envelope"
)

// TestTwoProducers runs two ingress replicas: they read disjoint shares of
// the replies topic, each answers its own waiters, a poll on either replica
// is answered as soon as the result is stored, also after the accepting
// replica is gone.
func TestTwoProducers(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 6, mock: mockllmConfig(300*time.Millisecond, 0)})
	s.addConsumer(testConsumerConfig())
	p1 := s.addProducer(testProducerConfig())
	p2 := s.addProducer(testProducerConfig())

	// Disjoint shares covering the topic, once the group settled.
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, b := p1.srv.ReplyPartitions(), p2.srv.ReplyPartitions()
		all := slices.Sorted(slices.Values(append(slices.Clone(a), b...)))
		if len(a) > 0 && len(b) > 0 && slices.Equal(all, []int32{0, 1, 2, 3, 4, 5}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reply partitions not shared: p1 %v, p2 %v", a, b)
		}
		time.Sleep(50 * time.Millisecond) // group assignment has no event to await here
	}

	for i, p := range []*runningProducer{p1, p2} {
		var done producer.DoneBody
		if code, _ := s.client(p.url, "shop-1", "u").do(http.MethodPost, "/v1/chat", map[string]any{"text": "发货了吗", "wait_ms": 20000}, &done); code != http.StatusOK || done.Status != envelope.StatusDone {
			t.Fatalf("wait mode on replica %d: %d %+v", i+1, code, done)
		}
	}

	// Accepted on p1, polled on p2: woken by the store's notification, not
	// at the end of the poll's wait. The wait is the longest allowed; a
	// poll that was not woken returns only when it ran out, so answered
	// before then means woken.
	c1, c2 := s.client(p1.url, "shop-1", "u"), s.client(p2.url, "shop-1", "u")
	var q producer.QueuedBody
	if code, _ := c1.do(http.MethodPost, "/v1/chat", map[string]any{"text": "coupon?", "mode": "async"}, &q); code != http.StatusAccepted {
		t.Fatalf("async on p1: %d", code)
	}
	wait := testProducerConfig().WaitMax
	start := time.Now()
	var done producer.DoneBody
	if code, _ := c2.do(http.MethodGet, fmt.Sprintf("%s?wait_ms=%d", q.PollURL, wait.Milliseconds()), nil, &done); code != http.StatusOK || done.RequestID != q.RequestID {
		t.Fatalf("poll on p2: %d %+v", code, done)
	}
	if took := time.Since(start); took >= wait {
		t.Fatalf("poll on p2 answered after %v, when its %v wait ran out: not woken by the notification", took, wait)
	}

	// The accepting replica dies; its request is still answered on the other.
	if code, _ := c1.do(http.MethodPost, "/v1/chat", map[string]any{"text": "refund?", "mode": "async"}, &q); code != http.StatusAccepted {
		t.Fatalf("async on p1: %d", code)
	}
	p1.stop()
	if code, _ := c2.do(http.MethodGet, q.PollURL+"?wait_ms=15000", nil, &done); code != http.StatusOK || done.RequestID != q.RequestID {
		t.Fatalf("poll on p2 after p1 stopped: %d %+v", code, done)
	}
	// p2 takes over the whole topic.
	deadline = time.Now().Add(30 * time.Second)
	for len(p2.srv.ReplyPartitions()) != 6 {
		if time.Now().After(deadline) {
			t.Fatalf("p2 reads %v after p1 left, want all 6", p2.srv.ReplyPartitions())
		}
		time.Sleep(50 * time.Millisecond) // group assignment has no event to await here
	}
	if code, _ := c2.do(http.MethodPost, "/v1/chat", map[string]any{"text": "发票", "wait_ms": 20000}, &done); code != http.StatusOK {
		t.Fatalf("wait mode on p2 after takeover: %d", code)
	}
}
