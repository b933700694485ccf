package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/devstack"
	"sluice/shared/devstack/loadgen"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/envelope"
)

// httpConfig is a small, quick run against url: it stops by its count or
// by giving up, never by its duration.
func httpConfig(url string) loadgen.Config {
	c := loadgen.DefaultConfig()
	c.URL = url
	c.Users = 3
	c.Duration = time.Hour
	c.Secret = "loadgen-test-secret-0123456789"
	c.Backoff = 10 * time.Millisecond
	c.BackoffMax = 80 * time.Millisecond
	c.GiveUp = 300 * time.Millisecond
	return c
}

// problem answers status with a problem+json body.
func problem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "/problems/x", "title": http.StatusText(status), "status": status, "detail": detail})
}

// maxAttempts is the most requests one user can make in secs when it
// pauses at least min(base·2^(i-1), limit) after its i-th consecutive
// failure, as backoff.Exponential guarantees.
func maxAttempts(secs float64, base, limit time.Duration) int64 {
	total := time.Duration(secs * float64(time.Second))
	var spent time.Duration
	n := int64(1)
	for d := base; ; n++ {
		spent += min(d, limit)
		if spent > total {
			return n
		}
		d *= 2
	}
}

func TestAnswered(t *testing.T) {
	var seen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Text     string `json:"text"`
			DialogID string `json:"dialog_id"`
		}
		if r.URL.Path != "/v1/chat" || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") ||
			json.NewDecoder(r.Body).Decode(&body) != nil || body.Text == "" || body.DialogID == "" {
			problem(w, http.StatusBadRequest, "not a chat request")
			return
		}
		seen.Add(1)
		_, _ = w.Write([]byte(`{"answer":"yes"}`))
	}))
	defer srv.Close()
	c := httpConfig(srv.URL)
	c.Count = 20
	res, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 20 || res.Answered != 20 || seen.Load() != 20 || res.Errors != 0 || res.Refused != 0 {
		t.Fatalf("sent %d answered %d (server saw %d) errors %d refused %d, want 20 answered of 20", res.Sent, res.Answered, seen.Load(), res.Errors, res.Refused)
	}
	if res.PerSecond <= 0 || res.MaxMS <= 0 || res.P50MS > res.P99MS {
		t.Fatalf("rates and latencies not measured: %+v", res)
	}
}

// TestServerErrorsNamed: against a server that answers every request 500,
// the run stops with an error naming the problem, and the summary lists it.
func TestServerErrorsNamed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problem(w, http.StatusInternalServerError, "the model exploded")
	}))
	defer srv.Close()
	const want = "500 Internal Server Error: the model exploded"

	t.Run("GaveUp", func(t *testing.T) {
		res, err := loadgen.Run(context.Background(), httpConfig(srv.URL), slog.New(slog.DiscardHandler))
		if !errors.Is(err, loadgen.ErrGaveUp) || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want ErrGaveUp naming %q", err, want)
		}
		if res.Answered != 0 || res.Errors == 0 || res.Errors != res.Sent || res.ErrorKinds["http_500"] != res.Errors {
			t.Fatalf("counts: %+v", res)
		}
		if len(res.Failures) != 1 || res.Failures[0].Text != want || res.Failures[0].Count != res.Errors {
			t.Fatalf("failures = %+v, want one: %q × %d", res.Failures, want, res.Errors)
		}
		var out bytes.Buffer
		if err := res.WriteText(&out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "http_500") {
			t.Fatalf("summary does not name the error:\n%s", out.String())
		}
	})
	t.Run("NothingAnswered", func(t *testing.T) {
		c := httpConfig(srv.URL)
		c.GiveUp = 0
		c.Count = 5
		_, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
		if !errors.Is(err, loadgen.ErrNothingAnswered) || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want ErrNothingAnswered naming %q", err, want)
		}
	})
}

// TestFirstDistinctFailures: the result keeps the first five distinct
// failures with their counts; the rest are counted by kind only.
func TestFirstDistinctFailures(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		switch {
		case i%3 == 0:
			w.WriteHeader(http.StatusOK)
		case i <= 14:
			problem(w, http.StatusBadGateway, "upstream "+string(rune('a'+i%7)))
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer srv.Close()
	c := httpConfig(srv.URL)
	c.Users = 1
	c.Count = 30
	c.Backoff, c.BackoffMax = time.Millisecond, time.Millisecond
	res, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) != 5 {
		t.Fatalf("failures = %+v, want the first 5 distinct", res.Failures)
	}
	var kept int64
	for _, f := range res.Failures {
		if f.Kind != "http_502" || !strings.HasPrefix(f.Text, "502 Bad Gateway: upstream ") {
			t.Fatalf("failure %+v, want the first distinct 502s", f)
		}
		kept += f.Count
	}
	if res.Answered != 10 || res.ErrorKinds["http_418"] != 10 || res.ErrorKinds["http_502"] != 10 || kept >= 10 {
		t.Fatalf("answered %d, kinds %v, %d in the kept failures", res.Answered, res.ErrorKinds, kept)
	}
}

// TestDeadServerBounded: against a closed port each user backs off, so the
// attempts stay within what the backoff allows in the run's time, and the
// run stops by itself, naming the transport error.
func TestDeadServerBounded(t *testing.T) {
	c := httpConfig("http://" + stacktest.RefusingAddr(t))
	res, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
	if !errors.Is(err, loadgen.ErrGaveUp) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v, want ErrGaveUp naming the refused connection", err)
	}
	bound := int64(c.Users) * maxAttempts(res.Seconds, c.Backoff, c.BackoffMax)
	if res.Errors == 0 || res.Errors > bound || res.ErrorKinds["transport"] != res.Errors {
		t.Fatalf("%d transport errors in %.2f s, want 1..%d", res.Errors, res.Seconds, bound)
	}
}

// TestHangupsCountedAtListener counts the connections at a listener that
// hangs up on every one: the users' attempts, as the server sees them,
// stay within what the backoff allows.
func TestHangupsCountedAtListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conn.Close()
		}
	}()
	c := httpConfig("http://" + ln.Addr().String())
	res, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
	ln.Close()
	<-done
	if !errors.Is(err, loadgen.ErrGaveUp) {
		t.Fatalf("err = %v, want ErrGaveUp", err)
	}
	bound := int64(c.Users) * maxAttempts(res.Seconds, c.Backoff, c.BackoffMax)
	// Attempts cut short by the give-up reached the listener but are not
	// counted as errors.
	if n := accepted.Load(); res.Errors == 0 || res.Errors > n || n > bound {
		t.Fatalf("%d connections accepted, %d errors counted in %.2f s, want 1 <= errors <= accepted <= %d", n, res.Errors, res.Seconds, bound)
	}
}

// TestRefusalsHonourRetryAfter: a 429 or 503 counts as refused, and the
// user waits its Retry-After (capped by RetryAfterMax) before asking again;
// without a Retry-After it backs off.
func TestRefusalsHonourRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		name       string
		status     int
		retryAfter string
		minGap     time.Duration
	}{
		{"429", http.StatusTooManyRequests, "1", 150 * time.Millisecond}, // capped at RetryAfterMax
		{"503Date", http.StatusServiceUnavailable, time.Now().Add(time.Hour).UTC().Format(http.TimeFormat), 150 * time.Millisecond},
		{"503Bare", http.StatusServiceUnavailable, "", 10 * time.Millisecond}, // the first backoff
	} {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			asked := map[string][]time.Time{} // by token
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tok := r.Header.Get("Authorization")
				mu.Lock()
				asked[tok] = append(asked[tok], time.Now())
				first := len(asked[tok]) == 1
				mu.Unlock()
				if first {
					if tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					problem(w, tt.status, "slow down")
					return
				}
				_, _ = w.Write([]byte(`{}`))
			}))
			defer srv.Close()
			c := httpConfig(srv.URL)
			c.Count = 3 * c.Users
			c.RetryAfterMax = 150 * time.Millisecond
			res, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if res.Refused != int64(c.Users) || res.Errors != 0 || res.ErrorKinds["http_"+tt.name[:3]] != int64(c.Users) {
				t.Fatalf("refused %d errors %d kinds %v, want %d refused", res.Refused, res.Errors, res.ErrorKinds, c.Users)
			}
			mu.Lock()
			defer mu.Unlock()
			for tok, at := range asked {
				if len(at) < 2 {
					continue // the count ran out before this user asked again
				}
				if gap := at[1].Sub(at[0]); gap < tt.minGap {
					t.Errorf("user %s asked again %v after its refusal, want at least %v", tok[len(tok)-8:], gap, tt.minGap)
				}
			}
		})
	}
}

func TestResultJSONIsOneLine(t *testing.T) {
	res := loadgen.Result{Target: "http", Mode: "wait", Users: 2, Seconds: 1.5, Sent: 3, Answered: 1, Errors: 2,
		ErrorKinds: map[string]int64{"transport": 2}, Failures: []loadgen.Failure{{Kind: "transport", Text: "dial tcp: refused\nsecond line", Count: 2}}}
	var out bytes.Buffer
	if err := res.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); len(lines) != 1 || !strings.HasSuffix(out.String(), "\n") {
		t.Fatalf("JSON is %d lines, want one ending in a newline:\n%s", len(lines), out.String())
	}
	var back loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || !reflect.DeepEqual(back, res) {
		t.Fatalf("decoded %+v, %v; want %+v", back, err, res)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*loadgen.Config)
		want []string // each a problem the error names
	}{
		{"Target", func(c *loadgen.Config) { c.Target = "smtp" }, []string{`SLUICE_TARGET (--target): unknown target "smtp"`}},
		{"Users", func(c *loadgen.Config) { c.Users = 0 }, []string{"SLUICE_USERS (--users): must be at least 1"}},
		{"Mode", func(c *loadgen.Config) { c.Mode = "callback" }, []string{`SLUICE_MODE (--mode): "callback"`}},
		{"URL", func(c *loadgen.Config) { c.URL = "127.0.0.1:8080" }, []string{"SLUICE_URL (--url)"}},
		{"Secret", func(c *loadgen.Config) { c.Secret = "" }, []string{"SLUICE_JWT_SECRET (--jwt-secret): is required"}},
		{"Tenant", func(c *loadgen.Config) { c.Tenant = "a/b" }, []string{`SLUICE_TENANT (--tenant): "a/b"`}},
		{"Backoff", func(c *loadgen.Config) { c.BackoffMax = c.Backoff / 2 }, []string{"backoff must be positive"}},
		{"Every", func(c *loadgen.Config) { c.GiveUp = -time.Second; c.Turns = 0 }, []string{"--give-up-after", "--turns"}},
		{"Rate", func(c *loadgen.Config) { c.Rate = -1; c.Warmup = -time.Second }, []string{"SLUICE_RATE (--rate)", "SLUICE_WARMUP (--warmup)"}},
		{"Kafka", func(c *loadgen.Config) { c.Target = "kafka"; c.Kafka.Brokers = []string{"localhost"}; c.Dialogs = 0 },
			[]string{`SLUICE_KAFKA_BROKERS (--kafka-brokers): "localhost"`, "SLUICE_DIALOGS (--dialogs)"}},
		// Settings of the other target do not matter.
		{"KafkaIgnoresUsers", func(c *loadgen.Config) { c.Target = "kafka"; c.Users = 0 }, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := loadgen.DefaultConfig()
			c.Secret = "s"
			tt.edit(&c)
			err := c.Validate()
			if (err == nil) != (len(tt.want) == 0) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to name %q", err, w)
				}
			}
		})
	}
}

// startBroker starts an embedded broker with the requests and replies
// topics.
func startBroker(t *testing.T) (*devstack.Broker, loadgen.Config) {
	t.Helper()
	c := loadgen.DefaultConfig()
	c.Target = loadgen.TargetKafka
	b, err := devstack.StartBroker(devstack.BrokerConfig{Addr: "127.0.0.1:0", Partitions: 3,
		Topics: []string{c.Kafka.RequestsTopic, c.Kafka.RepliesTopic}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	c.Kafka.Brokers = []string{b.Addr()}
	c.Count = 40
	c.Dialogs = 7
	return b, c
}

// TestKafkaAnswered: every request produced straight to Kafka is counted
// answered when its reply, keyed by request id, arrives.
func TestKafkaAnswered(t *testing.T) {
	_, c := startBroker(t)
	// A stand-in consumer: a reply for each request, to the topic it names.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Kafka.Brokers...), kgo.ConsumeTopics(c.Kafka.RequestsTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	replied := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			var bad error
			fs.EachRecord(func(r *kgo.Record) {
				req, err := envelope.DecodeRequest(r.Value)
				if err != nil || string(r.Key) != req.Key() {
					bad = errors.Join(bad, err, errors.New("key is not tenant/user/dialog"))
					return
				}
				cl.Produce(ctx, &kgo.Record{Topic: req.Reply.Topic, Key: []byte(req.RequestID), Value: []byte(`{}`)}, nil)
			})
			if bad != nil {
				replied <- bad
				return
			}
		}
		replied <- nil
	}()
	res, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
	cancel()
	if rerr := <-replied; rerr != nil {
		t.Fatalf("a produced request: %v", rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 40 || res.Answered != 40 || res.Errors != 0 || res.MaxMS <= 0 {
		t.Fatalf("sent %d answered %d errors %d max %.1f ms, want 40 answered", res.Sent, res.Answered, res.Errors, res.MaxMS)
	}
}

// TestKafkaNothingAnswered: with no consumer the run stops after the reply
// timeout and says nothing was answered.
func TestKafkaNothingAnswered(t *testing.T) {
	_, c := startBroker(t)
	c.ReplyTimeout = 300 * time.Millisecond
	res, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler))
	if !errors.Is(err, loadgen.ErrNothingAnswered) || !strings.Contains(err.Error(), "no reply on chat.replies") {
		t.Fatalf("err = %v, want ErrNothingAnswered naming the replies topic", err)
	}
	if res.Sent != 40 || res.Answered != 0 {
		t.Fatalf("sent %d answered %d, want 40 sent, none answered", res.Sent, res.Answered)
	}
}

// TestKafkaNoBroker: a dead broker address fails the run at once.
func TestKafkaNoBroker(t *testing.T) {
	addr := stacktest.RefusingAddr(t)
	c := loadgen.DefaultConfig()
	c.Target = loadgen.TargetKafka
	c.Kafka.Brokers = []string{addr}
	if _, err := loadgen.Run(context.Background(), c, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want one naming %s", err, addr)
	}
}
