package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/producer"
	"sluice/shared/bus"
	"sluice/shared/callback"
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

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// proc is a sluice OS process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	out  *strings.Builder
	mu   sync.Mutex
}

// startProc starts `sluice args...` with env; ready, when given, is a line
// prefix on stdout to wait for.
func startProc(t *testing.T, env []string, ready string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(sluiceBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), out: &strings.Builder{}}
	cmd.Stderr = lockedWriter{p}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if ready != "" && strings.Contains(sc.Text(), ready) {
				once.Do(func() { close(seen) })
			}
		}
	}()
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("sluice %s output:\n%s", strings.Join(args, " "), p.output())
		}
	})
	if ready != "" {
		select {
		case <-seen:
		case <-p.done:
			t.Fatalf("sluice %v exited at start: %v\n%s", args, p.err, p.output())
		case <-time.After(60 * time.Second):
			t.Fatalf("sluice %v not ready after 60s", args)
		}
	}
	return p
}

type lockedWriter struct{ p *proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

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
			addr := freePort(t)
			startProc(t, nil, "Kafka (embedded)", "dev", "--roles", "broker", "--dev-kafka-addr", addr,
				"--topic-partitions", "12")
			return []string{addr}
		},
		redis: localRedis,
	}
	mock := mockllmConfig(20*time.Millisecond, 10*time.Millisecond)
	s := newStack(t, b, stackOptions{partitions: 12, mock: mock})
	addr := s.rdb.(*redis.Client).Options().Addr
	env = []string{
		"SLUICE_KAFKA_BROKERS=" + strings.Join(s.brokers, ","),
		"SLUICE_REQUESTS_TOPIC=" + s.bus.RequestsTopic,
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

func (s *processStack) startConsumer(t *testing.T) *proc {
	env := append(append([]string(nil), s.env...), "SLUICE_ADMIN_ADDR="+freePort(t), "SLUICE_LOG_LEVEL=info")
	return startProc(t, env, "", "consumer")
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
				code, _ := c.do(http.MethodPost, "/v1/chat", map[string]any{
					"text": fmt.Sprintf("question %d: when does it ship?", i), "dialog_id": dialog, "wait_ms": 30000}, &body)
				if code == http.StatusOK && body.Status == "done" {
					ok.Add(1)
				} else {
					bad.Add(1)
					t.Errorf("user %d question %d: %d %+v", u, i, code, body)
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
		if len(hist.Turns) != 2*each {
			t.Errorf("dialog %s has %d turns, want %d", dialog, len(hist.Turns), 2*each)
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
	var took time.Duration
	stopped := make(chan struct{})
	ok, bad, dialogs := s.load(t, p.url, 40, 8, 60, func() {
		start := time.Now()
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
			exitErr, took = a.err, time.Since(start)
		case <-time.After(20 * time.Second):
			exitErr = fmt.Errorf("still running 20s after SIGTERM")
		}
		close(stopped)
	})
	<-stopped
	if exitErr != nil {
		t.Fatalf("consumer after SIGTERM: %v\n%s", exitErr, a.output())
	}
	if took > 10*time.Second {
		t.Errorf("exit took %v, beyond the 10s drain timeout", took)
	}
	if !strings.Contains(a.output(), "consumer drained") {
		t.Errorf("consumer did not report draining:\n%s", a.output())
	}
	if bad != 0 || ok != 40*8 {
		t.Fatalf("answered %d, failed %d of %d", ok, bad, 40*8)
	}
	checkHistories(t, dialogs, 8)
	t.Logf("SIGTERM: exit 0 after %v; %d answered, 0 failed", took, ok)
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
	cbEnv := append(append([]string(nil), s.env...),
		"SLUICE_CALLBACK_HOSTS=127.0.0.1", "SLUICE_CALLBACK_ALLOW_PRIVATE=true", "SLUICE_CALLBACK_ALLOW_HTTP=true",
		"SLUICE_CALLBACK_SECRET=callback-test-secret-0123456789", "SLUICE_CALLBACK_ATTEMPTS=1000",
		"SLUICE_CALLBACK_TIMEOUT=1s", "SLUICE_CALLBACK_BACKOFF=20ms")
	start := func() *proc {
		return startProc(t, append(append([]string(nil), cbEnv...), "SLUICE_ADMIN_ADDR="+freePort(t)), "", "consumer")
	}
	a := start()

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
	start()
	up.Store(true)
	select {
	case id := <-delivered:
		if id != "cb-crash-1" {
			t.Fatalf("callback for %q, want cb-crash-1", id)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("callback not delivered within 60s of consumer A's death (%d tries)", tries.Load())
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
