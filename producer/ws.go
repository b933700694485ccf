package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"

	"sluice/shared/auth"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

// WSProtocol is the WebSocket subprotocol of GET /v1/ws. A browser offers
// it beside "bearer.<JWT>", the token; the server selects it, never echoing
// the token.
const WSProtocol = "sluice.v1"

// wsBearerPrefix marks the token among the offered subprotocols.
const wsBearerPrefix = "bearer."

// Close codes of GET /v1/ws beyond RFC 6455's. 4401 (as HTTP's 401): the
// auth frame was missing or bad, or the token expired; get a fresh token
// and reconnect.
const (
	WSCloseUnauthorized websocket.StatusCode = 4401
)

// wsQueue is how many frames a connection holds for its client. A stream
// whose client reads slower than the answer comes waits here and reads no
// further from the store: the answer waits in the store, not in memory.
const wsQueue = 16

// wsMaxStreams is how many answers one connection may have under way at
// once; a further ask is refused with a 429 error frame. A shopper asks
// one question at a time; a few more cover a resume beside a new ask.
const wsMaxStreams = 4

// wsFrame is what a client sends on GET /v1/ws: an auth, ask or resume
// frame. Unknown fields are refused.
type wsFrame struct {
	Type string `json:"type"`
	// Token: auth frames.
	Token string `json:"token,omitempty"`
	// Ref is the client's name for an ask, returned in its accepted or
	// error frame.
	Ref string `json:"ref,omitempty"`
	// ChatRequest: ask frames, less mode, wait_ms and callback_url.
	ChatRequest
	// RequestID and LastEventID: resume frames (DialogID from ChatRequest).
	RequestID   string `json:"request_id,omitempty"`
	LastEventID string `json:"last_event_id,omitempty"`
}

// wsOut is a frame the server sends.
type wsOut struct {
	Type      string `json:"type"`
	Ref       string `json:"ref,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	DialogID  string `json:"dialog_id,omitempty"`
	ID        string `json:"id,omitempty"`
	// Seq and Text: delta frames.
	Seq  *int   `json:"seq,omitempty"`
	Text string `json:"text,omitempty"`
	// Status, Title, Problem (the problem's type), Detail and RetryAfter:
	// error frames, the problem POST /v1/chat would answer.
	Status     int    `json:"status,omitempty"`
	Title      string `json:"title,omitempty"`
	Problem    string `json:"problem,omitempty"`
	Detail     string `json:"detail,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`
	// Done: done frames carry the done body's fields beside type and id.
	Done *DoneBody `json:"-"`
}

// MarshalJSON writes a done frame as the done body with type and id.
func (o wsOut) MarshalJSON() ([]byte, error) {
	type plain wsOut
	if o.Done == nil {
		return json.Marshal(plain(o))
	}
	head, err := json.Marshal(struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
	}{o.Type, o.ID})
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(o.Done)
	if err != nil {
		return nil, err
	}
	// {"type":..,"id":..} + {"request_id":..} = {"type":..,"id":..,"request_id":..}
	return append(append(head[:len(head)-1], ','), body[1:]...), nil
}

// serveWS serves GET /v1/ws: one WebSocket carries a conversation. See
// docs/api.md for the frames; the handler returns when the connection
// ends.
func (s *Server) serveWS(c echo.Context) error {
	r := c.Request()
	if r.URL.RawQuery != "" {
		// A token in a URL ends up in proxies' logs and browser history.
		return badRequest("GET /v1/ws takes no query parameters: send the token in Sec-WebSocket-Protocol as bearer.<JWT> or in a first auth frame, never in the URL")
	}
	if err := s.checkOrigin(r); err != nil {
		return err
	}
	var id auth.Identity
	token, offered := wsToken(r)
	if offered {
		var err error
		if id, err = s.auth.Verify(token); err != nil {
			return unauthorized(err.Error())
		}
	}
	if s.closing.Load() {
		return unavailable("server is shutting down", 1)
	}
	if n := s.ws.open(); s.cfg.WSMaxConns > 0 && n >= s.cfg.WSMaxConns {
		s.m.wsRefused.Inc()
		return unavailable(fmt.Sprintf("this replica holds %d WebSocket connections, its bound", n), 5)
	}
	conn, err := websocket.Accept(c.Response(), r, &websocket.AcceptOptions{
		Subprotocols:       []string{WSProtocol},
		InsecureSkipVerify: true, // checkOrigin checked it against the CORS origins
	})
	if err != nil {
		return nil // Accept answered the client already
	}
	conn.SetReadLimit(s.cfg.WSMaxMessageBytes)
	s.m.wsOpened.Inc()
	// The request's context is not to be used after the hijack: the
	// connection gets its own, ended by end.
	ctx, cancel := context.WithCancelCause(context.Background())
	wc := &wsConn{s: s, conn: conn, ctx: ctx, cancel: cancel, out: make(chan []byte, wsQueue), id: id, activity: make(chan struct{}, 1),
		traceparent: r.Header.Get(envelope.HeaderTraceparent)}
	s.ws.add(wc)
	defer s.ws.remove(wc)
	s.m.wsClosed.With(wc.run(offered)).Inc()
	return nil
}

// checkOrigin refuses a browser's handshake from an origin that is
// neither the server's own nor one of the CORS origins (403): a page of
// another site must not talk to the API with a shopper's token. A client
// that sends no Origin (not a browser) passes.
func (s *Server) checkOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err == nil && strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	for _, o := range s.cfg.CORSOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return nil
		}
	}
	return forbidden(fmt.Sprintf("origin %s is not allowed (SLUICE_CORS_ORIGINS)", origin))
}

// wsToken returns the token offered as the subprotocol bearer.<JWT>, and
// whether one was.
func wsToken(r *http.Request) (string, bool) {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if t, ok := strings.CutPrefix(strings.TrimSpace(p), wsBearerPrefix); ok {
				return t, true
			}
		}
	}
	return "", false
}

// wsConn is one open WebSocket.
type wsConn struct {
	s      *Server
	conn   *websocket.Conn
	ctx    context.Context
	cancel context.CancelCauseFunc
	id     auth.Identity
	// traceparent is the upgrade request's W3C trace context, carried by
	// every question asked on the connection ("" for none).
	traceparent string
	// out holds the frames for the client, written by write. Senders wait
	// while it is full (backpressure).
	out chan []byte
	// activity is signalled by every frame in or out: it restarts the idle
	// timer.
	activity chan struct{}

	mu      sync.Mutex
	streams int // answers under way
	wg      sync.WaitGroup

	endOnce sync.Once
	cause   error // why it ended, set by end
}

// errWS* are the causes a connection ends with; wsReason names them for
// sluice_producer_ws_closed_total.
var (
	errWSIdle     = errors.New("idle")
	errWSSlow     = errors.New("client too slow")
	errWSDead     = errors.New("no pong")
	errWSExpired  = errors.New("token expired")
	errWSLimit    = errors.New("message limit")
	errWSShutdown = errors.New("shutdown")
)

// run authenticates the connection (unless the handshake did), then reads
// the client's frames until the connection ends, and returns why it ended.
func (w *wsConn) run(authenticated bool) string {
	if !authenticated {
		if err := w.authFrame(); err != nil {
			w.end(&wsAuthError{err})
			w.wg.Wait()
			return w.label()
		}
	}
	w.wg.Go(w.write)
	w.send(wsOut{Type: "ready"})
	n := 0
	for {
		// Not w.ctx: a cancelled read closes the connection at once, and
		// end closes it with the code that says why instead.
		_, msg, err := w.conn.Read(context.Background())
		if err != nil {
			w.end(err)
			break
		}
		w.touch()
		if n++; n > w.s.cfg.WSMaxMessages {
			w.end(errWSLimit)
			break
		}
		w.handle(msg)
	}
	w.wg.Wait()
	return w.label()
}

// wsAuthError is a failed auth frame.
type wsAuthError struct{ err error }

func (e *wsAuthError) Error() string { return e.err.Error() }

// end ends the connection for cause, once: its streams stop, and the
// client hears a close code that says why (none when it does not read or
// is gone, or closed first).
func (w *wsConn) end(cause error) {
	w.endOnce.Do(func() {
		w.cause = cause
		w.cancel(cause)
		_, code, reason := w.closing(cause)
		if code == 0 {
			_ = w.conn.CloseNow()
			return
		}
		// The handshake waits for the client's close frame, which the
		// reading goroutine takes; the library bounds it (5 s each way).
		w.wg.Go(func() { _ = w.conn.Close(code, reason) })
	})
}

// label names why the connection ended, for
// sluice_producer_ws_closed_total.
func (w *wsConn) label() string {
	l, _, _ := w.closing(w.cause)
	return l
}

// closing returns, for a connection ended by cause, its label, and the
// close code and reason the client is told; code 0: none, the client does
// not read, is gone, or closed first (the library answered its close frame
// already).
func (w *wsConn) closing(cause error) (label string, code websocket.StatusCode, reason string) {
	var ae *wsAuthError
	switch {
	case errors.As(cause, &ae):
		return "auth", WSCloseUnauthorized, clip(ae.Error(), 120)
	case errors.Is(cause, errWSIdle):
		return "idle", websocket.StatusNormalClosure, "idle"
	case errors.Is(cause, errWSLimit):
		return "limit", websocket.StatusPolicyViolation, fmt.Sprintf("more than %d messages on one connection; reconnect", w.s.cfg.WSMaxMessages)
	case errors.Is(cause, errWSExpired):
		return "expired", WSCloseUnauthorized, "token expired"
	case errors.Is(cause, errWSShutdown):
		return "shutdown", websocket.StatusGoingAway, "server shutting down; reconnect"
	case errors.Is(cause, errWSSlow):
		return "slow", 0, ""
	case errors.Is(cause, errWSDead):
		return "dead", 0, ""
	case websocket.CloseStatus(cause) == websocket.StatusMessageTooBig:
		return "too_big", 0, ""
	}
	return "client", 0, ""
}

// authFrame reads the first frame, which must be an auth frame with a
// valid token, within the read timeout.
func (w *wsConn) authFrame() error {
	late := fmt.Errorf("no auth frame within %v", w.s.cfg.ReadTimeout)
	// Not a read context: its end would close the connection without a
	// close code.
	t := time.AfterFunc(w.s.cfg.ReadTimeout, func() { w.end(&wsAuthError{late}) })
	_, msg, err := w.conn.Read(context.Background())
	if !t.Stop() {
		return late
	}
	if err != nil {
		return err
	}
	var f wsFrame
	if err := json.Unmarshal(msg, &f); err != nil || f.Type != "auth" || f.Token == "" {
		return errors.New(`the first frame must be {"type":"auth","token":"<JWT>"}`)
	}
	id, err := w.s.auth.Verify(f.Token)
	if err != nil {
		return err
	}
	w.id = id
	return nil
}

// handle acts on one client frame. A bad frame is answered with an error
// frame; the connection stays.
func (w *wsConn) handle(msg []byte) {
	var f wsFrame
	if err := decodeStrict(msg, &f); err != nil {
		w.sendErr("", "", err)
		return
	}
	switch f.Type {
	case "ask":
		if f.Mode != "" || f.WaitMS != nil || f.CallbackURL != "" {
			w.sendErr(f.Ref, "", badRequest("an ask takes no mode, wait_ms or callback_url: its answer streams on this connection"))
			return
		}
		w.spawn(f.Ref, "", func() { w.ask(f) })
	case "resume":
		if !envelope.ValidDialogID(f.DialogID) || !envelope.ValidID(f.RequestID) {
			w.sendErr(f.Ref, f.RequestID, badRequest("a resume needs the dialog_id and request_id of the ask"))
			return
		}
		d := store.Dialog{Tenant: w.id.Tenant, User: w.id.User, ID: f.DialogID}
		w.spawn(f.Ref, f.RequestID, func() { w.follow(d, f.RequestID, f.LastEventID) })
	case "auth":
		w.sendErr(f.Ref, "", badRequest("already authenticated"))
	default:
		w.sendErr(f.Ref, "", badRequest(fmt.Sprintf("unknown frame type %q: want ask or resume", f.Type)))
	}
}

// spawn runs fn, an answer's stream, unless wsMaxStreams are under way.
func (w *wsConn) spawn(ref, requestID string, fn func()) {
	w.mu.Lock()
	if w.streams >= wsMaxStreams {
		w.mu.Unlock()
		w.sendErr(ref, requestID, &apiError{status: http.StatusTooManyRequests, slug: "rate-limited", retryAfter: 1,
			detail: fmt.Sprintf("%d answers are under way on this connection; wait for one to finish", wsMaxStreams)})
		return
	}
	w.streams++
	w.mu.Unlock()
	w.wg.Go(func() {
		defer func() {
			w.mu.Lock()
			w.streams--
			w.mu.Unlock()
			w.touch()
		}()
		fn()
	})
}

// busy reports whether an answer is under way.
func (w *wsConn) busy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.streams > 0
}

// ask puts a question on Kafka through the same door, validation and
// admission as POST /v1/chat, and streams its answer.
func (w *wsConn) ask(f wsFrame) {
	s := w.s
	body := f.ChatRequest
	err := s.gate(w.ctx, w.id)
	var wait time.Duration
	if err == nil {
		body.Mode = ModeAsync // never waited for by a handler: it streams
		wait, err = s.checkChat(w.ctx, &body, w.id)
	}
	if err == nil {
		err = s.admitRequest(body.Mode, wait, body.Lane, s.ttl(body))
	}
	if body.DialogID == "" {
		body.DialogID = envelope.NewDialogID()
	}
	var req envelope.Request
	if err == nil {
		req, err = s.enqueue(w.ctx, w.traceparent, w.id, body)
	}
	if err != nil {
		w.sendErr(f.Ref, "", err)
		return
	}
	if !w.send(wsOut{Type: "accepted", Ref: f.Ref, RequestID: req.RequestID, DialogID: req.DialogID}) {
		return
	}
	w.follow(store.DialogOf(&req), req.RequestID, "")
}

// follow sends the events of requestID's answer after lastID until its
// done or error event, or the connection's end.
func (w *wsConn) follow(d store.Dialog, requestID, lastID string) {
	err := w.s.events(w.ctx, d, requestID, lastID, func(e wsOut) bool {
		e.RequestID = requestID
		return w.send(e)
	})
	if err != nil && w.ctx.Err() == nil {
		w.sendErr("", requestID, err)
	}
}

// send queues frame for the client; it waits while the queue is full and
// reports false when the connection ended first.
func (w *wsConn) send(frame wsOut) bool {
	b, err := json.Marshal(frame)
	if err != nil {
		w.s.log.Error("encode websocket frame", "err", err)
		return false
	}
	select {
	case w.out <- b:
		return true
	case <-w.ctx.Done():
		return false
	}
}

// sendErr sends err as an error frame: the problem a POST /v1/chat would
// answer, with retry_after for 429 and 503.
func (w *wsConn) sendErr(ref, requestID string, err error) {
	p, retry := problemOf(err)
	if p.Status == http.StatusInternalServerError {
		w.s.log.Error("websocket frame failed", "request_id", requestID, "err", err)
	}
	w.send(wsOut{Type: "error", Ref: ref, RequestID: requestID, Status: p.Status, Title: p.Title, Problem: p.Type, Detail: p.Detail, RetryAfter: retry})
}

// touch restarts the idle timer.
func (w *wsConn) touch() {
	select {
	case w.activity <- struct{}{}:
	default:
	}
}

// write writes the queued frames, each within the write timeout, pings
// the client every ping interval, and ends the connection when the client
// reads too slowly, answers no ping, stays idle, or its token expires.
func (w *wsConn) write() {
	cfg := w.s.cfg
	ping := time.NewTicker(cfg.WSPingInterval)
	defer ping.Stop()
	idle := time.NewTimer(cfg.WSIdleTimeout)
	defer idle.Stop()
	var expiry <-chan time.Time
	if !w.id.Expires.IsZero() {
		t := time.NewTimer(time.Until(w.id.Expires))
		defer t.Stop()
		expiry = t.C
	}
	pong := make(chan error, 1)
	pinging := false
	for {
		select {
		case b := <-w.out:
			ctx, cancel := context.WithTimeout(w.ctx, cfg.WSWriteTimeout)
			err := w.conn.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				if ctx.Err() != nil && w.ctx.Err() == nil {
					err = errWSSlow
				}
				w.end(err)
				return
			}
			w.touch()
		case <-ping.C:
			if pinging {
				continue
			}
			pinging = true
			// Ping waits for the pong, which the reading goroutine takes.
			go func() {
				ctx, cancel := context.WithTimeout(w.ctx, cfg.WSPingInterval)
				defer cancel()
				pong <- w.conn.Ping(ctx)
			}()
		case err := <-pong:
			pinging = false
			if err != nil {
				w.end(errWSDead)
				return
			}
		case <-w.activity:
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(cfg.WSIdleTimeout)
		case <-idle.C:
			if w.busy() {
				idle.Reset(cfg.WSIdleTimeout)
				continue
			}
			w.end(errWSIdle)
			return
		case <-expiry:
			w.end(errWSExpired)
			return
		case <-w.ctx.Done():
			if pinging {
				<-pong
			}
			return
		}
	}
}

// wsConns are the open connections of a server, ended at its shutdown.
type wsConns struct {
	mu    sync.Mutex
	conns map[*wsConn]struct{}
	wg    sync.WaitGroup
}

func newWSConns() *wsConns { return &wsConns{conns: map[*wsConn]struct{}{}} }

func (c *wsConns) add(w *wsConn) {
	c.mu.Lock()
	c.conns[w] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
}

func (c *wsConns) remove(w *wsConn) {
	c.mu.Lock()
	delete(c.conns, w)
	c.wg.Done()
	c.mu.Unlock()
}

// open returns how many connections are open.
func (c *wsConns) open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// closeAll ends every connection with 1001 (going away): its client
// reconnects to another replica and resumes its answer from the store.
// It returns once they are gone or ctx ends.
func (c *wsConns) closeAll(ctx context.Context) {
	c.mu.Lock()
	for w := range c.conns {
		w.end(errWSShutdown)
	}
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// clip returns s cut to at most n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a character's start: a close reason must be valid UTF-8.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// eventsFunc calls emit with the frames of requestID's answer after
// lastID until the answer is done (Server.follow).
type eventsFunc func(ctx context.Context, d store.Dialog, requestID, lastID string, emit func(wsOut) bool) error

// follow calls emit with the events of requestID's answer after lastID
// ("" for all), read from its answer stream (AnswerStream), until its done
// or error event, ctx's end, or emit's false. The stream is read only as
// fast as emit takes the events; failed reads are read again
// (Server.nextEvents). It returns 404 for a request unknown or not d's,
// 503 when Redis fails and the stream gives up (the client resumes with
// its last id).
func (s *Server) follow(ctx context.Context, d store.Dialog, requestID, lastID string, emit func(wsOut) bool) error {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	_, err := s.store.Result(sctx, d, requestID)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("no such request")
	case err != nil:
		return unavailable("answer stream unavailable, resume shortly", 1)
	}
	var until time.Time
	if created, ok := createdAt(requestID); ok {
		until = created.Add(max(s.cfg.RequestTTL, s.cfg.BulkRequestTTL) + time.Minute)
	}
	a := NewAnswerStream(s.store, d, requestID, lastID, AnswerStreamConfig{Until: until})
	for {
		// A failed read is read again after a pause, as for SSE; the 503
		// comes only when the stream gives up.
		evs, err := s.nextEvents(ctx, a)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return unavailable("answer stream unavailable, resume shortly", 1)
		}
		for _, e := range evs {
			if !emit(frameOf(e)) {
				return nil
			}
		}
	}
}

// frameOf returns the frame of a streamed answer's event.
func frameOf(e Event) wsOut {
	f := wsOut{Type: e.Kind, ID: e.ID}
	switch e.Kind {
	case EventDelta:
		f.Seq, f.Text = &e.Seq, e.Text
	case EventDone:
		f.Done = e.Done
	case EventError:
		f.Status, f.Title, f.Problem, f.Detail = http.StatusBadGateway, http.StatusText(http.StatusBadGateway), "/problems/answer-failed", e.Text
	}
	return f
}
