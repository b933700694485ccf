package consumer_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/consumer"
	"sluice/shared/envelope"
)

// TestOversizedRecordDeadLetteredTruncated: a request record the broker
// took but whose dead-letter copy (value plus headers) is over the record
// size limit is dead-lettered truncated, with the reason, its source and
// its size; the partition moves on and the dialog's next question is
// answered. Before, the record was abandoned and its partition's commit
// never moved again.
func TestOversizedRecordDeadLetteredTruncated(t *testing.T) {
	e := newEnv(t)
	ans := &fakeAnswerer{}
	e.start(t, testConfig(), ans)
	replies := e.reader(t, repliesTopic)
	dlq := e.reader(t, dlqTopic)

	next := newRequest(1, "and where is my parcel?")
	const part = 2
	// Close to the client's 1,000,012-byte batch limit: it is produced, but
	// a copy with two more headers is not.
	huge := bytes.Repeat([]byte("x"), 999_850)
	e.produce(t,
		&kgo.Record{Topic: requestsTopic, Partition: part, Key: []byte(next.Key()), Value: huge},
		requestRecord(t, next, part),
	)

	if got := replies.replies(t, 1)[next.RequestID]; len(got) != 1 || got[0].Status != envelope.StatusDone {
		t.Fatalf("the dialog's next question, behind the oversized record: %+v", got)
	}
	r := dlq.wait(t, 1)[0]
	headers := map[string]string{}
	for _, h := range r.Headers {
		headers[h.Key] = string(h.Value)
	}
	if len(r.Value) >= len(huge) || !bytes.HasPrefix(huge, r.Value) {
		t.Errorf("DLQ value of %d bytes, want a prefix of the %d-byte original", len(r.Value), len(huge))
	}
	if n, _ := strconv.Atoi(headers[consumer.HeaderTruncated]); n < len(huge) {
		t.Errorf("header %s = %q, want the original's size (at least %d)", consumer.HeaderTruncated, headers[consumer.HeaderTruncated], len(huge))
	}
	if src := headers[consumer.HeaderSource]; !strings.HasPrefix(src, requestsTopic+"/2/") {
		t.Errorf("header %s = %q, want %s/2/<offset>", consumer.HeaderSource, src, requestsTopic)
	}
	if reason := headers[envelope.HeaderError]; !strings.Contains(reason, "decode request") || !strings.Contains(reason, "truncated") {
		t.Errorf("header %s = %q, want the reason and that the copy is truncated", envelope.HeaderError, reason)
	}
	e.waitCommittedToEnd(t)
}
