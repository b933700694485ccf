package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/shared/bus"
	"sluice/shared/devstack"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

const (
	requestsTopic = "chat.requests"
	repliesTopic  = "chat.replies"
	dlqTopic      = "chat.requests.dlq"
	numPartitions = 4
	group         = "sluice-test"

	// waitFor bounds every wait for an event; generous for -race on 2 cores.
	waitFor = 20 * time.Second
)

// env is one test's Kafka and Redis (miniredis, which tests stop and
// restart) from the shared test stack, and the clients the test drives the
// consumer with.
type env struct {
	redis  *miniredis.Miniredis
	broker *devstack.Broker
	bus    bus.Config
	store  *store.Redis
	prod   *kgo.Client
	adm    *kadm.Client
	log    *slog.Logger
}

// newEnv starts an embedded Kafka (with topic auto-creation) and Redis for
// one test.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	return newEnvOn(tb, false)
}

// newEnvOn is newEnv on a broker that, when strict, does not create topics
// a client names.
func newEnvOn(tb testing.TB, strict bool) *env {
	tb.Helper()
	cfg := bus.DefaultConfig()
	cfg.Partitions = numPartitions
	cfg.Group = group
	broker := stacktest.Broker(tb, cfg, strict)
	cfg.Brokers = []string{broker.Addr()}

	mr, rdb := stacktest.Miniredis(tb)
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		tb.Fatalf("store: %v", err)
	}

	// Records with Partition >= 0 go there, -1 goes where the key hashes to.
	prod, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.RecordPartitioner(bus.ReplyPartitioner(nil)),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		tb.Fatalf("producer: %v", err)
	}
	tb.Cleanup(prod.Close)
	return &env{redis: mr, broker: broker, bus: cfg, store: st, prod: prod, adm: kadm.NewClient(prod), log: testLogger(tb)}
}

// testConfig is the consumer's configuration with test-sized timers. The
// session timeout is kfake's minimum (6 s, above the client's 3 s heartbeat);
// members leave the group on Close, so it never delays a test.
func testConfig() consumer.Config {
	cfg := consumer.DefaultConfig()
	cfg.CommitInterval = 100 * time.Millisecond
	cfg.SessionTimeout = 6 * time.Second
	cfg.DrainTimeout = 5 * time.Second
	cfg.RevokeTimeout = 2 * time.Second
	cfg.RetryBackoff = 20 * time.Millisecond
	return cfg
}

// running is a consumer whose Run goroutine the test owns.
type running struct {
	c      *consumer.Consumer
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	runErr error         // what Run returned, set before done is closed
}

// start builds a consumer on e, passes it to each of setup, and runs it
// until the test ends.
func (e *env) start(tb testing.TB, cfg consumer.Config, ans consumer.Answerer, setup ...func(*consumer.Consumer)) *running {
	tb.Helper()
	reg := prometheus.NewRegistry()
	c, err := consumer.New(cfg, e.bus, e.store, ans, e.log, reg)
	if err != nil {
		tb.Fatalf("consumer.New: %v", err)
	}
	for _, s := range setup {
		s(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.runErr = c.Run(ctx)
		close(r.done)
	}()
	tb.Cleanup(func() {
		if err := r.stop(tb); err != nil {
			tb.Errorf("Run: %v", err)
		}
		c.Close()
	})
	return r
}

// stop cancels Run and waits for it to return.
func (r *running) stop(tb testing.TB) error {
	tb.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.runErr
	case <-time.After(waitFor):
		return fmt.Errorf("Run did not return within %v of cancel", waitFor)
	}
}

// helps are the HELP texts of the metrics these tests read:
// testutil.GatherAndCompare compares them too.
var helps = map[string]string{
	"sluice_consumer_paused":    "1 while the in-flight budget is full: fetched records wait for a slot (records of the interactive lane first).",
	"sluice_consumer_in_flight": "Records handed to workers and not finished.",
	"sluice_consumer_reply_partition_fallbacks_total": "Replies whose requested reply.partition the reply topic does not have, " +
		"sent to the key's partition instead.",
}

// metricIs reports, as testutil.GatherAndCompare does, how the consumer's
// metric name, one without labels, differs from value; nil when it does not.
func (r *running) metricIs(name string, value float64) error {
	typ := "gauge"
	if strings.HasSuffix(name, "_total") {
		typ = "counter"
	}
	want := fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, helps[name], name, typ, name, value)
	if err := testutil.GatherAndCompare(r.reg, strings.NewReader(want), name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

var reqSeq atomic.Int64

// newRequest returns a valid request of dialog n (tenant t1, user u1), due
// in a minute, replied to on any partition of the replies topic.
func newRequest(n int, text string) envelope.Request {
	now := time.Now().UTC()
	return envelope.Request{
		V:         envelope.Version,
		RequestID: fmt.Sprintf("req-%d", reqSeq.Add(1)),
		Tenant:    "t1",
		User:      "u1",
		DialogID:  fmt.Sprintf("%032x", n),
		Text:      text,
		CreatedAt: now,
		Deadline:  now.Add(time.Minute),
		Reply:     envelope.ReplyTo{Topic: repliesTopic, Partition: envelope.AnyPartition},
	}
}

func requestRecord(tb testing.TB, req envelope.Request, partition int32) *kgo.Record {
	tb.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		tb.Fatalf("encode request: %v", err)
	}
	return &kgo.Record{Topic: requestsTopic, Partition: partition, Key: []byte(req.Key()), Value: b}
}

// produce writes records synchronously; a record's Partition -1 means "by
// key". It returns them with partition and offset filled in.
func (e *env) produce(tb testing.TB, recs ...*kgo.Record) []*kgo.Record {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := e.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		tb.Fatalf("produce: %v", err)
	}
	return recs
}

// produceRequests produces reqs, each by its key.
func (e *env) produceRequests(tb testing.TB, reqs ...envelope.Request) []*kgo.Record {
	tb.Helper()
	recs := make([]*kgo.Record, len(reqs))
	for i, r := range reqs {
		recs[i] = requestRecord(tb, r, -1)
	}
	return e.produce(tb, recs...)
}

func (e *env) history(tb testing.TB, req envelope.Request) []envelope.Turn {
	tb.Helper()
	turns, err := e.store.History(context.Background(), store.DialogOf(&req))
	if err != nil {
		tb.Fatalf("history: %v", err)
	}
	return turns
}

// reader reads one topic from its start.
type reader struct {
	cl  *kgo.Client
	got []*kgo.Record
}

func (e *env) reader(tb testing.TB, topic string) *reader {
	tb.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.bus.Brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		tb.Fatalf("reader: %v", err)
	}
	tb.Cleanup(cl.Close)
	return &reader{cl: cl}
}

// wait returns the first n records of the topic, failing the test when they
// do not arrive in time.
func (r *reader) wait(tb testing.TB, n int) []*kgo.Record {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for len(r.got) < n {
		fs := r.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			tb.Fatalf("got %d records, want %d: %v", len(r.got), n, ctx.Err())
		}
		fs.EachError(func(t string, p int32, err error) { tb.Logf("fetch %s/%d: %v", t, p, err) })
		r.got = append(r.got, fs.Records()...)
	}
	return r.got[:n]
}

// replies waits for n replies and decodes them, by request id.
func (r *reader) replies(tb testing.TB, n int) map[string][]envelope.Reply {
	tb.Helper()
	out := map[string][]envelope.Reply{}
	for _, rec := range r.wait(tb, n) {
		rep, err := envelope.DecodeReply(rec.Value)
		if err != nil {
			tb.Fatalf("reply %s/%d/%d: %v", rec.Topic, rec.Partition, rec.Offset, err)
		}
		if string(rec.Key) != rep.RequestID {
			tb.Errorf("reply record key %q, want its request id %q", rec.Key, rep.RequestID)
		}
		out[rep.RequestID] = append(out[rep.RequestID], rep)
	}
	return out
}

// offsets returns the group's committed offsets and the end offsets of the
// requests topic, by partition; -1 is "nothing committed".
func (e *env) offsets(tb testing.TB) (committed, end map[int32]int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cs, err := e.adm.FetchOffsets(ctx, group)
	if err != nil {
		tb.Fatalf("fetch offsets: %v", err)
	}
	ends, err := e.adm.ListEndOffsets(ctx, requestsTopic)
	if err != nil {
		tb.Fatalf("end offsets: %v", err)
	}
	if err := ends.Error(); err != nil {
		tb.Fatalf("end offsets: %v", err)
	}
	committed, end = map[int32]int64{}, map[int32]int64{}
	for p := range int32(numPartitions) {
		committed[p] = -1
		if o, ok := cs.Lookup(requestsTopic, p); ok && o.Err == nil {
			committed[p] = o.At
		}
		o, _ := ends.Lookup(requestsTopic, p)
		end[p] = o.Offset
	}
	return committed, end
}

// waitOffsets polls the committed offsets until ok accepts them.
func (e *env) waitOffsets(tb testing.TB, what string, ok func(committed, end map[int32]int64) bool) (committed, end map[int32]int64) {
	tb.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitFor)
	for {
		committed, end = e.offsets(tb)
		if ok(committed, end) {
			return committed, end
		}
		select {
		case <-tick.C:
		case <-deadline:
			tb.Fatalf("%s: committed %v, end offsets %v", what, committed, end)
		}
	}
}

// atEnd reports whether every partition with records is committed to its end.
func atEnd(committed, end map[int32]int64) bool {
	for p, e := range end {
		if e > 0 && committed[p] != e {
			return false
		}
	}
	return true
}

func (e *env) waitCommittedToEnd(tb testing.TB) {
	tb.Helper()
	e.waitOffsets(tb, "offsets not committed to the end", atEnd)
}

// topicSize returns the number of records in topic (no deletions happen).
func (e *env) topicSize(tb testing.TB, topic string) int64 {
	tb.Helper()
	ends, err := e.adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		tb.Fatalf("end offsets: %v", err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// fakeAnswerer stands in for the LLM. AnswerFn, when set, answers (after the
// call is counted); otherwise the answer echoes the text. It records every
// call and how many run at once, in total and per dialog (record key).
type fakeAnswerer struct {
	AnswerFn func(ctx context.Context, req *envelope.Request, history []envelope.Turn) (llm.Answer, error)
	// Entered, when set, receives every call's request as it starts.
	Entered chan *envelope.Request

	mu     sync.Mutex
	calls  []call
	cur    int
	max    int
	curKey map[string]int
	maxKey map[string]int
}

type call struct {
	RequestID string
	Key       string
	History   int // turns of history passed in
}

var _ consumer.Answerer = (*fakeAnswerer)(nil)

func answerText(req *envelope.Request) string { return "answer to " + req.Text }

func (f *fakeAnswerer) Answer(ctx context.Context, req *envelope.Request, history []envelope.Turn) (llm.Answer, error) {
	key := req.Key()
	f.mu.Lock()
	if f.curKey == nil {
		f.curKey, f.maxKey = map[string]int{}, map[string]int{}
	}
	f.calls = append(f.calls, call{RequestID: req.RequestID, Key: key, History: len(history)})
	f.cur++
	f.max = max(f.max, f.cur)
	f.curKey[key]++
	f.maxKey[key] = max(f.maxKey[key], f.curKey[key])
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.cur--
		f.curKey[key]--
		f.mu.Unlock()
	}()
	if f.Entered != nil {
		f.Entered <- req
	}
	if f.AnswerFn != nil {
		return f.AnswerFn(ctx, req, history)
	}
	return llm.Answer{Text: answerText(req), Source: envelope.SourceLLM, LLMTime: 3 * time.Millisecond}, nil
}

// Calls returns the calls so far, in the order they started.
func (f *fakeAnswerer) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

// Concurrency returns how many calls run now and the most that ran at once.
func (f *fakeAnswerer) Concurrency() (cur, most int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur, f.max
}

// MaxPerKey returns the most calls that ran at once for one dialog.
func (f *fakeAnswerer) MaxPerKey(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxKey[key]
}

// gate holds answers until opened.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

// newGate returns a closed gate. Tests `defer g.Open()`: deferred calls run
// before cleanups, so a failing test never waits out the drain timeout.
func newGate() *gate { return &gate{ch: make(chan struct{})} }

func (g *gate) Open() { g.once.Do(func() { close(g.ch) }) }

// answer waits for the gate, then echoes.
func (g *gate) answer(ctx context.Context, req *envelope.Request, _ []envelope.Turn) (llm.Answer, error) {
	select {
	case <-g.ch:
		return llm.Answer{Text: answerText(req), Source: envelope.SourceLLM}, nil
	case <-ctx.Done():
		return llm.Answer{}, ctx.Err()
	}
}

// awaitEntered receives n calls from ch.
func awaitEntered(tb testing.TB, ch <-chan *envelope.Request, n int) []*envelope.Request {
	tb.Helper()
	timeout := time.After(waitFor)
	out := make([]*envelope.Request, 0, n)
	for len(out) < n {
		select {
		case r := <-ch:
			out = append(out, r)
		case <-timeout:
			tb.Fatalf("%d answerer calls started, want %d", len(out), n)
		}
	}
	return out
}

// testLogger logs warnings and errors through t.Log while the test runs.
func testLogger(tb testing.TB) *slog.Logger {
	w := &tWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
