// Package store keeps Sluice's state in Redis: dialog histories and request
// results. It works on a single Redis, Sentinel or Cluster: all keys of one
// dialog share the hash tag {tenant:user:dialog}, so the script that appends a
// dialog's turns and stores the request's result runs atomically in one slot.
//
// Layout, with the default prefix "sluice":
//
//	sluice:{t:u:d}:hist       list of JSON turns, oldest first, trimmed to the last N, TTL refreshed on write
//	sluice:{t:u:d}:req:<id>   hash {state, created_at, body}: state "queued" (set at the door),
//	                          "done" or "expired" with body = the reply JSON; expires after the result TTL
//	sluice:{t:u:d}:stream:<id> Redis Stream of the request's answer pieces (see AppendStream): entries
//	                          {k: delta|reset|done|error, s: seq, t: text}; capped, expires StreamTTL after its last write
//
// A result is announced on the channel "<prefix>:results" with the message
// "<tenant>/<user>/<dialog>/<request_id>\n<reply JSON>" (see
// ParseAnnouncement) when its request carries the queued marker, so that a
// poll on any replica wakes, with the answer, without polling Redis. A
// request without the marker is one whose accepting replica waits for its
// reply on the reply topic; announcing it too would send every reply to
// every replica.
package store

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/shared/envelope"
	"sluice/shared/settings"
)

// ErrNotFound is returned by Result when no request of that id is known for
// the dialog (never accepted, expired from the store, or someone else's).
var ErrNotFound = errors.New("request not found")

// Config holds the store's settings.
type Config struct {
	// Prefix starts every key. Default "sluice".
	Prefix string
	// HistoryTurns is how many turns (user and assistant each count one) a
	// dialog keeps. Default 50.
	HistoryTurns int
	// HistoryTTL is how long an untouched dialog is kept. Default 7 days.
	HistoryTTL time.Duration
	// ResultTTL is how long a request's result can be polled. Default 10 minutes.
	ResultTTL time.Duration
	// StreamTTL is how long a request's answer stream is kept after its
	// last entry: the window in which a client resumes from the stream;
	// later, a reader falls back to the result. Default 2 minutes.
	StreamTTL time.Duration
	// StreamMaxLen caps the entries of one answer stream (approximately:
	// Redis trims whole nodes of about 100 entries). Default 1000.
	StreamMaxLen int
	// StreamBlockingReads is how many stream reads may block on a pooled
	// connection at once (see ReadStream). Default 128.
	StreamBlockingReads int
}

// DefaultConfig returns the default settings.
func DefaultConfig() Config {
	return Config{
		Prefix: "sluice", HistoryTurns: 50, HistoryTTL: 7 * 24 * time.Hour, ResultTTL: 10 * time.Minute,
		StreamTTL: 2 * time.Minute, StreamMaxLen: 1000, StreamBlockingReads: 128,
	}
}

// Validate reports every setting out of range, each named by its flag.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(c.Prefix != "", "redis-prefix", "must not be empty")
	p.Check(c.HistoryTurns >= 2, "history-turns", "must be at least 2, got %d", c.HistoryTurns)
	p.Check(c.HistoryTTL > 0, "history-ttl", "must be positive")
	p.Check(c.ResultTTL > 0, "result-ttl", "must be positive")
	p.Check(c.StreamTTL >= time.Second, "stream-ttl", "must be at least 1s, got %v", c.StreamTTL)
	p.Check(c.StreamMaxLen >= 100, "stream-max-len", "must be at least 100, got %d", c.StreamMaxLen)
	p.Check(c.StreamBlockingReads >= 0, "stream-blocking-reads", "must not be negative, got %d", c.StreamBlockingReads)
	return p.Err()
}

// RegisterFlags registers c's settings on fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Prefix, "redis-prefix", c.Prefix, "prefix of every Redis key")
	fs.IntVar(&c.HistoryTurns, "history-turns", c.HistoryTurns, "turns kept per dialog (user and assistant each count one)")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", c.HistoryTTL, "how long an untouched dialog is kept")
	fs.DurationVar(&c.ResultTTL, "result-ttl", c.ResultTTL, "how long a request's result can be polled")
	fs.DurationVar(&c.StreamTTL, "stream-ttl", c.StreamTTL, "how long a request's answer stream is kept after its last piece (the window to resume it)")
	fs.IntVar(&c.StreamMaxLen, "stream-max-len", c.StreamMaxLen, "entries kept per answer stream (approximate cap)")
	fs.IntVar(&c.StreamBlockingReads, "stream-blocking-reads", c.StreamBlockingReads, "stream reads that may block on a Redis connection at once; the others poll (keep below --redis-pool-size)")
}

// Dialog names one dialog of one user of one tenant.
type Dialog struct {
	Tenant, User, ID string
}

// DialogOf returns the dialog a request belongs to.
func DialogOf(r *envelope.Request) Dialog { return Dialog{r.Tenant, r.User, r.DialogID} }

// Result states.
const (
	StateQueued  = envelope.StatusQueued
	StateDone    = envelope.StatusDone
	StateExpired = envelope.StatusExpired
)

// Result is what the store knows of one request.
type Result struct {
	State     string // StateQueued, StateDone or StateExpired
	CreatedAt time.Time
	Reply     envelope.Reply // set unless State is StateQueued
}

// Final reports whether the request has its answer (done or expired).
func (r Result) Final() bool { return r.State == StateDone || r.State == StateExpired }

// Redis is the Redis-backed store.
type Redis struct {
	rdb  redis.UniversalClient
	pipe *Pipe // the per-request commands: load, complete, mark queued, result
	cfg  Config
	// blocking holds a slot per stream read blocked on a connection.
	blocking chan struct{}
	// owned: Close closes rdb (Dial made it).
	owned bool
}

// New returns a store on rdb. It returns an error when cfg is invalid.
func New(rdb redis.UniversalClient, cfg Config) (*Redis, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Redis{rdb: rdb, pipe: NewPipe(rdb), cfg: cfg, blocking: make(chan struct{}, cfg.StreamBlockingReads)}, nil
}

// Pipe returns the store's pipe, for other per-request commands (the
// ingress's shared rate limits).
func (s *Redis) Pipe() *Pipe { return s.pipe }

// Client returns the underlying Redis client.
func (s *Redis) Client() redis.UniversalClient { return s.rdb }

// Announcement is a completion announced on the results channel.
type Announcement struct {
	Dialog    Dialog
	RequestID string
	body      string
}

// ParseAnnouncement splits a results-channel message. It reports false for
// a message of another shape.
func ParseAnnouncement(payload string) (Announcement, bool) {
	head, body, ok := strings.Cut(payload, "\n")
	if !ok {
		return Announcement{}, false
	}
	parts := strings.Split(head, "/")
	if len(parts) != 4 {
		return Announcement{}, false
	}
	return Announcement{Dialog: Dialog{parts[0], parts[1], parts[2]}, RequestID: parts[3], body: body}, true
}

// Reply decodes the announced reply.
func (a Announcement) Reply() (envelope.Reply, error) {
	var r envelope.Reply
	if err := json.Unmarshal([]byte(a.body), &r); err != nil {
		return envelope.Reply{}, fmt.Errorf("decode announced reply: %w", err)
	}
	return r, nil
}

// Prefix returns the prefix of the store's keys.
func (s *Redis) Prefix() string { return s.cfg.Prefix }

// ResultsChannel is the pub/sub channel on which completions are announced.
func (s *Redis) ResultsChannel() string { return s.cfg.Prefix + ":results" }

func (s *Redis) tag(d Dialog) string {
	return s.cfg.Prefix + ":{" + d.Tenant + ":" + d.User + ":" + d.ID + "}"
}

func (s *Redis) histKey(d Dialog) string { return s.tag(d) + ":hist" }

func (s *Redis) reqKey(d Dialog, requestID string) string { return s.tag(d) + ":req:" + requestID }

// MarkQueued records that the request was accepted and may be waited for
// through the store: a poll can tell "still queued" from "unknown", and its
// result will be announced. It never overwrites a result: it returns what
// the store holds after it, the request's result when it is already final.
// One command (a script).
func (s *Redis) MarkQueued(ctx context.Context, d Dialog, requestID string, createdAt time.Time) (Result, error) {
	vals, err := markQueuedScript.Run(ctx, s.pipe, []string{s.reqKey(d, requestID)},
		createdAt.UnixMilli(), s.cfg.ResultTTL.Milliseconds()).Slice()
	if err != nil {
		return Result{}, fmt.Errorf("mark queued: %w", err)
	}
	if len(vals) != 3 {
		return Result{}, fmt.Errorf("mark queued: unexpected script result %v", vals)
	}
	return decodeResult(requestID, vals)
}

var markQueuedScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], 'state', 'queued') == 1 then
  redis.call('HSET', KEYS[1], 'created_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'state', 'created_at', 'body')`)

// Result returns what is known of a request. It returns ErrNotFound when the
// request is unknown for this dialog.
func (s *Redis) Result(ctx context.Context, d Dialog, requestID string) (Result, error) {
	cmd := s.hmget(ctx, d, requestID)
	if err := s.pipe.run(ctx, cmd); err != nil {
		return Result{}, fmt.Errorf("get result: %w", err)
	}
	return decodeResult(requestID, cmd.Val())
}

func (s *Redis) hmget(ctx context.Context, d Dialog, requestID string) *redis.SliceCmd {
	return redis.NewSliceCmd(ctx, "hmget", s.reqKey(d, requestID), "state", "created_at", "body")
}

func decodeResult(requestID string, vals []any) (Result, error) {
	state, _ := vals[0].(string)
	if state == "" {
		return Result{}, ErrNotFound
	}
	res := Result{State: state}
	if ms, ok := vals[1].(string); ok {
		if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
			res.CreatedAt = time.UnixMilli(n)
		}
	}
	if res.Final() {
		body, _ := vals[2].(string)
		if err := json.Unmarshal([]byte(body), &res.Reply); err != nil {
			return Result{}, fmt.Errorf("decode stored result %s: %w", requestID, err)
		}
	}
	return res, nil
}

// Load returns, in one round trip, what is known of a request (ErrNotFound
// is not an error here: the zero Result, State "") and the dialog's turns.
func (s *Redis) Load(ctx context.Context, d Dialog, requestID string) (Result, []envelope.Turn, error) {
	// One command after the other: the pipeliner expects a caller woken by
	// a batch of two to come back with two more commands and holds its next
	// flush for them, which a lone caller would pay in every request.
	res := s.hmget(ctx, d, requestID)
	if err := s.pipe.run(ctx, res); err != nil {
		return Result{}, nil, fmt.Errorf("load request: %w", err)
	}
	hist := redis.NewStringSliceCmd(ctx, "lrange", s.histKey(d), 0, -1)
	if err := s.pipe.run(ctx, hist); err != nil {
		return Result{}, nil, fmt.Errorf("load history: %w", err)
	}
	r, err := decodeResult(requestID, res.Val())
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Result{}, nil, err
	}
	turns, err := decodeTurns(hist.Val())
	return r, turns, err
}

// History returns the dialog's turns, oldest first.
func (s *Redis) History(ctx context.Context, d Dialog) ([]envelope.Turn, error) {
	items, err := s.rdb.LRange(ctx, s.histKey(d), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("load history: %w", err)
	}
	return decodeTurns(items)
}

func decodeTurns(items []string) ([]envelope.Turn, error) {
	turns := make([]envelope.Turn, 0, len(items))
	for _, it := range items {
		var t envelope.Turn
		if err := json.Unmarshal([]byte(it), &t); err != nil {
			return nil, fmt.Errorf("decode history turn: %w", err)
		}
		turns = append(turns, t)
	}
	return turns, nil
}

// HasHistory reports whether the dialog has any turn.
func (s *Redis) HasHistory(ctx context.Context, d Dialog) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.histKey(d)).Result()
	if err != nil {
		return false, fmt.Errorf("check history: %w", err)
	}
	return n > 0, nil
}

// DeleteHistory forgets the dialog's turns. Results stay until they expire.
func (s *Redis) DeleteHistory(ctx context.Context, d Dialog) error {
	if err := s.rdb.Del(ctx, s.histKey(d)).Err(); err != nil {
		return fmt.Errorf("delete history: %w", err)
	}
	return nil
}

//go:embed complete.lua
var completeSrc string

var completeScript = redis.NewScript(completeSrc)

// Complete stores the final reply of a request and, when turns are given,
// appends them to the dialog's history, in one atomic step. It is idempotent
// on the request id: when the request already has a final result, nothing is
// written and that stored reply is returned with fresh false. When only its
// turns are still in the history (the result expired before a late
// redelivery), reply is stored but no turn is appended again. created is the
// request's creation time.
func (s *Redis) Complete(ctx context.Context, d Dialog, reply envelope.Reply, created time.Time, turns ...envelope.Turn) (stored envelope.Reply, fresh bool, err error) {
	body, err := json.Marshal(reply)
	if err != nil {
		return envelope.Reply{}, false, fmt.Errorf("encode reply: %w", err)
	}
	args := []any{
		string(body), reply.Status, s.cfg.ResultTTL.Milliseconds(), created.UnixMilli(),
		reply.RequestID, s.cfg.HistoryTurns, s.cfg.HistoryTTL.Milliseconds(),
		s.ResultsChannel(), d.Tenant + "/" + d.User + "/" + d.ID + "/" + reply.RequestID,
	}
	for _, t := range turns {
		b, err := json.Marshal(t)
		if err != nil {
			return envelope.Reply{}, false, fmt.Errorf("encode turn: %w", err)
		}
		args = append(args, string(b))
	}
	keys := []string{s.reqKey(d, reply.RequestID), s.histKey(d)}
	res, err := completeScript.Run(ctx, s.pipe, keys, args...).Slice()
	if err != nil {
		return envelope.Reply{}, false, fmt.Errorf("complete request: %w", err)
	}
	if len(res) != 2 {
		return envelope.Reply{}, false, fmt.Errorf("complete request: unexpected script result %v", res)
	}
	fresh = res[0].(int64) == 1
	if fresh {
		return reply, true, nil
	}
	storedBody, _ := res[1].(string)
	if err := json.Unmarshal([]byte(storedBody), &stored); err != nil {
		return envelope.Reply{}, false, fmt.Errorf("decode stored result: %w", err)
	}
	return stored, false, nil
}
