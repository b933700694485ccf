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
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/producer"
	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

const testSecret = "sluice-test-secret-0123456789"

// backend provides Kafka brokers and a Redis for one test.
type backend struct {
	name  string
	kafka func(t *testing.T, cfg bus.Config) []string
	// redis returns the address of a Redis and a key prefix of the test's
	// own, whose keys it deletes when the test ends.
	redis func(t *testing.T) (addr, prefix string)
}

// backends are the environments every end-to-end body runs against: the
// embedded one always (or what SLUICE_TEST_KAFKA_BROKERS and
// SLUICE_TEST_REDIS_ADDR name), containers when a Docker engine answers.
func backends() []backend {
	return []backend{
		{name: "embedded", kafka: embeddedKafka, redis: localRedis},
		{name: "containers", kafka: containerKafka, redis: containerRedis},
	}
}

func embeddedKafka(t *testing.T, cfg bus.Config) []string { return stacktest.Kafka(t, cfg) }

// localRedis is the machine's Redis when it answers, otherwise miniredis.
func localRedis(t *testing.T) (addr, prefix string) { return stacktest.Redis(t) }

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

func containerRedis(t *testing.T) (addr, prefix string) {
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
	return opt.Addr, "sluicetest"
}

// stack is a running Sluice: producers and consumers in-process, each built
// by producer.Open and consumer.Open exactly as the binary builds them.
type stack struct {
	t         *testing.T
	bus       bus.Config
	rdb       redis.UniversalClient
	redisAddr string
	store     *store.Redis
	mock      *mockllm.Server
	llmURL    string
	brokers   []string

	prefix string
	opt    stackOptions

	mu        sync.Mutex
	producers []*runningProducer
	consumers []*runningConsumer
}

type runningProducer struct {
	srv    *producer.Server
	url    string
	adm    *admin.Server // its readiness checks
	cancel context.CancelFunc
	done   chan error
}

type runningConsumer struct {
	c      *consumer.Consumer
	adm    *admin.Server // its readiness checks
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
	cfg = stacktest.Isolate(cfg)
	s := &stack{t: t, bus: cfg, opt: opt}
	s.brokers = b.kafka(t, cfg)
	s.bus.Brokers = s.brokers
	s.redisAddr, s.prefix = b.redis(t)
	s.rdb = stacktest.Client(t, s.redisAddr)
	st, err := store.New(s.rdb, s.storeConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.store = st

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

func (s *stack) storeConfig() store.Config {
	c := store.DefaultConfig()
	c.Prefix = s.prefix
	return c
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

// addConsumer starts a consumer in the stack's group, built by
// consumer.Open from settings as `sluice consumer` builds it.
func (s *stack) addConsumer(cfg consumer.Config) *runningConsumer {
	s.t.Helper()
	lcfg := llm.DefaultConfig()
	lcfg.BaseURL = s.llmURL
	cb := callback.DefaultConfig()
	if s.opt.callbacks != nil {
		cb = *s.opt.callbacks
	}
	log := testLogger(s.t)
	reg := prometheus.NewRegistry()
	adm := admin.New(reg, log)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := consumer.Open(ctx, consumer.Settings{
		Consumer: cfg, Bus: s.bus, Redis: store.ClientConfig{Addrs: []string{s.redisAddr}},
		Store: s.storeConfig(), LLM: lcfg, Callbacks: cb, CreateTopics: true,
	}, log, reg, adm)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	rc := &runningConsumer{c: c, adm: adm, cancel: cancel, done: make(chan error, 1)}
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

// addProducer starts an HTTP ingress, built by producer.Open from settings
// as `sluice producer` builds it, on a free port and waits until its
// readiness checks pass.
func (s *stack) addProducer(cfg producer.Config) *runningProducer {
	s.t.Helper()
	log := testLogger(s.t)
	reg := prometheus.NewRegistry()
	adm := admin.New(reg, log)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := producer.Open(ctx, producer.Settings{
		Producer: cfg, Bus: s.bus, Redis: store.ClientConfig{Addrs: []string{s.redisAddr}},
		Store: s.storeConfig(), Auth: auth.Config{Secret: testSecret}, CreateTopics: true,
	}, log, reg, adm)
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		s.t.Fatal(err)
	}
	rp := &runningProducer{srv: p, adm: adm, url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { rp.done <- p.Run(ctx, ln) }()
	deadline := time.Now().Add(30 * time.Second)
	for !ready(adm) {
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

// ready reports whether adm's /readyz answers 200.
func ready(adm *admin.Server) bool {
	rec := httptest.NewRecorder()
	adm.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code == http.StatusOK
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

// do sends a request and decodes a JSON answer into out (when not nil). It
// fails the test on a transport or decoding error: call it from the test's
// goroutine only, and tryDo from others.
func (c *client) do(method, path string, body any, out any) (int, http.Header) {
	c.t.Helper()
	code, h, err := c.tryDo(method, path, body, out)
	if err != nil {
		c.t.Fatal(err)
	}
	return code, h
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newDialog() string { return envelope.NewDialogID() }

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

// tryDo is do for goroutines other than the test's: it returns the
// transport or decoding error instead of failing the test.
func (c *client) tryDo(method, path string, body any, out any) (int, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return 0, nil, fmt.Errorf("%s %s: decode %q: %w", method, path, raw, err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}
