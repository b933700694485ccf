// Package backoff times the pauses between retries: linear growth with
// jitter, so that many clients failing together do not retry together.
package backoff

import (
	"context"
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
