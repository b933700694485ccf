package llm

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// quota is a requests-per-minute and tokens-per-minute limit.
type quota interface {
	// take admits one call of tokens and returns 0, or admits nothing and
	// returns how long to wait before asking again and which limit ("rpm"
	// or "tpm") is exhausted.
	take(ctx context.Context, tokens int) (wait time.Duration, limit string, err error)
}

// gcra is the generic cell rate algorithm for both limits in one atomic
// script: a call is admitted only when both have room, and then counted in
// both. Each limit lets a full minute's worth through at once (its burst),
// then one unit every 60/rate seconds. Keys hold the "theoretical arrival
// time" relative to a recent epoch, to keep Lua's doubles precise.
var gcra = redis.NewScript(`
local t = redis.call("TIME")
local now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1000000
local function next_tat(key, per_minute, cost)
  local tat = tonumber(redis.call("GET", key) or "0") or 0
  if tat < now then tat = now end
  local new_tat = tat + cost * 60 / per_minute
  return new_tat, new_tat - 60 - now
end
local rpm, tpm, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r_tat, r_wait, t_tat, t_wait = 0, 0, 0, 0
if rpm > 0 then r_tat, r_wait = next_tat(KEYS[1], rpm, 1) end
if tpm > 0 then
  if cost > tpm then cost = tpm end
  t_tat, t_wait = next_tat(KEYS[2], tpm, cost)
end
if r_wait > 0 or t_wait > 0 then
  if r_wait >= t_wait then return {math.ceil(r_wait * 1000), 1} end
  return {math.ceil(t_wait * 1000), 2}
end
if rpm > 0 then redis.call("SET", KEYS[1], tostring(r_tat), "PX", math.ceil((r_tat - now) * 1000) + 1000) end
if tpm > 0 then redis.call("SET", KEYS[2], tostring(t_tat), "PX", math.ceil((t_tat - now) * 1000) + 1000) end
return {0, 0}
`)

// redisQuota shares the limits through Redis.
type redisQuota struct {
	rdb      redis.UniversalClient
	keys     []string
	rpm, tpm int
}

// newRedisQuota keeps the limits under base+":rpm" and base+":tpm"; base
// carries a hash tag so both keys live in one Redis Cluster slot.
func newRedisQuota(rdb redis.UniversalClient, base string, rpm, tpm int) *redisQuota {
	return &redisQuota{rdb: rdb, keys: []string{base + ":rpm", base + ":tpm"}, rpm: rpm, tpm: tpm}
}

func (q *redisQuota) take(ctx context.Context, tokens int) (time.Duration, string, error) {
	res, err := gcra.Run(ctx, q.rdb, q.keys, q.rpm, q.tpm, tokens).Int64Slice()
	if err != nil {
		return 0, "", fmt.Errorf("llm quota: %w", err)
	}
	if len(res) != 2 {
		return 0, "", fmt.Errorf("llm quota: unexpected reply %v", res)
	}
	if res[0] <= 0 {
		return 0, "", nil
	}
	limit := "rpm"
	if res[1] == 2 {
		limit = "tpm"
	}
	return time.Duration(res[0]) * time.Millisecond, limit, nil
}

// localQuota keeps the limits in this process (no Redis given).
type localQuota struct {
	mu       sync.Mutex
	rpm, tpm *rate.Limiter
}

func newLocalQuota(rpm, tpm int) *localQuota {
	q := &localQuota{}
	if rpm > 0 {
		q.rpm = rate.NewLimiter(rate.Limit(float64(rpm)/60), rpm)
	}
	if tpm > 0 {
		q.tpm = rate.NewLimiter(rate.Limit(float64(tpm)/60), tpm)
	}
	return q
}

func (q *localQuota) take(_ context.Context, tokens int) (time.Duration, string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	var wait time.Duration
	limit := ""
	var rs []*rate.Reservation
	if q.rpm != nil {
		r := q.rpm.ReserveN(now, 1)
		rs = append(rs, r)
		if d := r.DelayFrom(now); d > wait {
			wait, limit = d, "rpm"
		}
	}
	if q.tpm != nil {
		r := q.tpm.ReserveN(now, min(tokens, q.tpm.Burst()))
		rs = append(rs, r)
		if d := r.DelayFrom(now); d > wait {
			wait, limit = d, "tpm"
		}
	}
	if wait > 0 {
		for _, r := range rs {
			r.CancelAt(now)
		}
	}
	return wait, limit, nil
}
