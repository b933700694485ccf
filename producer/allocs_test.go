package producer_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/devstack"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

// allocsPerWaitBudget is what one wait-mode question may allocate in the
// producer process, from the request's bytes on the socket through Echo,
// the token check, the rate limit and the hot-answer lookup in Redis, the
// produce and its acknowledgement, to the reply that wakes the handler and
// the 200 written back (TestAllocsPerWaitRequest): 284 on 2026-11-30
// (docs/benchmarks.md, "Allocations per request"), with a margin for the
// background work that runs meanwhile (reply fetches, metadata). Lower it
// when a change cuts allocations; raising it needs the reason in the
// commit. The race detector adds raceAllocs (sync.Pool drops items at
// random under it).
const allocsPerWaitBudget = 296 + raceAllocs

// envAllocsBackend makes the test binary the backend of
// TestAllocsPerWaitRequest instead of running tests (see TestMain).
const envAllocsBackend = "SLUICE_TEST_ALLOCS_BACKEND"

// TestAllocsPerWaitRequest fails when a wait-mode POST /v1/chat allocates
// more than allocsPerWaitBudget in the producer. Allocations are counted
// for the whole process, so everything else runs in a child process: the
// broker, Redis (miniredis) and a responder that answers each request at
// once, as a consumer with a 0 ms model would. Each user asks 5
// questions with the same token, as a storefront's page does. The client
// writes prepared requests on one kept-alive connection and parses the
// answers without allocating.
func TestAllocsPerWaitRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a backend process")
	}
	cfg := bus.DefaultConfig()
	cfg.Partitions = 2
	kafkaAddr, redisAddr := startAllocsBackend(t)
	cfg.Brokers = []string{kafkaAddr}
	st, err := store.Dial(store.ClientConfig{Addrs: []string{redisAddr}}, store.DefaultConfig()) // the production client's options
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	v, err := auth.NewVerifier(auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	pcfg := producer.DefaultConfig() // the per-user limit and the hot-answer cache on
	pcfg.AdmissionInterval = 2 * time.Second
	p, err := producer.New(pcfg, cfg, v, st, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := mustRun(t, p, func() {})

	const runs, perUser = 300, 5
	warm := 50
	reqs := make([][]byte, 0, warm+runs+1)
	var tok string
	for i := range cap(reqs) {
		// Each user asks perUser questions with its token, within the
		// per-user limit's burst; every question is its own, so the
		// hot-answer cache answers none.
		if i%perUser == 0 {
			tok = token(t, "t1", "alloc-u"+strconv.Itoa(i/perUser))
		}
		body := fmt.Sprintf(`{"text":"allocs question %d","wait_ms":5000}`, i)
		reqs = append(reqs, fmt.Appendf(nil, "POST /v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			tok, len(body), body))
	}
	c := mustDialRaw(t, addr)
	next := 0
	ask := func() {
		if err := c.roundTrip(reqs[next]); err != nil {
			t.Fatalf("request %d: %v", next, err)
		}
		next++
	}
	for range warm {
		ask()
	}
	got := testing.AllocsPerRun(runs, ask)
	t.Logf("allocations per wait-mode request in the producer: %.1f (budget %d)", got, allocsPerWaitBudget)
	if got > allocsPerWaitBudget {
		t.Errorf("a wait-mode request allocates %.1f times, over the budget of %d: find the new allocations with -memprofile, or raise the budget saying why", got, allocsPerWaitBudget)
	}
}

// rawConn is an HTTP/1.1 client connection that does not allocate per
// request: the test counts the process's allocations.
type rawConn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
}

func mustDialRaw(tb testing.TB, addr string) *rawConn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return &rawConn{c: c, r: bufio.NewReaderSize(c, 16<<10), buf: make([]byte, 16<<10)}
}

var (
	status200     = []byte("HTTP/1.1 200 ")
	contentLength = []byte("content-length: ")
)

// roundTrip writes req and reads the answer, which must be a 200 with a
// Content-Length.
func (rc *rawConn) roundTrip(req []byte) error {
	if _, err := rc.c.Write(req); err != nil {
		return err
	}
	n, first := -1, true
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if first && !bytes.HasPrefix(line, status200) {
			return errors.New("answer is not 200: " + string(line))
		}
		first = false
		if len(line) <= 2 { // the blank line ending the header
			break
		}
		if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
			n, err = strconv.Atoi(string(bytes.TrimSpace(line[len(contentLength):])))
			if err != nil {
				return err
			}
		}
	}
	if n < 0 || n > len(rc.buf) {
		return errors.New("answer without a usable Content-Length")
	}
	_, err := io.ReadFull(rc.r, rc.buf[:n])
	return err
}

// startAllocsBackend starts this test binary as the backend process
// (runAllocsBackend) and returns the addresses of its broker and Redis. It
// stops when the test ends.
func startAllocsBackend(tb testing.TB) (kafkaAddr, redisAddr string) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envAllocsBackend+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	if _, err := fmt.Fscanln(stdout, &kafkaAddr, &redisAddr); err != nil {
		tb.Fatalf("backend process: %v", err)
	}
	return kafkaAddr, redisAddr
}

// runAllocsBackend is the backend process of TestAllocsPerWaitRequest: an
// embedded broker, miniredis, and a responder that answers every request on
// the requests topic at once on its reply partition. It prints the broker's
// and Redis's addresses on one line and runs until its stdin closes.
func runAllocsBackend() error {
	cfg := bus.DefaultConfig()
	cfg.Partitions = 2
	log := slog.New(slog.DiscardHandler)
	b, err := devstack.StartBroker(devstack.BrokerConfig{Addr: "127.0.0.1:0", Partitions: cfg.Partitions, Topics: cfg.Topics()}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	m, err := miniredis.Run()
	if err != nil {
		return err
	}
	defer m.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics(cfg.RequestsTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			fetches := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fetches.EachRecord(func(rec *kgo.Record) {
				req, err := envelope.DecodeRequest(rec.Value)
				if err != nil {
					return
				}
				reply := envelope.NewReply(&req, envelope.StatusDone, time.Now().UTC())
				reply.Answer, reply.Source = "answer", envelope.SourceLLM
				value, err := json.Marshal(reply)
				if err != nil {
					return
				}
				cl.Produce(ctx, &kgo.Record{Topic: req.Reply.Topic, Partition: req.Reply.Partition, Key: []byte(req.RequestID), Value: value}, nil)
			})
		}
	}()
	fmt.Println(b.Addr(), m.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}
