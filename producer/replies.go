package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/bus"
	"sluice/shared/envelope"
)

// replyRouter reads this replica's partitions of the replies topic and wakes
// the handlers waiting for them.
type replyRouter struct {
	s     *Server
	cl    *kgo.Client
	parts []int32
	next  atomic.Uint64
}

// newReplyRouter resolves the partitions to read and starts reading them at
// their current end, so that no reply produced after start is missed.
func newReplyRouter(ctx context.Context, s *Server, want []int32) (*replyRouter, error) {
	adm := kadm.NewClient(s.cl)
	topic := s.bus.RepliesTopic
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list reply partitions: %w", err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("list reply partitions of %s: %w", topic, err)
	}
	offsets := map[int32]kgo.Offset{}
	var parts []int32
	ends.Each(func(o kadm.ListedOffset) {
		if len(want) > 0 && !slices.Contains(want, o.Partition) {
			return
		}
		offsets[o.Partition] = kgo.NewOffset().At(o.Offset)
		parts = append(parts, o.Partition)
	})
	if len(parts) == 0 {
		return nil, fmt.Errorf("none of the reply partitions %v exists in %s", want, topic)
	}
	slices.Sort(parts)
	cl, err := bus.NewClient(s.bus, "replies", s.log, s.reg,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxWait(s.cfg.ReplyFetchMaxWait),
	)
	if err != nil {
		return nil, err
	}
	return &replyRouter{s: s, cl: cl, parts: parts}, nil
}

// partition returns the reply partition for the next request.
func (r *replyRouter) partition() int32 {
	return r.parts[r.next.Add(1)%uint64(len(r.parts))]
}

// run reads replies until ctx ends.
func (r *replyRouter) run(ctx context.Context) {
	for {
		fetches := r.cl.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				r.s.log.Warn("reply fetch error", "topic", topic, "partition", p, "err", err)
			}
		})
		fetches.EachRecord(func(rec *kgo.Record) {
			reply, err := envelope.DecodeReply(rec.Value)
			if err != nil {
				r.s.m.replies.WithLabelValues("invalid").Inc()
				r.s.log.Warn("undecodable reply record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
				return
			}
			if r.s.waiters.wake(reply.RequestID, &reply) {
				r.s.m.replies.WithLabelValues("woke").Inc()
			} else {
				r.s.m.replies.WithLabelValues("no_waiter").Inc()
			}
		})
	}
}

func (r *replyRouter) close() { r.cl.Close() }
