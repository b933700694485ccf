package tests

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/shared/admin"
	"sluice/shared/callback"
	"sluice/shared/store"
)

// TestConsumerNotReadyWithoutRedis: a consumer whose Redis does not answer
// says so on /readyz, naming Redis, while one with a working Redis becomes
// ready: a consumer cannot answer anything without Redis.
func TestConsumerNotReadyWithoutRedis(t *testing.T) {
	s := newStack(t, backends()[0], stackOptions{partitions: 2})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A Redis that never answers: the listener stays open, nothing reads.
	dead := ln.Addr().String()
	t.Cleanup(func() { ln.Close() })

	lcfg := llm.DefaultConfig()
	lcfg.BaseURL = s.llmURL
	open := func(redisAddr string) *admin.Server {
		reg := prometheus.NewRegistry()
		adm := admin.New(reg, testLogger(t))
		ctx, cancel := context.WithCancel(context.Background())
		c, err := consumer.Open(ctx, consumer.Settings{
			Consumer: testConsumerConfig(), Bus: s.bus, Redis: store.ClientConfig{Addrs: []string{redisAddr}},
			Store: s.storeConfig(), LLM: lcfg, Callbacks: callback.DefaultConfig(),
		}, testLogger(t), reg, adm)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done; c.Close() })
		return adm
	}
	readyz := func(adm *admin.Server) (int, string) {
		rec := httptest.NewRecorder()
		adm.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	good, bad := open(s.redisAddr), open(dead)

	deadline := time.Now().Add(30 * time.Second)
	for !ready(good) {
		if time.Now().After(deadline) {
			code, body := readyz(good)
			t.Fatalf("consumer with a working Redis not ready: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond) // readiness has no event to await
	}
	code, body := readyz(bad)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"redis"`) || strings.Contains(body, `"redis":"ok"`) {
		t.Fatalf("consumer without Redis: /readyz %d %s, want 503 naming redis", code, body)
	}
}
