package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/envelope"
)

// loadgen settings.
type loadSettings struct {
	target   string
	url      string
	users    int
	duration time.Duration
	count    int
	mode     string
	waitMS   int
	secret   string
	tenant   string
	text     string
	dialogs  int
	turns    int
	jsonOut  bool
}

// loadResult is what a run measured.
type loadResult struct {
	Target     string           `json:"target"`
	Mode       string           `json:"mode,omitempty"`
	Users      int              `json:"users,omitempty"`
	Seconds    float64          `json:"seconds"`
	Sent       int64            `json:"sent"`
	Answered   int64            `json:"answered"`
	Queued     int64            `json:"queued"`
	Errors     int64            `json:"errors"`
	PerSecond  float64          `json:"answered_per_second"`
	AcceptedPS float64          `json:"accepted_per_second,omitempty"`
	P50MS      float64          `json:"p50_ms"`
	P90MS      float64          `json:"p90_ms"`
	P99MS      float64          `json:"p99_ms"`
	MaxMS      float64          `json:"max_ms"`
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
}

func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ls := loadSettings{}
	bcfg := bus.DefaultConfig()
	fs := newFlagSet("loadgen", stderr)
	fs.StringVar(&ls.target, "target", "http", "http: closed-loop users against the API; kafka: requests produced straight to Kafka, replies counted")
	fs.StringVar(&ls.url, "url", "http://127.0.0.1:8080", "API base URL (target http)")
	fs.IntVar(&ls.users, "users", 200, "concurrent users, each asking, waiting for the answer, asking again (target http)")
	fs.DurationVar(&ls.duration, "duration", 20*time.Second, "how long to run (target http)")
	fs.IntVar(&ls.count, "count", 0, "stop after this many requests (0: duration only; target kafka: requests to produce, default 5000)")
	fs.StringVar(&ls.mode, "mode", "wait", "request mode: wait or async (target http)")
	fs.IntVar(&ls.waitMS, "wait-ms", 5000, "wait_ms of wait-mode requests")
	fs.StringVar(&ls.secret, "jwt-secret", devSecret, "HS256 secret to mint the users' tokens with")
	fs.StringVar(&ls.tenant, "tenant", "loadtest", "tenant of the users")
	fs.StringVar(&ls.text, "text", "优惠券还能用吗？", "question to ask")
	fs.IntVar(&ls.dialogs, "dialogs", 1000, "distinct dialogs (target kafka)")
	fs.IntVar(&ls.turns, "turns", 4, "questions a user asks in one dialog before starting a new one (target http)")
	fs.BoolVar(&ls.jsonOut, "json", false, "print the result as JSON")
	bcfg.RegisterFlags(fs)
	if err := parse(fs, args); err != nil {
		return usageError(err)
	}
	var res loadResult
	var err error
	switch ls.target {
	case "http":
		if ls.users < 1 || ls.duration <= 0 {
			return usageError(errors.New("--users and --duration must be positive"))
		}
		res, err = loadHTTP(ctx, ls)
	case "kafka":
		if len(bcfg.Brokers) == 0 {
			bcfg.Brokers = []string{"127.0.0.1:9092"}
		}
		if ls.count == 0 {
			ls.count = 5000
		}
		res, err = loadKafka(ctx, ls, bcfg)
	default:
		return usageError(settingError("target", fmt.Errorf("unknown target %q (want http or kafka)", ls.target)))
	}
	if err != nil {
		return err
	}
	if ls.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "target %s mode %s users %d: %.1f s, sent %d, answered %d (200), queued %d (202), errors %d\n",
		res.Target, res.Mode, res.Users, res.Seconds, res.Sent, res.Answered, res.Queued, res.Errors)
	fmt.Fprintf(stdout, "answered/s %.0f", res.PerSecond)
	if res.AcceptedPS > 0 {
		fmt.Fprintf(stdout, "  accepted/s %.0f", res.AcceptedPS)
	}
	fmt.Fprintf(stdout, "  latency ms p50 %.1f p90 %.1f p99 %.1f max %.1f\n", res.P50MS, res.P90MS, res.P99MS, res.MaxMS)
	for k, v := range res.ErrorKinds {
		fmt.Fprintf(stdout, "  error %s: %d\n", k, v)
	}
	return nil
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) fill(r *loadResult) {
	slices.Sort(l.d)
	pct := func(p float64) float64 {
		if len(l.d) == 0 {
			return 0
		}
		i := min(int(p*float64(len(l.d))), len(l.d)-1)
		return float64(l.d[i].Microseconds()) / 1000
	}
	r.P50MS, r.P90MS, r.P99MS = pct(0.50), pct(0.90), pct(0.99)
	if len(l.d) > 0 {
		r.MaxMS = float64(l.d[len(l.d)-1].Microseconds()) / 1000
	}
}

func loadHTTP(ctx context.Context, ls loadSettings) (loadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, ls.duration)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: ls.users, MaxConnsPerHost: ls.users}}
	var sent, answered, queued, failed atomic.Int64
	var kindsMu sync.Mutex
	kinds := map[string]int64{}
	fail := func(kind string) {
		failed.Add(1)
		kindsMu.Lock()
		kinds[kind]++
		kindsMu.Unlock()
	}
	var lat latencies
	var wg sync.WaitGroup
	start := time.Now()
	for u := range ls.users {
		tok, err := auth.Mint(ls.secret, ls.tenant, fmt.Sprintf("user-%d", u), ls.duration+time.Hour, time.Now())
		if err != nil {
			return loadResult{}, usageError(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			for n := 0; ctx.Err() == nil; n++ {
				if n%max(ls.turns, 1) == 0 {
					body, _ = json.Marshal(map[string]any{"text": ls.text, "dialog_id": randomDialog(), "mode": ls.mode, "wait_ms": ls.waitMS})
				}
				if ls.count > 0 && sent.Add(1) > int64(ls.count) {
					return
				} else if ls.count == 0 {
					sent.Add(1)
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ls.url+"/v1/chat", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						fail("transport")
					} else {
						sent.Add(-1) // cut off by the end of the run
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				took := time.Since(t0)
				switch resp.StatusCode {
				case http.StatusOK:
					answered.Add(1)
					lat.add(took)
				case http.StatusAccepted:
					queued.Add(1)
					lat.add(took)
				default:
					fail(fmt.Sprintf("http_%d", resp.StatusCode))
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	res := loadResult{Target: "http", Mode: ls.mode, Users: ls.users, Seconds: secs,
		Sent: min(sent.Load(), answered.Load()+queued.Load()+failed.Load()), Answered: answered.Load(), Queued: queued.Load(),
		Errors: failed.Load(), PerSecond: float64(answered.Load()) / secs, ErrorKinds: kinds}
	if ls.mode != "wait" {
		res.AcceptedPS = float64(queued.Load()) / secs
	}
	lat.fill(&res)
	return res, nil
}

func randomDialog() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// loadKafka produces count requests over the given number of dialogs
// straight to the requests topic, as a bot would, and reads the replies
// topic until every one is answered: it measures the consumers alone.
func loadKafka(ctx context.Context, ls loadSettings, bcfg bus.Config) (loadResult, error) {
	run := randomDialog()[:8]
	replyTopic := bcfg.RepliesTopic
	cl, err := kgo.NewClient(kgo.SeedBrokers(bcfg.Brokers...), kgo.DefaultProduceTopic(bcfg.RequestsTopic),
		kgo.ConsumeTopics(replyTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()), kgo.MaxBufferedRecords(ls.count+1))
	if err != nil {
		return loadResult{}, err
	}
	defer cl.Close()
	// Make sure the reply consumer has its position before anything is produced.
	if err := cl.Ping(ctx); err != nil {
		return loadResult{}, fmt.Errorf("kafka: %w", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	cl.PollFetches(pctx)
	pcancel()

	dialogs := make([]string, ls.dialogs)
	for i := range dialogs {
		dialogs[i] = randomDialog()
	}
	sentAt := make(map[string]time.Time, ls.count)
	var mu sync.Mutex
	start := time.Now()
	deadline := start.Add(10 * time.Minute)
	for i := range ls.count {
		d := dialogs[i%len(dialogs)]
		now := time.Now().UTC()
		req := envelope.Request{V: 1, RequestID: fmt.Sprintf("lg-%s-%d", run, i), Tenant: ls.tenant, User: "bot",
			DialogID: d, Text: ls.text, CreatedAt: now, Deadline: deadline,
			Reply: envelope.ReplyTo{Topic: replyTopic, Partition: envelope.AnyPartition}}
		v, _ := json.Marshal(&req)
		mu.Lock()
		sentAt[req.RequestID] = time.Now()
		mu.Unlock()
		cl.Produce(ctx, &kgo.Record{Key: []byte(req.Key()), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				fmt.Println("produce:", err)
			}
		})
	}
	var lat latencies
	seen := map[string]bool{}
	prefix := "lg-" + run + "-"
	for len(seen) < ls.count && ctx.Err() == nil {
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		fetches := cl.PollFetches(fctx)
		fcancel()
		if fctx.Err() != nil && fetches.NumRecords() == 0 {
			return loadResult{}, fmt.Errorf("no reply for 30 s; %d of %d answered", len(seen), ls.count)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			id := string(r.Key)
			if !strings.HasPrefix(id, prefix) || seen[id] {
				return
			}
			seen[id] = true
			mu.Lock()
			lat.add(time.Since(sentAt[id]))
			mu.Unlock()
		})
	}
	secs := time.Since(start).Seconds()
	res := loadResult{Target: "kafka", Seconds: secs, Sent: int64(ls.count), Answered: int64(len(seen)),
		PerSecond: float64(len(seen)) / secs}
	lat.fill(&res)
	return res, nil
}
