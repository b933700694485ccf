package consumer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"sluice/consumer"
	"sluice/shared/settings"
)

// TestRefusedSessionTimeoutStopsRun: a session timeout the broker refuses
// (kfake, like Apache Kafka, allows 6 s at the least) stops Run with an
// error naming the setting and the broker's reason, instead of retrying to
// join for ever while reporting ready.
func TestRefusedSessionTimeoutStopsRun(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.SessionTimeout = 3 * time.Second
	c, err := consumer.New(cfg, e.bus, e.store, &fakeAnswerer{}, e.log, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	err = c.Run(ctx)
	var se *settings.Error
	if !errors.As(err, &se) || se.Flag != "session-timeout" || !strings.Contains(err.Error(), "INVALID_SESSION_TIMEOUT") {
		t.Fatalf("Run = %v, want an error about --session-timeout with the broker's reason", err)
	}
	if c.Ready() {
		t.Error("a consumer that could not join reports ready")
	}
}

// TestReadyAfterJoining: Ready turns true once the consumer is in its
// group, and false again when it drains.
func TestReadyAfterJoining(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, testConfig(), &fakeAnswerer{})
	deadline := time.Now().Add(waitFor)
	for !r.c.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("not ready %v after start", waitFor)
		}
		time.Sleep(10 * time.Millisecond) // joining has no event to await here
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if r.c.Ready() {
		t.Error("ready after Run returned")
	}
}
