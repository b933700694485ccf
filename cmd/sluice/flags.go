package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/producer"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/store"
)

// envName is the environment twin of a flag: kafka-brokers → SLUICE_KAFKA_BROKERS.
func envName(flagName string) string {
	return "SLUICE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// settingError names a setting by both its spellings.
func settingError(flagName string, err error) error {
	return fmt.Errorf("%s (--%s): %w", envName(flagName), flagName, err)
}

// nameSettings makes err, a validation error of the settings parsed into
// fs, name the settings it is about when it does not already: those set in
// fs whose return to their default makes a validation of the rest pass, or
// fail otherwise. fresh returns a new flag set of the same command, with
// defaults, and the validation of its settings.
func nameSettings(err error, fs *flag.FlagSet, fresh func() (*flag.FlagSet, func() error)) error {
	if err == nil || strings.Contains(err.Error(), "SLUICE_") {
		return err
	}
	bare := func(e error) string { return strings.TrimPrefix(e.Error(), errUsage.Error()+": ") }
	var set []*flag.Flag
	fs.Visit(func(f *flag.Flag) { set = append(set, f) })
	var names []string
	for _, without := range set {
		fs2, validate := fresh()
		for _, f := range set {
			if f != without {
				_ = fs2.Set(f.Name, f.Value.String())
			}
		}
		// Implicated: without it the error goes away or becomes another
		// that does not name its setting. (Leaving out a required setting
		// fails on that setting, which tells nothing.)
		if e := validate(); e == nil || bare(e) != bare(err) && !strings.Contains(e.Error(), "SLUICE_") {
			names = append(names, envName(without.Name)+" (--"+without.Name+")")
		}
	}
	if len(names) == 0 {
		return err
	}
	return usageError(fmt.Errorf("%s: %s", strings.Join(names, ", "), bare(err)))
}

// ignoredEnv returns the SLUICE_* variables of environ that are not settings
// of fs's command, sorted: a typo, or a setting of another subcommand, which
// this one ignores.
func ignoredEnv(fs *flag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SLUICE_") && !known[name] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// warnIgnoredEnv logs the SLUICE_* variables fs's command ignores.
func warnIgnoredEnv(log *slog.Logger, fs *flag.FlagSet) {
	if names := ignoredEnv(fs, os.Environ()); len(names) > 0 {
		log.Warn("environment variables that are not settings of sluice "+fs.Name()+" are ignored", "names", strings.Join(names, ","))
	}
}

// parse applies the environment twins of fs's flags, then args, so that a
// flag on the command line wins over the environment. Errors name the setting.
func parse(fs *flag.FlagSet, args []string) error { return parseWith(fs, args, os.LookupEnv) }

// parseWith is parse with the environment read through lookup.
func parseWith(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := lookup(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, settingError(f.Name, fmt.Errorf("invalid value %q: %w", v, err)))
			}
		}
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return fs.Parse(args)
}

func newFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: sluice %s [flags]\n\nEvery flag can also be set by its environment twin, e.g. --http-addr as SLUICE_HTTP_ADDR.\n\n", name)
		fs.PrintDefaults()
	}
	return fs
}

// listValue is a comma-separated list flag.
type listValue struct{ p *[]string }

func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l listValue) Set(s string) error {
	*l.p = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.p = append(*l.p, part)
		}
	}
	return nil
}

// partitionsValue is a comma-separated list of partition numbers.
type partitionsValue struct{ p *[]int32 }

func (v partitionsValue) String() string {
	if v.p == nil {
		return ""
	}
	s := make([]string, len(*v.p))
	for i, n := range *v.p {
		s[i] = strconv.Itoa(int(n))
	}
	return strings.Join(s, ",")
}

func (v partitionsValue) Set(s string) error {
	*v.p = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a partition number", part)
		}
		*v.p = append(*v.p, int32(n))
	}
	return nil
}

// logSettings are common to every subcommand.
type logSettings struct {
	level  string
	format string
}

func registerLog(fs *flag.FlagSet, l *logSettings) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func registerKafka(fs *flag.FlagSet, c *bus.Config) {
	fs.Var(listValue{&c.Brokers}, "kafka-brokers", "Kafka bootstrap brokers, comma-separated host:port")
	fs.StringVar(&c.RequestsTopic, "requests-topic", c.RequestsTopic, "topic of chat requests")
	fs.StringVar(&c.RepliesTopic, "replies-topic", c.RepliesTopic, "topic of replies for the HTTP ingress")
	fs.StringVar(&c.DLQTopic, "dlq-topic", c.DLQTopic, "dead-letter topic of unprocessable request records")
	fs.StringVar(&c.Group, "consumer-group", c.Group, "consumer group of the consumers")
	fs.StringVar(&c.ReplyGroup, "reply-group", c.ReplyGroup, "consumer group in which ingress replicas share the replies topic")
	fs.StringVar(&c.CallbacksTopic, "callbacks-topic", c.CallbacksTopic, "topic on which consumers hand callbacks over for delivery")
	fs.StringVar(&c.CallbackGroup, "callback-group", c.CallbackGroup, "consumer group of the callback deliverers")
	var parts int
	fs.Func("topic-partitions", fmt.Sprintf("partitions of topics Sluice creates (default %d)", c.Partitions), func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return errors.New("must be a number from 1 to 10000")
		}
		parts = n
		c.Partitions = int32(parts)
		return nil
	})
}

// redisSettings select the Redis deployment.
type redisSettings struct {
	addrs    []string
	master   string
	username string
	password string
	db       int
}

func registerRedis(fs *flag.FlagSet, r *redisSettings, st *store.Config) {
	fs.Var(listValue{&r.addrs}, "redis-addr", "Redis host:port; a comma list means Redis Cluster (or Sentinels with --redis-master)")
	fs.StringVar(&r.master, "redis-master", "", "Sentinel master name (addresses are then Sentinels)")
	fs.StringVar(&r.username, "redis-username", "", "Redis ACL user name")
	fs.StringVar(&r.password, "redis-password", "", "Redis password")
	fs.IntVar(&r.db, "redis-db", 0, "Redis database number (single and Sentinel only)")
	fs.StringVar(&st.Prefix, "redis-prefix", st.Prefix, "prefix of every Redis key")
	fs.IntVar(&st.HistoryTurns, "history-turns", st.HistoryTurns, "turns kept per dialog (user and assistant each count one)")
	fs.DurationVar(&st.HistoryTTL, "history-ttl", st.HistoryTTL, "how long an untouched dialog is kept")
	fs.DurationVar(&st.ResultTTL, "result-ttl", st.ResultTTL, "how long a request's result can be polled")
}

func registerLLM(fs *flag.FlagSet, c *llm.Config) {
	fs.StringVar(&c.BaseURL, "llm-base-url", c.BaseURL, "OpenAI-compatible base URL including /v1; the client posts to {base}/chat/completions")
	fs.StringVar(&c.APIKey, "llm-api-key", c.APIKey, "API key of the LLM endpoint")
	fs.StringVar(&c.Model, "llm-model", c.Model, "model name")
	fs.Int64Var(&c.MaxTokens, "llm-max-tokens", c.MaxTokens, "max_tokens of each call (0 leaves it out)")
	fs.Float64Var(&c.Temperature, "llm-temperature", c.Temperature, "temperature of each call (0 leaves it out)")
	fs.DurationVar(&c.Timeout, "llm-timeout", c.Timeout, "timeout of one LLM call (the request's deadline bounds it too)")
	fs.StringVar(&c.SystemPrompt, "llm-system-prompt", c.SystemPrompt, "system prompt of tenants the prompts file does not name")
	fs.StringVar(&c.PromptsFile, "llm-prompts-file", c.PromptsFile, "YAML or JSON file of system prompts: default, and tenants (tenant id: prompt)")
	fs.IntVar(&c.HistoryTokens, "llm-history-tokens", c.HistoryTokens, "estimated token budget of the history sent with a question (newest turns first)")
	fs.IntVar(&c.Attempts, "llm-attempts", c.Attempts, "calls to one endpoint per request, retries included (retried: timeouts, connection errors, malformed answers, 408, 409, 429 and 5xx)")
	fs.DurationVar(&c.RetryBackoff, "llm-retry-backoff", c.RetryBackoff, "pause before the first retry; the n-th is n times it plus jitter, or the endpoint's Retry-After when longer")
	fs.DurationVar(&c.Reserve, "llm-reserve", c.Reserve, "time kept before a request's deadline for the fallbacks and the reply: model calls end that early")
	fs.IntVar(&c.BreakerFailures, "llm-breaker-failures", c.BreakerFailures, "consecutive failed calls that open an endpoint's circuit breaker")
	fs.Float64Var(&c.BreakerFailureRatio, "llm-breaker-failure-ratio", c.BreakerFailureRatio, "share of the last 10 s of calls (10 or more) that must have failed too for the breaker to open (0: consecutive failures alone)")
	fs.DurationVar(&c.BreakerOpen, "llm-breaker-open", c.BreakerOpen, "how long an open circuit breaker skips its endpoint before probing it")
	fs.IntVar(&c.BreakerProbes, "llm-breaker-probes", c.BreakerProbes, "calls a half-open circuit breaker lets through; that many successes close it")
	fs.IntVar(&c.MaxConcurrent, "llm-max-concurrent", c.MaxConcurrent, "calls under way to each LLM endpoint per process; more wait for a slot within their deadline, or fall back")
	fs.IntVar(&c.RPM, "llm-rpm", c.RPM, "requests per minute to the primary endpoint, shared by all consumers through Redis (0: no limit)")
	fs.IntVar(&c.TPM, "llm-tpm", c.TPM, "estimated tokens (prompt and max tokens) per minute to the primary endpoint, shared through Redis (0: no limit)")
	fs.StringVar(&c.CannedAnswer, "llm-canned-answer", c.CannedAnswer, "answer, with handoff to an agent, when neither a model nor the FAQ answers")
	registerFallback(fs, c)
	registerPII(fs, c)
}

// registerFallback registers the settings of the fallback tiers: the
// secondary model and the FAQ.
func registerFallback(fs *flag.FlagSet, c *llm.Config) {
	fs.StringVar(&c.FallbackBaseURL, "llm-fallback-base-url", c.FallbackBaseURL, "base URL of the secondary endpoint tried when the primary fails (default the primary's)")
	fs.StringVar(&c.FallbackAPIKey, "llm-fallback-api-key", c.FallbackAPIKey, "API key of the secondary endpoint (default the primary's when the base URL is)")
	fs.StringVar(&c.FallbackModel, "llm-fallback-model", c.FallbackModel, "model of the secondary endpoint; setting it or the base URL enables the secondary")
	fs.StringVar(&c.FAQ.File, "faq-file", c.FAQ.File, "YAML or JSON FAQ (entries of questions and an answer) of tenants without a file in --faq-dir")
	fs.StringVar(&c.FAQ.Dir, "faq-dir", c.FAQ.Dir, "directory of per-tenant FAQ files named <tenant>.yaml, .yml or .json")
	fs.BoolVar(&c.FAQ.Sample, "faq-sample", c.FAQ.Sample, "use the built-in sample shop FAQ for tenants without one (sluice dev turns it on)")
	fs.Float64Var(&c.FAQ.MinScore, "faq-min-score", c.FAQ.MinScore, "normalised BM25 score an FAQ match needs (0: the default, 0.4)")
}

// registerPII registers the personal data settings of the LLM client.
func registerPII(fs *flag.FlagSet, c *llm.Config) {
	fs.BoolVar(&c.MaskPrompt, "pii-mask-prompt", c.MaskPrompt, "mask phone, ID card and bank card numbers and e-mail addresses in what is sent to the model (answers, history and logs are masked always)")
}

func registerConsumer(fs *flag.FlagSet, c *consumer.Config) {
	fs.IntVar(&c.InFlight, "in-flight", c.InFlight, "records a consumer process works on at once")
	fs.DurationVar(&c.CommitInterval, "commit-interval", c.CommitInterval, "how often finished offsets are committed")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long a stopping consumer finishes in-flight work")
	fs.DurationVar(&c.RevokeTimeout, "revoke-timeout", c.RevokeTimeout, "how long a rebalance waits for work of revoked partitions")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", c.SessionTimeout, "consumer group session timeout")
	fs.StringVar(&c.OrderBy, "order-by", c.OrderBy, "serialize records by dialog (key) or, for comparison, one at a time per partition (partition)")
}

func registerProducer(fs *flag.FlagSet, c *producer.Config, secret *string, keys *[]string) {
	fs.StringVar(&c.Addr, "http-addr", c.Addr, "HTTP listen address of the API")
	fs.StringVar(secret, "jwt-secret", "", "HS256 secret of bearer tokens (at least 16 bytes)")
	fs.Var(listValue{keys}, "jwt-public-keys", "PEM files of RS256/ES256/EdDSA public keys, comma-separated")
	fs.DurationVar(&c.WaitDefault, "wait-default", c.WaitDefault, "wait of wait mode when the request names none")
	fs.DurationVar(&c.WaitMax, "wait-max", c.WaitMax, "largest wait_ms accepted")
	fs.DurationVar(&c.RequestTTL, "request-ttl", c.RequestTTL, "how long after acceptance a request is still answered (its deadline)")
	fs.IntVar(&c.MaxTextChars, "max-text-chars", c.MaxTextChars, "longest question, in characters")
	fs.Int64Var(&c.BodyLimit, "body-limit", c.BodyLimit, "largest request body, in bytes")
	fs.DurationVar(&c.StoreTimeout, "store-timeout", c.StoreTimeout, "bound of each Redis call on the ingress hot path (rate limits, queued marker); past it they fail open")
	fs.DurationVar(&c.ProduceTimeout, "produce-timeout", c.ProduceTimeout, "how long putting a request on Kafka may take before 503")
	fs.DurationVar(&c.Linger, "kafka-linger", c.Linger, "Kafka producer linger")
	fs.Var(partitionsValue{&c.ReplyPartitions}, "reply-partitions", "pin the reply partitions this replica reads, comma-separated (default: shared through the reply group)")
	fs.DurationVar(&c.ReplySessionTimeout, "reply-session-timeout", c.ReplySessionTimeout, "how soon a dead replica's reply partitions move to the others")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long a stopping ingress lets waiting requests finish")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "how long a stopping ingress keeps serving after readiness turned false (Kubernetes: e.g. 5s)")
	fs.DurationVar(&c.AdmissionInterval, "admission-interval", c.AdmissionInterval, "how often the queue wait estimate is refreshed from the consumer lag")
	fs.Float64Var(&c.AdmissionMinRate, "admission-min-rate", c.AdmissionMinRate, "floor of the measured completion rate (requests/s) in the queue wait estimate")
	fs.Int64Var(&c.MaxLag, "max-lag", c.MaxLag, "refuse async and callback requests while this many requests are queued")
	fs.Var(listValue{&c.CORSOrigins}, "cors-origins", "storefront origins allowed to call the API from a browser, comma-separated; empty disables CORS")
	fs.IntVar(&c.GzipMinBytes, "gzip-min-bytes", c.GzipMinBytes, "gzip responses of at least this many bytes; 0 disables")
	fs.DurationVar(&c.HotTTL, "hot-ttl", c.HotTTL, "how long a first-turn answer serves the same question opening another dialog of the tenant; 0 disables")
	fs.IntVar(&c.HotSize, "hot-size", c.HotSize, "entries of the local hot-answer cache")
	rateFlag(fs, &c.UserRate, "user-rate", "requests per user across replicas, N/unit[:burst] (e.g. 30/m:10); 0 disables")
	rateFlag(fs, &c.TenantRate, "tenant-rate", "requests per tenant across replicas, N/unit[:burst]; 0 disables")
	rateFlag(fs, &c.GlobalRate, "global-rate", "requests this replica accepts in all, N/unit[:burst]; 0 disables")
}

func registerMock(fs *flag.FlagSet, c *mockllm.Config) {
	fs.DurationVar(&c.Latency, "mock-latency", c.Latency, "mock LLM: latency of an answer (the median when --mock-latency-p99 is larger)")
	fs.DurationVar(&c.LatencyP99, "mock-latency-p99", c.LatencyP99, "mock LLM: 99th percentile latency; when larger than --mock-latency, latency is log-normal")
	fs.DurationVar(&c.Jitter, "mock-jitter", c.Jitter, "mock LLM: uniform random latency added, 0..jitter")
	fs.Float64Var(&c.ErrorRate, "mock-error-rate", c.ErrorRate, "mock LLM: fraction of calls answered 500")
	fs.Float64Var(&c.RateLimitRate, "mock-rate-limit-rate", c.RateLimitRate, "mock LLM: fraction of calls answered 429")
	fs.DurationVar(&c.RetryAfter, "mock-retry-after", c.RetryAfter, "mock LLM: Retry-After of a 429")
	fs.Float64Var(&c.MalformedRate, "mock-malformed-rate", c.MalformedRate, "mock LLM: fraction of calls answered 200 with truncated JSON")
	fs.Float64Var(&c.SlowRate, "mock-slow-rate", c.SlowRate, "mock LLM: fraction of answers whose body starts --mock-slow-first-byte after the headers")
	fs.DurationVar(&c.SlowFirstByte, "mock-slow-first-byte", c.SlowFirstByte, "mock LLM: stall between the headers and the body of a slow answer")
}

func rateFlag(fs *flag.FlagSet, r *producer.Rate, name, usage string) {
	fs.Func(name, usage+" (default "+r.String()+")", func(s string) error {
		v, err := producer.ParseRate(s)
		if err != nil {
			return err
		}
		*r = v
		return nil
	})
}

func registerCallbacks(fs *flag.FlagSet, c *callback.Config) {
	fs.Var(listValue{&c.Policy.AllowedHosts}, "callback-hosts", "hosts callback URLs may name, comma-separated, exact or *.suffix; empty disables mode callback")
	fs.BoolVar(&c.Policy.AllowPrivate, "callback-allow-private", false, "let callbacks reach loopback, private and link-local addresses")
	fs.BoolVar(&c.Policy.AllowHTTP, "callback-allow-http", false, "allow plain http callback URLs (default https only)")
	fs.StringVar(&c.Secret, "callback-secret", "", "HMAC-SHA256 secret that signs callbacks (Sluice-Signature), at least 16 bytes")
	fs.IntVar(&c.Attempts, "callback-attempts", c.Attempts, "tries of one callback delivery")
	fs.DurationVar(&c.Timeout, "callback-timeout", c.Timeout, "bound of one callback attempt")
	fs.DurationVar(&c.Backoff, "callback-backoff", c.Backoff, "pause after the first failed attempt; it grows linearly, with jitter")
}
