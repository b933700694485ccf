package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/shared/devstack"
	"sluice/shared/devstack/proc"
)

// owned are the settings the bench gives the producer and the consumer
// itself; Config.Env cannot change them.
var owned = map[string]bool{
	"SLUICE_KAFKA_BROKERS": true, "SLUICE_REDIS_ADDR": true, "SLUICE_REDIS_PREFIX": true,
	"SLUICE_LLM_BASE_URL": true, "SLUICE_ADMIN_ADDR": true, "SLUICE_HTTP_ADDR": true,
	"SLUICE_JWT_SECRET": true, "SLUICE_LOG_LEVEL": true,
}

// startTimeout bounds each process's start.
const startTimeout = time.Minute

// deployment is the processes of a bench run and how to reach them.
type deployment struct {
	dev, producer, consumer *proc.Process
	api                     string // the producer's base URL
	brokers                 string // the embedded broker's address
	admin                   map[string]string
	cl                      *http.Client

	redisAddr     string
	redisEmbedded bool
	prefix        string
	rdb           *redis.Client // the machine's Redis; nil when embedded
}

// deploy starts the dev process (broker and mock LLM, and Redis when
// embedded), then the consumer and the producer, each awaited until
// ready. The returned deployment, when not nil, must be stopped, also
// when the error is not nil.
func deploy(ctx context.Context, cfg Config, log *slog.Logger) (*deployment, error) {
	d := &deployment{admin: map[string]string{}, cl: &http.Client{Timeout: 5 * time.Second},
		prefix: fmt.Sprintf("sluicebench:%d", time.Now().UnixNano())}
	switch cfg.Redis {
	case RedisEmbedded:
		d.redisEmbedded = true
	case RedisAuto:
		d.redisAddr = DefaultRedis
		if err := ping(ctx, d.redisAddr); err != nil {
			log.Info("bench: no Redis answers at "+DefaultRedis+"; using the embedded one", "err", err)
			d.redisAddr, d.redisEmbedded = "", true
		}
	default:
		d.redisAddr = cfg.Redis
		if err := ping(ctx, d.redisAddr); err != nil {
			return nil, fmt.Errorf("redis %s: %w", d.redisAddr, err)
		}
	}
	if !d.redisEmbedded {
		d.rdb = redis.NewClient(&redis.Options{Addr: d.redisAddr})
	}

	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "SLUICE_LOG_LEVEL=info"}
	roles := "broker,llm"
	if d.redisEmbedded {
		roles += ",redis"
	}
	var err error
	d.dev, err = proc.Start("sluice dev", cfg.Binary, base, "dev", "--roles", roles,
		"--dev-kafka-addr", "127.0.0.1:0", "--dev-llm-addr", "127.0.0.1:0", "--dev-redis-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--topic-partitions", fmt.Sprint(cfg.Partitions),
		"--mock-latency", cfg.MockLatency.String(), "--mock-jitter", "0s")
	if err != nil {
		return d, err
	}
	if _, err := d.dev.WaitLine(ctx, proc.BannerUp, startTimeout); err != nil {
		return d, err
	}
	brokers, err := d.dev.Addr(ctx, proc.BannerKafka, startTimeout)
	if err != nil {
		return d, err
	}
	d.brokers = brokers
	llm, err := d.dev.Addr(ctx, proc.BannerLLM, startTimeout)
	if err != nil {
		return d, err
	}
	if d.admin["broker"], err = d.dev.Addr(ctx, proc.AdminListening, startTimeout); err != nil {
		return d, err
	}
	if d.redisEmbedded {
		if d.redisAddr, err = d.dev.Addr(ctx, proc.BannerRedis, startTimeout); err != nil {
			return d, err
		}
	}

	env := append(slices.Clone(base),
		"SLUICE_KAFKA_BROKERS="+brokers, "SLUICE_REDIS_ADDR="+d.redisAddr, "SLUICE_REDIS_PREFIX="+d.prefix,
		"SLUICE_LLM_BASE_URL="+llm, "SLUICE_LLM_MODEL=sluice-mock", "SLUICE_ADMIN_ADDR=127.0.0.1:0",
		"SLUICE_HTTP_ADDR=127.0.0.1:0", "SLUICE_JWT_SECRET="+benchSecret,
		fmt.Sprintf("SLUICE_TOPIC_PARTITIONS=%d", cfg.Partitions))
	env = append(env, cfg.Env...)
	// The consumer first: the producer's readiness asks for the group's
	// lag, and its first questions should find someone to answer them.
	if d.consumer, err = proc.Start("sluice consumer", cfg.Binary, env, "consumer"); err != nil {
		return d, err
	}
	if err := d.await(ctx, "consumer", d.consumer); err != nil {
		return d, err
	}
	if d.producer, err = proc.Start("sluice producer", cfg.Binary, env, "producer"); err != nil {
		return d, err
	}
	listen, err := d.producer.Addr(ctx, proc.ProducerListening, startTimeout)
	if err != nil {
		return d, err
	}
	d.api = "http://" + listen
	if err := d.await(ctx, "producer", d.producer); err != nil {
		return d, err
	}
	return d, nil
}

// await reads p's admin listener and waits until it is ready.
func (d *deployment) await(ctx context.Context, role string, p *proc.Process) error {
	a, err := p.Addr(ctx, proc.AdminListening, startTimeout)
	if err != nil {
		return err
	}
	d.admin[role] = a
	return p.AwaitReady(ctx, d.cl, a, startTimeout)
}

// stop stops the producer, the consumer and the dev process, in that
// order, and deletes the run's keys from the machine's Redis.
func (d *deployment) stop(log *slog.Logger) {
	teardown(log, d.rdb, []*proc.Process{d.producer, d.consumer, d.dev}, d.prefix+":*", "rate:"+d.prefix+":*")
}

// teardown stops ps in order (nil ones skipped), each given 30 s, then,
// when rdb is not nil, deletes the keys matching patterns and closes it.
func teardown(log *slog.Logger, rdb *redis.Client, ps []*proc.Process, patterns ...string) {
	for _, p := range ps {
		if p == nil {
			continue
		}
		if _, err := p.Stop(30 * time.Second); err != nil {
			log.Warn("bench: stopping "+p.Name(), "err", err, "last_lines", p.Tail(10))
		}
	}
	if rdb == nil {
		return
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := devstack.DeleteKeys(ctx, rdb, patterns...)
	if err != nil {
		log.Warn("bench: deleting the run's keys", "keys", patterns, "err", err)
		return
	}
	log.Info("bench: the run's keys deleted", "keys", patterns, "deleted", n)
}

// conditions describes the deployment for the report.
func (d *deployment) conditions(cfg Config) Conditions {
	c := Conditions{
		Processes:     fmt.Sprintf("sluice dev --roles broker,llm (embedded Kafka, mock LLM at %d ms), sluice producer, sluice consumer", cfg.MockLatency.Milliseconds()),
		Redis:         d.redisAddr,
		RedisPrefix:   d.prefix,
		Mode:          "wait",
		WindowS:       cfg.Duration.Seconds(),
		WarmupS:       cfg.Warmup.Seconds(),
		Runs:          cfg.Runs,
		UserIntervalS: cfg.UserInterval.Seconds(),
		Turns:         cfg.Turns,
		Partitions:    cfg.Partitions,
		ClockTicks:    proc.ClockTicks(),
		Env:           cfg.Env,
	}
	if d.redisEmbedded {
		c.Processes = strings.Replace(c.Processes, "broker,llm (", "broker,llm,redis (embedded Redis, ", 1)
		c.Redis, c.RedisPrefix = "embedded, in the dev process", ""
	}
	return c
}

// ping checks that a Redis answers at addr.
func ping(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return rdb.Ping(ctx).Err()
}
