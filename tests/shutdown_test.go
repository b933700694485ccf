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

	// The request's outcome, sent from its goroutine: the test's goroutine
	// alone may fail the test.
	type outcome struct {
		code int
		done producer.DoneBody
		err  error
	}
	answered := make(chan outcome, 1)
	go func() {
		var o outcome
		o.code, _, o.err = c.tryDo(http.MethodPost, "/v1/chat", map[string]any{"text": "还没发货？", "wait_ms": 20000}, &o.done)
		answered <- o
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
	deadline = time.Now().Add(30 * time.Second)
	for p.srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("a stopping ingress still ready after 30s")
		}
		time.Sleep(5 * time.Millisecond) // readiness flips at once; no event to await
	}
	o := <-answered // bounded by the HTTP client's timeout
	if o.err != nil {
		t.Fatalf("waiting request during shutdown: %v", o.err)
	}
	if o.code != http.StatusOK {
		t.Fatalf("waiting request during shutdown: %d, want 200", o.code)
	}
	if o.done.Status != envelope.StatusDone || o.done.Answer == "" {
		t.Fatalf("answer during shutdown: %+v", o.done)
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("producer did not stop after its last waiter was answered")
	}
	if _, err := http.Get(p.url + "/openapi.yaml"); err == nil {
		t.Fatal("a stopped ingress still accepts connections")
	}
}
