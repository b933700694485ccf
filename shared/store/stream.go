package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kinds of the entries of an answer stream.
const (
	// StreamDelta is a piece of the answer (Seq, Text).
	StreamDelta = "delta"
	// StreamReset says: discard the pieces so far, a new answer follows.
	StreamReset = "reset"
	// StreamDone ends the stream; Text is the done body (JSON).
	StreamDone = "done"
	// StreamError ends the stream; Text says what went wrong.
	StreamError = "error"
	// StreamBegin is not stored: AppendStream writes a reset in its place
	// when the stream already holds entries (an earlier delivery of the
	// request sent pieces), and nothing otherwise. A writer puts it before
	// the first piece of each delivery.
	StreamBegin = "begin"
)

// StreamEntry is one entry of a request's answer stream.
type StreamEntry struct {
	// ID is the entry's id in the Redis stream ("<ms>-<n>"), set by Redis;
	// ignored by AppendStream.
	ID   string
	Kind string // StreamDelta, StreamReset, StreamDone or StreamError
	// Seq numbers the deltas from 0, again after each reset: a reader
	// that finds a delta other than the one it expects (the first one read
	// from the start not 0, or a jump) knows the stream was trimmed past
	// what it read.
	Seq  int
	Text string // the piece, the done body, or the error message
}

// Final reports whether e ends its stream (done or error).
func (e StreamEntry) Final() bool { return e.Kind == StreamDone || e.Kind == StreamError }

// streamKey is the answer stream of a request: in the dialog's slot, beside
// the request's result.
func (s *Redis) streamKey(d Dialog, requestID string) string {
	return s.tag(d) + ":stream:" + requestID
}

// appendStreamScript adds the entries (ARGV from 3 on, three by entry:
// kind, seq, text) to the stream KEYS[1], trimmed to about ARGV[1] entries,
// and sets its TTL to ARGV[2] ms. It returns the id of the last entry.
var appendStreamScript = redis.NewScript(`
local id
for i = 3, #ARGV, 3 do
  local k = ARGV[i]
  if k ~= 'begin' then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'k', k, 's', ARGV[i+1], 't', ARGV[i+2])
  elseif redis.call('EXISTS', KEYS[1]) == 1 then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'k', 'reset', 's', 0, 't', '')
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id`)

// AppendStream adds entries, in order, to the answer stream of a request,
// capped at about StreamMaxLen entries and kept for StreamTTL after this
// write. It is one command (a script) however many entries it adds, sent
// through the pipeliner: batch a request's small pieces into one call. It
// returns the id of the last entry added, or an error when Redis fails
// (then none, some or all were added).
func (s *Redis) AppendStream(ctx context.Context, d Dialog, requestID string, entries ...StreamEntry) (string, error) {
	if len(entries) == 0 {
		return "", nil
	}
	args := make([]any, 0, 2+3*len(entries))
	args = append(args, s.cfg.StreamMaxLen, s.cfg.StreamTTL.Milliseconds())
	for _, e := range entries {
		args = append(args, e.Kind, e.Seq, e.Text)
	}
	id, err := appendStreamScript.Run(ctx, s.pipe, []string{s.streamKey(d, requestID)}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("append to answer stream: %w", err)
	}
	return id, nil
}

// ReadStream returns up to count entries of the request's answer stream
// that come after the entry id after ("0": from the start), waiting up to
// block for one when there is none yet. It returns no entries and no error
// when the wait ends without one, and also when the stream does not exist
// (not started yet, or expired).
//
// A blocking read holds a connection of the client's pool while it waits.
// At most StreamBlockingReads reads of this store block at once (default
// 128, with the pool of NewClient at 256 connections: the rest stays for
// the request path); a read beyond that looks once through the pipeliner
// and, finding nothing, waits streamPoll before it returns empty, so that
// more streams than that cost latency (up to streamPoll per piece), never
// the request path's connections. Raise both --redis-pool-size and
// --stream-blocking-reads for more concurrent streams per replica.
func (s *Redis) ReadStream(ctx context.Context, d Dialog, requestID, after string, count int64, block time.Duration) ([]StreamEntry, error) {
	key := s.streamKey(d, requestID)
	args := &redis.XReadArgs{Streams: []string{key, after}, Count: count, Block: -1}
	if block > 0 {
		select {
		case s.blocking <- struct{}{}:
			defer func() { <-s.blocking }()
			args.Block = block
			res, err := s.rdb.XRead(ctx, args).Result()
			return decodeXRead(res, err)
		default:
		}
	}
	cmd := redis.NewXStreamSliceCmd(ctx, "xread", "count", count, "streams", key, after)
	cmd.SetFirstKeyPos(4)
	err := s.pipe.run(ctx, cmd)
	if errors.Is(err, redis.Nil) || err == nil && len(cmd.Val()) == 0 {
		if block > 0 {
			t := time.NewTimer(min(block, streamPoll))
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read answer stream: %w", err)
	}
	return decodeXRead(cmd.Val(), nil)
}

// streamPoll is how long a stream read that found no free blocking slot
// waits before it returns empty.
const streamPoll = 50 * time.Millisecond

func decodeXRead(res []redis.XStream, err error) ([]StreamEntry, error) {
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read answer stream: %w", err)
	}
	var out []StreamEntry
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, decodeEntry(m))
		}
	}
	return out, nil
}

func decodeEntry(m redis.XMessage) StreamEntry {
	e := StreamEntry{ID: m.ID}
	e.Kind, _ = m.Values["k"].(string)
	e.Text, _ = m.Values["t"].(string)
	if s, ok := m.Values["s"].(string); ok {
		e.Seq, _ = strconv.Atoi(s)
	}
	return e
}
