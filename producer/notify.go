package producer

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// notifier wakes long-polls on this replica when a result is stored by any
// consumer, through the Redis channel "<prefix>:results" on which the store
// announces "<tenant>/<user>/<dialog>/<request_id>". One subscription serves
// the whole replica; messages for requests nobody here polls are dropped at
// once.
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
			if i := strings.LastIndexByte(msg.Payload, '/'); i >= 0 {
				n.waiters.wake(msg.Payload[i+1:], nil)
			}
		}
	}
}

func (n *notifier) close() { n.once.Do(func() { _ = n.ps.Close() }) }
