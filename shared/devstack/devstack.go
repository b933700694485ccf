// Package devstack runs the embedded stand-ins of Sluice's dependencies: an
// in-process Kafka (franz-go kfake, real Kafka protocol) and an in-process
// Redis (miniredis). They serve `sluice dev` and the tests; production points
// the same binary at Apache Kafka and Redis.
package devstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
)

// BrokerConfig configures the embedded Kafka.
type BrokerConfig struct {
	// Addr is where the broker listens, host:port; port 0 picks a free one.
	Addr string
	// Partitions of the topics created at start and of auto-created topics.
	Partitions int32
	// Topics are created at start.
	Topics []string
	// DataDir, when set, keeps the broker's data across restarts.
	DataDir string
	// NoAutoCreate refuses to create a topic a client names (as Apache
	// Kafka with auto.create.topics.enable=false); by default a produce or
	// metadata request creates it.
	NoAutoCreate bool
}

// Broker is an embedded Kafka broker.
type Broker struct {
	c    *kfake.Cluster
	addr string
}

// StartBroker starts an embedded single-node Kafka cluster that allows topic
// auto-creation. It returns an error when the address cannot be listened on
// or the data directory cannot be used.
func StartBroker(cfg BrokerConfig, log *slog.Logger) (*Broker, error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker address %q: %w", cfg.Addr, err)
	}
	var pn int
	if _, err := fmt.Sscan(port, &pn); err != nil {
		return nil, fmt.Errorf("broker address %q: bad port", cfg.Addr)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(pn),
		// kfake listens on 127.0.0.1; honour the configured host instead.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, port))
		}),
		kfake.DefaultNumPartitions(int(cfg.Partitions)),
		kfake.SeedTopics(cfg.Partitions, cfg.Topics...),
		kfake.WithLogger(kfakeLogger{log}),
	}
	if !cfg.NoAutoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka on %s: %w", cfg.Addr, err)
	}
	return &Broker{c: c, addr: c.ListenAddrs()[0]}, nil
}

// Addr returns the broker's host:port.
func (b *Broker) Addr() string { return b.addr }

// Cluster returns the kfake cluster, for tests that inject faults with its
// control functions.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker.
func (b *Broker) Close() { b.c.Close() }

type kfakeLogger struct{ log *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	if level > kfake.LogLevelWarn {
		return
	}
	l.log.Warn(fmt.Sprintf(msg, args...), "component", "kfake")
}

// Redis is an embedded Redis whose key TTLs run on the wall clock.
type Redis struct {
	m    *miniredis.Miniredis
	stop context.CancelFunc
}

// StartRedis starts an embedded Redis on addr ("" or port 0 picks a free
// port). It returns an error when the address cannot be listened on.
func StartRedis(addr string) (*Redis, error) {
	m := miniredis.NewMiniRedis()
	var err error
	if addr == "" {
		err = m.Start()
	} else {
		err = m.StartAddr(addr)
	}
	if err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Redis{m: m, stop: cancel}
	go r.tick(ctx)
	return r, nil
}

// tick advances miniredis's TTL clock with the wall clock: miniredis only
// expires keys when told that time passed.
func (r *Redis) tick(ctx context.Context) {
	const step = 250 * time.Millisecond
	t := time.NewTicker(step)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.m.FastForward(now.Sub(last))
			last = now
		}
	}
}

// Addr returns the Redis host:port.
func (r *Redis) Addr() string { return r.m.Addr() }

// Close stops the embedded Redis.
func (r *Redis) Close() {
	r.stop()
	r.m.Close()
}
