package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"sluice/consumer"
	"sluice/consumer/llm"
	"sluice/producer"
	"sluice/shared/auth"
	"sluice/shared/bus"
	"sluice/shared/callback"
	"sluice/shared/devstack/mockllm"
	"sluice/shared/settings"
	"sluice/shared/store"
)

// config holds every service setting; each subcommand registers the ones
// it uses. Each part's flags are registered by its own package.
type config struct {
	log          logSettings
	adminAddr    string
	createTopics bool
	bus          bus.Config
	redis        store.ClientConfig
	store        store.Config
	llm          llm.Config
	consumer     consumer.Config
	producer     producer.Config
	auth         auth.Config
	callbacks    callback.Config
	mock         mockllm.Config
	mockAddr     string
}

func defaultSettings() *config {
	s := &config{
		bus:       bus.DefaultConfig(),
		store:     store.DefaultConfig(),
		llm:       llm.DefaultConfig(),
		consumer:  consumer.DefaultConfig(),
		producer:  producer.DefaultConfig(),
		callbacks: callback.DefaultConfig(),
		mock:      mockllm.DefaultConfig(),
	}
	s.bus.Brokers = nil // required for producer and consumer
	s.llm.Model = ""    // required unless dev runs the mock
	return s
}

// producerSettings are the settings `sluice producer` runs on.
func (s *config) producerSettings() producer.Settings {
	p := s.producer
	p.Callbacks = s.callbacks.Policy
	return producer.Settings{Producer: p, Bus: s.bus, Redis: s.redis, Store: s.store, Auth: s.auth, CreateTopics: s.createTopics}
}

// consumerSettings are the settings `sluice consumer` runs on.
func (s *config) consumerSettings() consumer.Settings {
	return consumer.Settings{Consumer: s.consumer, Bus: s.bus, Redis: s.redis, Store: s.store,
		LLM: s.llm, Callbacks: s.callbacks, CreateTopics: s.createTopics, BulkRequestTTL: s.producer.BulkRequestTTL}
}

// registerService registers the settings every service has: logging, the
// admin listener, Kafka and Redis.
func (s *config) registerService(fs *flag.FlagSet) {
	registerLog(fs, &s.log)
	fs.StringVar(&s.adminAddr, "admin-addr", ":9090", "listen address of /metrics, /healthz, /readyz, /drain")
	fs.BoolVar(&s.createTopics, "create-topics", true, "create the requests, replies, callbacks and DLQ topics when missing")
	s.bus.RegisterFlags(fs)
	s.redis.RegisterFlags(fs)
	s.store.RegisterFlags(fs)
}

// producerFlags returns the flags of `sluice producer`, bound to st.
func producerFlags(st *config, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("producer", out)
	st.registerService(fs)
	st.producer.RegisterFlags(fs)
	st.auth.RegisterFlags(fs)
	st.callbacks.RegisterFlags(fs)
	return fs
}

// consumerFlags returns the flags of `sluice consumer`, bound to st.
func consumerFlags(st *config, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("consumer", out)
	st.registerService(fs)
	st.llm.RegisterFlags(fs)
	st.consumer.RegisterFlags(fs)
	st.callbacks.RegisterFlags(fs)
	// The producers' bulk request TTL, the same flag: the consumer's result
	// TTL must cover it (consumer.Settings.BulkRequestTTL).
	pfs := flag.NewFlagSet("producer", flag.ContinueOnError)
	st.producer.RegisterFlags(pfs)
	bulkTTL := pfs.Lookup("bulk-request-ttl")
	fs.Var(bulkTTL.Value, bulkTTL.Name, bulkTTL.Usage)
	return fs
}

// mockFlags returns the flags of `sluice mockllm`, bound to st.
func mockFlags(st *config, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("mockllm", out)
	registerLog(fs, &st.log)
	fs.StringVar(&st.mockAddr, "mock-addr", "127.0.0.1:8081", "listen address of the mock LLM")
	st.mock.RegisterFlags(fs)
	return fs
}

// parse applies the environment twins of fs's flags, then args, so that a
// flag on the command line wins over the environment. Every value that does
// not parse is reported, each naming its setting.
func parse(fs *flag.FlagSet, args []string) error {
	return settings.Parse(fs, args, os.LookupEnv)
}

// configure parses args into fs and validates the result; a failure is a
// configuration error (exit code 2) listing every problem, and the SLUICE_*
// variables of the environment that fs's command does not know, with the
// setting each most likely means.
func configure(fs *flag.FlagSet, args []string, validate func() error) error {
	err := parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err == nil && validate != nil {
		err = validate()
	}
	return configError(fs, err)
}

// configError returns err, a problem with the settings of fs's command, as
// a configuration error (exit code 2) that also names the SLUICE_*
// variables of the environment the command does not know, with the setting
// each most likely means. It returns nil for nil.
func configError(fs *flag.FlagSet, err error) error {
	if err == nil {
		return nil
	}
	var hints []error
	for _, ig := range settings.IgnoredEnv(fs, os.Environ()) {
		if ig.Suggest != "" {
			hints = append(hints, fmt.Errorf("%s is not a setting of sluice %s (did you mean %s?)", ig.Name, fs.Name(), ig.Suggest))
		}
	}
	return usageError(errors.Join(append([]error{err}, hints...)...))
}

// warnIgnoredEnv logs the SLUICE_* variables fs's command ignores.
func warnIgnoredEnv(log *slog.Logger, fs *flag.FlagSet) {
	ignored := settings.IgnoredEnv(fs, os.Environ())
	if len(ignored) == 0 {
		return
	}
	names := make([]string, len(ignored))
	for i, ig := range ignored {
		names[i] = ig.String()
	}
	log.Warn("environment variables that are not settings of sluice "+fs.Name()+" are ignored", "names", strings.Join(names, ", "))
}

// settingError names a setting by both its spellings.
func settingError(flagName string, err error) error {
	return &settings.Error{Flag: flagName, Err: err}
}

func newFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: sluice %s [flags]\n\n", name)
		// Name the twin of a flag this command has, not of another's.
		var example string
		fs.VisitAll(func(f *flag.Flag) {
			if example == "" && f.Name != "log-level" && f.Name != "log-format" {
				example = f.Name
			}
		})
		if example != "" {
			fmt.Fprintf(out, "Every flag can also be set by its environment twin, e.g. --%s as %s.\n\n", example, settings.EnvName(example))
		}
		fs.PrintDefaults()
	}
	return fs
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

// validate reports the log settings' problems, each named by its flag.
func (l logSettings) validate() error {
	var p settings.Problems
	var level slog.Level
	p.Check(level.UnmarshalText([]byte(l.level)) == nil, "log-level", "must be debug, info, warn or error")
	f := strings.ToLower(l.format)
	p.Check(f == "text" || f == "json", "log-format", "must be text or json")
	return p.Err()
}
