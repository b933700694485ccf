package producer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/auth"
	"sluice/shared/envelope"
	"sluice/shared/pii"
	"sluice/shared/store"
)

// Modes of POST /v1/chat.
const (
	ModeWait     = "wait"
	ModeAsync    = "async"
	ModeCallback = "callback"
)

// modeStream counts, in sluice_producer_accepted_total, the questions
// whose answers stream (Server-Sent Events, WebSocket).
const modeStream = "stream"

// ChatRequest is the body of POST /v1/chat.
type ChatRequest struct {
	Text        string `json:"text"`
	DialogID    string `json:"dialog_id,omitempty"`
	Mode        string `json:"mode,omitempty"`
	WaitMS      *int64 `json:"wait_ms,omitempty"`
	CallbackURL string `json:"callback_url,omitempty"`
	// Lane is envelope.LaneInteractive (the default) or envelope.LaneBulk.
	Lane string `json:"lane,omitempty"`
	// DeadlineMS asks for a deadline this many milliseconds after
	// acceptance; it is clamped to the lane's request TTL, the default.
	DeadlineMS *int64 `json:"deadline_ms,omitempty"`
}

// DoneBody is the 200 answer of POST /v1/chat and of a poll, and the body
// of a callback.
type DoneBody = envelope.Done

// QueuedBody is the 202 answer: the request is accepted, poll for it.
type QueuedBody struct {
	RequestID string `json:"request_id"`
	DialogID  string `json:"dialog_id"`
	Status    string `json:"status"`
	PollURL   string `json:"poll_url"`
}

// DialogBody is the answer of GET /v1/dialogs/{dialog_id}.
type DialogBody struct {
	DialogID string          `json:"dialog_id"`
	Turns    []envelope.Turn `json:"turns"`
}

const identityKey = "sluice.identity"

// authenticate checks the bearer token and puts the identity in the context.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			return unauthorized("missing bearer token")
		}
		id, err := s.auth.Verify(strings.TrimSpace(token))
		if err != nil {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="sluice", error="invalid_token"`)
			return unauthorized(err.Error())
		}
		c.Set(identityKey, id)
		return next(c)
	}
}

func identity(c echo.Context) auth.Identity { return c.Get(identityKey).(auth.Identity) }

// decodeChat reads and validates a POST /v1/chat body strictly.
func (s *Server) decodeChat(c echo.Context) (ChatRequest, time.Duration, error) {
	var req ChatRequest
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		var he *echo.HTTPError
		var ne net.Error
		switch {
		case errors.As(err, &mbe) || (errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge):
			return req, 0, echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.cfg.BodyLimit))
		case errors.As(err, &ne) && ne.Timeout():
			c.Response().Header().Set(echo.HeaderConnection, "close")
			return req, 0, &apiError{status: http.StatusRequestTimeout, slug: "request-timeout",
				detail: fmt.Sprintf("body not received within %v", s.cfg.ReadTimeout)}
		}
		return req, 0, badRequest("cannot read body")
	}
	// The body is in: the wait that follows must not be cut by its
	// deadline. (On an error above the deadline stays, and bounds the
	// server's discarding of what is left of the body.)
	_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Time{})
	// The body is JSON whatever Content-Type says: `curl -d` labels JSON as
	// a form, and refusing it would only fail clients that work elsewhere.
	// Without a bearer token no browser form reaches here, so this opens no
	// cross-site request path.
	if err := decodeStrict(body, &req); err != nil {
		return req, 0, err
	}
	wait, err := s.checkChat(c.Request().Context(), &req, identity(c))
	return req, wait, err
}

// decodeStrict decodes body, one JSON object of UTF-8, into v: unknown
// fields and trailing data are errors (400).
func decodeStrict(body []byte, v any) error {
	if !utf8.Valid(body) {
		return badRequest("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(jsonProblem(err))
	}
	// Only white space may follow. (dec.More would let a stray "}" or "]"
	// through: it reports the end of an enclosing object or array.)
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("body must hold exactly one JSON object")
	}
	return nil
}

// checkChat validates the question req of id and fills in its defaults
// (mode, lane). It returns the wait, or a 400 or 403 naming what is wrong.
func (s *Server) checkChat(ctx context.Context, req *ChatRequest, id auth.Identity) (time.Duration, error) {
	n := utf8.RuneCountInString(req.Text)
	switch {
	case strings.TrimSpace(req.Text) == "":
		return 0, badRequest("text must not be empty")
	case n > s.cfg.MaxTextChars:
		return 0, badRequest(fmt.Sprintf("text has %d characters, at most %d are allowed", n, s.cfg.MaxTextChars))
	case req.DialogID != "" && !envelope.ValidDialogID(req.DialogID):
		return 0, badRequest("dialog_id must be 32 lowercase hex characters")
	}
	switch req.Mode {
	case "":
		req.Mode = ModeWait
	case ModeWait, ModeAsync:
	case ModeCallback:
		if !s.cfg.Callbacks.Enabled() {
			return 0, badRequest("mode callback is not enabled on this server (no callback hosts allowed)")
		}
		if req.CallbackURL == "" {
			return 0, badRequest("mode callback needs callback_url")
		}
		if _, err := s.cfg.Callbacks.Check(ctx, req.CallbackURL); err != nil {
			return 0, badRequest(err.Error())
		}
	default:
		return 0, badRequest(fmt.Sprintf("mode must be wait, async or callback, got %q", req.Mode))
	}
	if req.CallbackURL != "" && req.Mode != ModeCallback {
		return 0, badRequest("callback_url is only allowed with mode callback")
	}
	lane, err := laneOf(req.Lane, id)
	if err != nil {
		return 0, err
	}
	req.Lane = lane
	if req.DeadlineMS != nil && *req.DeadlineMS <= 0 {
		return 0, badRequest("deadline_ms must be positive")
	}
	return s.waitParam(req.WaitMS)
}

// ttl returns how long after acceptance body's question is still worth
// answering: its lane's request TTL, or the deadline_ms it asked for when
// shorter. A longer one is clamped, not refused: a bot that asks for an
// hour gets the longest the server keeps a result for a poll.
func (s *Server) ttl(body ChatRequest) time.Duration {
	ttl := s.cfg.RequestTTL
	if body.Lane == envelope.LaneBulk {
		ttl = s.cfg.BulkRequestTTL
	}
	// Compared in milliseconds: a huge deadline_ms would overflow a
	// Duration.
	if body.DeadlineMS != nil && *body.DeadlineMS < ttl.Milliseconds() {
		ttl = time.Duration(*body.DeadlineMS) * time.Millisecond
	}
	return ttl
}

// laneOf returns the lane of a question that asked for lane ("": none)
// with id's token: a token whose lane claim is bulk asks in the bulk lane
// only, so that a bot's credentials cannot jump the storefront's queue.
// It returns 400 for an unknown lane and 403 for the interactive lane
// asked with a bulk token.
func laneOf(lane string, id auth.Identity) (string, error) {
	switch lane {
	case "":
		if id.Lane == envelope.LaneBulk {
			return envelope.LaneBulk, nil
		}
		return envelope.LaneInteractive, nil
	case envelope.LaneBulk:
		return lane, nil
	case envelope.LaneInteractive:
		if id.Lane == envelope.LaneBulk {
			return "", forbidden("lane interactive is not allowed for this token: its claim lane is bulk")
		}
		return lane, nil
	}
	return "", badRequest(fmt.Sprintf("lane must be %s or %s, got %q", envelope.LaneInteractive, envelope.LaneBulk, lane))
}

func (s *Server) waitParam(ms *int64) (time.Duration, error) {
	if ms == nil {
		return s.cfg.WaitDefault, nil
	}
	if *ms < 0 {
		return 0, badRequest("wait_ms must not be negative")
	}
	// Compared in milliseconds: a huge wait_ms would overflow a Duration
	// into a negative or small wait that passes.
	if *ms <= s.cfg.WaitMax.Milliseconds() {
		return time.Duration(*ms) * time.Millisecond, nil
	}
	return 0, badRequest(fmt.Sprintf("wait_ms must be at most %d", s.cfg.WaitMax.Milliseconds()))
}

// jsonProblem turns a decoding error into a detail a client can act on.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return "body must be a JSON object"
	case errors.As(err, &te):
		return fmt.Sprintf("field %s must be %s", te.Field, te.Type.String())
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.EOF):
		return "body must be a JSON object"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed JSON: " + err.Error()
}

// postChat accepts a question: it is on Kafka before the client hears 200 or 202.
func (s *Server) postChat(c echo.Context) error {
	id := identity(c)
	body, wait, err := s.door(c, id)
	if err != nil {
		return err
	}
	newDialog := body.DialogID == ""
	if newDialog {
		body.DialogID = envelope.NewDialogID()
	}
	// A question holding personal data is one person's, not a frequent
	// one: it is never answered from, nor kept in, the hot-answer cache.
	// Nor is a bulk question: a bot's questions are about its own orders,
	// not the storefront's frequent ones, and a burst of them would evict
	// the shoppers' answers.
	bulk := body.Lane == envelope.LaneBulk
	stream := wantsStream(c)
	cacheable := s.hot != nil && (body.Mode == ModeWait || stream) && !bulk && pii.Mask(body.Text) == body.Text
	if done, ok := s.fromHot(c, id, body, newDialog, cacheable); ok {
		if stream {
			return s.streamHot(c, done, s.poll.url(id, done.DialogID, done.RequestID))
		}
		return c.JSON(http.StatusOK, done)
	}
	// A streamed answer is waited for up to its deadline, not wait_ms: it
	// is admitted as an async request is (as a WebSocket ask is).
	mode := body.Mode
	if stream {
		mode, wait = ModeAsync, 0
	}
	if err := s.admitRequest(mode, wait, body.Lane, s.ttl(body)); err != nil {
		return err
	}
	if stream {
		return s.postStream(c, id, body)
	}
	req, rec, err := s.newRequest(c.Request().Header.Get(envelope.HeaderTraceparent), id, body, false)
	if err != nil {
		return err
	}

	// A wait-mode request is woken by its reply on a partition this replica
	// reads. Any other request carries the queued marker from the door on:
	// its result is then announced through the store, to a poll on any
	// replica, or to this waiter when its partition moved away meanwhile
	// (see rescue).
	ctx := c.Request().Context()
	d := store.DialogOf(&req)
	var wake <-chan *envelope.Reply
	if body.Mode == ModeWait && wait > 0 {
		ch, done := s.waiters.add(req.RequestID, req.Reply.Partition, d, req.CreatedAt)
		defer done()
		wake = ch
	}
	if wake == nil || !s.router.owns(req.Reply.Partition) {
		s.markQueued(ctx, d, req.RequestID, req.CreatedAt)
	}
	confirmed, err := s.put(ctx, d, &req, rec, body.Mode, body.Lane)
	if err != nil {
		return err
	}
	if !confirmed {
		return s.queued(c, req.DialogID, req.RequestID)
	}

	if wake != nil {
		if res, ok := s.awaitAnswer(ctx, wake, wait, d, req.RequestID, req.CreatedAt, !bulk); ok {
			if cacheable && newDialog && res.Status == envelope.StatusDone &&
				(res.Source == envelope.SourceLLM || res.Source == envelope.SourceFAQ) {
				s.hot.put(context.WithoutCancel(ctx), id.Tenant, body.Text, hotEntry{Answer: res.Answer, Source: res.Source, Handoff: res.Handoff})
			}
			return c.JSON(http.StatusOK, doneBody(res, req.CreatedAt))
		}
	}
	return s.queued(c, req.DialogID, req.RequestID)
}

// postStream puts a streaming request (Accept: text/event-stream) on
// Kafka and answers it as Server-Sent Events. It carries the queued marker
// from the door on, so a resume on any replica tells it from an unknown
// one, and its answer comes through its answer stream, not the reply topic.
func (s *Server) postStream(c echo.Context, id auth.Identity, body ChatRequest) error {
	req, err := s.enqueue(c.Request().Context(), c.Request().Header.Get(envelope.HeaderTraceparent), id, body)
	if err != nil {
		return err
	}
	observe := func(*DoneBody) {
		s.m.answered.With("answered").Inc()
		if body.Lane != envelope.LaneBulk {
			s.admit.observe(s.now().Sub(req.CreatedAt))
		}
	}
	return s.streamAnswer(c, store.DialogOf(&req), req.RequestID, "", s.poll.url(id, req.DialogID, req.RequestID), streamUntil(req.Deadline), observe)
}

// put puts rec, the record of req asked in mode on lane, on Kafka and
// counts it. It reports false when Kafka did not confirm it within the
// produce timeout: it may still arrive, so it is accepted, with the queued
// marker, and its poll answers the answer or expired. It returns 503 when
// Kafka refused it.
func (s *Server) put(ctx context.Context, d store.Dialog, req *envelope.Request, rec *kgo.Record, mode, lane string) (bool, error) {
	switch err := s.produce(ctx, rec, s.lateProduce(d, req)); {
	case errors.Is(err, errUnconfirmed):
		// It may be on Kafka: a 503 would be a lie half the time.
		s.log.Warn("produce request unconfirmed, accepting it", "request_id", req.RequestID, "timeout", s.cfg.ProduceTimeout)
		s.m.accepted.With("unconfirmed").Inc()
		s.m.laneAccepted.With(lane).Inc()
		s.markQueued(ctx, d, req.RequestID, req.CreatedAt)
		return false, nil
	case err != nil:
		s.log.Warn("produce request", "request_id", req.RequestID, "err", err)
		s.m.rejected.With("kafka").Inc()
		return false, unavailable("the request queue is unavailable, retry shortly", 1)
	}
	s.m.accepted.With(mode).Inc()
	s.m.laneAccepted.With(lane).Inc()
	return true, nil
}

// enqueue puts id's question body, validated and admitted, on Kafka, for
// an answer that streams (Server-Sent Events, WebSocket) rather than wakes
// a handler from a reply partition; traceparent is the client's W3C trace
// context ("" for none). The queued marker goes on first, so that a resume
// on any replica tells the request from an unknown one and its result is
// announced through the store. It returns 503 when Kafka refused it.
func (s *Server) enqueue(ctx context.Context, traceparent string, id auth.Identity, body ChatRequest) (envelope.Request, error) {
	req, rec, err := s.newRequest(traceparent, id, body, true)
	if err != nil {
		return envelope.Request{}, err
	}
	d := store.DialogOf(&req)
	s.markQueued(ctx, d, req.RequestID, req.CreatedAt)
	if _, err := s.put(ctx, d, &req, rec, modeStream, body.Lane); err != nil {
		return envelope.Request{}, err
	}
	return req, nil
}

// lateProduce returns what to do with the final outcome of req's record
// when produce answered errUnconfirmed: on failure, the request is stored
// as expired, so that its poll ends instead of answering 202 until the
// result store forgets it.
func (s *Server) lateProduce(d store.Dialog, req *envelope.Request) func(error) {
	return func(err error) {
		if err == nil {
			return
		}
		s.log.Warn("unconfirmed request refused by Kafka after all; stored as expired", "request_id", req.RequestID, "err", err)
		ctx, cancel := context.WithTimeout(context.Background(), 5*s.cfg.StoreTimeout)
		defer cancel()
		reply := envelope.NewReply(req, envelope.StatusExpired, s.now().UTC())
		if _, _, err := s.store.Complete(ctx, d, reply, req.CreatedAt); err != nil {
			s.log.Error("store the expiry of an unconfirmed request", "request_id", req.RequestID, "err", err)
		}
	}
}

// door is a question's first check: it refuses the question while the
// server drains or when a rate limit of id is reached, and otherwise reads
// and validates its body. It returns the body and the wait.
func (s *Server) door(c echo.Context, id auth.Identity) (ChatRequest, time.Duration, error) {
	if err := s.gate(c.Request().Context(), id); err != nil {
		return ChatRequest{}, 0, err
	}
	return s.decodeChat(c)
}

// gate refuses a question of id while the server drains (503) or when a
// rate limit of id is reached (429), and counts the refusal.
func (s *Server) gate(ctx context.Context, id auth.Identity) error {
	if s.closing.Load() {
		s.m.rejected.With("draining").Inc()
		return unavailable("server is shutting down", 1)
	}
	lctx, lcancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	err := s.limit.allow(lctx, id)
	lcancel()
	if err != nil {
		return s.count(err)
	}
	return nil
}

// newRequest returns the request record of id's question body, created
// now, with its reply coming to a partition this replica reads, on the
// topic of its lane, with its deadline (ttl), asking the consumer for the
// answer's pieces when stream. It carries traceparent, the client's W3C
// trace context ("" for none).
func (s *Server) newRequest(traceparent string, id auth.Identity, body ChatRequest, stream bool) (envelope.Request, *kgo.Record, error) {
	rid, err := uuid.NewV7()
	if err != nil {
		return envelope.Request{}, nil, fmt.Errorf("request id: %w", err)
	}
	now := s.now().UTC()
	topic := s.bus.RequestsTopic
	if body.Lane == envelope.LaneBulk {
		topic = s.bus.BulkTopic
	}
	req := envelope.Request{
		V: envelope.Version, RequestID: rid.String(), Tenant: id.Tenant, User: id.User,
		DialogID: body.DialogID, Text: body.Text, CreatedAt: now, Deadline: now.Add(s.ttl(body)),
		Reply:  envelope.ReplyTo{Topic: s.bus.RepliesTopic, Partition: s.router.partition(), CallbackURL: body.CallbackURL},
		Stream: stream,
	}
	value, err := json.Marshal(&req)
	if err != nil {
		return envelope.Request{}, nil, fmt.Errorf("encode request: %w", err)
	}
	rec := &kgo.Record{Topic: topic, Key: []byte(req.Key()), Value: value}
	if traceparent != "" {
		rec.Headers = []kgo.RecordHeader{{Key: envelope.HeaderTraceparent, Value: []byte(traceparent)}}
	}
	return req, rec, nil
}

// awaitAnswer waits up to wait for the answer of the wait-mode request
// requestID, created at created, and, when observe, feeds how long it took
// to admission. (Answers of the bulk lane say nothing of the interactive
// queue, which admission estimates.) It reports false when the wait ran
// out.
func (s *Server) awaitAnswer(ctx context.Context, wake <-chan *envelope.Reply, wait time.Duration, d store.Dialog, requestID string, created time.Time, observe bool) (envelope.Reply, bool) {
	// When the wait runs out, the marker goes on before the client learns
	// the poll_url (a request answered within its wait is never polled, so
	// the hot path saves a round trip), and the same script returns the
	// result if it was stored meanwhile.
	last := func() (envelope.Reply, bool) { return s.markQueued(ctx, d, requestID, created) }
	res, ok := s.await(ctx, wake, wait, last)
	if !ok {
		s.m.answered.With("timed_out").Inc()
		// How long it will take is unknown: count it as the longest a
		// request may take, so that answers look slow for a while.
		if observe {
			s.admit.observe(s.cfg.RequestTTL)
		}
		return envelope.Reply{}, false
	}
	s.m.answered.With("answered").Inc()
	if observe {
		s.admit.observe(s.now().Sub(created))
	}
	return res, true
}

// markQueued records the queued marker that lets any replica tell "queued"
// from "unknown" on a poll and has the request's result announced. It never
// overwrites a result; it returns the result when it is already final. A
// failure costs only this: a poll answers 404 until the result is stored;
// the request goes on.
func (s *Server) markQueued(ctx context.Context, d store.Dialog, requestID string, created time.Time) (envelope.Reply, bool) {
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StoreTimeout)
	defer cancel()
	res, err := s.store.MarkQueued(mctx, d, requestID, created)
	if err != nil {
		s.m.storeErrors.WithLabelValues("mark_queued").Inc()
		s.log.Warn("mark queued", "request_id", requestID, "err", err)
		return envelope.Reply{}, false
	}
	return res.Reply, res.Final()
}

// rescue has the waiters whose replies come on parts, partitions this
// replica no longer reads, woken through the store instead: each request
// gets the queued marker, so its result will be announced, and a request
// answered meanwhile is woken with its stored result at once.
// Up to 64 requests are marked at once (the store pipelines them).
func (s *Server) rescue(ctx context.Context, parts []int32) {
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, w := range s.waiters.on(parts) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if r, ok := s.markQueued(ctx, w.dialog, w.requestID, w.created); ok {
				s.waiters.wake(w.requestID, &r)
			}
		})
	}
	wg.Wait()
}

// fromHot answers a wait-mode first turn from the hot-answer cache: the
// answer is stored as the dialog's first two turns and as the request's
// result, so the dialog goes on with its context and a poll finds it.
func (s *Server) fromHot(c echo.Context, id auth.Identity, body ChatRequest, newDialog, cacheable bool) (DoneBody, bool) {
	if !cacheable {
		return DoneBody{}, false
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.StoreTimeout)
	defer cancel()
	e, ok := s.hot.get(ctx, id.Tenant, body.Text, newDialog)
	if !ok {
		return DoneBody{}, false
	}
	d := store.Dialog{Tenant: id.Tenant, User: id.User, ID: body.DialogID}
	if !newDialog {
		if has, err := s.store.HasHistory(ctx, d); err != nil || has {
			return DoneBody{}, false
		}
	}
	rid, err := uuid.NewV7()
	if err != nil {
		return DoneBody{}, false
	}
	now := s.now().UTC()
	req := envelope.Request{V: envelope.Version, RequestID: rid.String(), Tenant: id.Tenant, User: id.User, DialogID: body.DialogID, CreatedAt: now}
	reply := envelope.NewReply(&req, envelope.StatusDone, now)
	reply.Answer, reply.Source, reply.Handoff = e.Answer, envelope.SourceCache, e.Handoff
	if _, _, err := s.store.Complete(ctx, d, reply, now,
		envelope.Turn{Role: envelope.RoleUser, Content: body.Text, RequestID: req.RequestID, At: now},
		envelope.Turn{Role: envelope.RoleAssistant, Content: e.Answer, RequestID: req.RequestID, At: now},
	); err != nil {
		s.m.storeErrors.WithLabelValues("hot_answer").Inc()
		return DoneBody{}, false // the pipeline answers instead
	}
	s.m.accepted.With("cache").Inc()
	return doneBody(reply, now), true
}

// count counts a refusal by its reason.
func (s *Server) count(err error) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.reason != "" {
		s.m.rejected.With(ae.reason).Inc()
	}
	return err
}

// errUnconfirmed reports that Kafka neither acknowledged nor refused a
// request within the produce timeout: it may still arrive.
var errUnconfirmed = errors.New("not acknowledged within the produce timeout")

// produce puts rec on Kafka and waits for the acknowledgement, at most the
// produce timeout. The record is produced on a context of its own, so a
// client that hangs up does not cancel it half-sent. When the timeout
// passes, that context is cancelled: a record still buffered fails at once
// and is known not to be on Kafka (its error is returned); one already sent
// cannot be failed without risking a duplicate (the idempotent producer
// keeps retrying it) and may still arrive, so produce returns
// errUnconfirmed and calls late with its final outcome when there is one.
func (s *Server) produce(ctx context.Context, rec *kgo.Record, late func(error)) error {
	done := make(chan error, 1)
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cl.Produce(pctx, rec, func(_ *kgo.Record, err error) { done <- err })
	t := time.NewTimer(s.cfg.ProduceTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		cancel()
		return err
	case <-t.C:
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			return nil
		}
		return fmt.Errorf("no acknowledgement within %v: %w", s.cfg.ProduceTimeout, err)
	case <-time.After(unconfirmedGrace):
	}
	go func() { late(<-done) }()
	return errUnconfirmed
}

// unconfirmedGrace is how long produce waits, after cancelling a record it
// waited the produce timeout for, to learn whether it was still buffered.
const unconfirmedGrace = 50 * time.Millisecond

// admissionHeadroom is the share of its wait, in percent, that a wait-mode
// request's estimated queue wait may take. The estimate is an average:
// under a flood of retries the queue settles where the estimate meets the
// bound. With a 2 s LLM and 400 users retrying at once, 585 of 1,524
// admitted requests missed their wait at 100 %, 163 of 1,227 at 80 %, and
// more were answered in time (docs/operations.md).
const admissionHeadroom = 80

// admitRequest refuses, at once, a request the queue cannot serve in time:
// a waiting one whose wait the estimated queue wait exceeds (beyond the
// headroom, unless this replica's answers are fast), any one whose
// deadline, ttl from now, it exceeds, and async or callback ones while the
// backlog is over its bound.
//
// A request of the bulk lane is refused only when its own deadline cannot
// be met, whatever its mode: when the bulk queue's wait, the bulk topic's
// backlog over the rate the consumers drain it at (measured as the
// interactive lane's is, from its own commits: the budget the interactive
// lane leaves), exceeds ttl. The interactive queue's estimate and backlog
// bound do not apply: bulk requests do not wait in that queue.
func (s *Server) admitRequest(mode string, wait time.Duration, lane string, ttl time.Duration) error {
	retry := func(over time.Duration) int { return int(min(max(math.Ceil(over.Seconds()), 1), 60)) }
	if lane == envelope.LaneBulk {
		if est := s.bulkAdmit.estimate(); est > ttl {
			s.m.rejected.With("queue_wait").Inc()
			return unavailable(fmt.Sprintf("overloaded: the bulk queue's wait (about %s: %d bulk requests queued) exceeds the request's deadline", est.Round(time.Second), s.bulkAdmit.backlog()), retry(est-ttl))
		}
		s.bulkAdmit.admitted()
		return nil
	}
	est := s.admit.estimate()
	switch {
	case est > ttl:
		s.m.rejected.With("queue_wait").Inc()
		return unavailable(fmt.Sprintf("overloaded: the queue wait (about %s) exceeds the request's deadline", est.Round(time.Second)), retry(est-ttl))
	case mode == ModeWait && wait > 0 && est > wait*admissionHeadroom/100 && !s.admit.answersFast(wait) && !s.admit.probe():
		s.m.rejected.With("queue_wait").Inc()
		return unavailable(fmt.Sprintf("overloaded: the queue wait (about %s) exceeds wait_ms; retry later or use mode async", est.Round(100*time.Millisecond)), retry(est-wait))
	case mode != ModeWait && s.admit.backlog() > s.cfg.MaxLag:
		s.m.rejected.With("backlog").Inc()
		return unavailable(fmt.Sprintf("overloaded: %d requests queued, the bound is %d", s.admit.backlog(), s.cfg.MaxLag), retry(est/4))
	}
	s.admit.admitted()
	return nil
}

// await waits up to wait for the request's final result: from the reply
// topic or the store's announcement. last reads the store: when a wake
// carries no reply and when the wait runs out. It reports false when the
// wait ends first.
func (s *Server) await(ctx context.Context, wake <-chan *envelope.Reply, wait time.Duration, last func() (envelope.Reply, bool)) (envelope.Reply, bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case r := <-wake:
			if r != nil {
				return *r, true
			}
			if r, ok := last(); ok {
				return r, true
			}
		case <-t.C:
			// A last look: the result may have been stored while no wake
			// could reach us.
			return last()
		case <-ctx.Done():
			return envelope.Reply{}, false
		}
	}
}

// finalResult reads the request's result from the store, bounded by the
// store timeout, and reports whether it is final.
func (s *Server) finalResult(ctx context.Context, d store.Dialog, requestID string) (envelope.Reply, bool) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.StoreTimeout)
	defer cancel()
	res, err := s.store.Result(lctx, d, requestID)
	if err != nil || !res.Final() {
		return envelope.Reply{}, false
	}
	return res.Reply, true
}

func (s *Server) queued(c echo.Context, dialogID, requestID string) error {
	u := s.poll.url(identity(c), dialogID, requestID)
	c.Response().Header().Set(echo.HeaderLocation, u)
	return c.JSON(http.StatusAccepted, QueuedBody{RequestID: requestID, DialogID: dialogID, Status: envelope.StatusQueued, PollURL: u})
}

func doneBody(r envelope.Reply, created time.Time) DoneBody { return envelope.DoneOf(r, created) }

// mayBeUnderWay reports whether a request accepted with id requestID may
// still be answered: its deadline (with a minute for clocks) has not passed.
// The poll URL does not say the request's lane: the longer deadline, the
// bulk lane's, counts.
func (s *Server) mayBeUnderWay(requestID string) bool {
	created, ok := createdAt(requestID)
	return ok && s.now().Before(created.Add(max(s.cfg.RequestTTL, s.cfg.BulkRequestTTL)+time.Minute))
}

// pollChat answers GET {poll_url}?wait_ms=N: 200 when final, 202 when still
// queued at the end of the wait, 404 when unknown or not the caller's.
func (s *Server) pollChat(c echo.Context) error {
	id := identity(c)
	dialogID := c.Param("dialog_id")
	requestID, accepted := s.poll.split(id, dialogID, c.Param("request_id"))
	if !envelope.ValidDialogID(dialogID) || !envelope.ValidID(requestID) {
		return notFound("no such request")
	}
	var waitMS *int64
	if q := c.QueryParam("wait_ms"); q != "" {
		n, err := strconv.ParseInt(q, 10, 64)
		if err != nil {
			return badRequest("wait_ms must be an integer")
		}
		waitMS = &n
	}
	wait, err := s.waitParam(waitMS)
	if err != nil {
		return err
	}
	d := store.Dialog{Tenant: id.Tenant, User: id.User, ID: dialogID}
	ctx := c.Request().Context()
	wake, done := s.waiters.add(requestID, viaStore, d, time.Time{}) // before the look, so no wake is missed
	defer done()
	sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	res, err := s.store.Result(sctx, d, requestID)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound) && accepted && s.mayBeUnderWay(requestID):
		// Accepted here (the URL proves it) and not answered yet, but the
		// queued marker is gone (Redis lost it): it is still on its way.
		if !wantsStream(c) {
			return s.queued(c, dialogID, requestID)
		}
	case errors.Is(err, store.ErrNotFound):
		return notFound("no such request")
	case err != nil:
		s.m.storeErrors.WithLabelValues("poll").Inc()
		return unavailable("result store unavailable, retry shortly", 1)
	case res.Final() && !wantsStream(c):
		return c.JSON(http.StatusOK, doneBody(res.Reply, res.CreatedAt))
	}
	if wantsStream(c) {
		// A resume, on any replica, after the last event the client got.
		var until time.Time
		if created, ok := createdAt(requestID); ok {
			until = streamUntil(created.Add(max(s.cfg.RequestTTL, s.cfg.BulkRequestTTL)))
		}
		return s.streamAnswer(c, d, requestID, c.Request().Header.Get("Last-Event-ID"), s.poll.url(id, dialogID, requestID), until, nil)
	}
	if wait > 0 {
		last := func() (envelope.Reply, bool) { return s.finalResult(ctx, d, requestID) }
		if r, ok := s.await(ctx, wake, wait, last); ok && r.Tenant == id.Tenant && r.User == id.User {
			return c.JSON(http.StatusOK, doneBody(r, res.CreatedAt))
		}
	}
	return s.queued(c, dialogID, requestID)
}

func (s *Server) dialogParam(c echo.Context) (store.Dialog, error) {
	id := identity(c)
	dialogID := c.Param("dialog_id")
	if !envelope.ValidDialogID(dialogID) {
		return store.Dialog{}, badRequest("dialog_id must be 32 lowercase hex characters")
	}
	return store.Dialog{Tenant: id.Tenant, User: id.User, ID: dialogID}, nil
}

// getDialog returns the caller's history of a dialog, oldest first.
func (s *Server) getDialog(c echo.Context) error {
	d, err := s.dialogParam(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.StoreTimeout)
	defer cancel()
	turns, err := s.store.History(ctx, d)
	if err != nil {
		s.m.storeErrors.WithLabelValues("history").Inc()
		return unavailable("history store unavailable, retry shortly", 1)
	}
	return c.JSON(http.StatusOK, DialogBody{DialogID: d.ID, Turns: turns})
}

// deleteDialog forgets the caller's history of a dialog.
func (s *Server) deleteDialog(c echo.Context) error {
	d, err := s.dialogParam(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.StoreTimeout)
	defer cancel()
	if err := s.store.DeleteHistory(ctx, d); err != nil {
		s.m.storeErrors.WithLabelValues("delete").Inc()
		return unavailable("history store unavailable, retry shortly", 1)
	}
	return c.NoContent(http.StatusNoContent)
}
