package llm_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"sluice/consumer/llm"
	"sluice/shared/devstack/stacktest"
	"sluice/shared/envelope"
)

// quotaBackend returns the options that give a client its quota store; the
// clients of one backend share it, as consumer processes share Redis.
type quotaBackend func(t *testing.T) []llm.Option

func TestQuotaLocal(t *testing.T) {
	testQuota(t, func(*testing.T) []llm.Option { return nil }, false)
}

func TestQuotaMiniredis(t *testing.T) {
	_, rdb := stacktest.Miniredis(t)
	testQuota(t, redisBackend(rdb), true)
}

func TestQuotaRedis(t *testing.T) {
	addr := stacktest.RealRedis()
	if addr == "" {
		t.Skipf("no Redis answers PING at %s (or %s=miniredis): real-Redis quota tests skipped", stacktest.DefaultRedisAddr, stacktest.EnvRedis)
	}
	rdb := stacktest.Client(t, addr)
	testQuota(t, redisBackend(rdb), true)
}

// redisBackend puts each subtest's quota under a prefix of its own and
// deletes its keys at the end: the real Redis is shared.
func redisBackend(rdb redis.UniversalClient) quotaBackend {
	return func(t *testing.T) []llm.Option {
		var b [8]byte
		_, _ = rand.Read(b[:])
		prefix := "sluicetest:" + hex.EncodeToString(b[:]) + ":"
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var keys []string
			iter := rdb.Scan(ctx, 0, prefix+"*", 100).Iterator()
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			if err := iter.Err(); err != nil {
				t.Errorf("cleanup: %v", err)
				return
			}
			if len(keys) == 0 {
				t.Errorf("cleanup: no quota keys under %s", prefix)
				return
			}
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		return []llm.Option{llm.WithRedis(rdb, prefix)}
	}
}

func testQuota(t *testing.T, backend quotaBackend, shared bool) {
	t.Run("RPM", func(t *testing.T) {
		s, url := serveScript(t, ok("好的"))
		cfg := fastConfig(url)
		cfg.RPM = 2
		opts := backend(t)
		c := mustNew(t, cfg, opts...)
		for i := range 2 {
			if a, _ := answer(t, c, "hi", 2*time.Second); a.Source != envelope.SourceLLM {
				t.Fatalf("request %d within the quota: %+v", i, a)
			}
		}
		// The next room is 30 s away, past the deadline: fall back without
		// waiting for it.
		a, _ := answer(t, c, "hi", 2*time.Second)
		if a.Source != envelope.SourceCanned || s.Calls() != 2 {
			t.Fatalf("over the quota: %+v after %d calls, want canned after 2", a, s.Calls())
		}
		wantMetric(t, c, "sluice_llm_limited_total", `sluice_llm_limited_total{limit="rpm",outcome="fallback"} 1`+"\n")
		if shared {
			// Another process on the same Redis finds the quota used up.
			other := mustNew(t, cfg, opts...)
			if a, _ := answer(t, other, "hi", 2*time.Second); a.Source != envelope.SourceCanned || s.Calls() != 2 {
				t.Fatalf("second process: %+v after %d calls, want canned without a call", a, s.Calls())
			}
		}
	})
	t.Run("TPM", func(t *testing.T) {
		s, url := serveScript(t, ok("好的"))
		cfg := fastConfig(url)
		cfg.TPM, cfg.MaxTokens = 1000, 600 // a call costs 600 and the prompt
		c := mustNew(t, cfg, backend(t)...)
		if a, _ := answer(t, c, "hi", 2*time.Second); a.Source != envelope.SourceLLM {
			t.Fatalf("first call: %+v", a)
		}
		if a, _ := answer(t, c, "hi", 2*time.Second); a.Source != envelope.SourceCanned || s.Calls() != 1 {
			t.Fatalf("second call: %+v after %d calls, want canned without a call", a, s.Calls())
		}
		wantMetric(t, c, "sluice_llm_limited_total", `sluice_llm_limited_total{limit="tpm",outcome="fallback"} 1`+"\n")
	})
}

// TestQuotaWaitsWithinDeadline checks that a request waits for quota room
// that comes before its deadline.
func TestQuotaWaitsWithinDeadline(t *testing.T) {
	_, url := serveScript(t, ok("好的"))
	c := mustNew(t, fastConfig(url))
	var asked atomic.Int32
	llm.SetPrimaryQuota(c.Client, func(context.Context, int) (time.Duration, string, error) {
		if asked.Add(1) == 1 {
			return 200 * time.Millisecond, "rpm", nil
		}
		return 0, "", nil
	})
	a, took := answer(t, c, "hi", 2*time.Second)
	if a.Source != envelope.SourceLLM || took < 200*time.Millisecond || asked.Load() != 2 {
		t.Fatalf("answer %+v after %v and %d quota checks, want llm after waiting 200ms", a, took, asked.Load())
	}
	wantMetric(t, c, "sluice_llm_limited_total", `sluice_llm_limited_total{limit="rpm",outcome="waited"} 1`+"\n")
}

// TestQuotaRedisDown checks that the quota lets calls through when Redis
// fails.
func TestQuotaRedisDown(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	m.Close()
	s, url := serveScript(t, func(_ int, w http.ResponseWriter, _ *http.Request) { writeCompletion(w, "好的") })
	cfg := fastConfig(url)
	cfg.RPM = 1
	c := mustNew(t, cfg, llm.WithRedis(rdb, "x:"))
	if a, _ := answer(t, c, "hi", 2*time.Second); a.Source != envelope.SourceLLM || s.Calls() != 1 {
		t.Fatalf("answer %+v, want llm despite the quota store being down", a)
	}
	wantMetric(t, c, "sluice_llm_quota_errors_total", "sluice_llm_quota_errors_total 1\n")
}
