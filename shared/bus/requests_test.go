package bus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{
		"Produce":        "produce",
		"OffsetCommit":   "offset_commit",
		"SASLHandshake":  "sasl_handshake",
		"ListOffsets":    "list_offsets",
		"InitProducerID": "init_producer_id",
	} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRequestsCounted produces three records one request at a time and
// reads them back: the client's requests_total counts each produce request
// and the fetches, by key.
func TestRequestsCounted(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	reg := prometheus.NewPedanticRegistry()
	cfg := DefaultConfig()
	cfg.Brokers = c.ListenAddrs()
	cl, err := NewClient(cfg, "test", slog.New(slog.DiscardHandler), reg,
		kgo.DefaultProduceTopic("t"), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for range 3 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for got := 0; got < 3; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 3 records: %v", got, err)
		}
		got += fs.NumRecords()
	}
	counter := func(key string) float64 {
		vec, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range vec {
			if f.GetName() != "sluice_kafka_test_requests_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				if m.GetLabel()[0].GetValue() == key {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	if n := counter("produce"); n != 3 {
		t.Errorf("produce requests: %v, want 3 (one per ProduceSync)", n)
	}
	if n := counter("fetch"); n < 1 {
		t.Errorf("fetch requests: %v, want at least 1", n)
	}
	if n := counter("metadata"); n < 1 {
		t.Errorf("metadata requests: %v, want at least 1", n)
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_kafka_test_requests_total"); err != nil || n < 3 {
		t.Errorf("%d series, %v", n, err)
	}
}
