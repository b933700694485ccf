package producer_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/envelope"
)

func laneToken(tb testing.TB, lane string) string {
	tb.Helper()
	tok, err := auth.MintLane(secret, "t1", "bot", lane, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return "Bearer " + tok
}

// topicRecords returns how many records each topic holds: the ingress
// answers only once Kafka acknowledged, so the count is final.
func topicRecords(t *testing.T, h *harness, topics ...string) map[string]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.bus.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int64{}
	ends.Each(func(o kadm.ListedOffset) { n[o.Topic] += o.Offset })
	return n
}

// lastRequest returns the newest request on topic.
func lastRequest(t *testing.T, h *harness, topic string) envelope.Request {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.bus.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := topicRecords(t, h, topic)[topic]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last envelope.Request
	var seen int64
	for seen < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records on %s within 10s", seen, want, topic)
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen++
			req, err := envelope.DecodeRequest(r.Value)
			if err != nil {
				t.Fatal(err)
			}
			if req.CreatedAt.After(last.CreatedAt) || last.RequestID == "" {
				last = req
			}
		})
	}
	return last
}

// TestLaneRouting: a question goes on its lane's topic, with its lane's
// deadline; a bulk token asks in the bulk lane only.
func TestLaneRouting(t *testing.T) {
	const bulkTTL = 12 * time.Minute
	h := mustStart(t, func(c *producer.Config) { c.BulkRequestTTL = bulkTTL })
	inter, bulk := h.bus.RequestsTopic, h.bus.BulkTopic
	tests := []struct {
		name, tokenLane, body string
		code                  int
		topic                 string
		detail                string
		ttl                   time.Duration // of the deadline; 0: the lane's TTL
	}{
		{"Default", "", `{"text":"q","mode":"async"}`, 202, inter, "", 0},
		{"Interactive", "", `{"text":"q","mode":"async","lane":"interactive"}`, 202, inter, "", 0},
		{"Bulk", "", `{"text":"q","mode":"async","lane":"bulk"}`, 202, bulk, "", 0},
		{"BulkWaitMode", "", `{"text":"q","wait_ms":20,"lane":"bulk"}`, 202, bulk, "", 0},
		{"InteractiveClaimBoth", "interactive", `{"text":"q","mode":"async","lane":"bulk"}`, 202, bulk, "", 0},
		{"BulkClaimDefaultsToBulk", "bulk", `{"text":"q","mode":"async"}`, 202, bulk, "", 0},
		{"BulkClaimAsksBulk", "bulk", `{"text":"q","mode":"async","lane":"bulk"}`, 202, bulk, "", 0},
		{"BulkClaimAsksInteractive", "bulk", `{"text":"q","mode":"async","lane":"interactive"}`, 403, "", "claim lane is bulk", 0},
		{"UnknownLane", "", `{"text":"q","mode":"async","lane":"express"}`, 400, "", `lane must be interactive or bulk, got "express"`, 0},
		{"LaneCase", "", `{"text":"q","mode":"async","lane":"Bulk"}`, 400, "", "lane must be interactive or bulk", 0},
		{"LaneNotString", "", `{"text":"q","mode":"async","lane":1}`, 400, "", "field lane must be string", 0},
		{"BulkShorterDeadline", "", `{"text":"q","mode":"async","lane":"bulk","deadline_ms":300000}`, 202, bulk, "", 5 * time.Minute},
		{"BulkDeadlineClamped", "", `{"text":"q","mode":"async","lane":"bulk","deadline_ms":3600000}`, 202, bulk, "", bulkTTL},
		{"BulkHugeDeadlineClamped", "", `{"text":"q","mode":"async","lane":"bulk","deadline_ms":9223372036854775807}`, 202, bulk, "", bulkTTL},
		{"InteractiveDeadlineClamped", "", `{"text":"q","mode":"async","deadline_ms":600000}`, 202, inter, "", 30 * time.Second},
		{"InteractiveShorterDeadline", "", `{"text":"q","mode":"async","deadline_ms":5000}`, 202, inter, "", 5 * time.Second},
		{"ZeroDeadline", "", `{"text":"q","mode":"async","deadline_ms":0}`, 400, "", "deadline_ms must be positive", 0},
		{"NegativeDeadline", "", `{"text":"q","mode":"async","lane":"bulk","deadline_ms":-1}`, 400, "", "deadline_ms must be positive", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := topicRecords(t, h, inter, bulk)
			r := h.send(t, "POST", "/v1/chat", laneToken(t, tt.tokenLane), "application/json", tt.body)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d: %s", r.code, tt.code, r.body)
			}
			after := topicRecords(t, h, inter, bulk)
			if tt.code != 202 {
				if r.problem.Status != tt.code || !strings.Contains(r.problem.Detail, tt.detail) {
					t.Errorf("problem %+v, want status %d and detail containing %q", r.problem, tt.code, tt.detail)
				}
				if after[inter] != before[inter] || after[bulk] != before[bulk] {
					t.Errorf("refused question put on Kafka: %v -> %v", before, after)
				}
				return
			}
			for _, topic := range []string{inter, bulk} {
				want := before[topic]
				if topic == tt.topic {
					want++
				}
				if after[topic] != want {
					t.Errorf("%s holds %d records, want %d", topic, after[topic], want)
				}
			}
			var q producer.QueuedBody
			if err := json.Unmarshal(r.body, &q); err != nil {
				t.Fatal(err)
			}
			req := lastRequest(t, h, tt.topic)
			ttl := tt.ttl
			switch {
			case ttl != 0:
			case tt.topic == bulk:
				ttl = bulkTTL
			default:
				ttl = producer.DefaultConfig().RequestTTL
			}
			if req.RequestID != q.RequestID || req.Key() != "t1/bot/"+q.DialogID || !req.Deadline.Equal(req.CreatedAt.Add(ttl)) {
				t.Errorf("record %+v for %+v, want deadline created_at + %v", req, q, ttl)
			}
			// Its poll URL works as for any question.
			if p := h.send(t, "GET", q.PollURL+"?wait_ms=0", laneToken(t, tt.tokenLane), "", ""); p.code != http.StatusAccepted {
				t.Errorf("poll: %d %s", p.code, p.body)
			}
		})
	}
}

// TestUnknownLaneClaimIs401: a token whose lane claim this server cannot
// read is invalid, not a token without restriction.
func TestUnknownLaneClaimIs401(t *testing.T) {
	h := mustStart(t, nil)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "bot", "tenant": "t1", "lane": "express", "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	r := h.send(t, "POST", "/v1/chat", "Bearer "+tok, "application/json", `{"text":"q","mode":"async","lane":"bulk"}`)
	if r.code != http.StatusUnauthorized || !strings.Contains(r.problem.Detail, "claim lane") {
		t.Fatalf("token with lane express: %d %s, want 401 naming the claim", r.code, r.body)
	}
}

// TestBulkAdmission: the interactive queue's wait estimate and backlog
// bound do not refuse bulk questions, wait mode included; a bulk question
// is refused, 503 with Retry-After, only when the bulk queue's own wait
// (its backlog over its drain rate) exceeds its own deadline, and the
// interactive backlog does not count against it.
func TestBulkAdmission(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) {
		c.AdmissionInterval = 2 * time.Second // no refresh during the test, most likely
		c.AdmissionMinRate = 10               // no consumer: the drain rate is this floor
		c.MaxLag = 5
	})
	bearer := "Bearer " + token(t, "t1", "u1")
	// As in TestAdmissionCountsWhatItAccepted: a slow answer time, then
	// 10 queued interactive requests at 10/s refuse a 1 s wait.
	if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","wait_ms":50}`); r.code != http.StatusAccepted {
		t.Fatalf("first wait-mode request: %d %s", r.code, r.body)
	}
	for i := range 9 {
		code := http.StatusAccepted
		if i >= 5 {
			code = http.StatusServiceUnavailable // over MaxLag
		}
		if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","mode":"async"}`); r.code != code {
			t.Fatalf("async %d: %d %s, want %d", i, r.code, r.body, code)
		}
	}
	if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","wait_ms":500}`); r.code != http.StatusServiceUnavailable {
		t.Fatalf("interactive wait-mode request behind 6 at 10/s: %d %s, want 503", r.code, r.body)
	}
	// The same question in the bulk lane is admitted (and, with no
	// consumer, its wait runs out to 202).
	if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","wait_ms":100,"lane":"bulk"}`); r.code != http.StatusAccepted {
		t.Fatalf("bulk wait-mode request: %d %s, want 202", r.code, r.body)
	}
	// 1 s deadlines: at 10/s, a bulk question is admitted while at most
	// 10 are queued ahead of it, past MaxLag too.
	const second = `{"text":"q","mode":"async","lane":"bulk","deadline_ms":1000}`
	for i := range 10 {
		if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", second); r.code != http.StatusAccepted {
			t.Fatalf("bulk async %d with 1 s to go behind %d: %d %s", i, i+1, r.code, r.body)
		}
	}
	// 11 queued take 1.1 s: the next 1 s question is refused, with its
	// problem and a Retry-After.
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", second)
	if r.code != http.StatusServiceUnavailable || r.problem.Status != http.StatusServiceUnavailable ||
		!strings.Contains(r.problem.Detail, "bulk queue's wait") || !strings.Contains(r.problem.Detail, "exceeds the request's deadline") ||
		r.header.Get("Retry-After") != "1" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") {
		t.Fatalf("bulk question whose deadline the bulk queue cannot meet: %d %v %s, want 503 problem+json with Retry-After 1", r.code, r.header, r.body)
	}
	// A longer deadline is met: the same queue is admitted.
	if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","mode":"async","lane":"bulk","deadline_ms":5000}`); r.code != http.StatusAccepted {
		t.Fatalf("bulk question with 5 s to go behind 1.1 s: %d %s, want 202", r.code, r.body)
	}
	if n := topicRecords(t, h, h.bus.BulkTopic)[h.bus.BulkTopic]; n != 12 {
		t.Fatalf("bulk topic holds %d records, want 12", n)
	}
}

// TestBotTokenRateLimited: the per-user rate limit applies to a bot's
// token (claim lane bulk) as to a shopper's: the lane does not lift it.
func TestBotTokenRateLimited(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.UserRate = producer.Rate{N: 3, Per: time.Minute, Burst: 3} })
	bot := laneToken(t, envelope.LaneBulk)
	for i := range 3 {
		if r := h.send(t, "POST", "/v1/chat", bot, "application/json", `{"text":"q","mode":"async"}`); r.code != http.StatusAccepted {
			t.Fatalf("bot question %d within its limit: %d %s", i, r.code, r.body)
		}
	}
	r := h.send(t, "POST", "/v1/chat", bot, "application/json", `{"text":"q","mode":"async","lane":"bulk"}`)
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || !strings.Contains(r.problem.Detail, "rate limit of this user") {
		t.Fatalf("bot over its user limit: %d %v %s, want 429 with Retry-After", r.code, r.header, r.body)
	}
	if n := topicRecords(t, h, h.bus.BulkTopic)[h.bus.BulkTopic]; n != 3 {
		t.Fatalf("bulk topic holds %d records, want the 3 admitted", n)
	}
}

// TestBulkRequestTTLValidated: the bulk TTL is at least the interactive
// one, and the result store keeps results at least as long.
func TestBulkRequestTTLValidated(t *testing.T) {
	c := producer.DefaultConfig()
	c.BulkRequestTTL = c.RequestTTL - time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "bulk-request-ttl") {
		t.Errorf("bulk TTL below the request TTL: %v, want an error naming bulk-request-ttl", err)
	}
	s := producer.Settings{Producer: producer.DefaultConfig()}
	s.Store.ResultTTL = 5 * time.Minute
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "result-ttl") || !strings.Contains(err.Error(), "SLUICE_BULK_REQUEST_TTL") {
		t.Errorf("result TTL below the bulk TTL: %v, want an error naming both", err)
	}
}
