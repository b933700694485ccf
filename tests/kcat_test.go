package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/envelope"
)

// kcat runs Debian's kcat (librdkafka), a third-party Kafka client, and
// returns its standard output.
func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// TestWireFormatWithKcat is a bot that speaks Kafka directly: it produces a
// v1 request with kcat, its reply topic set to its own topic, and reads the
// v1 reply there with kcat. A poison record lands on the DLQ with the error.
func TestWireFormatWithKcat(t *testing.T) {
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Skip("kcat not installed (Debian package kcat); .ci/run installs it")
	}
	s := newStack(t, backends()[0], stackOptions{partitions: 4})
	s.addConsumer(testConsumerConfig())
	broker := s.brokers[0]

	// The bot's own reply topic exists before it asks.
	botTopic := "bot.replies." + randomHex(4)
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, -1, nil, botTopic); err != nil {
		t.Fatal(err)
	}

	dialog := newDialog()
	now := time.Now().UTC()
	req := map[string]any{
		"v": 1, "request_id": "bot-" + randomHex(8), "tenant": "shop-1", "user": "logistics-bot",
		"dialog_id": dialog, "text": "When does order 1234 ship?",
		"created_at": now.Format(time.RFC3339Nano), "deadline": now.Add(time.Minute).Format(time.RFC3339Nano),
		"reply":        map[string]any{"topic": botTopic, "partition": 0, "callback_url": ""},
		"future_field": "ignored",
	}
	value, _ := json.Marshal(req)
	key := "shop-1/logistics-bot/" + dialog
	traceparent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	kcat(t, string(value)+"\n", "-P", "-b", broker, "-t", s.bus.RequestsTopic, "-k", key,
		"-H", "traceparent="+traceparent, "-X", "partitioner=murmur2_random")

	out := kcat(t, "", "-C", "-b", broker, "-t", botTopic, "-o", "beginning", "-c", "1",
		"-f", "%k\t%h\t%s\n")
	parts := strings.SplitN(strings.TrimRight(out, "\n"), "\t", 3)
	if len(parts) != 3 {
		t.Fatalf("kcat output %q", out)
	}
	if parts[0] != req["request_id"] {
		t.Errorf("reply key %q, want the request id %q", parts[0], req["request_id"])
	}
	if !strings.Contains(parts[1], "traceparent="+traceparent) {
		t.Errorf("reply headers %q lack the request's traceparent", parts[1])
	}
	rep, err := envelope.DecodeReply([]byte(parts[2]))
	if err != nil {
		t.Fatalf("reply %q: %v", parts[2], err)
	}
	if rep.V != 1 || rep.Status != envelope.StatusDone || rep.RequestID != req["request_id"] ||
		rep.Tenant != "shop-1" || rep.User != "logistics-bot" || rep.DialogID != dialog ||
		rep.Source != envelope.SourceLLM || !strings.Contains(rep.Answer, "ship") || rep.FinishedAt.IsZero() {
		t.Fatalf("reply %+v", rep)
	}

	// A record that is not a v1 request goes to the DLQ with the reason.
	kcat(t, `{"v":1,"request_id":"x"}`+"\n", "-P", "-b", broker, "-t", s.bus.RequestsTopic, "-k", key,
		"-X", "partitioner=murmur2_random")
	dlq := kcat(t, "", "-C", "-b", broker, "-t", s.bus.DLQTopic, "-o", "beginning", "-c", "1", "-f", "%h\t%s\n")
	if !strings.Contains(dlq, envelope.HeaderError+"=") || !strings.Contains(dlq, "missing required field") ||
		!strings.HasSuffix(strings.TrimRight(dlq, "\n"), `{"v":1,"request_id":"x"}`) {
		t.Fatalf("DLQ record %q lacks the error header or the original bytes", dlq)
	}
}
