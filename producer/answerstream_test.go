package producer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"sluice/producer"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/envelope"
	"sluice/shared/store"
)

var streamDialog = store.Dialog{Tenant: "t1", User: "u1", ID: "0123456789abcdef0123456789abcdef"}

func newStreamStore(tb testing.TB) *store.Redis {
	tb.Helper()
	_, rdb := stacktest.Miniredis(tb)
	st, err := store.New(rdb, store.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func doneEntry(tb testing.TB, requestID, answer string) store.StreamEntry {
	tb.Helper()
	b, err := json.Marshal(producer.DoneBody{RequestID: requestID, DialogID: streamDialog.ID, Status: envelope.StatusDone, Answer: answer, Source: envelope.SourceLLM})
	if err != nil {
		tb.Fatal(err)
	}
	return store.StreamEntry{Kind: store.StreamDone, Text: string(b)}
}

func pieces(texts ...string) []store.StreamEntry {
	out := make([]store.StreamEntry, len(texts))
	for i, t := range texts {
		out[i] = store.StreamEntry{Kind: store.StreamDelta, Seq: i, Text: t}
	}
	return out
}

func mustAppend(tb testing.TB, st *store.Redis, requestID string, entries ...store.StreamEntry) {
	tb.Helper()
	if _, err := st.AppendStream(context.Background(), streamDialog, requestID, entries...); err != nil {
		tb.Fatal(err)
	}
}

// drain reads a until its end and returns its events.
func drain(tb testing.TB, a *producer.AnswerStream) []producer.Event {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []producer.Event
	for {
		evs, err := a.Next(ctx)
		out = append(out, evs...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("Next: %v (after %+v)", err, out)
		}
	}
}

// answerOf checks the contract of a finished stream: it ends with one done
// event, every event has an id, and the deltas after the last reset make
// the done body's answer. It returns the kinds of the events.
func answerOf(tb testing.TB, evs []producer.Event) string {
	tb.Helper()
	if len(evs) == 0 || evs[len(evs)-1].Kind != producer.EventDone {
		tb.Fatalf("stream does not end with done: %+v", evs)
	}
	var text strings.Builder
	var kinds []string
	for _, e := range evs {
		if e.ID == "" {
			tb.Errorf("event without id: %+v", e)
		}
		kinds = append(kinds, e.Kind)
		switch e.Kind {
		case producer.EventReset:
			text.Reset()
		case producer.EventDelta:
			text.WriteString(e.Text)
		}
	}
	if done := evs[len(evs)-1].Done; done == nil || done.Answer != text.String() {
		tb.Errorf("pieces make %q, done body %+v", text.String(), done)
	}
	return strings.Join(kinds, " ")
}

func TestAnswerStream(t *testing.T) {
	cfg := producer.AnswerStreamConfig{Block: 20 * time.Millisecond}

	t.Run("PiecesMakeTheAnswer", func(t *testing.T) {
		st := newStreamStore(t)
		mustAppend(t, st, "r1", append(pieces("Your order ", "ships ", "today."), doneEntry(t, "r1", "Your order ships today."))...)
		evs := drain(t, producer.NewAnswerStream(st, streamDialog, "r1", "", cfg))
		if got := answerOf(t, evs); got != "delta delta delta done" {
			t.Errorf("events %q", got)
		}
	})

	t.Run("ResetThenNewAnswer", func(t *testing.T) {
		st := newStreamStore(t)
		mustAppend(t, st, "r2", pieces("Sorry, ")...)
		mustAppend(t, st, "r2", append(append([]store.StreamEntry{{Kind: store.StreamBegin}}, pieces("Fallback.")...), doneEntry(t, "r2", "Fallback."))...)
		if got := answerOf(t, drain(t, producer.NewAnswerStream(st, streamDialog, "r2", "", cfg))); got != "delta reset delta done" {
			t.Errorf("events %q", got)
		}
	})

	t.Run("AnsweredWithoutPiecesFromResultStore", func(t *testing.T) {
		st := newStreamStore(t)
		req := envelope.Request{RequestID: "r3", Tenant: "t1", User: "u1", DialogID: streamDialog.ID}
		reply := envelope.NewReply(&req, envelope.StatusDone, time.Now())
		reply.Answer, reply.Source = "From the FAQ.", envelope.SourceFAQ
		if _, _, err := st.Complete(context.Background(), streamDialog, reply, time.Now()); err != nil {
			t.Fatal(err)
		}
		evs := drain(t, producer.NewAnswerStream(st, streamDialog, "r3", "", cfg))
		if got := answerOf(t, evs); got != "delta done" {
			t.Errorf("events %q", got)
		}
		// Resuming after the whole piece gives only the done event.
		again := drain(t, producer.NewAnswerStream(st, streamDialog, "r3", evs[0].ID, cfg))
		if len(again) != 1 || again[0].Kind != producer.EventDone {
			t.Errorf("resume after the whole answer = %+v, want done only", again)
		}
		if evs := drain(t, producer.NewAnswerStream(st, streamDialog, "r3", evs[1].ID, cfg)); len(evs) != 0 {
			t.Errorf("resume after done = %+v, want nothing", evs)
		}
	})

	t.Run("ExpiredIsDone", func(t *testing.T) {
		st := newStreamStore(t)
		req := envelope.Request{RequestID: "r4", Tenant: "t1", User: "u1", DialogID: streamDialog.ID}
		if _, _, err := st.Complete(context.Background(), streamDialog, envelope.NewReply(&req, envelope.StatusExpired, time.Now()), time.Now()); err != nil {
			t.Fatal(err)
		}
		evs := drain(t, producer.NewAnswerStream(st, streamDialog, "r4", "", cfg))
		if answerOf(t, evs) != "done" || evs[0].Done.Status != envelope.StatusExpired {
			t.Errorf("expired request streams %+v", evs)
		}
	})

	t.Run("ResumeAfterAnEntry", func(t *testing.T) {
		st := newStreamStore(t)
		mustAppend(t, st, "r5", append(pieces("a", "b", "c"), doneEntry(t, "r5", "abc"))...)
		first := drain(t, producer.NewAnswerStream(st, streamDialog, "r5", "", cfg))
		rest := drain(t, producer.NewAnswerStream(st, streamDialog, "r5", first[1].ID, cfg))
		if got := answerOf(t, append(first[:2:2], rest...)); got != "delta delta delta done" {
			t.Errorf("first two events, then the resumed ones: %q", got)
		}
	})

	t.Run("ResumeAfterAnEntryGoneGetsTheWholeAnswer", func(t *testing.T) {
		st := newStreamStore(t)
		mustAppend(t, st, "r6", append(pieces("a", "b"), doneEntry(t, "r6", "ab"))...)
		evs := drain(t, producer.NewAnswerStream(st, streamDialog, "r6", "1-1", cfg))
		if got := answerOf(t, append([]producer.Event{{ID: "1-1", Kind: producer.EventDelta, Text: "stale"}}, evs...)); got != "delta reset delta done" {
			t.Errorf("a piece, then the resume after an id the stream lost: %q", got)
		}
	})

	t.Run("TrimmedHeadGetsTheWholeAnswer", func(t *testing.T) {
		st := newStreamStore(t)
		entries := pieces("a", "b", "c")
		mustAppend(t, st, "r7", append(entries[2:], doneEntry(t, "r7", "abc"))...)
		if got := answerOf(t, drain(t, producer.NewAnswerStream(st, streamDialog, "r7", "", cfg))); got != "delta done" {
			t.Errorf("a stream missing its first pieces: %q", got)
		}
	})

	// A client resuming after an entry still in a stream whose head was
	// trimmed holds pieces: the whole answer comes after a reset.
	t.Run("ResumeInATrimmedStreamResets", func(t *testing.T) {
		st := newStreamStore(t)
		id, err := st.AppendStream(context.Background(), streamDialog, "r11", pieces("a", "b", "c")[1])
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, st, "r11", pieces("a", "b", "c")[2], doneEntry(t, "r11", "abc"))
		if got := answerOf(t, drain(t, producer.NewAnswerStream(st, streamDialog, "r11", id, cfg))); got != "reset delta done" {
			t.Errorf("resume after the first entry kept of a trimmed stream: %q", got)
		}
	})

	t.Run("PiecesNotMakingTheAnswerAreReset", func(t *testing.T) {
		st := newStreamStore(t)
		mustAppend(t, st, "r8", append(pieces("138 0013 8000"), doneEntry(t, "r8", "[phone]"))...)
		if got := answerOf(t, drain(t, producer.NewAnswerStream(st, streamDialog, "r8", "", cfg))); got != "delta reset delta done" {
			t.Errorf("pieces that differ from the answer: %q", got)
		}
	})

	t.Run("NoAnswerByUntilIsError", func(t *testing.T) {
		st := newStreamStore(t)
		c := cfg
		c.Until = time.Now()
		evs := drain(t, producer.NewAnswerStream(st, streamDialog, "r9", "", c))
		if len(evs) != 1 || evs[0].Kind != producer.EventError || evs[0].ID == "" {
			t.Errorf("no answer by Until: %+v, want one error event", evs)
		}
	})

	t.Run("WaitsForPieces", func(t *testing.T) {
		st := newStreamStore(t)
		a := producer.NewAnswerStream(st, streamDialog, "r10", "", producer.AnswerStreamConfig{Block: time.Second})
		ctx := context.Background()
		evs, err := a.Next(ctx) // nothing yet: empty after the bound
		if err != nil || len(evs) != 0 {
			t.Fatalf("Next before any piece = %+v, %v", evs, err)
		}
		mustAppend(t, st, "r10", pieces("hi")...)
		if evs, err := a.Next(ctx); err != nil || len(evs) != 1 || evs[0].Text != "hi" {
			t.Fatalf("Next after a piece = %+v, %v", evs, err)
		}
	})

	t.Run("EndsWithContext", func(t *testing.T) {
		st := newStreamStore(t)
		a := producer.NewAnswerStream(st, streamDialog, "r11", "", producer.AnswerStreamConfig{Block: time.Minute})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { _, err := a.Next(ctx); errc <- err }()
		cancel()
		select {
		case <-errc:
		case <-time.After(5 * time.Second):
			t.Fatal("Next outlived its context")
		}
	})
}
