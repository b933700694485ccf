// Package bench measures what an answer costs: CPU time and system calls
// per answered request of each of Sluice's processes at fixed, open-loop
// rates, and the Kafka requests per answer. A figure per answer does not
// drift with the machine as throughput at saturation does, and it is what
// a deployment pays at the loads it runs at most of the time. `sluice
// bench` is its command; docs/benchmarks.md ("CPU per answer") holds the
// figures and the conditions.
//
// Run starts the split deployment as separate OS processes of the sluice
// binary: `sluice dev --roles broker,llm` (the embedded Kafka broker and
// the mock LLM answering at once), one `sluice producer` and one `sluice
// consumer`, against the machine's Redis at 127.0.0.1:6379 when it answers
// (under a key prefix of the run's own, deleted afterwards), else the
// embedded one (then in the dev process). For each rate it runs the
// in-process load generator open loop (loadgen.Config.Rate: wait-mode
// questions, each distinct, spread over many users and dialogs) Runs
// times, and around each run's counted window reads:
//
//   - each process's CPU time, utime+stime of /proc/PID/stat, in clock
//     ticks (proc.ClockTicks: 100 a second on Linux), and its read and
//     write system calls, syscr+syscw of /proc/PID/io;
//   - the Kafka requests the producer's and the consumer's clients wrote,
//     by kind, from their own counters on /metrics
//     (sluice_kafka_<role>_requests_total{key}, package bus);
//   - the machine's Redis's CPU time and commands (INFO), when it is the
//     machine's;
//   - the machine's CPU time (/proc/stat), so that CPU used by anything
//     else during the window is reported and a busy machine shows.
//
// The figures are per answered request (HTTP 200) of the window. With
// ProfileDir set, one more run per rate, not counted, takes a CPU profile
// of each process over its window from its admin listener's
// /debug/pprof/profile.
//
// RunFloor (`sluice bench --floor`) measures, with the same readers and
// rules, the minimal network exchanges an answer makes, each side in a
// process of its own (RunPart), and their sum for one answer
// (AnswerExchanges); RunLanes (`sluice bench --lanes`) a bulk backlog's
// effect on interactive answers.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"sluice/shared/devstack/loadgen"
	"sluice/shared/settings"
)

// Redis choices of Config.Redis besides an address.
const (
	// RedisAuto uses the machine's Redis at DefaultRedis when it answers,
	// else the embedded one.
	RedisAuto = "auto"
	// RedisEmbedded uses the embedded Redis of the dev process.
	RedisEmbedded = "embedded"
	// DefaultRedis is where RedisAuto looks for the machine's Redis.
	DefaultRedis = "127.0.0.1:6379"
)

// Config is a bench run's settings.
type Config struct {
	// Rates are the offered loads, requests/s. Default 600 and 2000.
	Rates []float64
	// Duration is the counted window of each run. Default 20 s.
	Duration time.Duration
	// Warmup runs the load before each window, uncounted. Default 5 s.
	Warmup time.Duration
	// Runs is how many times each rate is measured. Default 3.
	Runs int
	// UserInterval is how often one user asks: a rate of r is spread over
	// r × UserInterval users. Default 10 s, well within the producer's
	// per-user limit of 30 a minute (which stays on).
	UserInterval time.Duration
	// Turns is how many questions a dialog has. Default 4.
	Turns int
	// WaitMS is the questions' wait_ms. Default 5000.
	WaitMS int
	// Redis is RedisAuto (default), RedisEmbedded or the host:port of a
	// Redis to use under a key prefix of the run's own.
	Redis string
	// Partitions of the topics. Default 12, as Sluice creates them.
	Partitions int32
	// Env adds SLUICE_X=value settings to the producer and the consumer:
	// the knob a change under test turns (SLUICE_KAFKA_LINGER=5ms).
	Env []string
	// MaxOtherCores, when positive, keeps the figures of a busy machine
	// out: a run during which the rest of the machine used more than this
	// many cores is discarded (and reported) and run again, at most
	// maxAttempts times as many runs as asked for in all; and each run
	// waits first, up to QuietWait, until the machine is that quiet.
	// Default 0.15.
	MaxOtherCores float64
	// QuietWait bounds the wait for a quiet machine before a run; the run
	// starts anyway when it ends. Default 2 minutes.
	QuietWait time.Duration
	// ProfileDir, when set, receives a CPU profile of each process per
	// rate, <role>-<rate>.pprof, from one more run that is not counted
	// (the profiler costs some CPU itself).
	ProfileDir string
	// Binary is the sluice binary the processes run. Default: this one.
	Binary string
	// MockLatency is the mock LLM's time to answer, without jitter.
	// Default 0: the figures per answer measure Sluice, not a wait.
	MockLatency time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Rates: []float64{600, 2000}, Duration: 20 * time.Second, Warmup: 5 * time.Second, Runs: 3,
		UserInterval: 10 * time.Second, Turns: 4, WaitMS: 5000, Redis: RedisAuto, Partitions: 12,
		MaxOtherCores: 0.15, QuietWait: 2 * time.Minute}
}

// Validate reports every setting out of range, each named by its flag.
func (c Config) Validate() error {
	var p settings.Problems
	p.Check(len(c.Rates) > 0, "rates", "at least one rate is needed")
	for _, r := range c.Rates {
		p.Check(r > 0 && r <= 50000, "rates", "each must be from 1 to 50000 requests/s, got %g", r)
	}
	p.Check(c.Duration >= time.Second && c.Duration <= 10*time.Minute, "duration", "must be from 1s to 10m, got %v", c.Duration)
	p.Check(c.Warmup >= 0, "warmup", "must not be negative, got %v", c.Warmup)
	p.Check(c.Runs >= 1 && c.Runs <= 100, "runs", "must be from 1 to 100, got %d", c.Runs)
	p.Check(c.UserInterval >= time.Second, "user-interval", "must be at least 1s (the producer limits a user to 30 questions a minute), got %v", c.UserInterval)
	p.Check(c.Turns >= 1, "turns", "must be at least 1, got %d", c.Turns)
	p.Check(c.WaitMS >= 100, "wait-ms", "must be at least 100, got %d", c.WaitMS)
	p.Check(c.Redis != "", "redis", "must be auto, embedded or host:port")
	p.Check(c.Partitions >= 1, "partitions", "must be at least 1, got %d", c.Partitions)
	p.Check(c.MaxOtherCores >= 0, "max-other-cores", "must not be negative (0: keep every run), got %g", c.MaxOtherCores)
	p.Check(c.QuietWait >= 0, "quiet-wait", "must not be negative, got %v", c.QuietWait)
	for _, e := range c.Env {
		k, _, ok := cutEnv(e)
		p.Check(ok, "env", "%q is not SLUICE_NAME=value or a Go runtime setting (GOMAXPROCS, GOGC, GOMEMLIMIT, GODEBUG)", e)
		p.Check(!ok || !owned[k], "env", "%s is the bench's own to set", k)
	}
	return p.Err()
}

// maxAttempts bounds the runs of a rate: at most this many times as many
// as asked for, discarded ones included.
const maxAttempts = 3

// ErrBusy is returned by Run when too many runs of a rate were discarded
// because the rest of the machine was busy (Config.MaxOtherCores).
var ErrBusy = errors.New("the machine is too busy to measure")

// awaitQuiet waits until the rest of the machine, sampled over
// quietSample, uses at most maxOther cores (what usage reads not counted:
// the processes under test, the bench and Redis), at most wait. There is
// no event to await: /proc is read again. maxOther 0 does not wait.
func awaitQuiet(ctx context.Context, maxOther float64, wait time.Duration, log *slog.Logger, usage func(context.Context) snapshot) error {
	if maxOther <= 0 {
		return nil
	}
	deadline := time.Now().Add(wait)
	for logged := false; ; logged = true {
		s0 := usage(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(quietSample):
		}
		s1 := usage(ctx)
		if err := errors.Join(append(s0.errs, s1.errs...)...); err != nil {
			return err
		}
		cores := otherCores(s0, s1)
		if cores <= maxOther {
			return nil
		}
		if time.Now().After(deadline) {
			log.Warn("bench: the rest of the machine is still busy; running anyway", "cores", cores, "waited", wait)
			return nil
		}
		if !logged {
			log.Info("bench: waiting for the rest of the machine to idle", "cores", cores, "max", maxOther)
		}
	}
}

// attempts runs the measured runs of one rate: each waits for a quiet
// machine first, and one during which the rest of the machine was busy
// all the same is discarded, up to maxAttempts times as many runs as
// asked for (one more for a profiled run) in all.
type attempts struct {
	cfg   Config
	log   *slog.Logger
	usage func(context.Context) snapshot
	// what names the rate (and primitive) in the discard warning.
	what []any
	n    int
	// discarded counts the runs discarded so far.
	discarded int
}

// run waits for a quiet machine and runs measure once, with the attempt's
// number; measure returns the cores the rest of the machine used during
// its window. kept is false when the run was discarded for them.
func (a *attempts) run(ctx context.Context, measure func(n int) (otherCores float64, err error)) (kept bool, err error) {
	if a.n++; a.n > maxAttempts*(a.cfg.Runs+1) {
		return false, fmt.Errorf("%w: %d of %d runs discarded", ErrBusy, a.discarded, a.n-1)
	}
	if err := awaitQuiet(ctx, a.cfg.MaxOtherCores, a.cfg.QuietWait, a.log, a.usage); err != nil {
		return false, err
	}
	other, err := measure(a.n)
	if err != nil {
		return false, fmt.Errorf("run %d: %w", a.n, err)
	}
	if a.cfg.MaxOtherCores > 0 && other > a.cfg.MaxOtherCores {
		a.log.Warn("bench: run discarded: the rest of the machine was busy",
			append(slices.Clone(a.what), "run", a.n, "other_cores", other, "max", a.cfg.MaxOtherCores)...)
		a.discarded++
		return false, nil
	}
	return true, nil
}

// quietSample is how long awaitQuiet samples the machine's CPU time.
const quietSample = 2 * time.Second

// benchSecret signs the bench users' tokens; the producer is the bench's own.
const benchSecret = "sluice-bench-secret-not-for-production"

// benchTenant is the tenant of every bench question.
const benchTenant = "bench-shop"

// Run measures each rate of cfg Runs times on a deployment it starts and
// stops, and returns the report. progress, when set, receives each run's
// result as it comes. It fails when the deployment does not come up, a
// run answers nothing, or ctx ends; the report then holds the runs done.
func Run(ctx context.Context, cfg Config, log *slog.Logger, progress func(RunResult)) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	var err error
	if cfg.Binary, err = binary(cfg.Binary); err != nil {
		return Report{}, err
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return Report{}, fmt.Errorf("profile directory: %w", err)
		}
	}
	d, err := deploy(ctx, cfg, log)
	if d != nil {
		defer d.stop(log)
	}
	if err != nil {
		return Report{}, err
	}
	rep := Report{Conditions: d.conditions(cfg)}
	log.Info("bench: deployment up", "redis", rep.Conditions.Redis, "producer_pid", d.producer.Pid(),
		"consumer_pid", d.consumer.Pid(), "dev_pid", d.dev.Pid())
	for _, rate := range cfg.Rates {
		rr := RateReport{Rate: rate}
		a := attempts{cfg: cfg, log: log, usage: d.usage, what: []any{"rate", rate}}
		// attempt runs rate once; kept is false when the run was
		// discarded because the machine was busy.
		attempt := func(profiles func(role string) string) (res RunResult, kept bool, err error) {
			kept, err = a.run(ctx, func(n int) (float64, error) {
				var err error
				if res, err = d.measure(ctx, cfg, rate, n, profiles); err != nil {
					return 0, err
				}
				if progress != nil {
					progress(res)
				}
				return res.OtherCores, nil
			})
			if err == nil && !kept {
				rr.Discarded = append(rr.Discarded, res)
			}
			return res, kept, err
		}
		for len(rr.Runs) < cfg.Runs {
			res, kept, err := attempt(nil)
			if err != nil {
				rep.Rates = append(rep.Rates, rr.summarize())
				return rep, fmt.Errorf("rate %g/s: %w", rate, err)
			}
			if kept {
				rr.Runs = append(rr.Runs, res)
			}
		}
		for cfg.ProfileDir != "" && rr.Profiled == nil {
			res, kept, err := attempt(func(role string) string {
				return filepath.Join(cfg.ProfileDir, role+"-"+strconv.FormatFloat(rate, 'f', -1, 64)+".pprof")
			})
			if err != nil {
				rep.Rates = append(rep.Rates, rr.summarize())
				return rep, fmt.Errorf("rate %g/s, profiled run: %w", rate, err)
			}
			if kept {
				rr.Profiled = &res
				log.Info("bench: profiles written", "rate", rate, "dir", cfg.ProfileDir)
			}
		}
		rep.Rates = append(rep.Rates, rr.summarize())
	}
	return rep, nil
}

// binary returns bin, or this executable when bin is empty: the sluice
// binary a deployment runs.
func binary(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the sluice binary: %w", err)
	}
	return exe, nil
}

// loadConfig is the load generator's configuration of one run of rate.
func (d *deployment) loadConfig(cfg Config, rate float64, onWindow func(bool)) loadgen.Config {
	c := loadgen.DefaultConfig()
	c.URL = d.api
	c.Rate = rate
	c.Users = max(1, int(rate*cfg.UserInterval.Seconds()))
	c.Duration, c.Warmup = cfg.Duration, cfg.Warmup
	c.Mode, c.WaitMS, c.Turns = "wait", cfg.WaitMS, cfg.Turns
	c.Secret, c.Tenant = benchSecret, benchTenant
	// A bench run must not give up on a burst of refusals: it reports them.
	c.GiveUp = 0
	c.OnWindow = onWindow
	return c
}

// measure runs rate once and computes its figures. With profiles set it
// also takes a CPU profile of each process over the window, written to
// profiles(role); the figures then include the profiler's own cost.
func (d *deployment) measure(ctx context.Context, cfg Config, rate float64, run int, profiles func(role string) string) (RunResult, error) {
	var before, after snapshot
	var wait func() error
	lc := d.loadConfig(cfg, rate, func(begin bool) {
		if begin {
			before = d.take(ctx, true)
			if profiles != nil {
				wait = d.startProfiles(ctx, max(1, int(cfg.Duration.Seconds())), profiles)
			}
		} else {
			after = d.take(ctx, false)
		}
	})
	lres, err := loadgen.Run(ctx, lc, nil)
	if wait != nil {
		err = errors.Join(err, wait())
	}
	if err != nil {
		return RunResult{}, err
	}
	if err := errors.Join(append(before.errs, after.errs...)...); err != nil {
		return RunResult{}, err
	}
	return compute(rate, run, lres, before, after), nil
}

// goRuntime are the Go runtime's settings --env may give the processes
// under test besides Sluice's own.
var goRuntime = map[string]bool{"GOMAXPROCS": true, "GOGC": true, "GOMEMLIMIT": true, "GODEBUG": true}

// cutEnv splits SLUICE_NAME=value, or a Go runtime setting.
func cutEnv(e string) (key, value string, ok bool) {
	key, value, ok = strings.Cut(e, "=")
	return key, value, ok && (strings.HasPrefix(key, "SLUICE_") && len(key) > len("SLUICE_") || goRuntime[key])
}
