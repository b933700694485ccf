package consumer_test

import (
	"testing"
	"time"

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
	deadline := time.Now().Add(20 * time.Second)
	for counterSum(t, r, "sluice_consumer_retries_total") == 0 {
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

// counterSum adds up every series of a counter; 0 before its first series.
func counterSum(t *testing.T, r *running, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
