package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"sluice/shared/devstack/stacktest"
	"sluice/shared/store"
)

func TestStreamMiniredis(t *testing.T) {
	testStream(t, func(t *testing.T, cfg func(*store.Config)) (*store.Redis, redis.UniversalClient) {
		m := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		return mustNewStoreWith(t, rdb, cfg), rdb
	})
}

func TestStreamRedis(t *testing.T) {
	addr := stacktest.RealRedis()
	if addr == "" {
		t.Skipf("no Redis answers PING at %s (or %s=miniredis): real-Redis stream tests skipped", stacktest.DefaultRedisAddr, stacktest.EnvRedis)
	}
	testStream(t, func(t *testing.T, cfg func(*store.Config)) (*store.Redis, redis.UniversalClient) {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = rdb.Close() })
		return mustNewStoreWith(t, rdb, cfg), rdb
	})
}

// streamKey is the documented key of a request's answer stream.
func streamKey(s *store.Redis, d store.Dialog, id string) string {
	return prefixOf(s) + ":{" + d.Tenant + ":" + d.User + ":" + d.ID + "}:stream:" + id
}

func deltas(texts ...string) []store.StreamEntry {
	out := make([]store.StreamEntry, len(texts))
	for i, t := range texts {
		out[i] = store.StreamEntry{Kind: store.StreamDelta, Seq: i, Text: t}
	}
	return out
}

func testStream(t *testing.T, newStore func(t *testing.T, cfg func(*store.Config)) (*store.Redis, redis.UniversalClient)) {
	ctx := context.Background()
	d := store.Dialog{Tenant: "t1", User: "u1", ID: "0123456789abcdef0123456789abcdef"}

	t.Run("AppendThenReadInOrder", func(t *testing.T) {
		s, _ := newStore(t, nil)
		want := append(deltas("你好", ", 138", "0013"), store.StreamEntry{Kind: store.StreamReset},
			store.StreamEntry{Kind: store.StreamDelta, Seq: 3, Text: "again"},
			store.StreamEntry{Kind: store.StreamDone, Text: `{"status":"done"}`})
		last, err := s.AppendStream(ctx, d, "r1", want[:2]...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendStream(ctx, d, "r1", want[2:]...); err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadStream(ctx, d, "r1", "0", 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("read %d entries, want %d: %+v", len(got), len(want), got)
		}
		for i := range want {
			if got[i].Kind != want[i].Kind || got[i].Seq != want[i].Seq || got[i].Text != want[i].Text || got[i].ID == "" {
				t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
			}
		}
		if got[1].ID != last {
			t.Errorf("AppendStream returned %q, the second entry's id is %q", last, got[1].ID)
		}
		if !got[len(got)-1].Final() || got[0].Final() {
			t.Error("Final: only done/error end a stream")
		}
		after, err := s.ReadStream(ctx, d, "r1", got[2].ID, 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != 2 || after[0].ID != got[3].ID || after[1].ID != got[4].ID {
			t.Errorf("read after %s (count 2) = %+v, want entries 3 and 4", got[2].ID, after)
		}
	})

	t.Run("BeginResetsOnlyAStartedStream", func(t *testing.T) {
		s, _ := newStore(t, nil)
		begin := store.StreamEntry{Kind: store.StreamBegin}
		if _, err := s.AppendStream(ctx, d, "rb", append([]store.StreamEntry{begin}, deltas("a")...)...); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendStream(ctx, d, "rb", append([]store.StreamEntry{begin}, deltas("b")...)...); err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadStream(ctx, d, "rb", "0", 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range got {
			kinds = append(kinds, e.Kind+":"+e.Text)
		}
		if want := "delta:a reset: delta:b"; strings.Join(kinds, " ") != want {
			t.Fatalf("two deliveries that begin = %q, want %q", strings.Join(kinds, " "), want)
		}
	})

	t.Run("TTLAndSlot", func(t *testing.T) {
		s, rdb := newStore(t, func(c *store.Config) { c.StreamTTL = 30 * time.Second })
		if _, err := s.AppendStream(ctx, d, "r2", deltas("a")...); err != nil {
			t.Fatal(err)
		}
		key := streamKey(s, d, "r2")
		ttl, err := rdb.PTTL(ctx, key).Result()
		if err != nil || ttl <= 0 || ttl > 30*time.Second {
			t.Errorf("TTL of %s = %v, %v; want (0, 30s]", key, ttl, err)
		}
		if keySlot(key) != keySlot(reqKey(s, d, "r2")) {
			t.Errorf("stream %s and result %s are in different cluster slots", key, reqKey(s, d, "r2"))
		}
	})

	t.Run("CappedAtMaxLen", func(t *testing.T) {
		s, rdb := newStore(t, func(c *store.Config) { c.StreamMaxLen = 100 })
		texts := make([]string, 50)
		for i := range texts {
			texts[i] = "x"
		}
		for range 10 {
			if _, err := s.AppendStream(ctx, d, "r3", deltas(texts...)...); err != nil {
				t.Fatal(err)
			}
		}
		n, err := rdb.XLen(ctx, streamKey(s, d, "r3")).Result()
		if err != nil {
			t.Fatal(err)
		}
		// MAXLEN ~ trims whole nodes: the stream keeps at least the cap
		// and less than the cap plus one node (100 entries by default).
		if n < 100 || n >= 300 {
			t.Errorf("stream of 500 entries capped at 100 holds %d", n)
		}
	})

	t.Run("ReadBlocksUntilAppend", func(t *testing.T) {
		s, _ := newStore(t, nil)
		errc := make(chan error, 1)
		got := make(chan []store.StreamEntry, 1)
		go func() {
			e, err := s.ReadStream(ctx, d, "r4", "0", 10, 10*time.Second)
			got <- e
			errc <- err
		}()
		// The read may start before or after the append: either way it
		// returns the entry, not after its 10 s bound.
		if _, err := s.AppendStream(ctx, d, "r4", deltas("hi")...); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-got:
			if err := <-errc; err != nil || len(e) != 1 || e[0].Text != "hi" {
				t.Fatalf("blocked read = %+v, %v", e, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a blocked read did not return on append")
		}
	})

	t.Run("ReadEmptyEndsWithoutError", func(t *testing.T) {
		s, _ := newStore(t, nil)
		e, err := s.ReadStream(ctx, d, "nosuch", "0", 10, 20*time.Millisecond)
		if err != nil || len(e) != 0 {
			t.Fatalf("read of a missing stream = %+v, %v; want nothing", e, err)
		}
	})

	t.Run("ReadsBeyondBlockingSlotsPoll", func(t *testing.T) {
		s, _ := newStore(t, func(c *store.Config) { c.StreamBlockingReads = 0 })
		if _, err := s.AppendStream(ctx, d, "r5", deltas("a", "b")...); err != nil {
			t.Fatal(err)
		}
		e, err := s.ReadStream(ctx, d, "r5", "0", 10, time.Second)
		if err != nil || len(e) != 2 {
			t.Fatalf("polling read = %+v, %v", e, err)
		}
		e, err = s.ReadStream(ctx, d, "r5", e[1].ID, 10, time.Second)
		if err != nil || len(e) != 0 {
			t.Fatalf("polling read past the end = %+v, %v", e, err)
		}
	})

	t.Run("ReadEndsWithContext", func(t *testing.T) {
		s, _ := newStore(t, nil)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = s.ReadStream(cctx, d, "r6", "0", 10, time.Minute)
		}()
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("a blocked read outlived its context")
		}
	})

}

func TestStreamConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		flag string
		mod  func(*store.Config)
	}{
		{"stream-ttl", func(c *store.Config) { c.StreamTTL = 0 }},
		{"stream-max-len", func(c *store.Config) { c.StreamMaxLen = 10 }},
		{"stream-blocking-reads", func(c *store.Config) { c.StreamBlockingReads = -1 }},
	} {
		c := store.DefaultConfig()
		tt.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("%s out of range: Validate() = %v, want an error naming it", tt.flag, err)
		}
	}
	if err := store.DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
}
