package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"sluice/consumer"
	"sluice/producer"
	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/devstack"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/envelope"
	"sluice/shared/settings"
)

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

// listenAdmin serves adm on addr and returns the address it listens on.
func listenAdmin(addr string, adm *admin.Server, sv *services) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", settingError("admin-addr", err)
	}
	go func() {
		if err := adm.Serve(ln); err != nil {
			sv.log.Error("admin listener", "err", err)
		}
	}()
	sv.log.Info("admin listening", "addr", ln.Addr().String())
	return ln.Addr().String(), nil
}

// service is what runService needs of a producer or a consumer.
type service interface {
	Run(ctx context.Context) error
	Close()
}

// runService configures a service command from args, builds the service
// with open, which validates its settings, and runs it with its admin
// listener until ctx ends.
func runService(ctx context.Context, name string, args []string, stderr io.Writer,
	flags func(*config, io.Writer) *flag.FlagSet,
	open func(context.Context, *config, *slog.Logger, *prometheus.Registry, *admin.Server) (service, error)) error {
	st := defaultSettings()
	fs := flags(st, stderr)
	if err := configure(fs, args, st.log.validate); err != nil {
		return err
	}
	log := newLogger(st.log, stderr)
	reg := newRegistry()
	adm := admin.New(reg, log)
	sv, ctx := newServices(ctx, log)
	svc, err := open(ctx, st, log, reg, adm)
	var se *settings.Error
	if errors.As(err, &se) {
		return configError(fs, err)
	}
	if err != nil {
		return err
	}
	warnIgnoredEnv(log, fs)
	defer svc.Close()
	if _, err := listenAdmin(st.adminAddr, adm, sv); err != nil {
		return err
	}
	defer shutdownAdmin(adm)
	sv.start(name, func() error { return svc.Run(ctx) })
	return sv.wait()
}

func runProducer(ctx context.Context, args []string, stderr io.Writer) error {
	return runService(ctx, "producer", args, stderr, producerFlags,
		func(ctx context.Context, st *config, log *slog.Logger, reg *prometheus.Registry, adm *admin.Server) (service, error) {
			p, err := producer.Open(ctx, st.producerSettings(), log, reg, adm)
			if err != nil {
				return nil, err
			}
			return producerService{p}, nil
		})
}

// producerService runs a producer on the listener of its settings.
type producerService struct{ *producer.Server }

func (p producerService) Run(ctx context.Context) error { return p.Server.Run(ctx, nil) }

func runConsumer(ctx context.Context, args []string, stderr io.Writer) error {
	return runService(ctx, "consumer", args, stderr, consumerFlags,
		func(ctx context.Context, st *config, log *slog.Logger, reg *prometheus.Registry, adm *admin.Server) (service, error) {
			return consumer.Open(ctx, st.consumerSettings(), log, reg, adm)
		})
}

func runMock(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	st := defaultSettings()
	fs := mockFlags(st, stderr)
	if err := configure(fs, args, func() error { return errors.Join(st.log.validate(), st.mock.Validate()) }); err != nil {
		return err
	}
	log := newLogger(st.log, stderr)
	warnIgnoredEnv(log, fs)
	m, err := mockllm.New(st.mock, log, nil)
	if err != nil {
		return usageError(err)
	}
	ln, err := net.Listen("tcp", st.mockAddr)
	if err != nil {
		return usageError(settingError("mock-addr", err))
	}
	fmt.Fprintf(stdout, "mock LLM listening: SLUICE_LLM_BASE_URL=http://%s/v1\n", ln.Addr())
	return devstack.ServeUntil(ctx, ln, m.Handler())
}

func shutdownAdmin(adm *admin.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = adm.Shutdown(ctx)
}

// runDrain calls GET /drain on a producer's or consumer's admin listener and
// waits for the drain: a preStop hook the distroless image can run (exec),
// or a drain by hand. It prints the process's report and fails unless the
// process drained.
func runDrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var addr string
	var timeout time.Duration
	fs := newFlagSet("drain", stderr)
	// The same flag as the services' listen address, so that in a
	// container the SLUICE_ADMIN_ADDR it runs with is the one drained.
	fs.StringVar(&addr, "admin-addr", "127.0.0.1:9090", "admin listener of the process to drain, host:port (an empty or 0.0.0.0 host is this machine)")
	fs.DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the drain; longer than the process's drain timeout (consumer) or drain delay (producer)")
	err := configure(fs, args, func() error {
		var p settings.Problems
		_, port, err := net.SplitHostPort(addr)
		p.Check(err == nil && port != "", "admin-addr", "%q is not host:port", addr)
		p.Check(timeout > 0, "timeout", "must be positive")
		return p.Err()
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, err := admin.RequestDrain(ctx, addr)
	if err == nil || errors.Is(err, admin.ErrNotDrained) {
		b, _ := json.Marshal(rep)
		fmt.Fprintf(stdout, "%s\n", b)
	}
	return err
}

func runToken(args []string, stdout, stderr io.Writer) error {
	var secret, sub, tenant, lane string
	var ttl time.Duration
	fs := newFlagSet("token", stderr)
	fs.StringVar(&secret, "jwt-secret", "", "HS256 secret to sign with, the producer's SLUICE_JWT_SECRET (at least 16 bytes); make run (sluice dev) signs with "+devSecret)
	fs.StringVar(&sub, "sub", "", "user id (claim sub)")
	fs.StringVar(&tenant, "tenant", "", "tenant id (claim tenant)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "validity")
	fs.StringVar(&lane, "lane", "", "claim lane: bulk restricts the caller to the bulk lane (bots); interactive or empty: no restriction")
	err := configure(fs, args, func() error {
		var p settings.Problems
		p.Check(secret != "", "jwt-secret", "is required (make run's is %s)", devSecret)
		p.Check(secret == "" || len(secret) >= auth.MinSecretBytes, "jwt-secret", "must be at least %d bytes: the producer refuses a shorter one", auth.MinSecretBytes)
		p.Check(sub != "", "sub", "is required")
		p.Check(tenant != "", "tenant", "is required")
		p.Check(ttl > 0, "ttl", "must be positive")
		p.Check(lane == "" || envelope.ValidLane(lane), "lane", "must be %s or %s, got %q", envelope.LaneInteractive, envelope.LaneBulk, lane)
		return p.Err()
	})
	if err != nil {
		return err
	}
	tok, err := auth.MintLane(secret, tenant, sub, lane, ttl, time.Now())
	if err != nil {
		return usageError(err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
