package producer

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"

	"sluice/shared/store"
)

// notifier wakes the waiters on this replica when a result is stored by any
// consumer, through the Redis channel on which the store announces the
// completion, with its reply, of every request that carries the queued
// marker (store.ParseAnnouncement): polls, and wait-mode requests whose
// reply partition this replica does not read. One subscription serves the
// whole replica; a message for a request nobody here waits for is dropped
// before its reply is decoded.
type notifier struct {
	ps      *redis.PubSub
	waiters *waiters
	once    sync.Once
}

func newNotifier(ctx context.Context, rdb redis.UniversalClient, channel string, w *waiters) (*notifier, error) {
	ps := rdb.Subscribe(ctx, channel)
	if _, err := ps.Receive(ctx); err != nil { // wait for the subscription
		_ = ps.Close()
		return nil, err
	}
	return &notifier{ps: ps, waiters: w}, nil
}

func (n *notifier) run(ctx context.Context) {
	ch := n.ps.Channel(redis.WithChannelSize(4096))
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			a, ok := store.ParseAnnouncement(msg.Payload)
			if !ok || !n.waiters.has(a.RequestID) {
				continue
			}
			if r, err := a.Reply(); err == nil {
				n.waiters.wake(a.RequestID, &r)
			} else {
				n.waiters.wake(a.RequestID, nil) // the waiter reads the store
			}
		}
	}
}

func (n *notifier) close() { n.once.Do(func() { _ = n.ps.Close() }) }
