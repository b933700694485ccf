package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/consumer/llm"
	"sluice/shared/admin"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/settings"
	"sluice/shared/store"
)

// Settings are everything `sluice consumer` is configured with: the
// consumer's own Config and the Kafka, Redis, LLM and callback settings it
// runs on.
type Settings struct {
	Consumer  Config
	Bus       bus.Config
	Redis     store.ClientConfig
	Store     store.Config
	LLM       llm.Config
	Callbacks callback.Config
	// CreateTopics creates Sluice's topics at start when missing.
	CreateTopics bool
	// BulkRequestTTL is the producers' request TTL of the bulk lane (the
	// same setting, SLUICE_BULK_REQUEST_TTL): a bulk request may be
	// answered that long after it was accepted, and its result must then
	// still be stored for the poll that waits for it.
	BulkRequestTTL time.Duration
}

// Validate reports every missing or invalid setting at once, each named by
// its flag. It connects to nothing.
func (s Settings) Validate() error {
	var p settings.Problems
	p.Add(s.Bus.Validate())
	p.Add(s.Redis.Validate())
	p.Add(s.Store.Validate())
	p.Add(s.LLM.Validate())
	p.Add(s.Consumer.Validate())
	p.Add(s.Callbacks.Validate())
	// As the producers check it: a poll must find a bulk request's result
	// until the request's deadline.
	p.Check(s.Store.ResultTTL <= 0 || s.Store.ResultTTL >= s.BulkRequestTTL, "result-ttl",
		"%v must be at least the bulk request TTL (SLUICE_BULK_REQUEST_TTL) %v", s.Store.ResultTTL, s.BulkRequestTTL)
	return p.Err()
}

// Admin takes the readiness checks and the drain of a component
// (*admin.Server).
type Admin interface {
	AddCheck(name string, c admin.Check)
	AddDrain(name string, d admin.Drain)
}

var _ Admin = (*admin.Server)(nil)

// Open builds the consumer `sluice consumer` runs: it validates s, creates
// the Redis client (which also carries the LLM quota shared by every
// consumer), the LLM client with its FAQ, the callback deliverer when
// callbacks are enabled and, when asked, the topics; the consumer processes
// share their reads of the group's lag through Redis (ShareLag). It adds the
// readiness checks "consumer" (in the group, not draining), "kafka" and
// "redis" (each answers) to adm, which run until ctx ends, and the
// consumer's Drain as the drain "consumer" (GET /drain). Close releases the
// Redis client too. It returns the settings' problems, an unreadable prompts
// or FAQ file, or a Kafka cluster it could not create topics on.
func Open(ctx context.Context, s Settings, log *slog.Logger, reg prometheus.Registerer, adm Admin) (*Consumer, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	st, err := store.Dial(s.Redis, s.Store)
	if err != nil {
		return nil, err
	}
	rdb := st.Client()
	fail := func(err error) (*Consumer, error) { _ = st.Close(); return nil, err }
	share := s.Consumer.BulkMinShare
	if s.Consumer.Lanes == LanesSingle {
		share = 0
	}
	model, err := llm.New(s.LLM, log, reg, llm.WithRedis(rdb, s.Store.Prefix+":"), llm.WithBulkMinShare(share))
	if err != nil {
		return fail(err)
	}
	if own, def := model.FAQs(); own > 0 || def {
		log.Info("FAQ fallback ready", "tenant_files", own, "default", def)
	}
	if s.CreateTopics {
		if err := bus.CreateTopics(ctx, s.Bus, log); err != nil {
			return fail(err)
		}
	}
	c, err := New(s.Consumer, s.Bus, st, model, log, reg)
	if err != nil {
		return fail(err)
	}
	c.release = st.Close
	c.ShareLag(rdb, s.Store.Prefix)
	if s.Callbacks.Policy.Enabled() {
		d, err := callback.NewDeliverer(s.Callbacks, reg)
		if err == nil {
			err = c.SetCallbacks(d)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	adm.AddCheck("consumer", admin.Flag(c.Ready, "not consuming (starting or draining)"))
	adm.AddCheck("kafka", admin.Periodic(ctx, 5*time.Second, func(ctx context.Context) error { return c.Client().Ping(ctx) }))
	// Without Redis no request can be answered: no history, no result.
	adm.AddCheck("redis", admin.Periodic(ctx, 5*time.Second, func(ctx context.Context) error { return rdb.Ping(ctx).Err() }))
	adm.AddDrain("consumer", c.Drain)
	return c, nil
}
