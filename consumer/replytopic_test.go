package consumer_test

import (
	"strings"
	"testing"
	"time"

	"sluice/shared/envelope"
)

// TestMissingReplyTopicDeadLetters: on a cluster without topic
// auto-creation, a request whose reply topic does not exist goes to the DLQ
// with the reason, and the dialog's next request is still answered.
func TestMissingReplyTopicDeadLetters(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the client's metadata retries")
	}
	e := newEnvOn(t, true) // no auto-creation
	dlq := e.reader(t, dlqTopic)
	replies := e.reader(t, repliesTopic)
	ans := &fakeAnswerer{}
	e.start(t, testConfig(), ans)

	lost := newRequest(1, "where is my parcel?")
	lost.Reply.Topic = "bot.replies.missing"
	next := newRequest(1, "and the invoice?")
	e.produceRequests(t, lost, next)

	start := time.Now()
	recs := dlq.wait(t, 1)
	var reason string
	for _, h := range recs[0].Headers {
		if h.Key == envelope.HeaderError {
			reason = string(h.Value)
		}
	}
	if !strings.Contains(reason, "bot.replies.missing") || !strings.Contains(reason, "UNKNOWN_TOPIC") {
		t.Fatalf("DLQ reason %q", reason)
	}
	got := replies.replies(t, 1)
	if len(got[next.RequestID]) != 1 {
		t.Fatalf("the dialog's next request was not answered: %v", got)
	}
	t.Logf("dead-lettered after %v", time.Since(start))
}

// TestReplyPartitionBeyondTopic: a request naming a reply partition its
// topic does not have is still answered, on the partition of its key, and
// the fallback is counted.
func TestReplyPartitionBeyondTopic(t *testing.T) {
	e := newEnv(t)
	replies := e.reader(t, repliesTopic)
	r := e.start(t, testConfig(), &fakeAnswerer{})

	req := newRequest(3, "is my coupon still valid?")
	req.Reply.Partition = numPartitions + 5
	e.produceRequests(t, req)
	if got := replies.replies(t, 1); len(got[req.RequestID]) != 1 {
		t.Fatalf("replies %v, want one for %s", got, req.RequestID)
	}
	if err := r.metricIs("sluice_consumer_reply_partition_fallbacks_total", 1); err != nil {
		t.Error(err)
	}
}

// TestReplyTopicLoopDeadLettered: a request whose reply.topic is the
// requests topic goes to the DLQ with the reason before any LLM call,
// instead of its reply coming back as a request.
func TestReplyTopicLoopDeadLettered(t *testing.T) {
	e := newEnv(t)
	dlq := e.reader(t, dlqTopic)
	ans := &fakeAnswerer{}
	e.start(t, testConfig(), ans)
	loop := newRequest(1, "where is my parcel?")
	loop.Reply.Topic = requestsTopic
	e.produceRequests(t, loop)
	recs := dlq.wait(t, 1)
	var reason string
	for _, h := range recs[0].Headers {
		if h.Key == envelope.HeaderError {
			reason = string(h.Value)
		}
	}
	if !strings.Contains(reason, "loop") {
		t.Fatalf("DLQ reason %q, want the loop named", reason)
	}
	e.waitCommittedToEnd(t)
	if calls := ans.Calls(); len(calls) != 0 {
		t.Errorf("LLM called %d times for a request whose reply would loop", len(calls))
	}
}
