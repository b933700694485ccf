package devstack_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/devstack"
)

// TestBrokerDataDirSurvivesRestart: with a data directory, what was produced
// before a restart can be consumed after it.
func TestBrokerDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := devstack.BrokerConfig{Addr: "127.0.0.1:0", Partitions: 3, Topics: []string{"chat.requests"}, DataDir: dir}
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	b, err := devstack.StartBroker(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "chat.requests", Key: []byte("t/u/d"), Value: []byte("kept")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	b.Close()

	b, err = devstack.StartBroker(cfg, log)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer b.Close()
	cl, err = kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("chat.requests"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollFetches(ctx)
	if recs := fs.Records(); len(recs) != 1 || string(recs[0].Value) != "kept" {
		t.Fatalf("after restart: %d records, errors %v", len(recs), fs.Errors())
	}
}

// TestRedisTTLClockRuns: keys of the embedded Redis expire on the wall clock.
func TestRedisTTLClockRuns(t *testing.T) {
	r, err := devstack.StartRedis("")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rdb.Exists(ctx, "k").Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("key with a 300ms TTL still there after 5s")
		}
		time.Sleep(50 * time.Millisecond) // expiry has no event to await
	}
}
