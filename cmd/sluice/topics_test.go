package main

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/devstack"
)

// TestTopicsCreatesMissingTopics: `sluice topics` creates the four topics
// with the partition count it is given on a broker that creates none by
// itself, exits 0, and exits 0 again when they exist.
func TestTopicsCreatesMissingTopics(t *testing.T) {
	b, err := devstack.StartBroker(devstack.BrokerConfig{Addr: "127.0.0.1:0", Partitions: 1, NoAutoCreate: true},
		slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	t.Setenv("SLUICE_KAFKA_BROKERS", b.Addr())
	t.Setenv("SLUICE_REQUESTS_TOPIC", "shop.requests")
	args := []string{"topics", "--topic-partitions", "7", "--topic-replication-factor", "1"}
	for run1 := range 2 {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("run %d: exit code %d; stderr:\n%s", run1+1, code, errb.String())
		}
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"chat.callbacks", "chat.replies", "chat.requests.bulk", "chat.requests.dlq", "shop.requests"}
	if got := topics.Names(); !slices.Equal(got, want) {
		t.Fatalf("topics %v, want %v", got, want)
	}
	for _, name := range want {
		if n := len(topics[name].Partitions); n != 7 {
			t.Errorf("%s has %d partitions, want 7", name, n)
		}
	}
}

// TestTopicsSettingErrors: `sluice topics` refuses, with exit code 2, what
// it cannot create topics with, naming the setting.
func TestTopicsSettingErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"NoBrokers", []string{"topics"}, "SLUICE_KAFKA_BROKERS (--kafka-brokers): is required"},
		{"ZeroReplicas", []string{"topics", "--kafka-brokers", "127.0.0.1:1", "--topic-replication-factor", "0"}, "SLUICE_TOPIC_REPLICATION_FACTOR (--topic-replication-factor)"},
		{"NoPartitions", []string{"topics", "--kafka-brokers", "127.0.0.1:1", "--topic-partitions", "0"}, "SLUICE_TOPIC_PARTITIONS (--topic-partitions)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &errb); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("stderr does not name %q:\n%s", tt.want, errb.String())
			}
		})
	}
}
