package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/consumer"
	"sluice/producer"
	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/devstack"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/settings"
)

// devSecret signs the tokens of `sluice dev` when SLUICE_JWT_SECRET is unset.
const devSecret = "sluice-dev-secret-do-not-use-in-production"

var allRoles = []string{"broker", "redis", "llm", "producer", "consumer"}

// devSettings are the settings only `sluice dev` has.
type devSettings struct {
	roles     []string
	kafkaAddr string
	dataDir   string
	redisAddr string
	llmAddr   string
	tenant    string
	user      string
	// adminAsked: --admin-addr (or its twin) was given. The stand-ins
	// alone then serve the admin listener too (the mock LLM's metrics,
	// pprof); by default they leave its port to the services run beside.
	adminAsked bool
}

func (d devSettings) has(role string) bool { return slices.Contains(d.roles, role) }

func (d devSettings) validate() error {
	var p settings.Problems
	for _, r := range d.roles {
		p.Check(slices.Contains(allRoles, r), "roles", "unknown role %q (want %s)", r, strings.Join(allRoles, ","))
	}
	return p.Err()
}

// devDefaults are the settings of `sluice dev`: the services' defaults,
// except where a newcomer exploring the API would trip over them.
func devDefaults() (*config, devSettings) {
	st := defaultSettings()
	st.llm.Model = "sluice-mock"
	st.llm.FAQ.Sample = true // the built-in shop FAQ answers when the model does not
	// Production limits a user to 30 questions a minute; exploring the API
	// or running the load generator against make run would meet 429s.
	st.producer.UserRate = producer.Rate{}
	return st, devSettings{roles: slices.Clone(allRoles), tenant: "demo-shop", user: "demo-user"}
}

// devFlags returns the flags of `sluice dev`, bound to st and d.
func devFlags(st *config, d *devSettings, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("dev", out)
	fs.Var(settings.List{P: &d.roles}, "roles", "parts to run, comma-separated: "+strings.Join(allRoles, ","))
	fs.StringVar(&d.kafkaAddr, "dev-kafka-addr", "127.0.0.1:9092", "where the embedded Kafka broker listens")
	fs.StringVar(&d.dataDir, "data-dir", "", "directory where the embedded Kafka keeps its data across restarts (default in memory)")
	fs.StringVar(&d.redisAddr, "dev-redis-addr", "127.0.0.1:0", "where the embedded Redis listens (port 0 picks one)")
	fs.StringVar(&d.llmAddr, "dev-llm-addr", "127.0.0.1:0", "where the embedded mock LLM listens (port 0 picks one)")
	fs.StringVar(&d.tenant, "dev-tenant", d.tenant, "tenant of the printed dev token")
	fs.StringVar(&d.user, "dev-user", d.user, "user of the printed dev token")
	st.registerService(fs)
	st.llm.RegisterFlags(fs)
	st.consumer.RegisterFlags(fs)
	st.producer.RegisterFlags(fs)
	st.auth.RegisterFlags(fs)
	st.mock.RegisterFlags(fs)
	st.callbacks.RegisterFlags(fs)
	return fs
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	st, d := devDefaults()
	fs := devFlags(st, &d, stderr)
	if err := configure(fs, args, func() error { return errors.Join(st.log.validate(), d.validate(), st.mock.Validate()) }); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { d.adminAsked = d.adminAsked || f.Name == "admin-addr" })
	if st.auth.Secret == "" && len(st.auth.PublicKeyFiles) == 0 {
		st.auth.Secret = devSecret
	}
	log := newLogger(st.log, stderr)
	warnIgnoredEnv(log, fs)
	reg := newRegistry()
	adm := admin.New(reg, log)
	sv, ctx := newServices(ctx, log)
	var banner strings.Builder

	stop, err := startStandIns(st, d, log, reg, &banner)
	defer stop()
	if err != nil {
		return err
	}
	apiURL, stopServices, err := startDevServices(ctx, st, d, log, reg, adm, sv, &banner)
	defer stopServices()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Sluice dev is up (roles %s):\n%s", strings.Join(d.roles, ","), banner.String())
	if apiURL != "" && st.auth.Secret != "" {
		if err := printTry(stdout, apiURL, st.auth.Secret, d); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, "Press Ctrl-C to stop.")
	if !d.has("producer") && !d.has("consumer") {
		<-ctx.Done()
	}
	err = sv.wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// startStandIns starts the embedded broker, Redis and mock LLM that d's
// roles ask for and st does not point elsewhere, fills their addresses into
// st and describes them in banner. stop, never nil, stops what started,
// the mock LLM last, so that a draining consumer still gets real answers.
func startStandIns(st *config, d devSettings, log *slog.Logger, reg prometheus.Registerer, banner io.Writer) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if d.has("llm") && st.llm.BaseURL == "" {
		m, err := mockllm.New(st.mock, log, reg)
		if err != nil {
			return stop, usageError(err)
		}
		ln, err := net.Listen("tcp", d.llmAddr)
		if err != nil {
			return stop, settingError("dev-llm-addr", err)
		}
		st.llm.BaseURL = "http://" + ln.Addr().String() + "/v1"
		mockCtx, stopMock := context.WithCancel(context.Background())
		mockDone := make(chan struct{})
		go func() {
			defer close(mockDone)
			if err := devstack.ServeUntil(mockCtx, ln, m.Handler()); err != nil {
				log.Error("mock LLM", "err", err)
			}
		}()
		stops = append(stops, func() { stopMock(); <-mockDone })
		defer fmt.Fprintf(banner, "  LLM (mock)        %s   SLUICE_LLM_BASE_URL=%s\n", ln.Addr(), st.llm.BaseURL)
	} else if st.llm.BaseURL != "" {
		defer fmt.Fprintf(banner, "  LLM               %s (model %s)\n", st.llm.BaseURL, st.llm.Model)
	}
	if d.has("broker") {
		b, err := devstack.StartBroker(devstack.BrokerConfig{
			Addr: d.kafkaAddr, Partitions: st.bus.Partitions, DataDir: d.dataDir,
			Topics: st.bus.Topics(),
		}, log)
		if err != nil {
			return stop, settingError("dev-kafka-addr", err)
		}
		stops = append(stops, b.Close)
		st.bus.Brokers = []string{b.Addr()}
		fmt.Fprintf(banner, "  Kafka (embedded)  %s   SLUICE_KAFKA_BROKERS=%s\n", b.Addr(), b.Addr())
	}
	if d.has("redis") && len(st.redis.Addrs) == 0 {
		r, err := devstack.StartRedis(d.redisAddr)
		if err != nil {
			return stop, settingError("dev-redis-addr", err)
		}
		stops = append(stops, r.Close)
		st.redis.Addrs = []string{r.Addr()}
		fmt.Fprintf(banner, "  Redis (embedded)  %s   SLUICE_REDIS_ADDR=%s\n", r.Addr(), r.Addr())
	} else if len(st.redis.Addrs) > 0 {
		fmt.Fprintf(banner, "  Redis             %s\n", strings.Join(st.redis.Addrs, ","))
	}
	return stop, nil
}

// startDevServices starts the consumer and the producer that d's roles ask
// for, and the admin listener (with neither, only when --admin-addr is
// given), and describes them in banner. It returns the
// API's URL ("" without a producer); stop, never nil, closes them once sv
// has stopped them.
func startDevServices(ctx context.Context, st *config, d devSettings, log *slog.Logger, reg prometheus.Registerer,
	adm *admin.Server, sv *services, banner io.Writer) (apiURL string, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if d.has("consumer") {
		c, err := consumer.Open(ctx, st.consumerSettings(), log, reg, adm)
		if err != nil {
			return "", stop, err
		}
		stops = append(stops, c.Close)
		sv.start("consumer", func() error { return c.Run(ctx) })
		fmt.Fprintf(banner, "  Consumer          group %s, in-flight %d\n", st.bus.Group, st.consumer.InFlight)
	}
	if d.has("producer") {
		p, err := producer.Open(ctx, st.producerSettings(), log, reg, adm)
		if err != nil {
			return "", stop, err
		}
		stops = append(stops, p.Close)
		ln, err := net.Listen("tcp", st.producer.Addr)
		if err != nil {
			return "", stop, settingError("http-addr", err)
		}
		apiURL = "http://" + dialable(ln.Addr())
		sv.start("producer", func() error { return p.Run(ctx, ln) })
		fmt.Fprintf(banner, "  API               %s\n", apiURL)
		if st.producer.UserRate.N == 0 {
			fmt.Fprintf(banner, "  Rate limits       per-user limit off in dev (production: %s; --user-rate to try it)\n", producer.DefaultConfig().UserRate)
		} else {
			fmt.Fprintf(banner, "  Rate limits       %s per user\n", st.producer.UserRate)
		}
	}
	if d.has("producer") || d.has("consumer") || d.adminAsked {
		addr, err := listenAdmin(st.adminAddr, adm, sv)
		if err != nil {
			return apiURL, stop, err
		}
		stops = append(stops, func() { shutdownAdmin(adm) })
		fmt.Fprintf(banner, "  Admin             http://%s/metrics  /healthz  /readyz\n", dialableAddr(addr))
	}
	return apiURL, stop, nil
}

// printTry prints a dev token and curl commands that ask the API a question.
func printTry(w io.Writer, apiURL, secret string, d devSettings) error {
	tok, err := auth.Mint(secret, d.tenant, d.user, 24*time.Hour, time.Now())
	if err != nil {
		return usageError(err)
	}
	fmt.Fprintf(w, "\nA dev token (tenant %s, user %s, valid 24h):\n  export TOKEN=%s\n\nAsk a question:\n", d.tenant, d.user, tok)
	fmt.Fprintf(w, "  curl -s %s/v1/chat -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"text\":\"优惠券还能用吗？\"}'\n\n", apiURL)
	fmt.Fprintf(w, "Or paste this one (token inline):\n  curl -s %s/v1/chat -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"text\":\"When does my order ship?\"}'\n\n", apiURL, tok)
	// The token rides in the fragment, which the browser never sends.
	fmt.Fprintf(w, "Chat in a browser (the storefront widget on a demo page, dev token in the fragment):\n  %s\n\n", widgetURL(apiURL, tok))
	return nil
}

// widgetURL is the widget's demo page with tok in the fragment.
func widgetURL(apiURL, tok string) string {
	return apiURL + "/widget/#token=" + tok
}

// dialable turns a listener address into one a local client can dial.
func dialable(a net.Addr) string { return dialableAddr(a.String()) }

func dialableAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
