package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"sluice/shared/devstack/bench"
	"sluice/shared/settings"
)

// rateList is a flag.Value of comma-separated requests/s.
type rateList struct{ p *[]float64 }

func (l rateList) String() string {
	if l.p == nil {
		return ""
	}
	s := make([]string, len(*l.p))
	for i, r := range *l.p {
		s[i] = strconv.FormatFloat(r, 'f', -1, 64)
	}
	return strings.Join(s, ",")
}

func (l rateList) Set(s string) error {
	var rs []float64
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		r, err := strconv.ParseFloat(strings.TrimSuffix(part, "/s"), 64)
		if err != nil {
			return fmt.Errorf("%q is not a rate (requests/s, e.g. 600)", part)
		}
		rs = append(rs, r)
	}
	*l.p = rs
	return nil
}

// benchFlags returns the flags of `sluice bench`, bound to c and jsonOut.
func benchFlags(c *bench.Config, jsonOut *bool, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("bench", out)
	fs.Var(rateList{&c.Rates}, "rates", "offered loads, requests/s, comma-separated; each is measured --runs times")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "counted window of each run")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "load before each window, uncounted")
	fs.IntVar(&c.Runs, "runs", c.Runs, "runs of each rate; the report gives their median and spread")
	fs.DurationVar(&c.UserInterval, "user-interval", c.UserInterval, "how often one user asks: a rate r is spread over r × this many users")
	fs.IntVar(&c.Turns, "turns", c.Turns, "questions in a dialog")
	fs.IntVar(&c.WaitMS, "wait-ms", c.WaitMS, "wait_ms of the questions")
	fs.StringVar(&c.Redis, "redis", c.Redis, "auto (the machine's Redis at "+bench.DefaultRedis+" when it answers, else the embedded one), embedded, or host:port; a shared Redis is used under a key prefix of the run's own, deleted afterwards")
	fs.Var(int32Value{&c.Partitions}, "partitions", "partitions of the topics")
	fs.Var(settings.List{P: &c.Env}, "env", "SLUICE_NAME=value,...: settings of the producer and the consumer under test, e.g. SLUICE_KAFKA_LINGER=2ms")
	fs.Float64Var(&c.MaxOtherCores, "max-other-cores", c.MaxOtherCores, "discard and repeat a run during which the rest of the machine used more than this many cores, and wait before each run until it is this quiet (0: keep every run)")
	fs.DurationVar(&c.QuietWait, "quiet-wait", c.QuietWait, "longest wait for a quiet machine before a run; it then starts anyway")
	fs.StringVar(&c.ProfileDir, "profile-dir", "", "after each rate's runs, one more run whose CPU profile of each process (pprof) goes to DIR/<role>-<rate>.pprof")
	fs.BoolVar(jsonOut, "json", false, "print the report as one line of JSON on stdout instead of the table")
	return fs
}

// runBench runs `sluice bench`: the figures per answered request of each
// process at fixed open-loop rates, on a deployment of separate processes
// it starts and stops. Progress goes to stderr, the report to stdout, also
// when a run failed (the exit code is then 1).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := bench.DefaultConfig()
	var jsonOut bool
	fs := benchFlags(&cfg, &jsonOut, stderr)
	if err := configure(fs, args, cfg.Validate); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rep, err := bench.Run(ctx, cfg, log, func(r bench.RunResult) { _ = r.WriteRun(stderr) })
	if len(rep.Rates) > 0 {
		write := rep.WriteText
		if jsonOut {
			write = rep.WriteJSON
		}
		if werr := write(stdout); err == nil {
			err = werr
		}
	}
	return err
}
