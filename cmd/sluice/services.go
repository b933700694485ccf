package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/producer"
	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/store"
)

// settings are every service setting; each subcommand registers the ones it uses.
type settings struct {
	log        logSettings
	adminAddr  string
	bus        bus.Config
	redis      redisSettings
	store      store.Config
	llm        llm.Config
	consumer   consumer.Config
	producer   producer.Config
	jwtSecret  string
	jwtKeys    []string
	mock       mockllm.Config
	callbacks  callback.Config
	createTops bool
}

func defaultSettings() *settings {
	s := &settings{
		bus:       bus.DefaultConfig(),
		store:     store.DefaultConfig(),
		llm:       llm.DefaultConfig(),
		consumer:  consumer.DefaultConfig(),
		producer:  producer.DefaultConfig(),
		mock:      mockllm.DefaultConfig(),
		callbacks: callback.DefaultConfig(),
	}
	s.bus.Brokers = nil // required for producer and consumer
	s.llm.Model = ""    // required unless dev runs the mock
	return s
}

func (s *settings) registerAdmin(fsAddr func(p *string, name, value, usage string)) {
	fsAddr(&s.adminAddr, "admin-addr", ":9090", "listen address of /metrics, /healthz, /readyz")
}

func (s *settings) registerTopics(fsBool func(p *bool, name string, value bool, usage string)) {
	fsBool(&s.createTops, "create-topics", true, "create the requests, replies and DLQ topics when missing")
}

func newRedis(r redisSettings) (redis.UniversalClient, error) {
	if len(r.addrs) == 0 {
		return nil, usageError(settingError("redis-addr", errors.New("is required")))
	}
	for _, a := range r.addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, usageError(settingError("redis-addr", fmt.Errorf("%q is not host:port", a)))
		}
	}
	// The request path's commands go through go-redis's automatic
	// pipeliner (store.Pipe); while Redis hangs, the commands it holds are
	// bounded, and a command beyond that fails at once.
	ap := redis.DefaultAutoPipelineOptions()
	ap.MaxQueuedCommands = 100_000
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:        r.addrs,
		MasterName:   r.master,
		Username:     r.username,
		Password:     r.password,
		DB:           r.db,
		PoolSize:     256,
		MinIdleConns: 8,
		// A command's context deadline is its socket deadline: a Redis that
		// hangs costs a request its store timeout.
		ContextTimeoutEnabled: true,
		AutoPipelineOptions:   ap,
	}), nil
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// services runs long-running parts side by side and stops them together.
type services struct {
	log  *slog.Logger
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
	stop context.CancelFunc
}

func newServices(ctx context.Context, log *slog.Logger) (*services, context.Context) {
	ctx, stop := context.WithCancel(ctx)
	return &services{log: log, stop: stop}, ctx
}

// start runs fn in the background; an error from it stops every part.
func (s *services) start(name string, fn func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(); err != nil {
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("%s: %w", name, err))
			s.mu.Unlock()
			s.stop()
		}
	}()
}

// wait returns when every part stopped, with their errors.
func (s *services) wait() error {
	s.wg.Wait()
	s.stop()
	return errors.Join(s.errs...)
}

func listenAdmin(addr string, adm *admin.Server, sv *services) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usageError(settingError("admin-addr", err))
	}
	go func() {
		if err := adm.Serve(ln); err != nil {
			sv.log.Error("admin listener", "err", err)
		}
	}()
	sv.log.Info("admin listening", "addr", ln.Addr().String())
	return nil
}

// producerFlags returns the flags of `sluice producer`, bound to st.
func producerFlags(st *settings, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("producer", out)
	registerLog(fs, &st.log)
	st.registerAdmin(fs.StringVar)
	st.registerTopics(fs.BoolVar)
	registerKafka(fs, &st.bus)
	registerRedis(fs, &st.redis, &st.store)
	registerProducer(fs, &st.producer, &st.jwtSecret, &st.jwtKeys)
	registerCallbacks(fs, &st.callbacks)
	return fs
}

func runProducer(ctx context.Context, args []string, stderr io.Writer) error {
	st := defaultSettings()
	fs := producerFlags(st, stderr)
	if err := parse(fs, args); err != nil {
		return usageError(err)
	}
	if _, err := validateProducer(st); err != nil {
		return nameSettings(err, fs, freshProducer)
	}
	log, err := newLogger(st.log, stderr)
	if err != nil {
		return err
	}
	warnIgnoredEnv(log, fs)
	reg := newRegistry()
	adm := admin.New(reg, log)
	sv, ctx := newServices(ctx, log)
	p, closeFn, err := buildProducer(ctx, st, log, reg, adm)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := listenAdmin(st.adminAddr, adm, sv); err != nil {
		return err
	}
	defer shutdownAdmin(adm)
	sv.start("producer", func() error { return p.Run(ctx, nil) })
	return sv.wait()
}

// buildProducer validates the producer's settings and builds it with its
// Redis client and readiness checks.
func buildProducer(ctx context.Context, st *settings, log *slog.Logger, reg prometheus.Registerer, adm *admin.Server) (*producer.Server, func(), error) {
	v, err := validateProducer(st)
	if err != nil {
		return nil, nil, err
	}
	rdb, err := newRedis(st.redis)
	if err != nil {
		return nil, nil, err
	}
	stor, err := store.New(rdb, st.store)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, usageError(err)
	}
	if err := ensureTopics(ctx, st, log); err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	p, err := producer.New(st.producer, st.bus, v, stor, log, reg)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, usageError(err)
	}
	adm.AddCheck("producer", admin.Flag(p.Ready, "not serving (starting or draining)"))
	adm.AddCheck("kafka", admin.Periodic(ctx, 5*time.Second, func(ctx context.Context) error { return p.Client().Ping(ctx) }))
	return p, func() { p.Close(); _ = rdb.Close() }, nil
}

// freshProducer, freshConsumer and freshMock return a subcommand's flag set
// with its defaults and the validation of its settings, for nameSettings.
func freshProducer() (*flag.FlagSet, func() error) {
	st := defaultSettings()
	return producerFlags(st, io.Discard), func() error { _, err := validateProducer(st); return err }
}

func freshConsumer() (*flag.FlagSet, func() error) {
	st := defaultSettings()
	return consumerFlags(st, io.Discard), func() error { return validateConsumer(st) }
}

func freshMock() (*flag.FlagSet, func() error) {
	cfg := mockllm.DefaultConfig()
	var ls logSettings
	var addr string
	return mockFlags(&cfg, &ls, &addr, io.Discard), func() error { return cfg.Validate() }
}

// validateProducer checks the producer's settings without connecting to
// anything and returns its token verifier.
func validateProducer(st *settings) (*auth.Verifier, error) {
	if err := validateBus(st); err != nil {
		return nil, err
	}
	if st.jwtSecret == "" && len(st.jwtKeys) == 0 {
		return nil, usageError(settingError("jwt-secret", errors.New("is required (or SLUICE_JWT_PUBLIC_KEYS)")))
	}
	v, err := auth.NewVerifier(auth.Config{Secret: st.jwtSecret, PublicKeyFiles: st.jwtKeys})
	if err != nil {
		return nil, usageError(settingError("jwt-secret", err))
	}
	st.producer.Callbacks = st.callbacks.Policy
	if err := st.producer.Validate(); err != nil {
		return nil, usageError(err)
	}
	if err := st.store.Validate(); err != nil {
		return nil, usageError(err)
	}
	return v, nil
}

// validateConsumer checks the consumer's settings without connecting to
// anything.
func validateConsumer(st *settings) error {
	if err := validateBus(st); err != nil {
		return err
	}
	if st.llm.BaseURL == "" {
		return usageError(settingError("llm-base-url", errors.New("is required")))
	}
	for name, u := range map[string]string{"llm-base-url": st.llm.BaseURL, "llm-fallback-base-url": st.llm.FallbackBaseURL} {
		if u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return usageError(settingError(name, fmt.Errorf("%q must start with http:// or https://", u)))
		}
	}
	if st.llm.Model == "" {
		return usageError(settingError("llm-model", errors.New("is required")))
	}
	if err := st.consumer.Validate(); err != nil {
		return usageError(err)
	}
	if err := st.llm.Validate(); err != nil {
		return usageError(fmt.Errorf("llm: %w", err))
	}
	if err := st.store.Validate(); err != nil {
		return usageError(err)
	}
	return nil
}

func validateBus(st *settings) error {
	if len(st.bus.Brokers) == 0 {
		return usageError(settingError("kafka-brokers", errors.New("is required")))
	}
	if err := st.bus.Validate(); err != nil {
		return usageError(settingError("kafka-brokers", err))
	}
	return nil
}

// ensureTopics creates Sluice's topics when asked to, so a fresh cluster works.
func ensureTopics(ctx context.Context, st *settings, log *slog.Logger) error {
	if !st.createTops {
		return nil
	}
	cl, err := bus.NewClient(st.bus, "admin", log, nil)
	if err != nil {
		return err
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := bus.EnsureTopics(cctx, cl, st.bus); err != nil {
		return fmt.Errorf("kafka at %s: %w", strings.Join(st.bus.Brokers, ","), err)
	}
	return nil
}

// consumerFlags returns the flags of `sluice consumer`, bound to st.
func consumerFlags(st *settings, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("consumer", out)
	registerLog(fs, &st.log)
	st.registerAdmin(fs.StringVar)
	st.registerTopics(fs.BoolVar)
	registerKafka(fs, &st.bus)
	registerRedis(fs, &st.redis, &st.store)
	registerLLM(fs, &st.llm)
	registerConsumer(fs, &st.consumer)
	registerCallbacks(fs, &st.callbacks)
	return fs
}

func runConsumer(ctx context.Context, args []string, stderr io.Writer) error {
	st := defaultSettings()
	fs := consumerFlags(st, stderr)
	if err := parse(fs, args); err != nil {
		return usageError(err)
	}
	if err := validateConsumer(st); err != nil {
		return nameSettings(err, fs, freshConsumer)
	}
	log, err := newLogger(st.log, stderr)
	if err != nil {
		return err
	}
	warnIgnoredEnv(log, fs)
	reg := newRegistry()
	adm := admin.New(reg, log)
	sv, runCtx := newServices(ctx, log)
	c, closeFn, err := buildConsumer(runCtx, st, log, reg, adm)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := listenAdmin(st.adminAddr, adm, sv); err != nil {
		return err
	}
	defer shutdownAdmin(adm)
	sv.start("consumer", func() error { return c.Run(runCtx) })
	return sv.wait()
}

// buildConsumer validates the consumer's settings and builds it with its
// Redis client, LLM client and readiness checks.
func buildConsumer(ctx context.Context, st *settings, log *slog.Logger, reg prometheus.Registerer, adm *admin.Server) (*consumer.Consumer, func(), error) {
	if err := validateConsumer(st); err != nil {
		return nil, nil, err
	}
	rdb, err := newRedis(st.redis)
	if err != nil {
		return nil, nil, err
	}
	// The RPM/TPM quota is shared by every consumer through this Redis.
	model, err := llm.New(st.llm, log, reg, llm.WithRedis(rdb, st.store.Prefix+":"))
	if err != nil {
		_ = rdb.Close()
		return nil, nil, usageError(fmt.Errorf("llm: %w", err))
	}
	if own, def := model.FAQs(); own > 0 || def {
		log.Info("FAQ fallback ready", "tenant_files", own, "default", def)
	}
	stor, err := store.New(rdb, st.store)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, usageError(err)
	}
	if err := ensureTopics(ctx, st, log); err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	c, err := consumer.New(st.consumer, st.bus, stor, model, log, reg)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, usageError(err)
	}
	if st.callbacks.Policy.Enabled() {
		d, err := callback.NewDeliverer(st.callbacks, reg)
		if err != nil {
			_ = rdb.Close()
			return nil, nil, usageError(settingError("callback-secret", err))
		}
		if err := c.SetCallbacks(d); err != nil {
			c.Close()
			_ = rdb.Close()
			return nil, nil, err
		}
	}
	adm.AddCheck("consumer", admin.Flag(c.Ready, "not consuming (starting or draining)"))
	adm.AddCheck("kafka", admin.Periodic(ctx, 5*time.Second, func(ctx context.Context) error { return c.Client().Ping(ctx) }))
	return c, func() { c.Close(); _ = rdb.Close() }, nil
}

// mockFlags returns the flags of `sluice mockllm`, bound to cfg, ls and addr.
func mockFlags(cfg *mockllm.Config, ls *logSettings, addr *string, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("mockllm", out)
	registerLog(fs, ls)
	fs.StringVar(addr, "mock-addr", "127.0.0.1:8081", "listen address of the mock LLM")
	registerMock(fs, cfg)
	return fs
}

func runMock(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := mockllm.DefaultConfig()
	var ls logSettings
	var addr string
	fs := mockFlags(&cfg, &ls, &addr, stderr)
	if err := parse(fs, args); err != nil {
		return usageError(err)
	}
	if err := cfg.Validate(); err != nil {
		return nameSettings(usageError(err), fs, freshMock)
	}
	log, err := newLogger(ls, stderr)
	if err != nil {
		return err
	}
	warnIgnoredEnv(log, fs)
	m, err := mockllm.New(cfg, log, nil)
	if err != nil {
		return usageError(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usageError(settingError("mock-addr", err))
	}
	fmt.Fprintf(stdout, "mock LLM listening: SLUICE_LLM_BASE_URL=http://%s/v1\n", ln.Addr())
	return serveUntil(ctx, ln, m.Handler())
}

// serveUntil serves h on ln until ctx ends.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func shutdownAdmin(adm *admin.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = adm.Shutdown(ctx)
}

func runToken(args []string, stdout, stderr io.Writer) error {
	var secret, sub, tenant string
	var ttl time.Duration
	fs := newFlagSet("token", stderr)
	fs.StringVar(&secret, "jwt-secret", "", "HS256 secret to sign with")
	fs.StringVar(&sub, "sub", "", "user id (claim sub)")
	fs.StringVar(&tenant, "tenant", "", "tenant id (claim tenant)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "validity")
	if err := parse(fs, args); err != nil {
		return usageError(err)
	}
	switch {
	case secret == "":
		return usageError(settingError("jwt-secret", errors.New("is required")))
	case sub == "":
		return usageError(errors.New("--sub is required"))
	case tenant == "":
		return usageError(errors.New("--tenant is required"))
	}
	tok, err := auth.Mint(secret, tenant, sub, ttl, time.Now())
	if err != nil {
		return usageError(err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
