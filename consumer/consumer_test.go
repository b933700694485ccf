package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

func TestAnswersRequest(t *testing.T) {
	e := newEnv(t)
	ans := &fakeAnswerer{}
	e.start(t, testConfig(), ans)
	replies := e.reader(t, repliesTopic)

	req := newRequest(1, "优惠券还能用吗")
	req.Reply.Partition = 2
	e.produceRequests(t, req)

	rec := replies.wait(t, 1)[0]
	if rec.Partition != 2 {
		t.Errorf("reply on partition %d, want the requested 2", rec.Partition)
	}
	got, err := envelope.DecodeReply(rec.Value)
	if err != nil {
		t.Fatalf("decode reply: %v", err)
	}
	if got.RequestID != req.RequestID || got.Tenant != "t1" || got.User != "u1" || got.DialogID != req.DialogID {
		t.Errorf("reply identifies %s %s/%s/%s, want %s t1/u1/%s", got.RequestID, got.Tenant, got.User, got.DialogID, req.RequestID, req.DialogID)
	}
	if got.Status != envelope.StatusDone || got.Answer != answerText(&req) || got.Source != envelope.SourceLLM {
		t.Errorf("reply status %q answer %q source %q, want done %q llm", got.Status, got.Answer, got.Source, answerText(&req))
	}
	if got.FinishedAt.IsZero() {
		t.Error("reply has no finished_at")
	}

	turns := e.history(t, req)
	if len(turns) != 2 {
		t.Fatalf("history has %d turns, want 2: %+v", len(turns), turns)
	}
	if turns[0].Role != envelope.RoleUser || turns[0].Content != req.Text || turns[0].RequestID != req.RequestID {
		t.Errorf("first turn %+v, want the user's question", turns[0])
	}
	if turns[1].Role != envelope.RoleAssistant || turns[1].Content != got.Answer || turns[1].RequestID != req.RequestID {
		t.Errorf("second turn %+v, want the answer", turns[1])
	}
	res, err := e.store.Result(context.Background(), store.DialogOf(&req), req.RequestID)
	if err != nil || res.State != store.StateDone || res.Reply.Answer != got.Answer {
		t.Errorf("stored result %+v, %v; want done with the answer", res, err)
	}

	// Once the request's offset is committed the consumer is done with it:
	// any second reply would be on the topic by now.
	e.waitCommittedToEnd(t)
	if n := e.topicSize(t, repliesTopic); n != 1 {
		t.Errorf("%d replies on %s, want exactly 1", n, repliesTopic)
	}
	if calls := ans.Calls(); len(calls) != 1 || calls[0].History != 0 {
		t.Errorf("answerer calls %+v, want one with empty history", calls)
	}
}

func TestExpiredRequestNotAnswered(t *testing.T) {
	e := newEnv(t)
	ans := &fakeAnswerer{}
	e.start(t, testConfig(), ans)
	replies := e.reader(t, repliesTopic)

	late := newRequest(1, "too late")
	late.CreatedAt = time.Now().Add(-2 * time.Second).UTC()
	late.Deadline = time.Now().Add(-time.Second).UTC()
	e.produceRequests(t, late)

	got := replies.replies(t, 1)[late.RequestID]
	if len(got) != 1 {
		t.Fatalf("replies for the late request: %+v", got)
	}
	if got[0].Status != envelope.StatusExpired || got[0].Answer != "" {
		t.Errorf("reply status %q answer %q, want expired without answer", got[0].Status, got[0].Answer)
	}
	if calls := ans.Calls(); len(calls) != 0 {
		t.Errorf("answerer called for an expired request: %+v", calls)
	}
	if turns := e.history(t, late); len(turns) != 0 {
		t.Errorf("expired request left history %+v", turns)
	}
	res, err := e.store.Result(context.Background(), store.DialogOf(&late), late.RequestID)
	if err != nil || res.State != store.StateExpired {
		t.Errorf("stored result %+v, %v; want expired", res, err)
	}

	// The dialog goes on: the next turn is answered with no history from
	// the expired one.
	next := newRequest(1, "still there?")
	e.produceRequests(t, next)
	if got := replies.replies(t, 2)[next.RequestID]; len(got) != 1 || got[0].Status != envelope.StatusDone {
		t.Fatalf("replies for the next request: %+v", got)
	}
	if calls := ans.Calls(); len(calls) != 1 || calls[0].RequestID != next.RequestID || calls[0].History != 0 {
		t.Errorf("answerer calls %+v, want only the next request, with no history", calls)
	}
}

func TestPoisonRecordsDeadLettered(t *testing.T) {
	e := newEnv(t)
	ans := &fakeAnswerer{}
	e.start(t, testConfig(), ans)
	replies := e.reader(t, repliesTopic)
	dlq := e.reader(t, dlqTopic)

	valid := newRequest(1, "where is my parcel")
	key := valid.Key()

	wrongV := valid
	wrongV.V = 2
	wrongVBytes, _ := json.Marshal(wrongV)
	var noText map[string]any
	b, _ := json.Marshal(valid)
	if err := json.Unmarshal(b, &noText); err != nil {
		t.Fatal(err)
	}
	delete(noText, "text")
	noTextBytes, _ := json.Marshal(noText)

	poison := []struct {
		name  string
		value []byte
		error string // in the sluice-error header
	}{
		{"NotJSON", []byte("{this is not json"), "decode request"},
		{"WrongVersion", wrongVBytes, "unsupported version"},
		{"MissingText", noTextBytes, "missing required field: text"},
	}
	// All on one partition, with the dialog's key, ahead of a valid turn.
	const part = 1
	var recs []*kgo.Record
	for _, p := range poison {
		recs = append(recs, &kgo.Record{
			Topic: requestsTopic, Partition: part, Key: []byte(key), Value: p.value,
			Headers: []kgo.RecordHeader{{Key: "origin", Value: []byte(p.name)}},
		})
	}
	recs = append(recs, requestRecord(t, valid, part))
	e.produce(t, recs...)

	got := replies.replies(t, 1)[valid.RequestID]
	if len(got) != 1 || got[0].Status != envelope.StatusDone || got[0].Answer != answerText(&valid) {
		t.Fatalf("replies for the valid request behind the poison: %+v", got)
	}

	byOrigin := map[string]*kgo.Record{}
	for _, r := range dlq.wait(t, len(poison)) {
		for _, h := range r.Headers {
			if h.Key == "origin" {
				byOrigin[string(h.Value)] = r
			}
		}
	}
	for i, p := range poison {
		t.Run(p.name, func(t *testing.T) {
			r := byOrigin[p.name]
			if r == nil {
				t.Fatalf("not dead-lettered with its original headers (got %d DLQ records)", len(byOrigin))
			}
			if !bytes.Equal(r.Value, p.value) {
				t.Errorf("DLQ value %q, want the original bytes %q", r.Value, p.value)
			}
			if string(r.Key) != key {
				t.Errorf("DLQ key %q, want %q", r.Key, key)
			}
			var reason string
			for _, h := range r.Headers {
				if h.Key == envelope.HeaderError {
					reason = string(h.Value)
				}
			}
			if !strings.Contains(reason, p.error) {
				t.Errorf("header %s = %q, want it to name %q", envelope.HeaderError, reason, p.error)
			}
			t.Logf("offset %d dead-lettered: %s", recs[i].Offset, reason)
		})
	}

	// The partition moved on past the poison: everything is committed.
	e.waitCommittedToEnd(t)
	if n := e.topicSize(t, dlqTopic); n != int64(len(poison)) {
		t.Errorf("%d records on the DLQ, want %d", n, len(poison))
	}
	if calls := ans.Calls(); len(calls) != 1 {
		t.Errorf("answerer calls %+v, want only the valid request", calls)
	}
}

func TestRedeliveryAnsweredOnce(t *testing.T) {
	e := newEnv(t)
	ans := &fakeAnswerer{}
	e.start(t, testConfig(), ans)
	replies := e.reader(t, repliesTopic)

	req := newRequest(1, "refund please")
	rec := requestRecord(t, req, -1)
	again := *rec
	e.produce(t, rec, &again)

	got := replies.replies(t, 2)[req.RequestID]
	if len(got) != 2 {
		t.Fatalf("replies: %+v, want two for %s", got, req.RequestID)
	}
	if got[0] != got[1] {
		t.Errorf("the redelivery's reply differs:\n%+v\n%+v", got[0], got[1])
	}
	if got[0].Status != envelope.StatusDone || got[0].Answer != answerText(&req) {
		t.Errorf("reply %+v, want done with the answer", got[0])
	}
	if calls := ans.Calls(); len(calls) != 1 {
		t.Errorf("answerer called %d times, want once: %+v", len(calls), calls)
	}
	if turns := e.history(t, req); len(turns) != 2 {
		t.Errorf("history has %d turns, want 2: %+v", len(turns), turns)
	}
}

func TestKeyOrderAndParallelism(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	defer g.Open()
	ans := &fakeAnswerer{AnswerFn: g.answer, Entered: make(chan *envelope.Request, 1000)}
	e.start(t, testConfig(), ans)
	replies := e.reader(t, repliesTopic)

	const dialogs = 50
	var reqs []envelope.Request
	ordered := make([]envelope.Request, 5)
	for i := range ordered {
		ordered[i] = newRequest(0, "turn "+string(rune('1'+i)))
	}
	reqs = append(reqs, ordered...)
	for i := range dialogs {
		reqs = append(reqs, newRequest(i+1, "hello"))
	}
	e.produceRequests(t, reqs...)

	// Nothing is released until every dialog has a call in flight: 51 at
	// once on 4 partitions, and of dialog 0 only its first turn.
	started := awaitEntered(t, ans.Entered, dialogs+1)
	var first []string
	for _, r := range started {
		if r.DialogID == ordered[0].DialogID {
			first = append(first, r.RequestID)
		}
	}
	if !slices.Equal(first, []string{ordered[0].RequestID}) {
		t.Errorf("dialog 0 calls in flight %v, want only its first turn %s", first, ordered[0].RequestID)
	}
	if cur, _ := ans.Concurrency(); cur != dialogs+1 {
		t.Errorf("%d calls in flight, want %d", cur, dialogs+1)
	}
	g.Open()

	got := replies.replies(t, len(reqs))
	for _, r := range reqs {
		if rs := got[r.RequestID]; len(rs) != 1 || rs[0].Status != envelope.StatusDone {
			t.Errorf("replies for %s: %+v", r.RequestID, rs)
		}
	}

	key := ordered[0].Key()
	if n := ans.MaxPerKey(key); n != 1 {
		t.Errorf("dialog 0 had %d calls at once, want 1", n)
	}
	var seen []call
	for _, c := range ans.Calls() {
		if c.Key == key {
			seen = append(seen, c)
		}
	}
	if len(seen) != len(ordered) {
		t.Fatalf("dialog 0 calls %+v, want %d", seen, len(ordered))
	}
	for i, c := range seen {
		// In offset order, each turn seeing the ones before it.
		if c.RequestID != ordered[i].RequestID || c.History != 2*i {
			t.Errorf("dialog 0 call %d: %s with %d turns of history, want %s with %d", i, c.RequestID, c.History, ordered[i].RequestID, 2*i)
		}
	}
	if turns := e.history(t, ordered[0]); len(turns) != 2*len(ordered) {
		t.Errorf("dialog 0 history has %d turns, want %d", len(turns), 2*len(ordered))
	}
}

func TestInFlightBudget(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	defer g.Open()
	ans := &fakeAnswerer{AnswerFn: g.answer, Entered: make(chan *envelope.Request, 100)}
	cfg := testConfig()
	cfg.InFlight = 3

	// All on one partition before the consumer starts, so that its first
	// fetch holds more records than the budget.
	var reqs []envelope.Request
	var recs []*kgo.Record
	for i := range 10 {
		reqs = append(reqs, newRequest(i, "hello"))
		recs = append(recs, requestRecord(t, reqs[i], 0))
	}
	e.produce(t, recs...)
	r := e.start(t, cfg, ans)
	replies := e.reader(t, repliesTopic)

	awaitEntered(t, ans.Entered, cfg.InFlight)
	// The consumer stops fetching once the budget is spent.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitFor)
	for err := r.metricIs("sluice_consumer_paused", 1); err != nil; err = r.metricIs("sluice_consumer_paused", 1) {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("consumer did not pause fetching with the in-flight budget spent: %v", err)
		}
	}
	if cur, _ := ans.Concurrency(); cur != cfg.InFlight {
		t.Errorf("%d calls in flight with the budget spent, want %d", cur, cfg.InFlight)
	}
	if err := r.metricIs("sluice_consumer_in_flight", float64(cfg.InFlight)); err != nil {
		t.Error(err)
	}
	g.Open()

	got := replies.replies(t, len(reqs))
	if len(got) != len(reqs) {
		t.Errorf("replies for %d requests, want %d", len(got), len(reqs))
	}
	if _, most := ans.Concurrency(); most != cfg.InFlight {
		t.Errorf("at most %d calls ran at once, want the budget %d", most, cfg.InFlight)
	}
	if n := len(ans.Calls()); n != len(reqs) {
		t.Errorf("answerer called %d times, want %d", n, len(reqs))
	}
}

func TestCommitsReachEndOffsets(t *testing.T) {
	e := newEnv(t)
	e.start(t, testConfig(), &fakeAnswerer{})
	replies := e.reader(t, repliesTopic)

	var reqs []envelope.Request
	for i := range 40 {
		reqs = append(reqs, newRequest(i%10, "question"))
	}
	e.produceRequests(t, reqs...)
	replies.wait(t, len(reqs))

	committed, end := e.waitOffsets(t, "offsets not committed to the end", atEnd)
	var total int64
	for p := range end {
		total += end[p]
		if end[p] == 0 && committed[p] > 0 {
			t.Errorf("partition %d: committed %d on an empty partition", p, committed[p])
		}
	}
	if total != int64(len(reqs)) {
		t.Errorf("%d records on %s, want %d", total, requestsTopic, len(reqs))
	}
}

func TestCommitHeldBelowUnfinished(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	defer g.Open()
	ans := &fakeAnswerer{AnswerFn: func(ctx context.Context, req *envelope.Request, h []envelope.Turn) (llm.Answer, error) {
		if req.Text == "hold" {
			return g.answer(ctx, req, h)
		}
		return llm.Answer{Text: answerText(req), Source: envelope.SourceLLM}, nil
	}}
	e.start(t, testConfig(), ans)
	replies := e.reader(t, repliesTopic)

	// Partition 0: a finished record, the held one, then two of other
	// dialogs that finish while it is held.
	before, held, after1, after2 := newRequest(1, "ok"), newRequest(2, "hold"), newRequest(3, "ok"), newRequest(4, "ok")
	recs := e.produce(t,
		requestRecord(t, before, 0), requestRecord(t, held, 0),
		requestRecord(t, after1, 0), requestRecord(t, after2, 0))
	heldOffset := recs[1].Offset
	got := replies.replies(t, 3)
	for _, r := range []envelope.Request{before, after1, after2} {
		if len(got[r.RequestID]) != 1 {
			t.Fatalf("no reply for %s (replies %v)", r.RequestID, got)
		}
	}

	// A record on partition 1 finishes later; once it is committed, a commit
	// ran after partition 0's later records finished.
	other := newRequest(5, "ok")
	e.produce(t, requestRecord(t, other, 1))
	replies.wait(t, 4)
	committed, _ := e.waitOffsets(t, "partition 1 not committed", func(c, end map[int32]int64) bool {
		return c[1] == end[1] && c[0] >= heldOffset
	})
	if committed[0] != heldOffset {
		t.Errorf("partition 0 committed at %d while offset %d is unfinished, want %d", committed[0], heldOffset, heldOffset)
	}

	g.Open()
	if rs := replies.replies(t, 5)[held.RequestID]; len(rs) != 1 || rs[0].Status != envelope.StatusDone {
		t.Fatalf("replies for the held request: %+v", rs)
	}
	e.waitCommittedToEnd(t)
}

func TestDrainFinishesInFlight(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	defer g.Open()
	ans := &fakeAnswerer{AnswerFn: g.answer, Entered: make(chan *envelope.Request, 100)}
	cfg := testConfig()
	// Only the drain's final commit may commit anything.
	cfg.CommitInterval = time.Hour
	r := e.start(t, cfg, ans)
	replies := e.reader(t, repliesTopic)

	var reqs []envelope.Request
	for i := range 3 {
		reqs = append(reqs, newRequest(i, "hello"))
	}
	e.produceRequests(t, reqs...)
	awaitEntered(t, ans.Entered, len(reqs))

	r.cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitFor)
	for r.c.Ready() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("consumer still ready after its context ended")
		}
	}
	select {
	case <-r.done:
		t.Fatalf("Run returned (%v) with %d answers in flight", r.runErr, len(reqs))
	default:
	}
	g.Open()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Run returned after the final commit: no waiting from here on.
	committed, end := e.offsets(t)
	if !atEnd(committed, end) {
		t.Errorf("after drain: committed %v, end offsets %v", committed, end)
	}
	got := replies.replies(t, len(reqs))
	for _, q := range reqs {
		if rs := got[q.RequestID]; len(rs) != 1 || rs[0].Status != envelope.StatusDone {
			t.Errorf("replies for %s: %+v", q.RequestID, rs)
		}
	}
}

// New refuses a configuration the consumer cannot run with and builds one
// with every setting at the edge of its valid range.
func TestNewConfig(t *testing.T) {
	e := newEnv(t)
	for name, mod := range map[string]func(*consumer.Config){
		"InFlight":       func(c *consumer.Config) { c.InFlight = 0 },
		"CommitInterval": func(c *consumer.Config) { c.CommitInterval = 0 },
		"DrainTimeout":   func(c *consumer.Config) { c.DrainTimeout = 0 },
		"SessionTimeout": func(c *consumer.Config) { c.SessionTimeout = 999 * time.Millisecond },
	} {
		t.Run("Reject"+name, func(t *testing.T) {
			cfg := testConfig()
			mod(&cfg)
			if _, err := consumer.New(cfg, e.bus, e.store, &fakeAnswerer{}, e.log, nil); err == nil {
				t.Error("New accepted an invalid configuration")
			}
		})
	}
	t.Run("AcceptMinimum", func(t *testing.T) {
		cfg := testConfig()
		cfg.InFlight = 1
		cfg.SessionTimeout = time.Second // Validate's minimum, below the client's default heartbeat
		c, err := consumer.New(cfg, e.bus, e.store, &fakeAnswerer{}, e.log, nil)
		if err != nil {
			t.Fatalf("New rejected a valid configuration: %v", err)
		}
		c.Close()
	})
}
