package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"sluice/producer"
	"sluice/shared/envelope"
)

// sseEvent is one Server-Sent Event as a client reads it.
type sseEvent struct {
	id, event, data string
}

// sseStream is an open SSE response.
type sseStream struct {
	resp *http.Response
	rd   *bufio.Reader
	// comments counts the comment lines (heartbeats) read.
	comments int
}

// openSSE sends method path with Accept: text/event-stream (and
// Last-Event-ID when lastID is set) and checks that the answer is a stream.
func (c *client) openSSE(method, path string, body any, lastID string) *sseStream {
	c.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		c.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sseStream{resp: resp, rd: bufio.NewReader(resp.Body)}
}

// next reads the next event.
func (s *sseStream) next() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.event != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
			s.comments++
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		}
	}
}

// rest reads the events up to and including the final one.
func (s *sseStream) rest(t *testing.T) []sseEvent {
	t.Helper()
	var out []sseEvent
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatalf("stream ended without done or error after %+v: %v", out, err)
		}
		out = append(out, ev)
		if ev.event == "done" || ev.event == "error" {
			return out
		}
	}
}

// answerOf checks the contract of a finished stream (an id on every event,
// one done at the end, the deltas after the last reset make its answer) and
// returns the done body and the number of deltas after the last reset.
func answerOf(t *testing.T, evs []sseEvent) (producer.DoneBody, int) {
	t.Helper()
	var text strings.Builder
	n := 0
	for _, ev := range evs {
		if ev.id == "" {
			t.Errorf("event without id: %+v", ev)
		}
		switch ev.event {
		case "reset":
			text.Reset()
			n = 0
		case "delta":
			var d producer.DeltaData
			if err := json.Unmarshal([]byte(ev.data), &d); err != nil || d.RequestID == "" {
				t.Fatalf("delta data %q: %v", ev.data, err)
			}
			text.WriteString(d.Text)
			n++
		}
	}
	last := evs[len(evs)-1]
	if last.event != "done" {
		t.Fatalf("stream ends with %+v, not done", last)
	}
	var done producer.DoneBody
	if err := json.Unmarshal([]byte(last.data), &done); err != nil {
		t.Fatal(err)
	}
	if done.Answer != text.String() {
		t.Errorf("deltas make %q, done's answer is %q", text.String(), done.Answer)
	}
	return done, n
}

func streamingMock(tokens int, delay time.Duration) stackOptions {
	m := mockllmConfig(time.Millisecond, 0)
	m.Tokens, m.TokenDelay = tokens, delay
	return stackOptions{partitions: 4, mock: m}
}

// streamStack is a stack on opt with one consumer that writes every piece
// at once.
func streamStack(t *testing.T, opt stackOptions) *stack {
	t.Helper()
	s := newStack(t, backends()[0], opt)
	cc := testConsumerConfig()
	cc.StreamFlush = 0
	s.addConsumer(cc)
	return s
}

func TestStreamSSE(t *testing.T) {
	s := streamStack(t, streamingMock(30, 10*time.Millisecond))
	p := s.addProducer(testProducerConfig())
	c := s.client(p.url, "shop-1", "u")

	st := c.openSSE(http.MethodPost, "/v1/chat", map[string]any{"text": "When does my order ship?"}, "")
	if loc := st.resp.Header.Get("Location"); !strings.HasPrefix(loc, "/v1/chat/") {
		t.Errorf("Location %q, want the poll URL", loc)
	}
	first, err := st.next()
	if err != nil || first.event != "delta" {
		t.Fatalf("first event %+v, %v: want a piece before the answer is whole", first, err)
	}
	evs := append([]sseEvent{first}, st.rest(t)...)
	done, n := answerOf(t, evs)
	if done.Status != envelope.StatusDone || done.Source != envelope.SourceLLM || n < 5 {
		t.Errorf("done %+v after %d pieces", done, n)
	}

	// The same answer on a poll, and as history.
	var polled producer.DoneBody
	if code, _ := c.do(http.MethodGet, st.resp.Header.Get("Location"), nil, &polled); code != http.StatusOK || polled.Answer != done.Answer {
		t.Errorf("poll: %d %+v", code, polled)
	}
	var hist producer.DialogBody
	if code, _ := c.do(http.MethodGet, "/v1/dialogs/"+done.DialogID, nil, &hist); code != http.StatusOK || len(hist.Turns) != 2 || hist.Turns[1].Content != done.Answer {
		t.Errorf("history: %d %+v", code, hist)
	}
}

func TestStreamResumeOnAnotherReplica(t *testing.T) {
	s := streamStack(t, streamingMock(40, 20*time.Millisecond))
	p1 := s.addProducer(testProducerConfig())
	p2 := s.addProducer(testProducerConfig())
	c1, c2 := s.client(p1.url, "shop-1", "u"), s.client(p2.url, "shop-1", "u")

	st := c1.openSSE(http.MethodPost, "/v1/chat", map[string]any{"text": "refund?"}, "")
	var got []sseEvent
	for len(got) < 3 {
		ev, err := st.next()
		if err != nil || ev.event != "delta" {
			t.Fatalf("event %d: %+v, %v", len(got), ev, err)
		}
		got = append(got, ev)
	}
	st.resp.Body.Close() // the network drops
	resumed := c2.openSSE(http.MethodGet, st.resp.Header.Get("Location"), nil, got[len(got)-1].id)
	rest := resumed.rest(t)
	done, _ := answerOf(t, append(got, rest...))
	if rest[0].event != "delta" || rest[0].id == got[len(got)-1].id {
		t.Errorf("the resume repeats or skips: got up to %s, resumed with %+v", got[len(got)-1].id, rest[0])
	}
	if done.Status != envelope.StatusDone {
		t.Errorf("done %+v", done)
	}
	// A replay from the start, on the other replica, makes the same answer.
	again := c2.openSSE(http.MethodGet, st.resp.Header.Get("Location"), nil, "")
	if d, _ := answerOf(t, again.rest(t)); d.Answer != done.Answer {
		t.Errorf("a replay from the start makes %q, want %q", d.Answer, done.Answer)
	}
}

func TestStreamResetOnFallback(t *testing.T) {
	opt := streamingMock(10, 5*time.Millisecond)
	opt.mock.StreamBreakRate = 1 // every call cut after 5 tokens: the canned answer follows
	s := streamStack(t, opt)
	p := s.addProducer(testProducerConfig())
	evs := s.client(p.url, "shop-1", "u").openSSE(http.MethodPost, "/v1/chat", map[string]any{"text": "hi"}, "").rest(t)
	done, _ := answerOf(t, evs)
	kinds := make([]string, len(evs))
	for i, ev := range evs {
		kinds[i] = ev.event
	}
	if done.Source != envelope.SourceCanned || !strings.Contains(strings.Join(kinds, " "), "delta reset") {
		t.Errorf("source %q, events %v: want pieces, a reset, then the canned answer", done.Source, kinds)
	}
}

func TestStreamDeadClientFreesItsStream(t *testing.T) {
	s := newStack(t, backends()[0], streamingMock(40, 100*time.Millisecond))
	s.addConsumer(testConsumerConfig())
	p := s.addProducer(testProducerConfig())
	c := s.client(p.url, "shop-1", "u")
	st := c.openSSE(http.MethodPost, "/v1/chat", map[string]any{"text": "slow answer please"}, "")
	if _, err := st.next(); err != nil {
		t.Fatal(err)
	}
	if n := p.srv.OpenStreams(); n != 1 {
		t.Fatalf("%d streams open, want 1", n)
	}
	st.resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for p.srv.OpenStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream of a client that went away is still open 10 s later (the answer takes 4 s)")
		}
		time.Sleep(10 * time.Millisecond) // the handler's end has no event to await from here
	}
}

func TestStreamSlowReaderGetsItAll(t *testing.T) {
	s := streamStack(t, streamingMock(60, 0))
	pc := testProducerConfig()
	pc.StreamHeartbeat = 20 * time.Millisecond
	p := s.addProducer(pc)
	st := s.client(p.url, "shop-1", "u").openSSE(http.MethodPost, "/v1/chat", map[string]any{"text": "coupon?"}, "")
	var evs []sseEvent
	for {
		ev, err := st.next()
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev)
		if ev.event == "done" {
			break
		}
		time.Sleep(5 * time.Millisecond) // a slow reader: the pieces wait in Redis, not here
	}
	if _, n := answerOf(t, evs); n < 10 {
		t.Errorf("%d pieces", n)
	}
}

func TestStreamHeartbeatAndUnknown(t *testing.T) {
	opt := streamingMock(5, 0)
	opt.mock.Latency = 300 * time.Millisecond
	s := newStack(t, backends()[0], opt)
	s.addConsumer(testConsumerConfig())
	pc := testProducerConfig()
	pc.StreamHeartbeat = 20 * time.Millisecond
	p := s.addProducer(pc)
	c := s.client(p.url, "shop-1", "u")
	st := c.openSSE(http.MethodPost, "/v1/chat", map[string]any{"text": "anyone there?"}, "")
	st.rest(t)
	if st.comments < 3 {
		t.Errorf("%d comment lines while the model took 300 ms, heartbeat 20 ms", st.comments)
	}
	req, _ := http.NewRequest(http.MethodGet, p.url+fmt.Sprintf("/v1/chat/%s/%s", newDialog(), "0190a0b0-0000-7000-8000-000000000000"), nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("resume of an unknown request: %d, want 404", resp.StatusCode)
	}
}
