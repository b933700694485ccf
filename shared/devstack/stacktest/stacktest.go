// Package stacktest gives every test of Sluice the same Kafka and Redis set-up,
// so the producer's, the consumer's and the end-to-end tests run on one
// stack, chosen by the environment as franz-go's tests choose theirs by
// KGO_SEEDS:
//
//	SLUICE_TEST_KAFKA_BROKERS  a Kafka cluster to use (host:port,...); unset:
//	                           an embedded broker (kfake) per test
//	SLUICE_TEST_REDIS_ADDR     the Redis to use, default 127.0.0.1:6379 when it
//	                           answers PING; "miniredis", or no answer: an
//	                           embedded miniredis per test
//
// Names on a shared cluster or Redis are made unique per test (Isolate, the
// key prefix of RedisAddr) and Redis keys are deleted when the test ends.
package stacktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"sluice/shared/bus"
	"sluice/shared/devstack"
)

// Environment variables that choose the stack.
const (
	EnvKafka = "SLUICE_TEST_KAFKA_BROKERS"
	EnvRedis = "SLUICE_TEST_REDIS_ADDR"
)

// DefaultRedisAddr is used when EnvRedis is unset and a Redis answers there.
const DefaultRedisAddr = "127.0.0.1:6379"

// Isolate returns cfg with topic and group names of their own, so tests
// sharing a cluster never meet.
func Isolate(cfg bus.Config) bus.Config {
	suffix := randomHex(4)
	cfg.RequestsTopic += "." + suffix
	cfg.BulkTopic += "." + suffix
	cfg.RepliesTopic += "." + suffix
	cfg.DLQTopic += "." + suffix
	cfg.CallbacksTopic += "." + suffix
	cfg.Group += "-" + suffix
	cfg.ReplyGroup += "-" + suffix
	cfg.CallbackGroup += "-" + suffix
	return cfg
}

// Kafka returns the brokers of the cluster EnvKafka names or of a new
// embedded broker that auto-creates topics with cfg.Partitions, on which
// cfg's topics exist with cfg.Partitions (existing topics are kept).
func Kafka(tb testing.TB, cfg bus.Config) []string {
	tb.Helper()
	brokers := strings.Split(os.Getenv(EnvKafka), ",")
	if brokers[0] == "" {
		return []string{Broker(tb, cfg, false).Addr()}
	}
	cfg.Brokers = brokers
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.CreateTopics(ctx, cfg, slog.New(slog.DiscardHandler)); err != nil {
		tb.Fatalf("%s: %v", EnvKafka, err)
	}
	return brokers
}

// Broker starts an embedded broker for one test, whatever EnvKafka says,
// with cfg's topics of cfg.Partitions; strict refuses to create topics a
// client names (as Apache Kafka with auto.create.topics.enable=false). It
// serves unit tests that use fixed topic names, or stop the broker. It is
// closed when the test ends.
func Broker(tb testing.TB, cfg bus.Config, strict bool) *devstack.Broker {
	tb.Helper()
	b, err := devstack.StartBroker(devstack.BrokerConfig{
		Addr: "127.0.0.1:0", Partitions: cfg.Partitions, NoAutoCreate: strict,
		Topics: cfg.Topics(),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("start the embedded broker: %v", err)
	}
	tb.Cleanup(b.Close)
	return b
}

var (
	probeOnce sync.Once
	realRedis string // "" when none answers
)

// RealRedis returns the address of the machine's Redis (EnvRedis or
// DefaultRedisAddr) when it answers PING, else "".
func RealRedis() string {
	probeOnce.Do(func() {
		addr := os.Getenv(EnvRedis)
		if addr == "miniredis" {
			return
		}
		if addr == "" {
			addr = DefaultRedisAddr
		}
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if rdb.Ping(ctx).Err() == nil {
			realRedis = addr
		}
	})
	return realRedis
}

// Redis returns the address of the Redis a test uses (RealRedis, else a new
// miniredis) and a key prefix of the test's own, whose keys are deleted when
// the test ends. It says which Redis in the test log.
func Redis(tb testing.TB) (addr, prefix string) {
	tb.Helper()
	prefix = "sluicetest:" + randomHex(4)
	if addr = RealRedis(); addr == "" {
		m, _ := Miniredis(tb)
		tb.Logf("redis: miniredis at %s", m.Addr())
		return m.Addr(), prefix
	}
	tb.Logf("redis: real Redis at %s, keys under %s:", addr, prefix)
	tb.Cleanup(func() { DeleteKeys(addr, prefix+":*") })
	return addr, prefix
}

// Miniredis starts an embedded Redis for one test, for tests that stop and
// restart it, and returns it with a client of it.
func Miniredis(tb testing.TB) (*miniredis.Miniredis, *redis.Client) {
	tb.Helper()
	m := miniredis.RunT(tb)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	tb.Cleanup(func() { _ = rdb.Close() })
	return m, rdb
}

// Client returns a client of addr, closed when the test ends.
func Client(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// DeleteKeys deletes the keys of addr's Redis that match pattern.
func DeleteKeys(addr, pattern string) {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = devstack.DeleteKeys(ctx, rdb, pattern)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
