package llm_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"sluice/consumer/llm"
	"sluice/shared/envelope"
)

// TestBreakerOpensAgainstHangingEndpoint: calls that time out count
// against the breaker even when the call timeout is as long as the
// breaker's window (the defaults: 10 s and 10 s). Before, the breaker
// counted a result in the bucket its call started in, which had left the
// window when the timeout fired: it never opened against an endpoint that
// hangs, and every request held a slot until its deadline. Here the window
// is shortened to 1 s and the timeout is 1 s.
func TestBreakerOpensAgainstHangingEndpoint(t *testing.T) {
	llm.SetBreakerWindow(t, time.Second)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	_, url := serveScript(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select { // hang until the client gives up or the test ends
		case <-r.Context().Done():
		case <-release:
		}
	})
	cfg := fastConfig(url)
	cfg.Timeout = time.Second
	cfg.Attempts = 1
	cfg.BreakerFailures = 3
	cfg.BreakerFailureRatio = 0 // consecutive failures alone
	c := mustNew(t, cfg)
	// Three requests at once: their calls time out together.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { c.Answer(t.Context(), request("还在吗？", 5*time.Second), nil) })
	}
	wg.Wait()
	if st := c.BreakerState("primary"); st != "open" {
		t.Fatalf("breaker %s after 3 timed-out calls, want open", st)
	}
	// And the next question is answered without waiting for the endpoint.
	a, _ := answer(t, c, "在吗？", 5*time.Second)
	if a.Source == envelope.SourceLLM {
		t.Errorf("answered from the hanging model: %+v", a)
	}
}
