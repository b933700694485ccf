package producer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/bus"
	"sluice/shared/envelope"
)

// replyRouter reads this replica's share of the replies topic and wakes the
// handlers waiting for those replies.
//
// The share comes from a Kafka consumer group of all ingress replicas (the
// reply group): Kafka gives each replica its own partitions, so no reply is
// read by two replicas while there are at least as many partitions as
// replicas, and moves the partitions of a replica that died to the others
// after the session timeout. Offsets are committed, so a partition's new
// owner resumes where the old one stopped. A request names one of the
// partitions its replica owns as reply.partition.
//
// Correctness does not rest on the routing: when a replica loses a
// partition, its waiters for replies on it get the queued marker (see
// Server.rescue), so their results are announced through the store and the
// notifier wakes them. With ReplyPartitions set, the replica reads exactly
// those partitions without a group.
type replyRouter struct {
	s  *Server
	cl *kgo.Client

	mu    sync.Mutex
	owned []int32
	view  atomic.Pointer[[]int32]
	next  atomic.Uint64
}

func newReplyRouter(ctx context.Context, s *Server, static []int32) (*replyRouter, error) {
	r := &replyRouter{s: s}
	r.view.Store(&[]int32{})
	topic := s.bus.RepliesTopic
	opts := []kgo.Opt{kgo.FetchMaxWait(s.cfg.ReplyFetchMaxWait)}
	if len(static) > 0 {
		offsets, err := endOffsets(ctx, s.cl, topic, static)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
		r.set(static)
	} else {
		opts = append(opts,
			kgo.ConsumerGroup(s.bus.ReplyGroup),
			kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
			kgo.SessionTimeout(s.cfg.ReplySessionTimeout),
			// A replica killed mid-rebalance holds the others up this long
			// at most (its revoke only commits), not the client's minute.
			kgo.RebalanceTimeout(s.cfg.ReplySessionTimeout+5*time.Second),
			kgo.HeartbeatInterval(min(s.cfg.ReplySessionTimeout/3, s.cfg.ReplySessionTimeout)),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { r.add(m[topic]) }),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
				r.remove(ctx, m[topic])
				_ = cl.CommitUncommittedOffsets(ctx)
			}),
			kgo.OnPartitionsLost(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) { r.remove(ctx, m[topic]) }),
		)
	}
	cl, err := bus.NewClient(s.bus, "replies", s.log, s.reg, opts...)
	if err != nil {
		return nil, err
	}
	r.cl = cl
	return r, nil
}

// endOffsets returns the current end offset of each of parts.
func endOffsets(ctx context.Context, cl *kgo.Client, topic string, parts []int32) (map[int32]kgo.Offset, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list reply partitions: %w", err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("list reply partitions of %s: %w", topic, err)
	}
	out := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if slices.Contains(parts, o.Partition) {
			out[o.Partition] = kgo.NewOffset().At(o.Offset)
		}
	})
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("reply partition %d does not exist in %s", p, topic)
		}
	}
	return out, nil
}

func (r *replyRouter) set(parts []int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.owned = slices.Clone(parts)
	r.publish()
}

func (r *replyRouter) add(parts []int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range parts {
		if !slices.Contains(r.owned, p) {
			r.owned = append(r.owned, p)
		}
	}
	r.publish()
}

// remove stops routing replies to parts and has the waiters for replies on
// them woken through the store. New requests see the smaller view before
// the waiters are looked up, and a request checks the view after it
// registered its waiter (Server.postChat), so no waiter falls between.
func (r *replyRouter) remove(ctx context.Context, parts []int32) {
	if len(parts) == 0 {
		return
	}
	r.mu.Lock()
	r.owned = slices.DeleteFunc(r.owned, func(p int32) bool { return slices.Contains(parts, p) })
	r.publish()
	r.mu.Unlock()
	go r.s.rescue(context.WithoutCancel(ctx), parts)
}

func (r *replyRouter) publish() {
	v := slices.Clone(r.owned)
	slices.Sort(v)
	r.view.Store(&v)
	r.s.m.replyPartitions.Set(float64(len(v)))
}

// partitions returns the partitions this replica reads now.
func (r *replyRouter) partitions() []int32 { return *r.view.Load() }

// owns reports whether this replica reads partition p now.
func (r *replyRouter) owns(p int32) bool { return slices.Contains(*r.view.Load(), p) }

// partition returns the reply partition for the next request: one this
// replica reads, or AnyPartition while it reads none (more replicas than
// partitions, or a rebalance under way); the request then carries the
// queued marker and the store's announcement wakes its waiter.
func (r *replyRouter) partition() int32 {
	v := *r.view.Load()
	if len(v) == 0 {
		return envelope.AnyPartition
	}
	return v[r.next.Add(1)%uint64(len(v))]
}

// run reads replies until ctx ends.
func (r *replyRouter) run(ctx context.Context) {
	for {
		fetches := r.cl.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return
		}
		bus.LogFetchErrors(r.s.log, "reply fetch error", fetches)
		fetches.EachRecord(func(rec *kgo.Record) {
			// The key is the request id: a reply nobody here waits for any
			// more (its wait ran out, or the store's announcement was
			// faster) is not decoded.
			if !r.s.waiters.has(string(rec.Key)) {
				r.s.m.replies.With("no_waiter").Inc()
				return
			}
			reply, err := envelope.DecodeReply(rec.Value)
			if err != nil {
				r.s.m.replies.With("invalid").Inc()
				r.s.log.Warn("undecodable reply record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
				return
			}
			if r.s.waiters.wake(reply.RequestID, &reply) {
				r.s.m.replies.With("woke").Inc()
			} else {
				r.s.m.replies.With("no_waiter").Inc()
			}
		})
	}
}

// close leaves the reply group, handing this replica's partitions to the others.
func (r *replyRouter) close() { r.cl.Close() }
