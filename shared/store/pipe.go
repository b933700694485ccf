package store

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Pipe sends the commands of the request path through go-redis's automatic
// pipeliner where the client has one: the commands that concurrent requests
// issue at the same moment go out as one pipeline, a write and a read for
// the batch instead of a round trip each, which is most of what Redis costs
// Sluice under load (docs/benchmarks.md). A lone caller's command is sent at
// once.
//
// Unlike the pipeliner's own command methods, a Pipe stops waiting when the
// caller's context ends: a Redis that hangs costs a request its store
// timeout, not the pipeliner's connection timeouts. An abandoned command
// still runs when Redis answers.
//
// A Pipe is a redis.Scripter (Script.Run takes it), and redis_rate takes it
// as its client. Commands on a client without a pipeliner (a Ring, a test
// double) run on the client.
type Pipe struct {
	rdb redis.UniversalClient
	ap  *redis.AutoPipeliner // nil: run on rdb
}

// NewPipe returns the Pipe of rdb. The pipeliner it uses is shared by all
// Pipes of rdb and closed with rdb.
func NewPipe(rdb redis.UniversalClient) *Pipe {
	p := &Pipe{rdb: rdb}
	var err error
	switch c := rdb.(type) {
	case *redis.Client:
		p.ap, err = c.AsyncAutoPipeline()
	case *redis.ClusterClient:
		p.ap, err = c.AsyncAutoPipeline()
	}
	if err != nil {
		p.ap = nil
	}
	return p
}

// errAbandoned marks a command given up on because its context ended.
type errAbandoned struct{ cause error }

func (e errAbandoned) Error() string { return "redis command abandoned: " + e.cause.Error() }
func (e errAbandoned) Unwrap() error { return e.cause }

// run executes cmd and returns its error. When ctx ends first it returns an
// error wrapping ctx's, and cmd must not be read: the pipeliner may still
// fill it in.
func (p *Pipe) run(ctx context.Context, cmd redis.Cmder) error {
	if p.ap == nil {
		_ = p.rdb.Process(ctx, cmd)
		return cmd.Err()
	}
	err := p.ap.Submit(ctx, cmd).WaitContext(ctx)
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
		return errAbandoned{cause: err}
	}
	return err
}

// eval runs an EVAL-family command. An abandoned command is replaced by a
// fresh one holding the error, so the caller may read what it gets.
func (p *Pipe) eval(ctx context.Context, name, payload string, keys []string, args []any) *redis.Cmd {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, name, payload, len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	cmdArgs = append(cmdArgs, args...)
	cmd := redis.NewCmd(ctx, cmdArgs...)
	if len(keys) > 0 {
		cmd.SetFirstKeyPos(3)
	}
	if err := p.run(ctx, cmd); errors.As(err, new(errAbandoned)) {
		cmd = redis.NewCmd(ctx, cmdArgs...)
		cmd.SetErr(err)
	}
	return cmd
}

// Eval runs a script by its source.
func (p *Pipe) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.eval(ctx, "eval", script, keys, args)
}

// EvalSha runs a script by its SHA-1.
func (p *Pipe) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.eval(ctx, "evalsha", sha1, keys, args)
}

// EvalRO runs a read-only script by its source.
func (p *Pipe) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.eval(ctx, "eval_ro", script, keys, args)
}

// EvalShaRO runs a read-only script by its SHA-1.
func (p *Pipe) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.eval(ctx, "evalsha_ro", sha1, keys, args)
}

// ScriptExists, ScriptLoad and Del are rare (loading scripts, resetting a
// limit) and run on the client.

// ScriptExists reports which of hashes the server has.
func (p *Pipe) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return p.rdb.ScriptExists(ctx, hashes...)
}

// ScriptLoad loads a script.
func (p *Pipe) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return p.rdb.ScriptLoad(ctx, script)
}

// Del deletes keys.
func (p *Pipe) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return p.rdb.Del(ctx, keys...)
}

var _ redis.Scripter = (*Pipe)(nil)
