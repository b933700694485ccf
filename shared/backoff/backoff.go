// Package backoff times the pauses between retries: linear or exponential
// growth with jitter, so that many clients failing together do not retry
// together.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
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

// Sleep waits d, or until ctx ends; then it returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
