package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"sluice/consumer"
	"sluice/shared/admin"
	"sluice/shared/envelope"
)

// drainCall is the outcome of one GET /drain.
type drainCall struct {
	status int
	report admin.DrainReport
	err    error
}

// withAdmin serves the admin endpoints of r's consumer as consumer.Open
// wires them: its readiness check and its drain.
func withAdmin(tb testing.TB, r *running, e *env) string {
	tb.Helper()
	adm := admin.New(r.reg, e.log)
	adm.AddCheck("consumer", admin.Flag(r.c.Ready, "not consuming"))
	adm.AddDrain("consumer", r.c.Drain)
	srv := httptest.NewServer(adm.Handler())
	tb.Cleanup(srv.Close)
	return srv.URL
}

// getDrain calls GET /drain and sends the outcome on the channel it
// returns: a call blocks until the drain finished.
func getDrain(base string) <-chan drainCall {
	out := make(chan drainCall, 1)
	go func() {
		var c drainCall
		resp, err := http.Get(base + admin.DrainPath)
		if err != nil {
			c.err = err
		} else {
			c.status = resp.StatusCode
			c.err = json.NewDecoder(resp.Body).Decode(&c.report)
			resp.Body.Close()
		}
		out <- c
	}()
	return out
}

func awaitDrain(tb testing.TB, ch <-chan drainCall) drainCall {
	tb.Helper()
	select {
	case c := <-ch:
		if c.err != nil {
			tb.Fatalf("GET /drain: %v", c.err)
		}
		return c
	case <-time.After(waitFor):
		tb.Fatalf("GET /drain did not answer within %v", waitFor)
		return drainCall{}
	}
}

func awaitReady(tb testing.TB, c *consumer.Consumer, want bool) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for c.Ready() != want {
		if time.Now().After(deadline) {
			tb.Fatalf("Ready() not %v within %v", want, waitFor)
		}
		time.Sleep(10 * time.Millisecond) // readiness has no event to await here
	}
}

// members returns the member ids of the group.
func (e *env) members(tb testing.TB) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gs, err := e.adm.DescribeGroups(ctx, group)
	if err != nil {
		tb.Fatalf("describe group: %v", err)
	}
	var ids []string
	for _, m := range gs[group].Members {
		ids = append(ids, m.MemberID)
	}
	return ids
}

// TestDrainEndpoint: GET /drain (the preStop hook) turns readiness false at
// once and answers only once the records in flight finished: their replies
// are produced, their offsets committed and the consumer has left the
// group. A second call answers the same drain. Run keeps going until its
// context ends, then returns at once.
func TestDrainEndpoint(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	defer g.Open()
	ans := &fakeAnswerer{AnswerFn: g.answer, Entered: make(chan *envelope.Request, 8)}
	r := e.start(t, testConfig(), ans)
	base := withAdmin(t, r, e)
	awaitReady(t, r.c, true)
	member, _ := r.c.Client().GroupMetadata()
	if ids := e.members(t); !slices.Contains(ids, member) {
		t.Fatalf("the group has members %v, not the consumer %s", ids, member)
	}
	replies := e.reader(t, repliesTopic)

	const n = 3
	for i := range n {
		e.produceRequests(t, newRequest(i, fmt.Sprintf("question %d", i)))
	}
	awaitEntered(t, ans.Entered, n)

	first := getDrain(base)
	awaitReady(t, r.c, false)
	select {
	case c := <-first:
		t.Fatalf("GET /drain answered %d %+v while %d records were in flight", c.status, c.report, n)
	default:
	}
	g.Open()
	c := awaitDrain(t, first)
	if c.status != http.StatusOK || !c.report.Drained || c.report.InFlightLeft != 0 {
		t.Fatalf("GET /drain = %d %+v, want 200 drained with nothing left", c.status, c.report)
	}

	// Everything is done by the time it answers: no waiting here.
	if committed, end := e.offsets(t); !atEnd(committed, end) {
		t.Errorf("drained, but committed %v of end offsets %v", committed, end)
	}
	if ids := e.members(t); len(ids) != 0 {
		t.Errorf("drained, but the group has members %v (the consumer was %s)", ids, member)
	}
	if got := replies.replies(t, n); len(got) != n {
		t.Errorf("%d replies, want %d", len(got), n)
	}
	if resp, err := http.Get(base + "/readyz"); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz after the drain = %d, want 503", resp.StatusCode)
	}

	again := awaitDrain(t, getDrain(base))
	if again.status != http.StatusOK || again.report != c.report {
		t.Errorf("second GET /drain = %d %+v, want the first drain's %+v", again.status, again.report, c.report)
	}
	select {
	case <-r.done:
		t.Fatalf("Run returned (%v) after the drain, before its context ended", r.runErr)
	default:
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := len(ans.Calls()); got != n {
		t.Errorf("%d answerer calls, want %d", got, n)
	}
}

// TestDrainEndpointTimeout: records that do not finish within the drain
// timeout are abandoned uncommitted and GET /drain answers 503 with how
// many.
func TestDrainEndpointTimeout(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	defer g.Open()
	ans := &fakeAnswerer{AnswerFn: g.answer, Entered: make(chan *envelope.Request, 8)}
	cfg := testConfig()
	cfg.DrainTimeout = 300 * time.Millisecond
	r := e.start(t, cfg, ans)
	base := withAdmin(t, r, e)
	awaitReady(t, r.c, true)

	const n = 2
	for i := range n {
		e.produceRequests(t, newRequest(i, fmt.Sprintf("question %d", i)))
	}
	awaitEntered(t, ans.Entered, n)
	c := awaitDrain(t, getDrain(base))
	if c.status != http.StatusServiceUnavailable || c.report.Drained || c.report.InFlightLeft != n {
		t.Fatalf("GET /drain = %d %+v, want 503 with %d in flight left", c.status, c.report, n)
	}
	committed, end := e.offsets(t)
	for p, o := range end {
		if o > 0 && committed[p] >= o {
			t.Errorf("partition %d committed to %d although its records were abandoned", p, committed[p])
		}
	}
}
