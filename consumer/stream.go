package consumer

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"sluice/consumer/llm"
	"sluice/shared/envelope"
	"sluice/shared/pii"
	"sluice/shared/store"
)

// StreamingAnswerer is an Answerer that can also hand the answer's pieces
// to a sink as the model streams them (*llm.Client).
type StreamingAnswerer interface {
	AnswerStreaming(ctx context.Context, req *envelope.Request, history []envelope.Turn, sink llm.Sink) (llm.Answer, error)
}

// Streams appends to requests' answer streams (*store.Redis).
type Streams interface {
	AppendStream(ctx context.Context, d store.Dialog, requestID string, entries ...store.StreamEntry) (string, error)
}

var (
	_ StreamingAnswerer = (*llm.Client)(nil)
	_ Streams           = (*store.Redis)(nil)
)

// streamWriteTimeout bounds one write to an answer stream. A write that
// fails is counted and not retried: the stream's readers see the gap (or
// nothing) and fall back to the whole answer from the result store.
const streamWriteTimeout = time.Second

// pieceWriter publishes one request's answer to its answer stream: the
// model's pieces masked by a pii.StreamMasker (a phone number split across
// tokens leaves only whole, masked), batched so that pieces arriving within
// Config.StreamFlush of the last write go out together in one command,
// then the final answer's done entry. A timer writes pieces held back
// for the batch once StreamFlush has passed since the last write, so a
// piece followed by a long pause of the model reaches the readers within
// StreamFlush, not with the next piece. Its entries follow the rules
// producer.AnswerStream relies on: the first write of a delivery begins
// with store.StreamBegin (a reset when an earlier delivery sent pieces),
// deltas are numbered from 0 after each reset, and the deltas after the
// last reset make the done body's answer.
//
// The model's pieces come from one goroutine, the flush timer's writes
// from another: mu serialises them.
type pieceWriter struct {
	c         *Consumer
	ctx       context.Context
	d         store.Dialog
	requestID string

	mu      sync.Mutex
	flush   *time.Timer // writes pending pieces StreamFlush after the last write
	armed   bool        // flush is set and has not fired yet
	ended   bool        // finish ran: the timer writes no more
	masker  pii.StreamMasker
	pending []store.StreamEntry
	// mark is where in pending the pieces since the last reset start,
	// while none of them was written.
	mark    int
	written bool // an entry since the last reset was written
	began   bool // the delivery's first write is done
	seq     int
	given   strings.Builder // the masked text given out since the last reset
	last    time.Time       // of the last write
	broken  bool            // a write failed: only the done entry is tried
}

func (c *Consumer) newPieceWriter(ctx context.Context, d store.Dialog, requestID string) *pieceWriter {
	return &pieceWriter{c: c, ctx: ctx, d: d, requestID: requestID}
}

// Piece takes a piece of the model's answer, unmasked.
func (w *pieceWriter) Piece(text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	if out := w.masker.Write(text); out != "" {
		w.add(out)
		w.schedule()
	}
}

// schedule writes the pending entries now when StreamFlush has passed
// since the last write, else arms the flush timer for then.
func (w *pieceWriter) schedule() {
	if w.broken || w.ended || len(w.pending) == 0 {
		return
	}
	if wait := w.c.cfg.StreamFlush - time.Since(w.last); wait > 0 {
		w.flushIn(wait)
		return
	}
	w.write()
}

// flushIn arms the flush timer to write the pending entries in wait,
// unless it is armed already: for an earlier piece of the same batch, due
// at the same time.
func (w *pieceWriter) flushIn(wait time.Duration) {
	if w.armed {
		return
	}
	w.armed = true
	if w.flush == nil {
		w.flush = time.AfterFunc(wait, w.flushed)
		return
	}
	w.flush.Reset(wait)
}

// flushed writes what the batch holds when the flush timer fires.
func (w *pieceWriter) flushed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	if !w.ended && !w.broken {
		w.write()
	}
}

func (w *pieceWriter) add(text string) {
	w.pending = append(w.pending, store.StreamEntry{Kind: store.StreamDelta, Seq: w.seq, Text: text})
	w.seq++
	w.given.WriteString(text)
}

// Reset voids the pieces so far: pieces not written yet are dropped, and
// a reset entry follows the written ones, written like a piece (readers
// clear the pieces they show while the retry or the next tier runs).
func (w *pieceWriter) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return
	}
	w.reset()
	w.schedule()
}

func (w *pieceWriter) reset() {
	w.masker = pii.StreamMasker{}
	w.seq = 0
	w.given.Reset()
	if !w.written {
		w.pending = w.pending[:w.mark]
		return
	}
	w.pending = append(w.pending, store.StreamEntry{Kind: store.StreamReset})
	w.mark, w.written = len(w.pending), false
}

// finish ends the stream with the stored reply of the request created at
// created: the whole answer as one piece first when the pieces given out
// do not make it (an answer of the FAQ or canned tier, a redelivery of a
// finished request, another delivery's answer stored first), then done.
// It is called after the reply is stored.
func (w *pieceWriter) finish(stored envelope.Reply, created time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
	if w.flush != nil {
		w.flush.Stop()
	}
	if rest := w.masker.Flush(); rest != "" {
		w.add(rest)
	}
	if w.given.String() != stored.Answer {
		if w.given.Len() > 0 {
			w.reset()
		}
		if stored.Answer != "" {
			w.add(stored.Answer)
		}
	}
	body, err := json.Marshal(envelope.DoneOf(stored, created))
	if err != nil {
		w.c.m.streamWrites.With("failed").Inc()
		return
	}
	w.pending = append(w.pending, store.StreamEntry{Kind: store.StreamDone, Text: string(body)})
	w.write()
}

// write sends the pending entries in one command.
func (w *pieceWriter) write() {
	if len(w.pending) == 0 {
		return
	}
	entries := w.pending
	if !w.began {
		entries = append([]store.StreamEntry{{Kind: store.StreamBegin}}, entries...)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), streamWriteTimeout)
	defer cancel()
	_, err := w.c.streams.AppendStream(ctx, w.d, w.requestID, entries...)
	w.last = time.Now()
	if err != nil {
		w.broken = true
		w.c.m.streamWrites.With("failed").Inc()
		w.c.streamWarned.Do(func() { w.c.log.Warn("write answer stream", "request_id", w.requestID, "err", err) })
		return
	}
	w.c.m.streamWrites.With("ok").Inc()
	w.began, w.written = true, true
	w.pending, w.mark = w.pending[:0], 0
}

// stop ends a writer whose request ends without finish (the store or the
// model failed: the request is retried or redelivered, and that delivery's
// first write begins anew): the flush timer writes no more. After finish
// it does nothing. w may be nil (the request does not stream).
func (w *pieceWriter) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
	if w.flush != nil {
		w.flush.Stop()
	}
}

// finishIf is finish on a writer that may be nil (the request does not
// stream).
func (w *pieceWriter) finishIf(stored envelope.Reply, created time.Time) {
	if w != nil {
		w.finish(stored, created)
	}
}
