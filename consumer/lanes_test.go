package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/shared/envelope"
)

// releaser holds every answer until the test releases it, one at a time,
// and tells which lane each call came from.
type releaser struct {
	release chan struct{}
}

func (r *releaser) answer(ctx context.Context, req *envelope.Request, _ []envelope.Turn) (llm.Answer, error) {
	select {
	case <-r.release:
		return llm.Answer{Text: answerText(req), Source: envelope.SourceLLM}, nil
	case <-ctx.Done():
		return llm.Answer{}, ctx.Err()
	}
}

// produceLane produces n requests of their own dialogs to topic, texts
// starting with prefix.
func (e *env) produceLane(tb testing.TB, topic, prefix string, first, n int) []envelope.Request {
	tb.Helper()
	var reqs []envelope.Request
	var recs []*kgo.Record
	for i := range n {
		req := newRequest(first+i, fmt.Sprintf("%s %d", prefix, i))
		rec := requestRecord(tb, req, -1)
		rec.Topic = topic
		reqs, recs = append(reqs, req), append(recs, rec)
	}
	e.produce(tb, recs...)
	return reqs
}

func lane(req *envelope.Request) string { return strings.Fields(req.Text)[0] }

// TestInteractiveLaneGoesFirst: with the budget full of bulk records and
// shoppers' questions waiting, each freed slot goes to a shopper until the
// bulk lane is down to its minimum share; the next goes to a bulk record,
// which is never starved.
func TestInteractiveLaneGoesFirst(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.InFlight = 4
	cfg.BulkMinShare = 0.25 // one slot
	r := &releaser{release: make(chan struct{})}
	entered := make(chan *envelope.Request, 64)
	ans := &fakeAnswerer{AnswerFn: r.answer, Entered: entered}
	t.Cleanup(func() { close(r.release) }) // before the consumer's stop

	e.produceLane(t, e.bus.BulkTopic, "bulk", 0, 20)
	run := e.start(t, cfg, ans)
	for _, req := range awaitEntered(t, entered, 4) {
		if lane(req) != "bulk" {
			t.Fatalf("%q started with only bulk records queued", req.Text)
		}
	}
	// The autoscaling ratio counts the interactive lane only: a budget
	// full of bulk records does not make the pod look busy.
	if got := gauge(t, run.reg, "sluice_consumer_in_flight_ratio"); got != 0 {
		t.Errorf("in-flight ratio %g with only bulk records in flight, want 0", got)
	}
	// Shoppers ask while the budget is full of bulk records.
	e.produceLane(t, e.bus.RequestsTopic, "shop", 100, 6)
	// The consumer holds what the client fetched even while the budget is
	// full, up to twice the budget in all (4 bulk records are held): wait
	// until four shoppers' records are held.
	run.awaitGauge(t, "sluice_consumer_held_records", "interactive", 4)
	var got []string
	for range 4 {
		r.release <- struct{}{}
		got = append(got, lane(awaitEntered(t, entered, 1)[0]))
	}
	if want := []string{"shop", "shop", "shop", "bulk"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("freed slots went to %v, want %v: shoppers first, down to the bulk lane's one slot", got, want)
	}
	if got := gauge(t, run.reg, "sluice_consumer_in_flight_ratio"); got != 0.75 {
		t.Errorf("in-flight ratio %g with 3 shoppers' and 1 bulk record in flight of 4, want 0.75", got)
	}
}

// TestBulkTakesIdleBudget: with no shopper waiting, bulk records take every
// slot, and a long bulk backlog is answered to the end, each record once.
func TestBulkTakesIdleBudget(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.InFlight = 4
	// An LLM that takes 20 ms, so that calls overlap.
	ans := &fakeAnswerer{AnswerFn: func(ctx context.Context, req *envelope.Request, _ []envelope.Turn) (llm.Answer, error) {
		select {
		case <-time.After(20 * time.Millisecond):
			return llm.Answer{Text: answerText(req), Source: envelope.SourceLLM}, nil
		case <-ctx.Done():
			return llm.Answer{}, ctx.Err()
		}
	}}
	reqs := e.produceLane(t, e.bus.BulkTopic, "bulk", 0, 200)
	e.start(t, cfg, ans)
	replies := e.reader(t, repliesTopic).replies(t, len(reqs))
	for _, req := range reqs {
		if n := len(replies[req.RequestID]); n != 1 {
			t.Errorf("%s answered %d times, want once", req.RequestID, n)
		}
	}
	if _, most := ans.Concurrency(); most != cfg.InFlight {
		t.Errorf("at most %d bulk records at once with nothing else to do, want the whole budget (%d)", most, cfg.InFlight)
	}
}

// awaitGauge waits until the consumer's gauge name{lane} reads want.
func (r *running) awaitGauge(tb testing.TB, name, lane string, want float64) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	var got float64
	for time.Now().Before(deadline) {
		got = laneMetric(tb, r.reg, name, lane).GetGauge().GetValue()
		if got == want {
			return
		}
		time.Sleep(10 * time.Millisecond) // a gauge has no event to await
	}
	tb.Fatalf("%s{lane=%q} = %g, want %g", name, lane, got, want)
}

// TestSingleLaneIsFIFO: with Lanes single, the records fetched first are
// started first whatever their topic: shoppers' questions wait behind the
// bulk records held before them, as they did before the two lanes, and
// every one of them is answered.
func TestSingleLaneIsFIFO(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.InFlight = 4
	cfg.Lanes = consumer.LanesSingle
	r := &releaser{release: make(chan struct{})}
	entered := make(chan *envelope.Request, 64)
	ans := &fakeAnswerer{AnswerFn: r.answer, Entered: entered}
	releaseAll := sync.OnceFunc(func() { close(r.release) })
	t.Cleanup(releaseAll) // before the consumer's stop

	e.produceLane(t, e.bus.BulkTopic, "bulk", 0, 20)
	run := e.start(t, cfg, ans)
	for _, req := range awaitEntered(t, entered, 4) {
		if lane(req) != "bulk" {
			t.Fatalf("%q started with only bulk records queued", req.Text)
		}
	}
	// Four more bulk records are held (in the one lane) while the budget
	// is full; then shoppers ask.
	run.awaitGauge(t, "sluice_consumer_held_records", "interactive", 4)
	shop := e.produceLane(t, e.bus.RequestsTopic, "shop", 100, 6)
	var got []string
	for range 4 {
		r.release <- struct{}{}
		got = append(got, lane(awaitEntered(t, entered, 1)[0]))
	}
	if want := []string{"bulk", "bulk", "bulk", "bulk"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("freed slots went to %v, want %v: one lane, in fetch order", got, want)
	}
	// The rest is answered, shoppers included.
	releaseAll()
	replies := e.reader(t, repliesTopic).replies(t, 20+len(shop))
	for _, req := range shop {
		if n := len(replies[req.RequestID]); n != 1 {
			t.Errorf("shopper %s answered %d times, want once", req.RequestID, n)
		}
	}
}

// TestLanesSetting: Lanes is two or single, named by its flag otherwise.
func TestLanesSetting(t *testing.T) {
	for _, tt := range []struct {
		lanes string
		ok    bool
	}{{consumer.LanesTwo, true}, {consumer.LanesSingle, true}, {"", false}, {"one", false}, {"Two", false}} {
		cfg := consumer.DefaultConfig()
		cfg.Lanes = tt.lanes
		err := cfg.Validate()
		if ok := err == nil; ok != tt.ok || (!ok && !strings.Contains(err.Error(), "lanes")) {
			t.Errorf("Lanes %q: %v, want ok=%v and an error naming lanes", tt.lanes, err, tt.ok)
		}
	}
	if got := consumer.DefaultConfig().Lanes; got != consumer.LanesTwo {
		t.Errorf("default Lanes %q, want %q", got, consumer.LanesTwo)
	}
}

// TestLaneReachesTheLLM: the LLM step learns each request's lane from the
// topic its record came from, to order its waits for the LLM's quota.
func TestLaneReachesTheLLM(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	lanes := map[string]string{} // request id: lane
	ans := &fakeAnswerer{AnswerFn: func(ctx context.Context, req *envelope.Request, _ []envelope.Turn) (llm.Answer, error) {
		mu.Lock()
		lanes[req.RequestID] = llm.LaneOf(ctx)
		mu.Unlock()
		return llm.Answer{Text: answerText(req), Source: envelope.SourceLLM}, nil
	}}
	want := map[string]string{}
	for _, req := range e.produceLane(t, e.bus.BulkTopic, "bulk", 0, 3) {
		want[req.RequestID] = envelope.LaneBulk
	}
	for _, req := range e.produceLane(t, e.bus.RequestsTopic, "shop", 100, 3) {
		want[req.RequestID] = envelope.LaneInteractive
	}
	run := e.start(t, testConfig(), ans)
	e.reader(t, repliesTopic).replies(t, len(want))
	mu.Lock()
	defer mu.Unlock()
	for id, lane := range want {
		if lanes[id] != lane {
			t.Errorf("request %s reached the LLM in lane %q, want %q", id, lanes[id], lane)
		}
	}
	// Each lane's histograms count its own requests (the end to end once
	// the reply is produced: a moment after the reader may see it).
	for _, name := range []string{"sluice_consumer_queue_wait_seconds", "sluice_consumer_end_to_end_seconds"} {
		for _, lane := range []string{envelope.LaneInteractive, envelope.LaneBulk} {
			deadline := time.Now().Add(waitFor)
			for n := histogramCount(t, run.reg, name, lane); n != 3; n = histogramCount(t, run.reg, name, lane) {
				if time.Now().After(deadline) {
					t.Fatalf("%s{lane=%q} counts %d requests, want 3", name, lane, n)
				}
				time.Sleep(10 * time.Millisecond) // a histogram has no event to await
			}
		}
	}
}

// histogramCount returns the sample count of the histogram name{lane} of
// reg.
func histogramCount(tb testing.TB, reg *prometheus.Registry, name, lane string) uint64 {
	tb.Helper()
	return laneMetric(tb, reg, name, lane).GetHistogram().GetSampleCount()
}

// laneMetric returns the series name{lane} of reg; nil when there is none.
func laneMetric(tb testing.TB, reg *prometheus.Registry, name, lane string) *dto.Metric {
	tb.Helper()
	fams, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "lane" && l.GetValue() == lane {
					return m
				}
			}
		}
	}
	return nil
}
