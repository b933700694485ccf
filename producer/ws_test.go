package producer_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/store"
)

// wsFrame is a server frame of GET /v1/ws, as a client reads it.
type wsFrame struct {
	Type       string `json:"type"`
	Ref        string `json:"ref"`
	RequestID  string `json:"request_id"`
	DialogID   string `json:"dialog_id"`
	Text       string `json:"text"`
	ID         string `json:"id"`
	Seq        int    `json:"seq"`
	Status     any    `json:"status"` // an error's code, a done body's status
	Answer     string `json:"answer"`
	Detail     string `json:"detail"`
	RetryAfter int    `json:"retry_after"`
}

// code returns an error frame's status code.
func (f wsFrame) code() int {
	n, _ := f.Status.(float64)
	return int(n)
}

func (h *harness) wsURL() string { return "ws" + strings.TrimPrefix(h.url, "http") + "/v1/ws" }

// dialWS opens GET /v1/ws offering protocols and header; it returns the
// handshake's response when refused.
func (h *harness) dialWS(tb testing.TB, header http.Header, protocols ...string) (*websocket.Conn, *http.Response, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, h.wsURL(), &websocket.DialOptions{Subprotocols: protocols, HTTPHeader: header})
	if err == nil {
		tb.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

// mustWS opens an authenticated connection (token in the subprotocol)
// and reads its ready frame.
func (h *harness) mustWS(tb testing.TB, tok string) *websocket.Conn {
	tb.Helper()
	c, _, err := h.dialWS(tb, nil, producer.WSProtocol, "bearer."+tok)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	if f := readFrame(tb, c); f.Type != "ready" {
		tb.Fatalf("first frame %+v, want ready", f)
	}
	return c
}

func readFrame(tb testing.TB, c *websocket.Conn) wsFrame {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.Read(ctx)
	if err != nil {
		tb.Fatalf("read frame: %v", err)
	}
	var f wsFrame
	if err := json.Unmarshal(b, &f); err != nil {
		tb.Fatalf("frame %q: %v", b, err)
	}
	return f
}

func writeFrame(tb testing.TB, c *websocket.Conn, v any) {
	tb.Helper()
	b, _ := json.Marshal(v)
	if err := c.Write(context.Background(), websocket.MessageText, b); err != nil {
		tb.Fatalf("write frame: %v", err)
	}
}

// closedWith reads until the server closes c and returns its close code.
func closedWith(tb testing.TB, c *websocket.Conn) (websocket.StatusCode, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Reason
		}
		tb.Fatalf("connection ended without a close frame: %v", err)
	}
}

// waitConns waits until p holds n WebSockets.
func waitConns(tb testing.TB, p *producer.Server, n int) {
	tb.Helper()
	limit := time.Now().Add(10 * time.Second)
	for p.WSConns() != n {
		if time.Now().After(limit) {
			tb.Fatalf("%d WebSockets open, want %d", p.WSConns(), n)
		}
		time.Sleep(5 * time.Millisecond) // the count has no event to await
	}
}

func TestWSAuth(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.ReadTimeout = 300 * time.Millisecond })
	tok := token(t, "t1", "u1")

	t.Run("Subprotocol", func(t *testing.T) {
		c := h.mustWS(t, tok)
		if c.Subprotocol() != producer.WSProtocol {
			t.Errorf("selected subprotocol %q, want %q (never the token)", c.Subprotocol(), producer.WSProtocol)
		}
	})
	t.Run("AuthFrame", func(t *testing.T) {
		c, _, err := h.dialWS(t, nil, producer.WSProtocol)
		if err != nil {
			t.Fatal(err)
		}
		writeFrame(t, c, map[string]string{"type": "auth", "token": tok})
		if f := readFrame(t, c); f.Type != "ready" {
			t.Fatalf("after the auth frame: %+v, want ready", f)
		}
	})
	t.Run("BadSubprotocolToken", func(t *testing.T) {
		_, resp, err := h.dialWS(t, nil, producer.WSProtocol, "bearer.not-a-jwt")
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial with a bad token: %v %v, want 401", resp, err)
		}
	})
	t.Run("BadAuthFrame", func(t *testing.T) {
		wrong, _ := auth.Mint("another-secret-0123456789", "t1", "u1", time.Hour, time.Now())
		c, _, err := h.dialWS(t, nil, producer.WSProtocol)
		if err != nil {
			t.Fatal(err)
		}
		writeFrame(t, c, map[string]string{"type": "auth", "token": wrong})
		if code, _ := closedWith(t, c); code != producer.WSCloseUnauthorized {
			t.Fatalf("close code %d, want %d", code, producer.WSCloseUnauthorized)
		}
	})
	t.Run("AskBeforeAuth", func(t *testing.T) {
		c, _, err := h.dialWS(t, nil, producer.WSProtocol)
		if err != nil {
			t.Fatal(err)
		}
		writeFrame(t, c, map[string]string{"type": "ask", "text": "hi"})
		if code, _ := closedWith(t, c); code != producer.WSCloseUnauthorized {
			t.Fatalf("close code %d, want %d", code, producer.WSCloseUnauthorized)
		}
	})
	t.Run("NoAuthFrame", func(t *testing.T) {
		c, _, err := h.dialWS(t, nil, producer.WSProtocol)
		if err != nil {
			t.Fatal(err)
		}
		if code, reason := closedWith(t, c); code != producer.WSCloseUnauthorized || !strings.Contains(reason, "no auth frame") {
			t.Fatalf("close %d %q, want %d for no auth frame within the read timeout", code, reason, producer.WSCloseUnauthorized)
		}
	})
	t.Run("TokenInURL", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, resp, err := websocket.Dial(ctx, h.wsURL()+"?access_token="+tok, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("dial with the token in the URL: %v %v, want 400", resp, err)
		}
	})
	t.Run("TokenExpires", func(t *testing.T) {
		short, _ := auth.Mint(secret, "t1", "u1", time.Second, time.Now())
		c := h.mustWS(t, short)
		if code, reason := closedWith(t, c); code != producer.WSCloseUnauthorized || reason != "token expired" {
			t.Fatalf("close %d %q, want %d token expired", code, reason, producer.WSCloseUnauthorized)
		}
	})
	waitConns(t, h.srv, 0)
}

func TestWSOrigin(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.CORSOrigins = []string{"https://shop.example"} })
	tok := token(t, "t1", "u1")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://shop.example", true},
		{h.url, true}, // the server's own pages (the widget's demo)
		{"", true},    // not a browser
		{"https://evil.example", false},
		{"http://shop.example", false},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			hd := http.Header{}
			if tc.origin != "" {
				hd.Set("Origin", tc.origin)
			}
			_, resp, err := h.dialWS(t, hd, producer.WSProtocol, "bearer."+tok)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (err == nil || resp == nil || resp.StatusCode != http.StatusForbidden):
				t.Fatalf("dial: %v %v, want 403", resp, err)
			}
		})
	}
}

func TestWSLimits(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) {
		c.WSMaxMessages = 3
		c.WSMaxMessageBytes = 256
		c.WSIdleTimeout = time.Second
		c.WSMaxConns = 2
	})
	tok := token(t, "t1", "u1")

	t.Run("Messages", func(t *testing.T) {
		c := h.mustWS(t, tok)
		for i := range 3 {
			writeFrame(t, c, map[string]string{"type": "nonsense"})
			if f := readFrame(t, c); f.Type != "error" || f.code() != 400 {
				t.Fatalf("frame %d answered %+v, want a 400 error frame", i, f)
			}
		}
		writeFrame(t, c, map[string]string{"type": "nonsense"})
		if code, _ := closedWith(t, c); code != websocket.StatusPolicyViolation {
			t.Fatalf("close code %d after the 4th message, want %d", code, websocket.StatusPolicyViolation)
		}
	})
	t.Run("MessageSize", func(t *testing.T) {
		c := h.mustWS(t, tok)
		writeFrame(t, c, map[string]string{"type": "ask", "text": strings.Repeat("x", 300)})
		if code, _ := closedWith(t, c); code != websocket.StatusMessageTooBig {
			t.Fatalf("close code %d, want %d", code, websocket.StatusMessageTooBig)
		}
	})
	t.Run("Idle", func(t *testing.T) {
		c := h.mustWS(t, tok)
		if code, reason := closedWith(t, c); code != websocket.StatusNormalClosure || reason != "idle" {
			t.Fatalf("close %d %q, want 1000 idle", code, reason)
		}
	})
	t.Run("Connections", func(t *testing.T) {
		waitConns(t, h.srv, 0)
		h.mustWS(t, tok)
		h.mustWS(t, tok)
		_, resp, err := h.dialWS(t, nil, producer.WSProtocol, "bearer."+tok)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("third connection: %v %v, want 503 with Retry-After", resp, err)
		}
	})
}

func TestWSAsk(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.UserRate = producer.Rate{N: 2, Per: time.Minute, Burst: 2} })
	producer.SetDeltas(h.srv, func(_ context.Context, _ string, emit func(string) bool) { emit("hello") })
	c := h.mustWS(t, token(t, "t1", "ask-"+t.Name()))

	writeFrame(t, c, map[string]any{"type": "ask", "ref": "r0", "text": ""})
	if f := readFrame(t, c); f.Type != "error" || f.Ref != "r0" || f.code() != 400 {
		t.Fatalf("empty text: %+v, want a 400 error frame for r0", f)
	}
	writeFrame(t, c, map[string]any{"type": "ask", "ref": "r1", "text": "hi", "mode": "wait"})
	if f := readFrame(t, c); f.Type != "error" || f.code() != 400 {
		t.Fatalf("ask with a mode: %+v, want a 400 error frame", f)
	}
	writeFrame(t, c, map[string]any{"type": "ask", "ref": "r2", "text": "hi"})
	acc := readFrame(t, c)
	if acc.Type != "accepted" || acc.Ref != "r2" || len(acc.DialogID) != 32 || acc.RequestID == "" {
		t.Fatalf("ask: %+v, want accepted with ids", acc)
	}
	if f := readFrame(t, c); f.Type != "delta" || f.RequestID != acc.RequestID || f.Text != "hello" {
		t.Fatalf("after accepted: %+v, want the delta of %s", f, acc.RequestID)
	}
	// The same rate limit as POST /v1/chat, which counted the refused asks too.
	writeFrame(t, c, map[string]any{"type": "ask", "ref": "r3", "text": "again", "dialog_id": acc.DialogID})
	if f := readFrame(t, c); f.Type != "error" || f.Ref != "r3" || f.code() != 429 || f.RetryAfter < 1 {
		t.Fatalf("second ask: %+v, want 429 with retry_after", f)
	}
}

// A client that stops reading is disconnected within the write timeout,
// and its stream stops pulling events: the producer does not buffer for
// it.
func TestWSSlowReader(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) {
		c.WSWriteTimeout = 200 * time.Millisecond
		c.WSPingInterval = time.Hour // not taken for a dead client
	})
	piece := strings.Repeat("y", 4096)
	var pulled atomic.Int64
	stopped := make(chan struct{})
	producer.SetDeltas(h.srv, func(ctx context.Context, _ string, emit func(string) bool) {
		defer close(stopped)
		for emit(piece) {
			pulled.Add(1)
		}
	})
	c := h.mustWS(t, token(t, "t1", "slow"))
	writeFrame(t, c, map[string]any{"type": "ask", "text": "hi"})
	// Never read again.
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatalf("the stream still pulls after %d pieces", pulled.Load())
	}
	waitConns(t, h.srv, 0)
	// What the kernel's socket buffers take, plus the connection's queue:
	// a few MB on loopback, never the endless stream.
	if n := pulled.Load(); n > 16<<20/int64(len(piece)) {
		t.Errorf("pulled %d pieces of %d bytes for a client that reads nothing", n, len(piece))
	}
}

// A client that vanishes without closing, or stops answering pings, is
// let go: its connection's goroutines and streams end.
func TestWSDeadClientFreesResources(t *testing.T) {
	h := mustStart(t, func(c *producer.Config) { c.WSPingInterval = 200 * time.Millisecond })
	streams := make(chan struct{}, 1)
	producer.SetDeltas(h.srv, func(ctx context.Context, _ string, emit func(string) bool) {
		<-ctx.Done() // an answer that is slow to come
		streams <- struct{}{}
	})
	tok := token(t, "t1", "dead")

	t.Run("NoPong", func(t *testing.T) {
		// coder/websocket answers pings only while reading: this client
		// never reads again, as a browser tab frozen or off the network.
		c := h.mustWS(t, tok)
		writeFrame(t, c, map[string]any{"type": "ask", "text": "hi"})
		select {
		case <-streams:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream of a client that answers no ping was not ended")
		}
		waitConns(t, h.srv, 0)
	})
	t.Run("Vanished", func(t *testing.T) {
		c := h.mustWS(t, tok)
		writeFrame(t, c, map[string]any{"type": "ask", "text": "hi"})
		if f := readFrame(t, c); f.Type != "accepted" {
			t.Fatalf("%+v, want accepted", f)
		}
		_ = c.CloseNow() // the TCP connection goes, without a close frame
		select {
		case <-streams:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream of a vanished client was not ended")
		}
		waitConns(t, h.srv, 0)
	})
}

// Shutdown lets every WebSocket go, telling its client to go elsewhere
// (1001), and waits for their handlers.
func TestWSShutdown(t *testing.T) {
	h := mustStart(t, nil)
	c := h.mustWS(t, token(t, "t1", "bye"))
	go h.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	// About one run in twenty the client reads EOF instead of the close
	// frame the server sent (its Close reports the handshake done): seen
	// with coder/websocket v1.8.15 on both ends, not explained yet. Either
	// way the connection ended at the shutdown, not at the read's timeout.
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway && ctx.Err() != nil {
		t.Fatalf("at shutdown: %v, want close code %d", err, websocket.StatusGoingAway)
	}
	waitConns(t, h.srv, 0)
}

// An ask's answer streams piece by piece from the answer stream the
// consumer writes; a new connection resumes it after the last event id it
// got, without a piece twice or missing.
func TestWSStreamsAndResumes(t *testing.T) {
	h := mustStart(t, nil)
	tok := token(t, "t1", "streamer")
	c := h.mustWS(t, tok)
	writeFrame(t, c, map[string]any{"type": "ask", "ref": "q", "text": "hi"})
	acc := readFrame(t, c)
	if acc.Type != "accepted" {
		t.Fatalf("%+v, want accepted", acc)
	}
	d := store.Dialog{Tenant: "t1", User: "streamer", ID: acc.DialogID}
	ctx := context.Background()
	appendStream := func(es ...store.StreamEntry) {
		t.Helper()
		if _, err := h.store.AppendStream(ctx, d, acc.RequestID, es...); err != nil {
			t.Fatal(err)
		}
	}
	appendStream(store.StreamEntry{Kind: store.StreamBegin},
		store.StreamEntry{Kind: store.StreamDelta, Seq: 0, Text: "Hel"},
		store.StreamEntry{Kind: store.StreamDelta, Seq: 1, Text: "lo "})
	first := readFrame(t, c)
	if first.Type != "delta" || first.Text != "Hel" || first.RequestID != acc.RequestID || first.ID == "" {
		t.Fatalf("first piece %+v", first)
	}
	if f := readFrame(t, c); f.Type != "delta" || f.Text != "lo " {
		t.Fatalf("second piece %+v", f)
	}
	_ = c.CloseNow() // the network drops after two pieces; only the first was seen

	done, _ := json.Marshal(producer.DoneBody{RequestID: acc.RequestID, DialogID: acc.DialogID, Status: "done", Answer: "Hello world", Source: "llm"})
	appendStream(store.StreamEntry{Kind: store.StreamDelta, Seq: 2, Text: "world"},
		store.StreamEntry{Kind: store.StreamDone, Text: string(done)})

	c2 := h.mustWS(t, tok)
	writeFrame(t, c2, map[string]any{"type": "resume", "dialog_id": acc.DialogID, "request_id": acc.RequestID, "last_event_id": first.ID})
	got := first.Text
	for {
		f := readFrame(t, c2)
		if f.RequestID != acc.RequestID {
			t.Fatalf("frame %+v of another request", f)
		}
		if f.Type == "done" {
			if f.code() != 0 || got != "Hello world" {
				t.Fatalf("pieces %q then done %+v, want them to make %q", got, f, "Hello world")
			}
			break
		}
		if f.Type != "delta" {
			t.Fatalf("frame %+v, want delta or done", f)
		}
		got += f.Text
	}

	// A resume of a request that is not the caller's is refused.
	other := h.mustWS(t, token(t, "t1", "someone-else"))
	writeFrame(t, other, map[string]any{"type": "resume", "dialog_id": acc.DialogID, "request_id": acc.RequestID})
	if f := readFrame(t, other); f.Type != "error" || f.code() != 404 {
		t.Fatalf("another user's resume: %+v, want a 404 error frame", f)
	}
}

// failingReads is a Redis client hook that fails the next reads of answer
// streams (XREAD), as a Redis blip does, and counts the failures.
type failingReads struct {
	left   atomic.Int64 // reads still to fail; below 0: every read passes
	failed atomic.Int64
}

var errBlip = errors.New("i/o timeout (a Redis blip)")

func (f *failingReads) fail(cmd redis.Cmder) bool {
	if cmd.Name() != "xread" || f.left.Add(-1) < 0 {
		return false
	}
	f.failed.Add(1)
	cmd.SetErr(errBlip)
	return true
}

func (f *failingReads) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failingReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.fail(cmd) {
			return errBlip
		}
		return next(ctx, cmd)
	}
}

func (f *failingReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if f.fail(cmd) {
				return errBlip
			}
		}
		return next(ctx, cmds)
	}
}

// A read of the answer stream that fails is read again after a pause, as
// for SSE: the answer of a Redis blip comes whole, without an error frame.
// Reads that keep failing end the answer with the 503 error frame the
// client resumes after.
func TestWSAnswerStreamReadRetried(t *testing.T) {
	blip := &failingReads{}
	h := mustStartHooked(t, nil, blip)
	tok := token(t, "t1", "blip")
	ask := func(t *testing.T, c *websocket.Conn) wsFrame {
		t.Helper()
		writeFrame(t, c, map[string]any{"type": "ask", "ref": "q", "text": "hi"})
		acc := readFrame(t, c)
		if acc.Type != "accepted" {
			t.Fatalf("%+v, want accepted", acc)
		}
		return acc
	}

	t.Run("Blip", func(t *testing.T) {
		blip.left.Store(2) // fewer than the failures in a row that end a stream
		blip.failed.Store(0)
		c := h.mustWS(t, tok)
		acc := ask(t, c)
		d := store.Dialog{Tenant: "t1", User: "blip", ID: acc.DialogID}
		done, _ := json.Marshal(producer.DoneBody{RequestID: acc.RequestID, DialogID: acc.DialogID, Status: "done", Answer: "Hello", Source: "llm"})
		if _, err := h.store.AppendStream(context.Background(), d, acc.RequestID,
			store.StreamEntry{Kind: store.StreamBegin},
			store.StreamEntry{Kind: store.StreamDelta, Seq: 0, Text: "Hello"},
			store.StreamEntry{Kind: store.StreamDone, Text: string(done)}); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, c); f.Type != "delta" || f.Text != "Hello" {
			t.Fatalf("after %d failed reads: %+v, want the delta", blip.failed.Load(), f)
		}
		if f := readFrame(t, c); f.Type != "done" || f.Answer != "Hello" {
			t.Fatalf("%+v, want done", f)
		}
		if n := blip.failed.Load(); n != 2 {
			t.Errorf("%d reads failed, want 2", n)
		}
	})
	t.Run("Outage", func(t *testing.T) {
		blip.left.Store(1 << 40) // Redis stays down for the stream
		blip.failed.Store(0)
		t.Cleanup(func() { blip.left.Store(0) })
		c := h.mustWS(t, tok)
		acc := ask(t, c)
		f := readFrame(t, c)
		if f.Type != "error" || f.code() != http.StatusServiceUnavailable || f.RequestID != acc.RequestID || f.RetryAfter < 1 {
			t.Fatalf("%+v, want a 503 error frame with retry_after for %s", f, acc.RequestID)
		}
		if n := blip.failed.Load(); n < 2 {
			t.Errorf("gave up after %d failed read(s), want it to read again first", n)
		}
	})
}
