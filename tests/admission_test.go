package tests

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestShortWaitAdmittedWhileAnswersAreFast: the lag over the completion
// rate measures the time to a commit (half the commit interval and more),
// not to an answer. A wait-mode request whose wait is shorter than that is
// still admitted while the answers just given took a fraction of it: with
// the consumers answering in milliseconds, 20 users asking with wait_ms 300
// get no 503 once the first question was answered.
func TestShortWaitAdmittedWhileAnswersAreFast(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 4, mock: mockllmConfig(0, 0)})
	cc := testConsumerConfig()
	cc.CommitInterval = time.Second // the default: commits trail answers by half a second
	s.addConsumer(cc)
	p := s.addProducer(testProducerConfig())
	// One answer first: until there is one, the estimate alone decides.
	if code, _ := s.client(p.url, "shop-1", "first").do(http.MethodPost, "/v1/chat", map[string]any{"text": "在吗", "wait_ms": 5000}, nil); code != http.StatusOK {
		t.Fatalf("first question: %d", code)
	}

	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for u := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := s.client(p.url, "shop-1", fmt.Sprintf("u%d", u))
			for range 30 {
				code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{"text": "发货了吗", "wait_ms": 300}, nil)
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if codes[http.StatusOK] != 600 {
		t.Fatalf("answers by status: %v, want 600 × 200", codes)
	}
}
