package consumer_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/shared/envelope"
)

// TestRedisBlipDelaysNotDrops: while Redis is down the consumer retries with
// backoff; once it is back the request is answered, once, with its turns.
func TestRedisBlipDelaysNotDrops(t *testing.T) {
	e := newEnv(t)
	replies := e.reader(t, repliesTopic)
	ans := &fakeAnswerer{}
	r := e.start(t, testConfig(), ans)

	e.redis.Close()
	req := newRequest(7, "is it shipped?")
	e.produceRequests(t, req)
	// The consumer has the record and is retrying against the dead Redis.
	retried := func() bool {
		n, err := testutil.GatherAndCount(r.reg, "sluice_consumer_retries_total")
		if err != nil {
			t.Fatal(err)
		}
		return n > 0 // a step's series appears with its first retry
	}
	deadline := time.Now().Add(20 * time.Second)
	for !retried() {
		if time.Now().After(deadline) {
			t.Fatal("no retry while Redis is down")
		}
		time.Sleep(10 * time.Millisecond) // a counter has no event to await
	}
	if err := e.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	got := replies.replies(t, 1)
	if len(got[req.RequestID]) != 1 || got[req.RequestID][0].Status != envelope.StatusDone {
		t.Fatalf("after the blip: %v", got)
	}
	if h := e.history(t, req); len(h) != 2 {
		t.Fatalf("history after the blip: %d turns", len(h))
	}
}
