package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"sluice/shared/admin"
	"sluice/shared/auth"
	"sluice/shared/devstack"
	"sluice/shared/devstack/mockllm"
)

// devSecret signs the tokens of `sluice dev` when SLUICE_JWT_SECRET is unset.
const devSecret = "sluice-dev-secret-do-not-use-in-production"

var allRoles = []string{"broker", "redis", "llm", "producer", "consumer"}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	st := defaultSettings()
	st.llm.Model = "sluice-mock"
	st.llm.FAQ.Sample = true // the built-in shop FAQ answers when the model does not
	roles := slices.Clone(allRoles)
	var kafkaAddr, dataDir, redisAddr, llmAddr, devTenant, devUser string
	fs := newFlagSet("dev", stderr)
	fs.Var(listValue{&roles}, "roles", "parts to run, comma-separated: "+strings.Join(allRoles, ","))
	fs.StringVar(&kafkaAddr, "dev-kafka-addr", "127.0.0.1:9092", "where the embedded Kafka broker listens")
	fs.StringVar(&dataDir, "data-dir", "", "directory where the embedded Kafka keeps its data across restarts (default in memory)")
	fs.StringVar(&redisAddr, "dev-redis-addr", "127.0.0.1:0", "where the embedded Redis listens (port 0 picks one)")
	fs.StringVar(&llmAddr, "dev-llm-addr", "127.0.0.1:0", "where the embedded mock LLM listens (port 0 picks one)")
	fs.StringVar(&devTenant, "dev-tenant", "demo-shop", "tenant of the printed dev token")
	fs.StringVar(&devUser, "dev-user", "demo-user", "user of the printed dev token")
	registerLog(fs, &st.log)
	st.registerAdmin(fs.StringVar)
	st.registerTopics(fs.BoolVar)
	registerKafka(fs, &st.bus)
	registerRedis(fs, &st.redis, &st.store)
	registerLLM(fs, &st.llm)
	registerConsumer(fs, &st.consumer)
	registerProducer(fs, &st.producer, &st.jwtSecret, &st.jwtKeys)
	registerMock(fs, &st.mock)
	registerCallbacks(fs, &st.callbacks)
	if err := parse(fs, args); err != nil {
		return usageError(err)
	}
	for _, r := range roles {
		if !slices.Contains(allRoles, r) {
			return usageError(settingError("roles", fmt.Errorf("unknown role %q (want %s)", r, strings.Join(allRoles, ","))))
		}
	}
	has := func(r string) bool { return slices.Contains(roles, r) }
	if st.jwtSecret == "" && len(st.jwtKeys) == 0 {
		st.jwtSecret = devSecret
	}
	log, err := newLogger(st.log, stderr)
	if err != nil {
		return err
	}
	warnIgnoredEnv(log, fs)
	reg := newRegistry()
	adm := admin.New(reg, log)
	sv, ctx := newServices(ctx, log)
	var banner strings.Builder

	if has("broker") {
		b, err := devstack.StartBroker(devstack.BrokerConfig{
			Addr: kafkaAddr, Partitions: st.bus.Partitions, DataDir: dataDir,
			Topics: []string{st.bus.RequestsTopic, st.bus.RepliesTopic, st.bus.DLQTopic, st.bus.CallbacksTopic},
		}, log)
		if err != nil {
			return usageError(settingError("dev-kafka-addr", err))
		}
		defer b.Close()
		st.bus.Brokers = []string{b.Addr()}
		fmt.Fprintf(&banner, "  Kafka (embedded)  %s   SLUICE_KAFKA_BROKERS=%s\n", b.Addr(), b.Addr())
	}
	if has("redis") && len(st.redis.addrs) == 0 {
		r, err := devstack.StartRedis(redisAddr)
		if err != nil {
			return usageError(settingError("dev-redis-addr", err))
		}
		defer r.Close()
		st.redis.addrs = []string{r.Addr()}
		fmt.Fprintf(&banner, "  Redis (embedded)  %s   SLUICE_REDIS_ADDR=%s\n", r.Addr(), r.Addr())
	} else if len(st.redis.addrs) > 0 {
		fmt.Fprintf(&banner, "  Redis             %s\n", strings.Join(st.redis.addrs, ","))
	}
	if has("llm") && st.llm.BaseURL == "" {
		m, err := mockllm.New(st.mock, log, reg)
		if err != nil {
			return usageError(err)
		}
		ln, err := net.Listen("tcp", llmAddr)
		if err != nil {
			return usageError(settingError("dev-llm-addr", err))
		}
		st.llm.BaseURL = "http://" + ln.Addr().String() + "/v1"
		// The mock outlives the consumer's drain: it stops after every
		// other part did (deferred), so in-flight requests get real answers.
		mockCtx, stopMock := context.WithCancel(context.Background())
		mockDone := make(chan struct{})
		go func() {
			defer close(mockDone)
			if err := serveUntil(mockCtx, ln, m.Handler()); err != nil {
				log.Error("mock LLM", "err", err)
			}
		}()
		defer func() { stopMock(); <-mockDone }()
		fmt.Fprintf(&banner, "  LLM (mock)        %s   SLUICE_LLM_BASE_URL=%s\n", ln.Addr(), st.llm.BaseURL)
	} else if st.llm.BaseURL != "" {
		fmt.Fprintf(&banner, "  LLM               %s (model %s)\n", st.llm.BaseURL, st.llm.Model)
	}

	if has("consumer") {
		c, closeFn, err := buildConsumer(ctx, st, log, reg, adm)
		if err != nil {
			return err
		}
		defer closeFn()
		sv.start("consumer", func() error { return c.Run(ctx) })
		fmt.Fprintf(&banner, "  Consumer          group %s, in-flight %d\n", st.bus.Group, st.consumer.InFlight)
	}
	var apiURL string
	if has("producer") {
		p, closeFn, err := buildProducer(ctx, st, log, reg, adm)
		if err != nil {
			return err
		}
		defer closeFn()
		ln, err := net.Listen("tcp", st.producer.Addr)
		if err != nil {
			return usageError(settingError("http-addr", err))
		}
		apiURL = "http://" + dialable(ln.Addr())
		sv.start("producer", func() error { return p.Run(ctx, ln) })
		fmt.Fprintf(&banner, "  API               %s\n", apiURL)
	}
	if has("producer") || has("consumer") {
		if err := listenAdmin(st.adminAddr, adm, sv); err != nil {
			return err
		}
		defer shutdownAdmin(adm)
		fmt.Fprintf(&banner, "  Admin             http://%s/metrics  /healthz  /readyz\n", dialableAddr(st.adminAddr))
	}

	fmt.Fprintf(stdout, "Sluice dev is up (roles %s):\n%s", strings.Join(roles, ","), banner.String())
	if apiURL != "" && st.jwtSecret != "" {
		tok, err := auth.Mint(st.jwtSecret, devTenant, devUser, 24*time.Hour, time.Now())
		if err != nil {
			return usageError(err)
		}
		fmt.Fprintf(stdout, "\nA dev token (tenant %s, user %s, valid 24h):\n  export TOKEN=%s\n\nAsk a question:\n", devTenant, devUser, tok)
		fmt.Fprintf(stdout, "  curl -s %s/v1/chat -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{\"text\":\"优惠券还能用吗？\"}'\n\n", apiURL)
		fmt.Fprintf(stdout, "Or paste this one (token inline):\n  curl -s %s/v1/chat -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"text\":\"When does my order ship?\"}'\n\n", apiURL, tok)
	}
	fmt.Fprintln(stdout, "Press Ctrl-C to stop.")
	if !has("producer") && !has("consumer") {
		<-ctx.Done()
	}
	err = sv.wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
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
