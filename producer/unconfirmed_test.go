package producer_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"sluice/producer"
)

// TestUnconfirmedProduceIs202: when Kafka has the request but has not
// acknowledged it within the produce timeout, the client gets 202 with its
// poll_url, not a 503 that would lie when the request is answered later;
// and the request does arrive.
func TestUnconfirmedProduceIs202(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.ProduceTimeout = 300 * time.Millisecond })
	cl := h.broker.Cluster()
	release := make(chan struct{})
	cl.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cl.SleepControl(func() { <-release }) // the produce is held, unanswered
		return nil, nil, false
	})
	bearer := "Bearer " + token(t, "t1", "u1")
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"hello","mode":"async"}`)
	close(release)
	if r.code != http.StatusAccepted || r.header.Get("Location") == "" {
		t.Fatalf("unacknowledged produce: %d %s, want 202 with a poll_url", r.code, r.body)
	}
	if got := readRequests(t, h, 1); got[0].Text != "hello" {
		t.Errorf("request on Kafka %+v", got[0])
	}
	if p := h.send(t, "GET", r.header.Get("Location")+"?wait_ms=0", bearer, "", ""); p.code != http.StatusAccepted {
		t.Errorf("poll of the unconfirmed request: %d %s, want 202 queued", p.code, p.body)
	}
}
