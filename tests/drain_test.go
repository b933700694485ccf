package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/admin"
)

// drainVia calls GET /drain on adm as a preStop httpGet hook would.
func drainVia(t *testing.T, adm *admin.Server) (int, admin.DrainReport) {
	t.Helper()
	rec := httptest.NewRecorder()
	adm.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, admin.DrainPath, nil))
	var rep admin.DrainReport
	if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
		t.Fatalf("GET /drain answered %d %q: %v", rec.Code, rec.Body, err)
	}
	return rec.Code, rep
}

// TestDrainEndpointsWired: producer.Open and consumer.Open, as the binary
// runs them, serve GET /drain on their admin listeners: each drains and
// turns unready.
func TestDrainEndpointsWired(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 3})
	c := s.addConsumer(testConsumerConfig())
	p := s.addProducer(testProducerConfig())
	for name, adm := range map[string]*admin.Server{"producer": p.adm, "consumer": c.adm} {
		if code, rep := drainVia(t, adm); code != http.StatusOK || !rep.Drained {
			t.Errorf("%s: GET /drain = %d %+v, want 200 drained", name, code, rep)
		}
		if ready(adm) {
			t.Errorf("%s: ready after GET /drain", name)
		}
	}
}

// groupMembers returns how many members group has.
func groupMembers(t *testing.T, brokers []string, group string) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := kadm.NewClient(cl).DescribeGroups(ctx, group)
	if err != nil {
		t.Fatalf("describe group %s: %v", group, err)
	}
	return len(gs[group].Members)
}

// TestConsumerPreStopDrainUnderLoad runs Kubernetes' scale-down of one of
// two consumer processes under load: its preStop hook, `sluice drain`,
// returns 0 once the consumer drained, unready and out of the group but
// still running; the SIGTERM that follows ends it with exit 0 without a
// second drain; no client sees an error and no history holds a turn twice.
func TestConsumerPreStopDrainUnderLoad(t *testing.T) {
	s := newProcessStack(t)
	a := s.startConsumer(t)
	s.startConsumer(t)
	p := s.addProducer(testProducerConfig())

	type outcome struct {
		ok, bad int64
		dialogs map[string]*client
	}
	const users, each = 40, 8
	mid := make(chan struct{})
	loaded := make(chan outcome, 1)
	go func() {
		ok, bad, dialogs := s.load(t, p.url, users, each, 60, func() { close(mid) })
		loaded <- outcome{ok, bad, dialogs}
	}()
	var res outcome
	select {
	case <-mid:
	case res = <-loaded:
		t.Fatalf("load ended (%d answered, %d failed) before it was under way", res.ok, res.bad)
	}

	t0 := time.Now()
	d := startProc(t, nil, "drain", "--admin-addr", a.admin)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second): // a hung drain, not a slow one
		t.Fatalf("sluice drain still running after 60s:\n%s", d.output())
	}
	if d.err != nil || !strings.Contains(d.output(), `"drained":true`) {
		t.Fatalf("sluice drain: %v\n%s", d.err, d.output())
	}
	if resp, err := httpClient.Get("http://" + a.admin + "/readyz"); err != nil {
		t.Fatalf("drained consumer's admin listener: %v", err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("drained consumer's /readyz = %d, want 503", resp.StatusCode)
	}
	if n := groupMembers(t, s.brokers, s.bus.Group); n != 1 {
		t.Errorf("the group has %d members after one of two consumers drained, want 1", n)
	}
	select {
	case <-a.done:
		t.Fatalf("the consumer exited after the drain, before SIGTERM (%v)", a.err)
	default:
	}

	t.Logf("drain took %v: %s", time.Since(t0), d.output())
	t1 := time.Now()
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(60 * time.Second): // a hung process, not a slow one
		t.Fatal("the drained consumer still running 60s after SIGTERM")
	}
	if a.err != nil {
		t.Fatalf("the drained consumer after SIGTERM: %v\n%s", a.err, a.output())
	}
	out := a.output()
	if n := strings.Count(out, `msg="consumer draining"`); n != 1 || strings.Contains(out, `msg="drain timeout`) {
		t.Errorf("want one drain, within its timeout; the consumer drained %d times:\n%s", n, out)
	}

	t.Logf("exit after SIGTERM took %v", time.Since(t1))
	t2 := time.Now()
	res = <-loaded
	t.Logf("rest of load %v", time.Since(t2))
	if res.bad != 0 || res.ok != users*each {
		t.Fatalf("answered %d, failed %d of %d", res.ok, res.bad, users*each)
	}
	checkHistories(t, res.dialogs, each)
}
