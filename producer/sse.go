package producer

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"sluice/shared/store"
)

// mimeEventStream is the media type of Server-Sent Events.
const mimeEventStream = "text/event-stream"

// wantsStream reports whether the client asked for Server-Sent Events.
func wantsStream(c echo.Context) bool {
	return strings.Contains(c.Request().Header.Get(echo.HeaderAccept), mimeEventStream)
}

// ResetData is the data of a reset event.
type ResetData struct {
	RequestID string `json:"request_id"`
}

// ErrorData is the data of an error event.
type ErrorData struct {
	RequestID string `json:"request_id"`
	Detail    string `json:"detail"`
}

// sseWriter writes the events of one response.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	last    time.Time // of the last write
	lastID  string
}

// write writes one event, or a comment when ev is nil, and flushes it,
// within the write timeout: a client that does not take it by then is
// given up on.
func (w *sseWriter) write(ev *Event) error {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	var err error
	if ev == nil {
		_, err = io.WriteString(w.w, ": heartbeat\n\n")
	} else {
		var data []byte
		switch ev.Kind {
		case EventDelta:
			data, err = json.Marshal(DeltaData{RequestID: ev.RequestID, Seq: ev.Seq, Text: ev.Text})
		case EventReset:
			data, err = json.Marshal(ResetData{RequestID: ev.RequestID})
		case EventDone:
			data, err = json.Marshal(ev.Done)
		default:
			data, err = json.Marshal(ErrorData{RequestID: ev.RequestID, Detail: ev.Text})
		}
		if err == nil {
			_, err = fmt.Fprintf(w.w, "id: %s\nevent: %s\ndata: %s\n\n", ev.ID, ev.Kind, data)
		}
		w.lastID = ev.ID
	}
	if err == nil {
		err = w.rc.Flush()
	}
	w.last = time.Now()
	return err
}

// streamAnswer answers the request requestID of dialog d as Server-Sent
// Events from lastID on (see AnswerStream), with pollURL in Location for a
// resume, until its done or error event, the client going away or a write
// timing out. A request that has no answer by until ends with an error
// event. observe, when set, is called with the done event.
func (s *Server) streamAnswer(c echo.Context, d store.Dialog, requestID, lastID, pollURL string, until time.Time, observe func(*DoneBody)) error {
	s.streams.Add(1)
	defer s.streams.Add(-1)
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, mimeEventStream)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	h.Set(echo.HeaderLocation, pollURL)
	c.Response().WriteHeader(http.StatusOK)
	w := &sseWriter{w: c.Response(), rc: http.NewResponseController(c.Response()), timeout: s.cfg.StreamWriteTimeout, lastID: lastID}
	if w.write(nil) != nil { // headers out at once: the client knows it is accepted
		return nil
	}
	ctx := c.Request().Context()
	a := NewAnswerStream(s.store, d, requestID, lastID, AnswerStreamConfig{Until: until, Block: min(2*time.Second, s.cfg.StreamHeartbeat)})
	for {
		// Next is called only once the events before are written: a slow
		// reader slows the reads from Redis, nothing queues here.
		evs, err := s.nextEvents(ctx, a)
		if ctx.Err() != nil {
			return nil // the client went away
		}
		for i := range evs {
			if evs[i].Kind == EventDone && observe != nil {
				observe(evs[i].Done)
			}
			if w.write(&evs[i]) != nil {
				return nil
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			// The id of the last event delivered ("0", the start, when
			// none was): a resume goes on from there.
			_ = w.write(&Event{ID: cmp.Or(w.lastID, "0"), Kind: EventError, RequestID: requestID, Text: "the answer stream is unavailable; resume with Last-Event-ID"})
			return nil
		}
		if len(evs) == 0 && time.Since(w.last) >= s.cfg.StreamHeartbeat && w.write(nil) != nil {
			return nil
		}
	}
}

// streamHot answers a question from the hot-answer cache as a stream: the
// whole answer as one piece, then done (ids as AnswerStream gives them for
// an answer without pieces, so a resume works the same).
func (s *Server) streamHot(c echo.Context, done DoneBody, pollURL string) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, mimeEventStream)
	h.Set("Cache-Control", "no-cache")
	h.Set(echo.HeaderLocation, pollURL)
	c.Response().WriteHeader(http.StatusOK)
	w := &sseWriter{w: c.Response(), rc: http.NewResponseController(c.Response()), timeout: s.cfg.StreamWriteTimeout}
	if w.write(&Event{ID: idWhole, Kind: EventDelta, RequestID: done.RequestID, Text: done.Answer}) == nil {
		_ = w.write(&Event{ID: idDone, Kind: EventDone, RequestID: done.RequestID, Done: &done})
	}
	return nil
}

// streamUntil is when a stream of the request created at created gives up
// waiting for its answer: its deadline, with a minute for the consumer to
// store what it has (an expired request ends with done "expired" before).
func streamUntil(deadline time.Time) time.Time { return deadline.Add(time.Minute) }
