package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/producer"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/envelope"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// sluiceBinary builds cmd/sluice once per test run.
func sluiceBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sluice")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/sluice").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a sluice OS process. Its stdout and stderr are read line by line
// through pipes and kept, for waitLine and for the failure log.
type proc struct {
	cmd   *exec.Cmd
	args  []string
	admin string        // the admin listener's address, once read from the log
	done  chan struct{} // closed once the process exited and its output is read
	err   error         // what Wait returned, set before done is closed

	mu    sync.Mutex
	lines []string
	grew  chan struct{} // closed and replaced whenever a line arrives
}

// startProc starts `sluice args...` with env added to the test's
// environment. The process is killed when the test ends, and its output
// logged if the test failed.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(sluiceBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, args: args, done: make(chan struct{}), grew: make(chan struct{})}
	// Not *os.File writers: exec copies each stream from a pipe, and Wait
	// returns once both copies are done, so no line is lost at exit.
	stdout, stderr := &lineWriter{p: p}, &lineWriter{p: p}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		stdout.flush()
		stderr.flush()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("sluice %s output:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

// waitLine waits until the process prints a line matching re and returns
// the match and its submatches. It fails the test when the process exits
// first or prints no such line within a minute. Call it from the test's
// goroutine.
func (p *proc) waitLine(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	exited := false
	for i := 0; ; {
		p.mu.Lock()
		lines, grew := p.lines, p.grew
		p.mu.Unlock()
		for ; i < len(lines); i++ {
			if m := re.FindStringSubmatch(lines[i]); m != nil {
				return m
			}
		}
		if exited {
			t.Fatalf("sluice %s exited (%v) without printing a line matching %q:\n%s", strings.Join(p.args, " "), p.err, re, p.output())
		}
		select {
		case <-grew:
		case <-p.done: // every line is in: look once more
			exited = true
		case <-timeout.C:
			t.Fatalf("sluice %s printed no line matching %q within 60s:\n%s", strings.Join(p.args, " "), re, p.output())
		}
	}
}

func (p *proc) addLine(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line)
	close(p.grew)
	p.grew = make(chan struct{})
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// lineWriter splits one output stream into lines. exec writes to it from
// one goroutine; flush runs after that goroutine ended.
type lineWriter struct {
	p       *proc
	partial []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.p.addLine(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
}

func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.p.addLine(string(w.partial))
		w.partial = nil
	}
}

// scrapeValue reads the /metrics of a process's admin listener at addr and
// returns the value of the counter or gauge series name{labels}, and
// whether the series exists. Call it from the test's goroutine.
func scrapeValue(t *testing.T, addr, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d", addr, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	for _, m := range families[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		if maps.Equal(have, labels) {
			return m.GetCounter().GetValue() + m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

var (
	// brokerLine is the broker's line in `sluice dev`'s banner.
	brokerLine = regexp.MustCompile(`SLUICE_KAFKA_BROKERS=(\S+)`)
	// adminLine is the log line of a service's admin listener (text format).
	adminLine = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)
)

// processStack runs the broker and the consumers as sluice processes, the
// producer in-process.
type processStack struct {
	*stack
	env []string
}

func newProcessStack(t *testing.T) *processStack {
	if testing.Short() {
		t.Skip("multi-process test skipped in -short mode")
	}
	var env []string
	b := backend{
		name: "processes",
		kafka: func(t *testing.T, cfg bus.Config) []string {
			p := startProc(t, nil, "dev", "--roles", "broker", "--dev-kafka-addr", "127.0.0.1:0",
				"--topic-partitions", "12")
			return []string{p.waitLine(t, brokerLine)[1]}
		},
		redis: localRedis,
	}
	mock := mockllmConfig(20*time.Millisecond, 10*time.Millisecond)
	s := newStack(t, b, stackOptions{partitions: 12, mock: mock})
	addr := s.rdb.(*redis.Client).Options().Addr
	env = []string{
		"SLUICE_KAFKA_BROKERS=" + strings.Join(s.brokers, ","),
		"SLUICE_REQUESTS_TOPIC=" + s.bus.RequestsTopic,
		"SLUICE_BULK_TOPIC=" + s.bus.BulkTopic,
		"SLUICE_REPLIES_TOPIC=" + s.bus.RepliesTopic,
		"SLUICE_DLQ_TOPIC=" + s.bus.DLQTopic,
		"SLUICE_CONSUMER_GROUP=" + s.bus.Group,
		"SLUICE_REPLY_GROUP=" + s.bus.ReplyGroup,
		"SLUICE_REDIS_ADDR=" + addr,
		"SLUICE_REDIS_PREFIX=" + s.prefix,
		"SLUICE_LLM_BASE_URL=" + s.llmURL,
		"SLUICE_LLM_MODEL=sluice-mock",
		"SLUICE_SESSION_TIMEOUT=6s",
		"SLUICE_DRAIN_TIMEOUT=10s",
		"SLUICE_COMMIT_INTERVAL=200ms",
		"SLUICE_LOG_LEVEL=warn",
	}
	return &processStack{stack: s, env: env}
}

// startConsumer starts a consumer process with the stack's settings and
// env, its admin listener on a port of its choosing, and waits until that
// listens.
func (s *processStack) startConsumer(t *testing.T, env ...string) *proc {
	t.Helper()
	env = append(append(slices.Clone(s.env), env...), "SLUICE_ADMIN_ADDR=127.0.0.1:0", "SLUICE_LOG_LEVEL=info")
	p := startProc(t, env, "consumer")
	p.admin = p.waitLine(t, adminLine)[1]
	return p
}

// load runs users that each ask `each` questions in a dialog of their own,
// waiting for every answer, and calls hook once after `after` answers.
func (s *processStack) load(t *testing.T, url string, users, each, after int, hook func()) (answered, failed int64, dialogs map[string]*client) {
	var ok, bad, count atomic.Int64
	var once sync.Once
	var mu sync.Mutex
	dialogs = map[string]*client{}
	var wg sync.WaitGroup
	for u := range users {
		c := s.client(url, "shop-1", fmt.Sprintf("user-%d", u))
		dialog := newDialog()
		mu.Lock()
		dialogs[dialog] = c
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var body producer.DoneBody
				code, _, err := c.tryDo(http.MethodPost, "/v1/chat", map[string]any{
					"text": fmt.Sprintf("question %d: when does it ship?", i), "dialog_id": dialog, "wait_ms": 30000}, &body)
				if err == nil && code == http.StatusOK && body.Status == "done" {
					ok.Add(1)
				} else {
					bad.Add(1)
					t.Errorf("user %d question %d: %d %+v %v", u, i, code, body, err) // Errorf: not the test's goroutine
				}
				if count.Add(1) == int64(after) {
					once.Do(func() { go hook() })
				}
			}
		}()
	}
	wg.Wait()
	return ok.Load(), bad.Load(), dialogs
}

// checkHistories asserts every dialog holds each of its requests' two turns
// exactly once.
func checkHistories(t *testing.T, dialogs map[string]*client, each int) {
	t.Helper()
	want := map[string]int{}
	for dialog := range dialogs {
		want[dialog] = each
	}
	checkTurns(t, dialogs, want)
}

// checkTurns asserts every dialog holds each of its requests' two turns
// exactly once, for requests[dialog] requests.
func checkTurns(t *testing.T, dialogs map[string]*client, requests map[string]int) {
	t.Helper()
	for dialog, c := range dialogs {
		var hist producer.DialogBody
		c.do(http.MethodGet, "/v1/dialogs/"+dialog, nil, &hist)
		seen := map[string]int{}
		for _, turn := range hist.Turns {
			seen[turn.RequestID+"/"+turn.Role]++
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("dialog %s: turn %s stored %d times", dialog, k, n)
			}
		}
		if len(hist.Turns) != 2*requests[dialog] {
			t.Errorf("dialog %s has %d turns, want %d", dialog, len(hist.Turns), 2*requests[dialog])
		}
	}
}

// TestConsumerSIGTERMUnderLoad sends SIGTERM to one of two consumer
// processes under load: no client sees an error, the process exits 0 within
// the drain timeout, and no history holds a turn twice.
func TestConsumerSIGTERMUnderLoad(t *testing.T) {
	s := newProcessStack(t)
	a := s.startConsumer(t)
	s.startConsumer(t)
	p := s.addProducer(testProducerConfig())

	var exitErr error
	stopped := make(chan struct{})
	ok, bad, dialogs := s.load(t, p.url, 40, 8, 60, func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
			exitErr = a.err
		case <-time.After(60 * time.Second): // a hung drain, not a slow one
			exitErr = fmt.Errorf("still running 60s after SIGTERM")
		}
		close(stopped)
	})
	<-stopped
	if exitErr != nil {
		t.Fatalf("consumer after SIGTERM: %v\n%s", exitErr, a.output())
	}
	// Within the drain timeout: the drain finished its work rather than
	// taking the timeout's path, which logs and abandons records.
	if out := a.output(); !strings.Contains(out, "consumer drained") || strings.Contains(out, `msg="drain timeout`) {
		t.Errorf("consumer did not drain within its timeout:\n%s", out)
	}
	if bad != 0 || ok != 40*8 {
		t.Fatalf("answered %d, failed %d of %d", ok, bad, 40*8)
	}
	checkHistories(t, dialogs, 8)
}

// TestConsumerSIGKILLUnderLoad kills one of two consumer processes under
// load (2,000 requests over 200 dialogs): its unfinished records are redelivered to the other after the
// session timeout, every waiting client still gets its answer, and no
// history holds a turn twice.
func TestConsumerSIGKILLUnderLoad(t *testing.T) {
	s := newProcessStack(t)
	a := s.startConsumer(t)
	s.startConsumer(t)
	p := s.addProducer(testProducerConfig())
	ok, bad, dialogs := s.load(t, p.url, 200, 10, 300, func() { _ = a.cmd.Process.Kill() })
	if bad != 0 || ok != 200*10 {
		t.Fatalf("answered %d, failed %d of %d", ok, bad, 200*10)
	}
	checkHistories(t, dialogs, 10)
}

// TestBothLanesSurviveConsumerSIGKILL kills one of two consumer processes
// while both lanes have records in flight: 300 bulk questions produced
// straight to the bulk topic, as bots do, and shoppers asking over HTTP.
// Every shopper gets an answer, every bot question is answered on the
// bot's reply topic, and no dialog holds a turn twice.
func TestBothLanesSurviveConsumerSIGKILL(t *testing.T) {
	s := newProcessStack(t)
	a := s.startConsumer(t)
	s.startConsumer(t)
	p := s.addProducer(testProducerConfig())

	botReplies := "bot.replies." + randomHex(4)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	bots := map[string]*client{}
	var ids []string
	var recs []*kgo.Record
	for i := range 300 {
		user := fmt.Sprintf("bot-%d", i)
		dialog := newDialog()
		bots[dialog] = s.client(p.url, "shop-1", user)
		now := time.Now().UTC()
		req := envelope.Request{V: envelope.Version, RequestID: randomHex(16), Tenant: "shop-1", User: user, DialogID: dialog,
			Text: fmt.Sprintf("where is order %d?", i), CreatedAt: now, Deadline: now.Add(5 * time.Minute),
			Reply: envelope.ReplyTo{Topic: botReplies, Partition: envelope.AnyPartition}}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, req.RequestID)
		recs = append(recs, &kgo.Record{Topic: s.bus.BulkTopic, Key: []byte(req.Key()), Value: b})
	}
	if err := cl.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ok, bad, dialogs := s.load(t, p.url, 100, 8, 200, func() { _ = a.cmd.Process.Kill() })
	if bad != 0 || ok != 100*8 {
		t.Fatalf("shoppers: answered %d, failed %d of %d", ok, bad, 100*8)
	}
	counts := replyCounts(t, s.brokers, botReplies, ids, 2*time.Minute)
	for _, id := range ids {
		if counts[id] == 0 {
			t.Errorf("bot question %s never answered", id)
		}
	}
	checkHistories(t, dialogs, 8)
	checkHistories(t, bots, 1)
}

// TestCallbackSurvivesConsumerSIGKILL: a callback handed over stays on the
// callbacks topic until it is delivered. Consumer A tries a receiver that
// is down, is killed with SIGKILL, and consumer B delivers the callback once
// the receiver is up.
func TestCallbackSurvivesConsumerSIGKILL(t *testing.T) {
	s := newProcessStack(t)
	var up atomic.Bool
	var tries atomic.Int64
	delivered := make(chan string, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		if !up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		delivered <- r.Header.Get(callback.HeaderRequestID)
	}))
	defer recv.Close()
	cbEnv := []string{"SLUICE_CALLBACK_HOSTS=127.0.0.1", "SLUICE_CALLBACK_ALLOW_PRIVATE=true", "SLUICE_CALLBACK_ALLOW_HTTP=true",
		"SLUICE_CALLBACK_SECRET=callback-test-secret-0123456789", "SLUICE_CALLBACK_ATTEMPTS=1000",
		"SLUICE_CALLBACK_TIMEOUT=1s", "SLUICE_CALLBACK_BACKOFF=20ms"}
	a := s.startConsumer(t, cbEnv...)

	// A bot's request naming a callback URL, straight on Kafka.
	req := map[string]any{"v": 1, "request_id": "cb-crash-1", "tenant": "shop-1", "user": "u1",
		"dialog_id": strings.Repeat("c", 32), "text": "发票", "created_at": time.Now().UTC(),
		"deadline": time.Now().UTC().Add(time.Minute),
		"reply":    map[string]any{"topic": s.bus.RepliesTopic, "partition": -1, "callback_url": recv.URL + "/hook"}}
	s.produceRequest(t, req)

	// Consumer A is retrying the receiver, and the request itself is
	// committed: only the callbacks topic still holds the callback.
	adm, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	deadline := time.Now().Add(30 * time.Second)
	for tries.Load() < 2 || !committed(t, kadm.NewClient(adm), s.bus.Group, s.bus.RequestsTopic) {
		if time.Now().After(deadline) {
			t.Fatalf("within 30s: %d tries, request committed %v", tries.Load(), committed(t, kadm.NewClient(adm), s.bus.Group, s.bus.RequestsTopic))
		}
		time.Sleep(20 * time.Millisecond) // neither has an event to await
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	b := s.startConsumer(t, cbEnv...)
	up.Store(true)
	select {
	case id := <-delivered:
		if id != "cb-crash-1" {
			t.Fatalf("callback for %q, want cb-crash-1", id)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("callback not delivered within 60s of consumer A's death (%d tries)", tries.Load())
	}
	// B counts it, once the receiver's answer reached it.
	deadline = time.Now().Add(30 * time.Second)
	for {
		n, _ := scrapeValue(t, b.admin, "sluice_consumer_callbacks_total", map[string]string{"outcome": "delivered"})
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer B counts %v callbacks delivered, want 1", n)
		}
		time.Sleep(20 * time.Millisecond) // a counter has no event to await
	}
}

// produceRequest puts req, a v1 request, on the requests topic as a bot
// would.
func (s *processStack) produceRequest(t *testing.T, req map[string]any) {
	t.Helper()
	value, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	key := fmt.Sprintf("%s/%s/%s", req["tenant"], req["user"], req["dialog_id"])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: s.bus.RequestsTopic, Key: []byte(key), Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// committed reports whether group has committed every record of topic.
func committed(t *testing.T, adm *kadm.Client, group, topic string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lags, err := adm.Lag(ctx, group)
	if err != nil {
		return false
	}
	l, ok := lags[group]
	if !ok || l.Error() != nil {
		return false
	}
	total := l.Lag.TotalByTopic()[topic]
	return len(l.Lag[topic]) > 0 && total.Lag == 0
}
