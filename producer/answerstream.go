package producer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"sluice/shared/backoff"
	"sluice/shared/store"
)

// Event kinds of a streamed answer: the SSE event names and the WebSocket
// frame types.
const (
	EventDelta = store.StreamDelta
	EventReset = store.StreamReset
	EventDone  = store.StreamDone
	EventError = store.StreamError
)

// Event ids that are not entries of the Redis stream: the events an
// AnswerStream makes up when it delivers a whole answer (from the result
// store, or after a gap in the stream). Resuming after idWhole delivers the
// done event; after idDone or idError, nothing; after idResync, the whole
// answer again.
const (
	idResync = "resync"
	idWhole  = "whole"
	idDone   = "done"
	idError  = "error"
)

// Event is one event of a streamed answer.
type Event struct {
	// ID is where a client resumes after this event (SSE id, Last-Event-ID).
	ID        string
	Kind      string // EventDelta, EventReset, EventDone or EventError
	RequestID string
	Seq       int       // delta: the piece's number, from 0 after each reset
	Text      string    // delta: the piece; error: the message
	Done      *DoneBody // done: the body a poll answers (status done or expired)
}

// DeltaData is the data of a delta event.
type DeltaData struct {
	RequestID string `json:"request_id"`
	Seq       int    `json:"seq"`
	Text      string `json:"text"`
}

// AnswerStreamConfig bounds an AnswerStream.
type AnswerStreamConfig struct {
	// Block is how long one Next waits for an entry before it returns
	// empty (the caller sends a heartbeat) and looks at the result store.
	// Default 2s.
	Block time.Duration
	// Count is the most entries one Next reads. Default 64.
	Count int64
	// Until is when the stream gives up on an answer that is neither
	// streamed nor stored: it ends with an error event. Zero: never (the
	// caller's context bounds it).
	Until time.Time
}

// AnswerStream yields the events of one request's answer, for SSE and
// WebSocket alike, on any replica: from the request's Redis stream (the
// consumer's pieces), from the entry after lastEventID on. It always ends
// with a done event (status done or expired), or an error event when the
// answer does not come by Until, and it keeps the contract that after the
// last reset the deltas concatenate to the done body's answer:
//
//   - a request answered without pieces (hot cache, a consumer that does
//     not stream, a stream expired before it was read) is delivered as one
//     delta holding the whole answer, from the result store when the
//     stream has nothing, preceded by a reset when the client may hold
//     pieces;
//   - a gap in the stream (its cap trimmed entries the reader had not
//     read, or the entry the client resumes after is gone) is not passed
//     on: the reader skips to the final entry and delivers the whole
//     answer;
//   - pieces that do not add up to the done body's answer are followed by
//     a reset and the whole answer.
//
// A resume replays the stream up to lastEventID without sending it, to
// learn what the client holds.
//
// Next reads at most Count entries per call, and its caller calls it
// only when it has written the previous events: a slow client slows the
// reads from Redis, nothing piles up in the producer. Each Next that waits
// holds a Redis connection up to Block (see store.ReadStream for the
// bound). An AnswerStream is used by one goroutine.
type AnswerStream struct {
	st        *store.Redis
	d         store.Dialog
	requestID string
	cfg       AnswerStreamConfig

	cursor string // the last stream entry read ("0": none)
	ended  bool
	// resumeAt is the entry the client resumes after, while the stream
	// is replayed up to it ("": not replaying).
	resumeAt string
	// expect is the seq the next delta must carry.
	expect int
	// skipping: a gap was found; deltas are dropped until the final entry.
	skipping bool
	// held: the client may hold pieces that a whole answer must reset.
	held bool
	// holdsWhole: the client holds the whole answer and misses its done.
	holdsWhole bool
	// pieces since the last reset, to check them against the answer.
	pieces strings.Builder
}

// NewAnswerStream returns the stream of the request requestID of dialog d,
// resuming after lastEventID ("" or "0": from the start; an id this type
// did not make counts as a gap). The caller has checked that the request
// may be read by its client (its keys are namespaced by tenant and user in
// any case).
func NewAnswerStream(st *store.Redis, d store.Dialog, requestID, lastEventID string, cfg AnswerStreamConfig) *AnswerStream {
	if cfg.Block <= 0 {
		cfg.Block = 2 * time.Second
	}
	if cfg.Count <= 0 {
		cfg.Count = 64
	}
	a := &AnswerStream{st: st, d: d, requestID: requestID, cfg: cfg, cursor: "0"}
	switch lastEventID {
	case "", "0":
	case idDone, idError:
		a.ended = true
	case idWhole:
		a.holdsWhole, a.skipping = true, true
	default:
		// The client got events up to lastEventID: it may hold pieces
		// that a whole answer must reset.
		a.held = true
		if isEntryID(lastEventID) {
			a.resumeAt = lastEventID
		} else {
			a.skipping = true
		}
	}
	return a
}

// Next returns the next events, waiting up to the Block bound for one; no
// events and a nil error when the bound passes (send a heartbeat and call
// again). It returns io.EOF after the final event (done or error) was
// returned, and the store's error when Redis fails (the client resumes
// with the last id it got).
func (a *AnswerStream) Next(ctx context.Context) ([]Event, error) {
	for !a.ended {
		block := a.cfg.Block
		if a.resumeAt != "" {
			block = 0
		}
		entries, err := a.st.ReadStream(ctx, a.d, a.requestID, a.cursor, a.cfg.Count, block)
		if err != nil {
			return nil, err
		}
		if len(entries) == 0 {
			if a.resumeAt != "" {
				a.lost() // the stream ends before the resume point
				continue
			}
			return a.idle(ctx)
		}
		var out []Event
		for _, e := range entries {
			if a.resumeAt != "" && compareIDs(e.ID, a.resumeAt) > 0 {
				a.lost()
			}
			evs := a.take(e)
			a.cursor = e.ID
			if a.resumeAt != "" {
				if e.ID == a.resumeAt {
					a.resumeAt = ""
				}
				if a.ended { // the client had the final event
					return nil, io.EOF
				}
				continue
			}
			out = append(out, evs...)
			if a.ended {
				break
			}
		}
		if len(out) > 0 || a.ended {
			return out, nil
		}
	}
	return nil, io.EOF
}

// lost ends a replay whose resume point is not in the stream (expired,
// trimmed): the client may hold pieces; the whole answer will follow.
func (a *AnswerStream) lost() {
	a.resumeAt, a.held, a.skipping = "", true, true
}

// take turns one stream entry into the events it makes.
func (a *AnswerStream) take(e store.StreamEntry) []Event {
	switch e.Kind {
	case store.StreamDelta:
		if a.skipping {
			return nil
		}
		if e.Seq != a.expect {
			a.skipping = true // trimmed past what was read
			return nil
		}
		a.expect = e.Seq + 1
		a.held = true
		a.pieces.WriteString(e.Text)
		return []Event{{ID: e.ID, Kind: EventDelta, RequestID: a.requestID, Seq: e.Seq, Text: e.Text}}
	case store.StreamReset:
		a.expect = 0
		if a.skipping {
			return nil
		}
		a.pieces.Reset()
		return []Event{{ID: e.ID, Kind: EventReset, RequestID: a.requestID}}
	case store.StreamDone:
		var done DoneBody
		if err := json.Unmarshal([]byte(e.Text), &done); err != nil {
			a.ended = true
			return []Event{{ID: e.ID, Kind: EventError, RequestID: a.requestID, Text: fmt.Sprintf("undecodable answer: %v", err)}}
		}
		return a.finish(e.ID, done)
	case store.StreamError:
		a.ended = true
		return []Event{{ID: e.ID, Kind: EventError, RequestID: a.requestID, Text: e.Text}}
	}
	return nil // an entry of a later version: ignored
}

// finish returns the final events for done, with id doneID: the whole
// answer first, when the pieces delivered do not make it.
func (a *AnswerStream) finish(doneID string, done DoneBody) []Event {
	a.ended = true
	var out []Event
	if !a.holdsWhole && (a.skipping || a.pieces.String() != done.Answer) {
		if a.held {
			out = append(out, Event{ID: idResync, Kind: EventReset, RequestID: a.requestID})
		}
		if done.Answer != "" {
			out = append(out, Event{ID: idWhole, Kind: EventDelta, RequestID: a.requestID, Text: done.Answer})
		}
	}
	return append(out, Event{ID: doneID, Kind: EventDone, RequestID: a.requestID, Done: &done})
}

// idle looks at the result store when no entry came: a request answered
// without pieces ends here.
func (a *AnswerStream) idle(ctx context.Context) ([]Event, error) {
	res, err := a.st.Result(ctx, a.d, a.requestID)
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && !res.Final():
		if !a.cfg.Until.IsZero() && time.Now().After(a.cfg.Until) {
			a.ended = true
			return []Event{{ID: idError, Kind: EventError, RequestID: a.requestID, Text: "no answer before the request's deadline"}}, nil
		}
		return nil, nil
	case err != nil:
		return nil, err
	}
	return a.finish(idDone, doneBody(res.Reply, res.CreatedAt)), nil
}

// streamErrorsInARow is how many failed reads of an answer stream in a
// row make a stream give up (see Server.nextEvents).
const streamErrorsInARow = 3

// nextEvents returns a's next events (AnswerStream.Next) for a stream to
// its client, SSE or WebSocket: a read of the answer stream that fails
// (a Redis blip: a timeout, a dropped connection) is counted in
// sluice_producer_store_errors_total{op="stream"} and read again after a
// pause (100 ms, 200 ms, ... with jitter), so that it delays the answer
// instead of ending it. It gives up, logging it and returning the last
// read's error, after streamErrorsInARow failed reads in a row, or when
// the next pause would leave the client without news for longer than
// Config.StreamWriteTimeout since the first failure, or run past a's
// Until (the request's deadline). It returns ctx's error when ctx ends
// during a pause. The caller sends the error event or frame that tells
// the client to resume.
func (s *Server) nextEvents(ctx context.Context, a *AnswerStream) ([]Event, error) {
	var first time.Time
	for failures := 1; ; failures++ {
		evs, err := a.Next(ctx)
		if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
			return evs, err
		}
		s.m.storeErrors.WithLabelValues("stream").Inc()
		now := time.Now()
		if failures == 1 {
			first = now
		}
		pause := backoff.Linear(failures, 100*time.Millisecond, time.Second)
		resumeAt := now.Add(pause)
		if failures >= streamErrorsInARow || resumeAt.Sub(first) > s.cfg.StreamWriteTimeout ||
			!a.cfg.Until.IsZero() && resumeAt.After(a.cfg.Until) {
			s.log.Warn("read answer stream", "request_id", a.requestID, "failed_reads", failures, "err", err)
			return nil, err
		}
		if err := backoff.Sleep(ctx, pause); err != nil {
			return nil, err
		}
	}
}

// isEntryID reports whether id has the shape of a Redis stream entry id.
func isEntryID(id string) bool {
	_, _, ok := parseID(id)
	return ok
}

func parseID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// compareIDs orders two stream entry ids (-1, 0, 1).
func compareIDs(x, y string) int {
	xm, xs, _ := parseID(x)
	ym, ys, _ := parseID(y)
	if c := cmp.Compare(xm, ym); c != 0 {
		return c
	}
	return cmp.Compare(xs, ys)
}
