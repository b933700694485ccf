// Package backoff times the pauses between retries: linear or exponential
// growth with jitter, so that many clients failing together do not retry
// together, and the pause a server asks for in its Retry-After header.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Linear returns the pause after the attempt-th failure (from 1): attempt ×
// base, capped at limit when limit > 0, plus a random extra of up to half
// of that.
func Linear(attempt int, base, limit time.Duration) time.Duration {
	d := time.Duration(max(attempt, 1)) * base
	if limit > 0 {
		d = min(d, limit)
	}
	return d + rand.N(d/2+1)
}

// Exponential returns the pause after the attempt-th consecutive failure
// (from 1): base doubled attempt-1 times, capped at limit when limit > 0,
// plus a random extra of up to half of that. It never returns less than the
// capped doubling, which bounds how often a failing client retries.
func Exponential(attempt int, base, limit time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && (limit <= 0 || d < limit); i++ {
		if d >= math.MaxInt64/4 { // d + d/2 must not overflow
			break
		}
		d *= 2
	}
	if limit > 0 {
		d = min(d, limit)
	}
	return d + rand.N(d/2+1)
}

// RetryAfter returns the pause h asks for before the next request:
// Retry-After-Ms (milliseconds, as OpenAI sends it) when present and
// positive, else Retry-After in seconds or as an HTTP date (the time left
// until then from now). It returns 0 when h asks for none or the value
// cannot be read.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return duration(ms, time.Millisecond)
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		return duration(s, time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// duration returns n units, 0 for n ≤ 0 or NaN, and the longest duration
// when n units would not fit one.
func duration(n float64, unit time.Duration) time.Duration {
	switch d := n * float64(unit); {
	case !(d > 0):
		return 0
	case d >= math.MaxInt64:
		return math.MaxInt64
	default:
		return time.Duration(d)
	}
}

// Sleep waits d, or until ctx ends; then it returns ctx's error. A d of 0 or
// less does not wait.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
