package producer

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/settings"
	"sluice/shared/store"
)

// Settings are everything `sluice producer` is configured with: the
// ingress's own Config and the Kafka, Redis and token settings it runs on.
type Settings struct {
	Producer Config
	Bus      bus.Config
	Redis    store.ClientConfig
	Store    store.Config
	Auth     auth.Config
	// CreateTopics creates Sluice's topics at start when missing.
	CreateTopics bool
}

// Validate reports every missing or invalid setting at once, each named by
// its flag. It connects to nothing.
func (s Settings) Validate() error {
	var p settings.Problems
	p.Add(s.Bus.Validate())
	p.Add(s.Redis.Validate())
	p.Add(s.Store.Validate())
	p.Add(s.Auth.Validate())
	p.Add(s.Producer.Validate())
	// A poll must find a bulk request's result, or its queued marker,
	// until its deadline: both live ResultTTL.
	p.Check(s.Store.ResultTTL <= 0 || s.Store.ResultTTL >= s.Producer.BulkRequestTTL, "result-ttl",
		"%v must be at least the bulk request TTL (SLUICE_BULK_REQUEST_TTL) %v", s.Store.ResultTTL, s.Producer.BulkRequestTTL)
	return p.Err()
}

// Admin takes the readiness checks and the drain of a component
// (*admin.Server).
type Admin interface {
	AddCheck(name string, c admin.Check)
	AddDrain(name string, d admin.Drain)
}

var _ Admin = (*admin.Server)(nil)

// Open builds the ingress `sluice producer` runs: it validates s, reads the
// token keys, creates the Redis client and, when asked, the topics, and adds
// the readiness checks "producer" (serving, not draining) and "kafka" (the
// brokers answer) to adm, which run until ctx ends, and the ingress's Drain
// as the drain "producer" (GET /drain). Close releases the Redis client too.
// It returns the settings' problems, an unreadable key file, or a Kafka
// cluster it could not create topics on.
func Open(ctx context.Context, s Settings, log *slog.Logger, reg prometheus.Registerer, adm Admin) (*Server, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	v, err := auth.NewVerifier(s.Auth)
	if err != nil {
		return nil, settings.Errorf("jwt-public-keys", "%v", err)
	}
	st, err := store.Dial(s.Redis, s.Store)
	if err != nil {
		return nil, err
	}
	if s.CreateTopics {
		if err := bus.CreateTopics(ctx, s.Bus, log); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	cfg := s.Producer
	if cfg.PollSecret == "" {
		cfg.PollSecret = s.Auth.Secret // shared by every replica already
	}
	srv, err := New(cfg, s.Bus, v, st, log, reg)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	srv.release = st.Close
	adm.AddCheck("producer", admin.Flag(srv.Ready, "not serving (starting or draining)"))
	adm.AddCheck("kafka", admin.Periodic(ctx, 5*time.Second, func(ctx context.Context) error { return srv.Client().Ping(ctx) }))
	adm.AddDrain("producer", srv.Drain)
	return srv, nil
}
