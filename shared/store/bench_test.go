package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"sluice/shared/devstack/stacktest"
	"sluice/shared/store"
)

// BenchmarkComplete is the consumer's completion of one answered request
// (the script storing the result and appending two turns), one at a time
// against the machine's Redis, under a prefix of its own. It is skipped
// when no Redis answers: miniredis runs scripts in a Lua interpreter built
// per call, whose cost says nothing of Redis's.
func BenchmarkComplete(b *testing.B) {
	addr := stacktest.RealRedis()
	if addr == "" {
		b.Skipf("no Redis answers PING at %s: skipped", stacktest.DefaultRedisAddr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	b.Cleanup(func() { _ = rdb.Close() })
	s := mustNewStore(b, rdb)
	d := store.Dialog{Tenant: "t1", User: "u1", ID: "0123456789abcdef0123456789abcdef"}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprintf("req-%d", i)
		r := doneReply(d, id, "订单付款后 24 小时内发货。")
		if _, fresh, err := s.Complete(ctx, d, r, t0, turnsOf(id, "什么时候发货？", r.Answer)...); err != nil || !fresh {
			b.Fatalf("Complete: fresh %v, %v", fresh, err)
		}
	}
}
