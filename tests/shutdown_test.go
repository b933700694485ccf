package tests

import (
	"net/http"
	"testing"
	"time"

	"sluice/producer"
	"sluice/shared/envelope"
)

// TestProducerGracefulShutdown: a stopping ingress turns unready, refuses
// new connections, and lets a waiting request get its answer.
func TestProducerGracefulShutdown(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 3, mock: mockllmConfig(800*time.Millisecond, 0)})
	s.addConsumer(testConsumerConfig())
	p := s.addProducer(testProducerConfig())
	c := s.client(p.url, "shop-1", "dora")

	answered := make(chan producer.DoneBody, 1)
	codes := make(chan int, 1)
	go func() {
		var done producer.DoneBody
		code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "还没发货？", "wait_ms": 20000}, &done)
		codes <- code
		answered <- done
	}()
	// Stop once the request is waiting for its answer.
	deadline := time.Now().Add(20 * time.Second)
	for s.mock.Calls() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the LLM")
		}
		time.Sleep(10 * time.Millisecond) // the mock has no event to await
	}
	stopped := make(chan struct{})
	go func() { p.stop(); close(stopped) }()
	for p.srv.Ready() {
		time.Sleep(5 * time.Millisecond) // readiness flips at once; no event to await
	}
	if code := <-codes; code != http.StatusOK {
		t.Fatalf("waiting request during shutdown: %d, want 200", code)
	}
	if done := <-answered; done.Status != envelope.StatusDone || done.Answer == "" {
		t.Fatalf("answer during shutdown: %+v", done)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("producer did not stop after its last waiter was answered")
	}
	if _, err := http.Get(p.url + "/openapi.yaml"); err == nil {
		t.Fatal("a stopped ingress still accepts connections")
	}
}
