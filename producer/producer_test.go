package producer_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/devstack"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

const secret = "producer-test-secret-0123456789"

type harness struct {
	srv    *producer.Server
	redis  *miniredis.Miniredis
	url    string
	broker *devstack.Broker
	bus    bus.Config
	store  *store.Redis
	stop   context.CancelFunc // ends the producer's Run
}

// mustStart runs a producer against kfake and miniredis, without consumers.
func mustStart(tb testing.TB, mutate func(*producer.Config)) *harness {
	tb.Helper()
	return mustStartHooked(tb, mutate, nil)
}

// mustStartHooked is mustStart with hook, when not nil, on the producer's
// Redis client (to fail chosen commands).
func mustStartHooked(tb testing.TB, mutate func(*producer.Config), hook redis.Hook) *harness {
	tb.Helper()
	cfg := bus.DefaultConfig()
	cfg.Partitions = 2
	b := stacktest.Broker(tb, cfg, false)
	cfg.Brokers = []string{b.Addr()}
	m, rdb := stacktest.Miniredis(tb)
	if hook != nil {
		rdb.AddHook(hook)
	}
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		tb.Fatal(err)
	}
	pcfg := producer.DefaultConfig()
	pcfg.MaxTextChars = 10
	pcfg.BodyLimit = 1024
	pcfg.ProduceTimeout = 500 * time.Millisecond
	pcfg.ShutdownTimeout = 2 * time.Second
	pcfg.UserRate = producer.Rate{}
	if mutate != nil {
		mutate(&pcfg)
	}
	reg := prometheus.NewRegistry()
	p, err := producer.New(pcfg, cfg, v, st, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		tb.Fatal(err)
	}
	addr, stop := mustRun(tb, p, func() { observed.collect(reg) })
	routes.add(p)
	return &harness{srv: p, redis: m, url: "http://" + addr, broker: b, bus: cfg, store: st, stop: stop}
}

// mustRun runs p on a listener of its own until the test ends, then closes
// it and calls after, and returns its address once p is ready, and what
// ends its Run earlier.
func mustRun(tb testing.TB, p *producer.Server, after func()) (addr string, stop context.CancelFunc) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done; p.Close(); after() })
	for !p.Ready() {
		select {
		case err := <-done:
			tb.Fatalf("producer stopped: %v", err)
		case <-time.After(5 * time.Millisecond): // readiness has no event to await
		}
	}
	return ln.Addr().String(), cancel
}

func token(tb testing.TB, tenant, user string) string {
	tok, err := auth.Mint(secret, tenant, user, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

type response struct {
	code    int
	header  http.Header
	body    []byte
	problem producer.Problem
}

func (h *harness) send(tb testing.TB, method, path, auth, contentType, body string) response {
	tb.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	r := response{code: resp.StatusCode, header: resp.Header}
	r.body, _ = io.ReadAll(resp.Body)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		if err := json.Unmarshal(r.body, &r.problem); err != nil {
			tb.Fatalf("problem body %q: %v", r.body, err)
		}
	}
	return r
}

func TestErrorsAreProblems(t *testing.T) {
	h := mustStart(t, nil)
	bearer := "Bearer " + token(t, "t1", "u1")
	expired, _ := auth.Mint(secret, "t1", "u1", time.Second, time.Now().Add(-time.Hour))
	wrongKey, _ := auth.Mint("another-secret-0123456789", "t1", "u1", time.Hour, time.Now())
	const dlg = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name, method, path, auth, ctype, body string
		code                                  int
		detail                                string
	}{
		{"NoToken", "POST", "/v1/chat", "", "application/json", `{"text":"hi"}`, 401, "missing bearer token"},
		{"NotBearer", "POST", "/v1/chat", "Basic dTpw", "application/json", `{"text":"hi"}`, 401, "missing bearer token"},
		{"Expired", "POST", "/v1/chat", "Bearer " + expired, "application/json", `{"text":"hi"}`, 401, "expired"},
		{"WrongKey", "POST", "/v1/chat", "Bearer " + wrongKey, "application/json", `{"text":"hi"}`, 401, "signature"},
		{"Garbage", "POST", "/v1/chat", "Bearer abc.def.ghi", "application/json", `{"text":"hi"}`, 401, "invalid token"},
		{"BadJSON", "POST", "/v1/chat", bearer, "application/json", `{"text":`, 400, "malformed JSON"},
		{"NotObject", "POST", "/v1/chat", bearer, "application/json", `[1]`, 400, "body must be a JSON object"},
		{"Empty", "POST", "/v1/chat", bearer, "application/json", ``, 400, "JSON object"},
		{"TwoObjects", "POST", "/v1/chat", bearer, "application/json", `{"text":"a"}{"text":"b"}`, 400, "exactly one"},
		{"TrailingBrace", "POST", "/v1/chat", bearer, "application/json", `{"text":"a"}}`, 400, "exactly one"},
		{"TrailingBracket", "POST", "/v1/chat", bearer, "application/json", `{"text":"a"} ]`, 400, "exactly one"},
		{"TrailingSpace", "POST", "/v1/chat", bearer, "application/json", "{\"text\":\"a\",\"wait_ms\":-1} \r\n\t", 400, "wait_ms must not be negative"},
		{"WrongType", "POST", "/v1/chat", bearer, "application/json", `{"text":5}`, 400, "field text must be string"},
		{"UnknownField", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","txet":"b"}`, 400, "unknown field"},
		{"EmptyText", "POST", "/v1/chat", bearer, "application/json", `{"text":"  "}`, 400, "text must not be empty"},
		{"LongText", "POST", "/v1/chat", bearer, "application/json", `{"text":"一二三四五六七八九十十"}`, 400, "11 characters, at most 10"},
		{"InvalidUTF8", "POST", "/v1/chat", bearer, "application/json", "{\"text\":\"\xff\xfe\"}", 400, "UTF-8"},
		{"BadDialog", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","dialog_id":"ABC"}`, 400, "dialog_id"},
		{"UpperDialog", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","dialog_id":"0123456789ABCDEF0123456789ABCDEF"}`, 400, "dialog_id"},
		{"BadMode", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","mode":"later"}`, 400, "mode must be"},
		{"NegativeWait", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","wait_ms":-1}`, 400, "wait_ms must not be negative"},
		{"HugeWait", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","wait_ms":999999999}`, 400, "wait_ms must be at most"},
		// Times a million, these overflow a Duration to a negative value.
		{"OverflowWait", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","wait_ms":9223372036855}`, 400, "wait_ms must be at most"},
		{"OverflowWaitAsync", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","mode":"async","wait_ms":18446744073709}`, 400, "wait_ms must be at most"},
		{"CallbackURLWithoutMode", "POST", "/v1/chat", bearer, "application/json", `{"text":"a","callback_url":"https://x.example/cb"}`, 400, "callback_url"},
		{"TooLarge", "POST", "/v1/chat", bearer, "application/json", `{"text":"` + strings.Repeat("a", 2000) + `"}`, 413, ""},
		{"UnknownRoute", "GET", "/v1/nope", bearer, "", "", 404, ""},
		{"WrongMethod", "PUT", "/v1/chat", bearer, "", "", 405, "PUT"},
		{"PollUnknown", "GET", "/v1/chat/" + dlg + "/01890000-0000-7000-8000-000000000000", bearer, "", "", 404, "no such request"},
		{"PollBadID", "GET", "/v1/chat/xyz/abc", bearer, "", "", 404, "no such request"},
		{"PollBadWait", "GET", "/v1/chat/" + dlg + "/r1?wait_ms=soon", bearer, "", "", 400, "wait_ms"},
		{"PollOverflowWait", "GET", "/v1/chat/" + dlg + "/r1?wait_ms=18446744073709", bearer, "", "", 400, "wait_ms must be at most"},
		{"HistoryBadID", "GET", "/v1/dialogs/not-hex", bearer, "", "", 400, "dialog_id"},
		{"DeleteBadID", "DELETE", "/v1/dialogs/not-hex", bearer, "", "", 400, "dialog_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.send(t, tt.method, tt.path, tt.auth, tt.ctype, tt.body)
			if r.code != tt.code {
				t.Fatalf("status %d, want %d: %s", r.code, tt.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
				t.Fatalf("Content-Type %q, want application/problem+json", ct)
			}
			p := r.problem
			if p.Status != tt.code || p.Title != http.StatusText(tt.code) || !strings.HasPrefix(p.Type, "/problems/") {
				t.Fatalf("problem %+v", p)
			}
			if !strings.Contains(p.Detail, tt.detail) {
				t.Fatalf("detail %q does not mention %q", p.Detail, tt.detail)
			}
			if tt.code == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

func TestAcceptedRequestIsOnKafka(t *testing.T) {
	h := mustStart(t, nil)
	bearer := "Bearer " + token(t, "t1", "u1")
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"还能退吗","mode":"async"}`)
	if r.code != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	var q producer.QueuedBody
	if err := json.Unmarshal(r.body, &q); err != nil {
		t.Fatal(err)
	}
	if r.header.Get("Location") != q.PollURL || q.Status != "queued" || !envelope.ValidDialogID(q.DialogID) {
		t.Fatalf("queued body %+v, Location %q", q, r.header.Get("Location"))
	}
	// The poll says queued (202) until a consumer answers.
	if p := h.send(t, "GET", q.PollURL+"?wait_ms=0", bearer, "", ""); p.code != http.StatusAccepted {
		t.Fatalf("poll of a queued request: %d %s", p.code, p.body)
	}

	recs := readRecords(t, h, 1)
	if len(recs) != 1 {
		t.Fatalf("%d records on %s, want 1", len(recs), h.bus.RequestsTopic)
	}
	rec := recs[0]
	req, err := envelope.DecodeRequest(rec.Value)
	if err != nil {
		t.Fatal(err)
	}
	if string(rec.Key) != "t1/u1/"+q.DialogID || req.RequestID != q.RequestID || req.Text != "还能退吗" ||
		req.Reply.Topic != h.bus.RepliesTopic || req.Reply.Partition < 0 || !req.Deadline.After(req.CreatedAt) {
		t.Fatalf("record key %q value %+v", rec.Key, req)
	}
}

// TestAnyContentTypeIsJSON: the body is read as JSON whatever Content-Type
// says (curl -d labels it a form).
func TestAnyContentTypeIsJSON(t *testing.T) {
	h := mustStart(t, nil)
	bearer := "Bearer " + token(t, "t1", "u1")
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "", "application/json; charset=utf-8"} {
		if r := h.send(t, "POST", "/v1/chat", bearer, ct, `{"text":"q","mode":"async"}`); r.code != http.StatusAccepted {
			t.Errorf("Content-Type %q: %d %s", ct, r.code, r.body)
		}
	}
}

func TestWaitRunsOutTo202(t *testing.T) {
	h := mustStart(t, nil)
	bearer := "Bearer " + token(t, "t1", "u1")
	start := time.Now()
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"hello","wait_ms":150}`)
	if r.code != http.StatusAccepted {
		t.Fatalf("no consumer: status %d, want 202 after the wait: %s", r.code, r.body)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("answered 202 after %v, before wait_ms", took)
	}
	// Its poll_url knows the request: still queued, not unknown.
	var q producer.QueuedBody
	if err := json.Unmarshal(r.body, &q); err != nil {
		t.Fatal(err)
	}
	if p := h.send(t, "GET", q.PollURL+"?wait_ms=0", bearer, "", ""); p.code != http.StatusAccepted {
		t.Fatalf("poll after a wait ran out: %d %s, want 202", p.code, p.body)
	}
}

func TestKafkaDownIs503(t *testing.T) {
	h := mustStart(t, nil)
	bearer := "Bearer " + token(t, "t1", "u1")
	h.broker.Close()
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"hello","mode":"async"}`)
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After", r.code, r.header.Get("Retry-After"))
	}
}

func TestDeleteDialog(t *testing.T) {
	h := mustStart(t, nil)
	bearer := "Bearer " + token(t, "t1", "u1")
	const dlg = "0123456789abcdef0123456789abcdef"
	d := store.Dialog{Tenant: "t1", User: "u1", ID: dlg}
	rep := envelope.Reply{V: 1, RequestID: "r1", Tenant: "t1", User: "u1", DialogID: dlg, Status: "done", Answer: "a", FinishedAt: time.Now()}
	if _, _, err := h.store.Complete(context.Background(), d, rep, time.Now(),
		envelope.Turn{Role: "user", Content: "q", RequestID: "r1"}, envelope.Turn{Role: "assistant", Content: "a", RequestID: "r1"}); err != nil {
		t.Fatal(err)
	}
	var body producer.DialogBody
	r := h.send(t, "GET", "/v1/dialogs/"+dlg, bearer, "", "")
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Turns) != 2 {
		t.Fatalf("history before delete: %s", r.body)
	}
	if r := h.send(t, "DELETE", "/v1/dialogs/"+dlg, bearer, "", ""); r.code != http.StatusNoContent {
		t.Fatalf("delete: %d", r.code)
	}
	r = h.send(t, "GET", "/v1/dialogs/"+dlg, bearer, "", "")
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Turns) != 0 || !strings.Contains(string(r.body), `"turns":[]`) {
		t.Fatalf("history after delete: %s", r.body)
	}
}

// TestAdmissionWithConsumersStopped: with no consumer, the lag grows; a
// wait-mode request that cannot be answered within its wait is refused at
// once with 503 and Retry-After, while async requests are accepted until
// the backlog bound, then refused too.
func TestAdmissionWithConsumersStopped(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) {
		c.AdmissionInterval = 20 * time.Millisecond
		c.AdmissionMinRate = 10 // requests/s: 15 queued = 1.5 s of wait
		c.MaxLag = 20
	})
	bearer := "Bearer " + token(t, "t1", "u1")
	for i := range 15 {
		if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","mode":"async"}`); r.code != http.StatusAccepted {
			t.Fatalf("async %d under the backlog bound: %d %s", i, r.code, r.body)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// With no consumer, a request that waited would end in a 202: a 503
		// naming the queue wait is the refusal at the door.
		r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","wait_ms":1000}`)
		if r.code == http.StatusServiceUnavailable {
			if r.header.Get("Retry-After") == "" || !strings.Contains(r.problem.Detail, "queue wait") {
				t.Fatalf("503 without Retry-After or reason: %v %+v", r.header, r.problem)
			}
			break
		}
		if r.code != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("wait-mode with a 1.5 s queue ahead: %d %s", r.code, r.body)
		}
	}
	// Async is still accepted until the backlog passes its bound.
	var refused bool
	for i := 0; i < 60 && !refused; i++ {
		r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","mode":"async"}`)
		switch r.code {
		case http.StatusAccepted:
		case http.StatusServiceUnavailable:
			if !strings.Contains(r.problem.Detail, "bound is 20") || r.header.Get("Retry-After") == "" {
				t.Fatalf("backlog 503: %+v", r.problem)
			}
			refused = true
		default:
			t.Fatalf("async: %d %s", r.code, r.body)
		}
		if !refused {
			time.Sleep(5 * time.Millisecond) // let the 20 ms refresh see the lag
		}
	}
	if !refused {
		t.Fatal("async requests never refused past the backlog bound")
	}
}

func TestRateLimits(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) {
		c.UserRate = producer.Rate{N: 3, Per: time.Minute, Burst: 3}
		c.TenantRate = producer.Rate{N: 5, Per: time.Minute, Burst: 5}
	})
	ask := func(tenant, user string) response {
		return h.send(t, "POST", "/v1/chat", "Bearer "+token(t, tenant, user), "application/json", `{"text":"q","mode":"async"}`)
	}
	for i := range 3 {
		if r := ask("t1", "alice"); r.code != http.StatusAccepted {
			t.Fatalf("alice %d within her limit: %d %s", i, r.code, r.body)
		}
	}
	r := ask("t1", "alice")
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || !strings.Contains(r.problem.Detail, "user") {
		t.Fatalf("alice over her limit: %d %v %+v", r.code, r.header, r.problem)
	}
	if r := ask("t1", "bob"); r.code != http.StatusAccepted {
		t.Fatalf("bob is not limited by alice: %d", r.code)
	}
	if r := ask("t1", "carol"); r.code != http.StatusAccepted {
		t.Fatalf("carol, 5th of the tenant: %d", r.code)
	}
	if r := ask("t1", "dave"); r.code != http.StatusTooManyRequests || !strings.Contains(r.problem.Detail, "tenant") {
		t.Fatalf("dave, 6th of the tenant: %d %+v", r.code, r.problem)
	}
	if r := ask("t2", "alice"); r.code != http.StatusAccepted {
		t.Fatalf("another tenant's alice: %d", r.code)
	}
	// Redis unreachable: the shared limits fail open.
	h.redis.Close()
	if r := ask("t1", "alice"); r.code != http.StatusAccepted {
		t.Fatalf("with Redis down: %d %s, want the request accepted (fail open)", r.code, r.body)
	}
}

func TestGlobalRateCap(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.GlobalRate = producer.Rate{N: 2, Per: time.Hour, Burst: 2} })
	bearer := "Bearer " + token(t, "t1", "u1")
	for i := range 2 {
		if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","mode":"async"}`); r.code != http.StatusAccepted {
			t.Fatalf("request %d: %d", i, r.code)
		}
	}
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","mode":"async"}`)
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("over the global cap: %d %v", r.code, r.header)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]producer.Rate{
		"": {}, "0": {}, "30/m": {N: 30, Per: time.Minute, Burst: 30}, "2000/s": {N: 2000, Per: time.Second, Burst: 2000},
		"5/10s:20": {N: 5, Per: 10 * time.Second, Burst: 20}, "1/h": {N: 1, Per: time.Hour, Burst: 1},
	} {
		got, err := producer.ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if back, _ := producer.ParseRate(got.String()); back != got {
			t.Errorf("String of %+v reads back as %+v", got, back)
		}
	}
	for _, bad := range []string{"30", "x/m", "-1/m", "3/fortnight", "3/m:0", "3/m:x", "3/-1s"} {
		if _, err := producer.ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
}

func TestCORSAndGzip(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) {
		c.CORSOrigins = []string{"https://shop.example"}
		c.GzipMinBytes = 64
	})
	req, _ := http.NewRequest(http.MethodOptions, h.url+"/v1/chat", nil)
	req.Header.Set("Origin", "https://shop.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example" || !strings.Contains(strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight from an allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	req.Header.Set("Origin", "https://evil.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin allowed: %v", resp.Header)
	}

	// A large enough answer is gzipped for a client that accepts it.
	bearer := "Bearer " + token(t, "t1", "u1")
	req, _ = http.NewRequest(http.MethodGet, h.url+"/v1/dialogs/0123456789abcdef0123456789abcdef", nil)
	req.Header.Set("Authorization", bearer)
	req.Header.Set("Accept-Encoding", "gzip")
	tr := &http.Transport{DisableCompression: true}
	resp, err = (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" {
		t.Fatalf("a 50-byte body: %d, Content-Encoding %q (want none below the minimum)", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	d := store.Dialog{Tenant: "t1", User: "u1", ID: "0123456789abcdef0123456789abcdef"}
	rep := envelope.Reply{V: 1, RequestID: "r1", Tenant: "t1", User: "u1", DialogID: d.ID, Status: "done", Answer: strings.Repeat("答", 200), FinishedAt: time.Now()}
	if _, _, err := h.store.Complete(context.Background(), d, rep, time.Now(),
		envelope.Turn{Role: "user", Content: "q", RequestID: "r1"}, envelope.Turn{Role: "assistant", Content: rep.Answer, RequestID: "r1"}); err != nil {
		t.Fatal(err)
	}
	resp, err = (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("a 600-byte history: %d, Content-Encoding %q, want gzip", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
}

// TestAdmissionCountsWhatItAccepted: the requests a replica accepted since
// it last measured the lag count at once, and a wait-mode request is
// admitted only while the estimate leaves a fifth of its wait as headroom.
// With no consumer and a completion rate floored at 10/s, ten accepted
// requests make an estimate of 1 s, too much for a wait of 1 s.
func TestAdmissionCountsWhatItAccepted(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) {
		c.AdmissionInterval = 2 * time.Second // no refresh during the test, most likely
		c.AdmissionMinRate = 10
	})
	bearer := "Bearer " + token(t, "t1", "u1")
	// A wait that runs out (no consumer) gives the replica an answer time,
	// a slow one, so it decides on the estimate rather than probing.
	if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","wait_ms":50}`); r.code != http.StatusAccepted {
		t.Fatalf("first wait-mode request: %d %s", r.code, r.body)
	}
	for i := range 9 {
		if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","mode":"async"}`); r.code != http.StatusAccepted {
			t.Fatalf("async %d: %d %s", i, r.code, r.body)
		}
	}
	// Refused at the door: a request that waited would end in a 202.
	r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","wait_ms":1000}`)
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.problem.Detail, "queue wait") {
		t.Fatalf("wait-mode request behind 10 accepted at 10/s: %d %s, want 503 for the queue wait", r.code, r.body)
	}
	// A longer wait leaves room: admitted (and, with no consumer, 202).
	if r := h.send(t, "POST", "/v1/chat", bearer, "application/json", `{"text":"q","wait_ms":1500}`); r.code != http.StatusAccepted {
		t.Fatalf("wait-mode request with 1.5 s to wait: %d %s, want 202", r.code, r.body)
	}
}
