// Package tests holds Sluice's end-to-end tests: the real producer and
// consumer started in-process on free ports against a real Kafka protocol
// (kfake, or Apache Kafka in a container) and Redis (the machine's, miniredis,
// or a container), and multi-process tests of the built binary.
package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/devstack"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

const testSecret = "sluice-test-secret-0123456789"

// backend provides Kafka brokers and a Redis client for one test.
type backend struct {
	name  string
	kafka func(t *testing.T, cfg bus.Config) []string
	redis func(t *testing.T) redis.UniversalClient
}

// backends are the environments every end-to-end body runs against: the
// embedded one always, containers when a Docker engine answers.
func backends() []backend {
	return []backend{
		{name: "embedded", kafka: embeddedKafka, redis: localRedis},
		{name: "containers", kafka: containerKafka, redis: containerRedis},
	}
}

func embeddedKafka(t *testing.T, cfg bus.Config) []string {
	t.Helper()
	b, err := devstack.StartBroker(devstack.BrokerConfig{
		Addr: "127.0.0.1:0", Partitions: cfg.Partitions,
		Topics: []string{cfg.RequestsTopic, cfg.RepliesTopic, cfg.DLQTopic, cfg.CallbacksTopic},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(b.Close)
	return []string{b.Addr()}
}

// localRedis uses the machine's Redis at 127.0.0.1:6379 when it answers,
// otherwise miniredis, and says which.
func localRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", PoolSize: 64})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Log("redis: real Redis at 127.0.0.1:6379")
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}
	_ = rdb.Close()
	t.Log("redis: no Redis at 127.0.0.1:6379, using miniredis")
	m := miniredis.RunT(t)
	rdb = redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func containerKafka(t *testing.T, _ bus.Config) []string {
	t.Helper()
	testcontainers.SkipIfProviderIsNotHealthy(t)
	ctx := context.Background()
	c, err := tckafka.Run(ctx, "confluentinc/confluent-local:7.5.0", tckafka.WithClusterID("sluice-test"))
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("start kafka container: %v", err)
	}
	brokers, err := c.Brokers(ctx)
	if err != nil {
		t.Fatalf("kafka container brokers: %v", err)
	}
	return brokers
}

func containerRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	testcontainers.SkipIfProviderIsNotHealthy(t)
	ctx := context.Background()
	c, err := tcredis.Run(ctx, "redis:7-alpine")
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("start redis container: %v", err)
	}
	uri, err := c.ConnectionString(ctx)
	if err != nil {
		t.Fatalf("redis container address: %v", err)
	}
	opt, err := redis.ParseURL(uri)
	if err != nil {
		t.Fatalf("redis container address %q: %v", uri, err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// stack is a running Sluice: producers and consumers in-process.
type stack struct {
	t       *testing.T
	bus     bus.Config
	rdb     redis.UniversalClient
	store   *store.Redis
	mock    *mockllm.Server
	llmURL  string
	brokers []string

	prefix string
	opt    stackOptions

	mu        sync.Mutex
	producers []*runningProducer
	consumers []*runningConsumer
}

type runningProducer struct {
	srv    *producer.Server
	url    string
	cancel context.CancelFunc
	done   chan error
}

type runningConsumer struct {
	c      *consumer.Consumer
	cancel context.CancelFunc
	done   chan error
}

// stackOptions tune a stack.
type stackOptions struct {
	partitions int32
	mock       mockllm.Config
	callbacks  *callback.Config // consumers deliver callbacks with it
}

// newStack starts Kafka and Redis from b plus the mock LLM. Add producers
// and consumers with addProducer and addConsumer.
func newStack(t *testing.T, b backend, opt stackOptions) *stack {
	t.Helper()
	if opt.partitions == 0 {
		opt.partitions = 12
	}
	if opt.mock.Model == "" {
		opt.mock = mockllm.DefaultConfig()
		opt.mock.Latency, opt.mock.Jitter = time.Millisecond, 0
	}
	cfg := bus.DefaultConfig()
	cfg.Partitions = opt.partitions
	// Topic and group names of their own so tests sharing a broker never meet.
	suffix := randomHex(4)
	cfg.RequestsTopic += "." + suffix
	cfg.RepliesTopic += "." + suffix
	cfg.DLQTopic += "." + suffix
	cfg.Group += "-" + suffix
	cfg.ReplyGroup += "-" + suffix
	s := &stack{t: t, bus: cfg, opt: opt}
	s.brokers = b.kafka(t, cfg)
	s.bus.Brokers = s.brokers
	s.rdb = b.redis(t)
	stCfg := store.DefaultConfig()
	stCfg.Prefix = "sluicetest:" + suffix
	st, err := store.New(s.rdb, stCfg)
	if err != nil {
		t.Fatal(err)
	}
	s.store = st
	s.prefix = stCfg.Prefix
	t.Cleanup(func() { cleanKeys(s.rdb, stCfg.Prefix+":*") })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := bus.NewClient(s.bus, "test-admin", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := bus.EnsureTopics(ctx, cl, s.bus); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}

	s.mock, err = mockllm.New(opt.mock, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.mock.Handler())
	t.Cleanup(hs.Close)
	s.llmURL = hs.URL + "/v1"
	t.Cleanup(s.stopAll)
	return s
}

func cleanKeys(rdb redis.UniversalClient, pattern string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, pattern, 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// addConsumer starts a consumer in the stack's group.
func (s *stack) addConsumer(cfg consumer.Config) *runningConsumer {
	s.t.Helper()
	lcfg := llm.DefaultConfig()
	lcfg.BaseURL = s.llmURL
	model, err := llm.New(lcfg, testLogger(s.t), prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := consumer.New(cfg, s.bus, s.store, model, testLogger(s.t), prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	if s.opt.callbacks != nil {
		d, err := callback.NewDeliverer(*s.opt.callbacks, prometheus.NewRegistry())
		if err != nil {
			s.t.Fatal(err)
		}
		if err := c.SetCallbacks(d); err != nil {
			s.t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningConsumer{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	s.mu.Lock()
	s.consumers = append(s.consumers, rc)
	s.mu.Unlock()
	return rc
}

// stop drains the consumer and closes it.
func (rc *runningConsumer) stop() {
	if rc.cancel == nil {
		return
	}
	rc.cancel()
	<-rc.done
	rc.c.Close()
	rc.cancel = nil
}

func testConsumerConfig() consumer.Config {
	cfg := consumer.DefaultConfig()
	cfg.SessionTimeout = 6 * time.Second
	cfg.CommitInterval = 200 * time.Millisecond
	cfg.DrainTimeout = 10 * time.Second
	cfg.RevokeTimeout = 5 * time.Second
	return cfg
}

// addProducer starts an HTTP ingress on a free port and waits until it serves.
func (s *stack) addProducer(cfg producer.Config) *runningProducer {
	s.t.Helper()
	v, err := auth.NewVerifier(auth.Config{Secret: testSecret})
	if err != nil {
		s.t.Fatal(err)
	}
	p, err := producer.New(cfg, s.bus, v, s.store, testLogger(s.t), prometheus.NewRegistry())
	if err != nil {
		s.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &runningProducer{srv: p, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx, ln) }()
	deadline := time.Now().Add(30 * time.Second)
	for !p.Ready() {
		select {
		case err := <-rp.done:
			s.t.Fatalf("producer stopped at start: %v", err)
		case <-time.After(10 * time.Millisecond): // readiness has no event to await
		}
		if time.Now().After(deadline) {
			s.t.Fatal("producer not ready after 30s")
		}
	}
	s.mu.Lock()
	s.producers = append(s.producers, rp)
	s.mu.Unlock()
	return rp
}

func testProducerConfig() producer.Config {
	cfg := producer.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.UserRate = producer.Rate{} // load tests ask much faster than people
	return cfg
}

func (rp *runningProducer) stop() {
	if rp.cancel == nil {
		return
	}
	rp.cancel()
	<-rp.done
	rp.srv.Close()
	rp.cancel = nil
}

func (s *stack) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.producers {
		p.stop()
	}
	for _, c := range s.consumers {
		c.stop()
	}
}

// client is an HTTP API client of one user.
type client struct {
	t      *testing.T
	base   string
	token  string
	tenant string
	user   string
}

func (s *stack) client(base, tenant, user string) *client {
	s.t.Helper()
	tok, err := auth.Mint(testSecret, tenant, user, time.Hour, time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	return &client{t: s.t, base: base, token: tok, tenant: tenant, user: user}
}

var httpClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

// do sends a request and decodes a JSON answer into out (when not nil).
func (c *client) do(method, path string, body any, out any) (int, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, resp.Header
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newDialog() string { return randomHex(16) }

// replyCounts reads the replies topic from the start until every wanted
// request id was seen at least once and a further poll brings nothing new,
// and returns how often each request id was seen.
func replyCounts(t *testing.T, brokers []string, topic string, want []string, within time.Duration) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	counts := map[string]int{}
	missing := func() int {
		n := 0
		for _, id := range want {
			if counts[id] == 0 {
				n++
			}
		}
		return n
	}
	quiet := 0
	for ctx.Err() == nil && (missing() > 0 || quiet < 2) {
		// PollFetches blocks until records arrive: bound each poll so that
		// "nothing more" can be observed.
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		got := 0
		fs.EachRecord(func(r *kgo.Record) {
			rep, err := envelope.DecodeReply(r.Value)
			if err != nil {
				t.Errorf("undecodable reply at %d/%d: %v", r.Partition, r.Offset, err)
				return
			}
			counts[rep.RequestID]++
			got++
		})
		if got == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	if n := missing(); n > 0 {
		t.Fatalf("%d of %d replies never arrived on %s", n, len(want), topic)
	}
	return counts
}

func mockllmConfig(latency, jitter time.Duration) mockllm.Config {
	c := mockllm.DefaultConfig()
	c.Latency, c.Jitter = latency, jitter
	return c
}
