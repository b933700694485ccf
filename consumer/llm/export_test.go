package llm

import (
	"context"
	"time"
)

// SetPrimaryQuota replaces the primary endpoint's quota with take.
func SetPrimaryQuota(c *Client, take func(ctx context.Context, tokens int) (time.Duration, string, error)) {
	c.endpoints[0].quota = quotaFunc(take)
}

type quotaFunc func(ctx context.Context, tokens int) (time.Duration, string, error)

func (f quotaFunc) take(ctx context.Context, tokens int) (time.Duration, string, error) {
	return f(ctx, tokens)
}

// SetBreakerWindow sets the shortest breaker window until the test ends.
func SetBreakerWindow(t interface{ Cleanup(func()) }, d time.Duration) {
	old := breakerWindow
	breakerWindow = d
	t.Cleanup(func() { breakerWindow = old })
}
