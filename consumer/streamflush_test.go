package consumer

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"sluice/shared/envelope"
	"sluice/shared/store"
)

// recordedStreams is a Streams that keeps each write's entries.
type recordedStreams struct {
	mu     sync.Mutex
	writes [][]store.StreamEntry
}

func (r *recordedStreams) AppendStream(_ context.Context, _ store.Dialog, _ string, entries ...store.StreamEntry) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, append([]store.StreamEntry(nil), entries...))
	return "1-0", nil
}

// texts returns the delta texts written so far, write by write.
func (r *recordedStreams) texts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, w := range r.writes {
		var b strings.Builder
		for _, e := range w {
			if e.Kind == store.StreamDelta {
				b.WriteString(e.Text)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// newFlushWriter returns a pieceWriter of request r1 on rec with a flush
// interval of 50 ms.
func newFlushWriter(rec *recordedStreams) *pieceWriter {
	cfg := DefaultConfig()
	cfg.StreamFlush = 50 * time.Millisecond
	zero := func() float64 { return 0 }
	c := &Consumer{cfg: cfg, log: slog.New(slog.DiscardHandler), streams: rec,
		m: newMetrics(promauto.With(prometheus.NewRegistry()), zero, zero, 1)}
	return c.newPieceWriter(context.Background(), store.Dialog{Tenant: "t", User: "u", ID: "0123456789abcdef0123456789abcdef"}, "r1")
}

// A piece held back for the batch is written within StreamFlush even when
// the model pauses after it: the flush timer writes it, not the next
// piece. Time is synctest's fake clock.
func TestPieceWriterFlushesInAModelPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recordedStreams{}
		w := newFlushWriter(rec)
		d := w.d

		w.Piece("Hello ") // the first piece goes out at once
		time.Sleep(10 * time.Millisecond)
		w.Piece("dear ") // within StreamFlush of that write: batched
		time.Sleep(10 * time.Millisecond)
		w.Piece("shopper. ")
		synctest.Wait()
		if got := rec.texts(); len(got) != 1 || got[0] != "Hello " {
			t.Fatalf("writes %q before the flush interval passed, want only the first piece", got)
		}

		// The model pauses for a minute; the batch is due 50 ms after
		// the first write, 30 ms from now.
		time.Sleep(30 * time.Millisecond)
		synctest.Wait()
		if got := rec.texts(); len(got) != 2 || got[1] != "dear shopper. " {
			t.Fatalf("writes %q at the flush interval, want the batch written by then", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(rec.texts()); n != 2 {
			t.Fatalf("%d writes after a pause with nothing pending, want 2", n)
		}

		// A piece after the pause goes out at once; done ends the stream,
		// and the timer writes nothing after it.
		w.Piece("Bye. ")
		w.Piece("Really.") // held by the masker until the end
		created := time.Now()
		w.finish(envelope.Reply{RequestID: "r1", DialogID: d.ID, Status: envelope.StatusDone, Answer: "Hello dear shopper. Bye. Really."}, created)
		time.Sleep(time.Second)
		synctest.Wait()
		got := rec.texts()
		if len(got) != 4 || got[2] != "Bye. " || got[3] != "Really." {
			t.Fatalf("writes %q, want the piece after the pause at once, then the rest with done", got)
		}
		last := rec.writes[len(rec.writes)-1]
		if last[len(last)-1].Kind != store.StreamDone {
			t.Errorf("the last write %+v does not end with done", last)
		}
	})
}

// A reset after written pieces is written within StreamFlush too, also
// when the retry that follows is slow to give its first piece: readers
// stop showing the failed call's pieces.
func TestPieceWriterFlushesAResetInAPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recordedStreams{}
		w := newFlushWriter(rec)
		w.Piece("Hello ")
		time.Sleep(10 * time.Millisecond)
		w.Reset() // the call failed; the retry waits for its backoff
		time.Sleep(40 * time.Millisecond)
		synctest.Wait()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.writes) != 2 || len(rec.writes[1]) != 1 || rec.writes[1][0].Kind != store.StreamReset {
			t.Fatalf("writes %+v, want the piece, then the reset by the flush interval", rec.writes)
		}
	})
}

// TestPieceWriterStopWritesNoMore: a request that fails after pieces were
// held for the batch (the model or the store failed) writes nothing more:
// the timer does not write its pieces after the request ended.
func TestPieceWriterStopWritesNoMore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recordedStreams{}
		w := newFlushWriter(rec)
		w.Piece("Hello ") // written at once
		w.Piece("dear ")  // held for the batch
		w.stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if got := rec.texts(); len(got) != 1 {
			t.Fatalf("writes %q after the request stopped, want only the first piece", got)
		}
		w.stop() // again, and on a writer of a request that does not stream
		(*pieceWriter)(nil).stop()
	})
}
