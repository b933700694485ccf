package producer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/producer"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

// TestWaiterFollowsMovedReplyPartition: a replica's wait-mode requests name
// a reply partition it reads. When another member of the reply group takes
// that partition over, their replies are read there; the waiters are still
// answered within their wait, through the store: at once when the result
// was stored before the move, on its announcement when stored after.
// Requests on the partition the replica keeps are woken by their replies.
func TestWaiterFollowsMovedReplyPartition(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.WaitMax = time.Minute })
	bearer := "Bearer " + token(t, "t1", "u1")

	// Four waiting requests, alternating between the two reply partitions.
	// A client gives up long before the wait of a minute would run out.
	client := &http.Client{Timeout: 20 * time.Second}
	type answer struct {
		text string
		code int
		body producer.DoneBody
		err  error
	}
	answers := make(chan answer, 4)
	for i := range 4 {
		text := fmt.Sprintf("q%d", i)
		go func() {
			req, _ := http.NewRequest("POST", h.url+"/v1/chat", strings.NewReader(`{"text":"`+text+`","wait_ms":60000}`))
			req.Header.Set("Authorization", bearer)
			resp, err := client.Do(req)
			if err != nil {
				answers <- answer{text: text, err: err}
				return
			}
			defer resp.Body.Close()
			a := answer{text: text, code: resp.StatusCode}
			a.err = json.NewDecoder(resp.Body).Decode(&a.body)
			answers <- a
		}()
	}
	reqs := readRequests(t, h, 4)

	// Two of them (one per partition) are answered in the store before the
	// move, without a reply record: nothing wakes them yet.
	ctx := context.Background()
	complete := func(r envelope.Request) envelope.Reply {
		t.Helper()
		reply := replyTo(r)
		if _, _, err := h.store.Complete(ctx, store.DialogOf(&r), reply, r.CreatedAt); err != nil {
			t.Fatal(err)
		}
		return reply
	}
	early := map[int32]envelope.Request{}
	var late []envelope.Request
	for _, r := range reqs {
		if _, ok := early[r.Reply.Partition]; !ok {
			early[r.Reply.Partition] = r
			complete(r)
		} else {
			late = append(late, r)
		}
	}
	if len(early) != 2 || len(late) != 2 {
		t.Fatalf("requests on partitions %v, want two on each of 2", early)
	}

	// Another member joins the reply group and takes one partition over.
	moved := make(chan int32, 1)
	other, err := kgo.NewClient(kgo.SeedBrokers(h.bus.Brokers...), kgo.ConsumerGroup(h.bus.ReplyGroup),
		kgo.ConsumeTopics(h.bus.RepliesTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if ps := m[h.bus.RepliesTopic]; len(ps) > 0 {
				moved <- ps[0]
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	go func() {
		for !other.PollFetches(ctx).IsClientClosed() {
		}
	}()
	var lost int32
	select {
	case lost = <-moved:
	case <-time.After(15 * time.Second):
		t.Fatal("the second member got no reply partition within 15s")
	}

	// The rest are answered now, each with its reply record.
	replies, err := kgo.NewClient(kgo.SeedBrokers(h.bus.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer replies.Close()
	publish := func(r envelope.Request, reply envelope.Reply) {
		t.Helper()
		value, _ := json.Marshal(reply)
		rec := &kgo.Record{Topic: h.bus.RepliesTopic, Partition: r.Reply.Partition, Key: []byte(r.RequestID), Value: value}
		if err := replies.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for p, r := range early {
		if p != lost { // the one on the kept partition gets its record
			publish(r, replyTo(r))
		}
	}
	for _, r := range late {
		publish(r, complete(r))
	}

	for range 4 {
		a := <-answers
		if a.err != nil || a.code != http.StatusOK || a.body.Answer != "answer to "+a.text {
			t.Errorf("%s: status %d body %+v err %v; want 200 with its answer within the client's 20s", a.text, a.code, a.body, a.err)
		}
	}
}

func replyTo(r envelope.Request) envelope.Reply {
	reply := envelope.NewReply(&r, envelope.StatusDone, time.Now())
	reply.Answer, reply.Source = "answer to "+r.Text, envelope.SourceLLM
	return reply
}

// readRequests returns the first n requests on the requests topic.
func readRequests(t *testing.T, h *harness, n int) []envelope.Request {
	t.Helper()
	var out []envelope.Request
	for _, rec := range readRecords(t, h, n) {
		r, err := envelope.DecodeRequest(rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// readRecords returns the first n records on the requests topic.
func readRecords(t *testing.T, h *harness, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.bus.Brokers...), kgo.ConsumeTopics(h.bus.RequestsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records on %s within 10s (errors %v)", len(out), n, h.bus.RequestsTopic, fs.Errors())
		}
		out = append(out, fs.Records()...)
	}
	return out
}
