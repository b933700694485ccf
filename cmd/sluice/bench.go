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

// benchFlags returns the flags of `sluice bench`, bound to c, floor and
// jsonOut.
func benchFlags(c *bench.FloorConfig, floor, jsonOut *bool, out io.Writer) *flag.FlagSet {
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
	fs.Var(settings.List{P: &c.Env}, "env", "SLUICE_NAME=value,...: settings of the producer and the consumer under test, e.g. SLUICE_KAFKA_LINGER=2ms; also the Go runtime's GOMAXPROCS, GOGC, GOMEMLIMIT and GODEBUG")
	fs.Float64Var(&c.MaxOtherCores, "max-other-cores", c.MaxOtherCores, "discard and repeat a run during which the rest of the machine used more than this many cores, and wait before each run until it is this quiet (0: keep every run)")
	fs.DurationVar(&c.QuietWait, "quiet-wait", c.QuietWait, "longest wait for a quiet machine before a run; it then starts anyway")
	fs.StringVar(&c.ProfileDir, "profile-dir", "", "after each rate's runs, one more run whose CPU profile of each process (pprof) goes to DIR/<role>-<rate>.pprof")
	fs.BoolVar(jsonOut, "json", false, "print the report as one line of JSON on stdout instead of the table")
	fs.BoolVar(floor, "floor", false, "measure the floor instead: CPU µs and syscalls per operation of the minimal exchanges an answer makes (HTTP POST, Kafka produce and consume, Redis round trip, the pacing alone), each side a process of its own, and their sum for one answer against issue 15's target (--env, --profile-dir, --user-interval and --wait-ms do not apply)")
	fs.Var(settings.List{P: &c.Primitives}, "primitives", "with --floor: the primitives to measure, comma-separated: "+strings.Join(bench.Primitives, ", "))
	return fs
}

// runBench runs `sluice bench`: the figures per answered request of each
// process at fixed open-loop rates, on a deployment of separate processes
// it starts and stops. Progress goes to stderr, the report to stdout, also
// when a run failed (the exit code is then 1).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "--lanes" || args[0] == "-lanes") {
		return runBenchLanes(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "--floor-part" || args[0] == "-floor-part") {
		return runFloorPart(ctx, args[1:], stdout, stderr)
	}
	cfg := bench.DefaultFloorConfig()
	var floor, jsonOut bool
	fs := benchFlags(&cfg, &floor, &jsonOut, stderr)
	if err := configure(fs, args, func() error {
		if floor {
			return cfg.Validate()
		}
		var p settings.Problems
		p.Add(cfg.Config.Validate())
		fs.Visit(func(f *flag.Flag) {
			p.Check(f.Name != "primitives", "primitives", "applies only with --floor")
		})
		return p.Err()
	}); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if floor {
		rep, err := bench.RunFloor(ctx, cfg, log, func(r bench.FloorRun) { _ = r.WriteRun(stderr) })
		if len(rep.Rates) > 0 {
			err = writeReport(stdout, jsonOut, rep.WriteText, rep.WriteJSON, err)
		}
		return err
	}
	rep, err := bench.Run(ctx, cfg.Config, log, func(r bench.RunResult) { _ = r.WriteRun(stderr) })
	if len(rep.Rates) > 0 {
		err = writeReport(stdout, jsonOut, rep.WriteText, rep.WriteJSON, err)
	}
	return err
}

// writeReport writes a report to w as text, or as JSON when jsonOut, and
// returns err, or the write's error when err is nil.
func writeReport(w io.Writer, jsonOut bool, text, json func(io.Writer) error, err error) error {
	write := text
	if jsonOut {
		write = json
	}
	if werr := write(w); err == nil {
		err = werr
	}
	return err
}

// lanesFlags returns the flags of `sluice bench --lanes`, bound to c and
// jsonOut.
func lanesFlags(c *bench.LanesConfig, jsonOut *bool, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("bench --lanes", out)
	fs.Var(settings.List{P: &c.Scenarios}, "scenarios", "scenarios to run, comma-separated: alone (the interactive load alone), two (with a bulk backlog, two lanes), single (the same with SLUICE_LANES=single)")
	fs.IntVar(&c.Runs, "runs", c.Runs, "runs of each scenario, each on a deployment of its own")
	fs.IntVar(&c.InFlight, "in-flight", c.InFlight, "the consumer's in-flight budget (SLUICE_IN_FLIGHT)")
	fs.DurationVar(&c.Latency, "llm-latency", c.Latency, "the mock LLM's fixed time to answer")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "interactive wait-mode questions/s, open loop (0: half the consumer's capacity, in-flight / llm-latency / 2)")
	fs.IntVar(&c.Backlog, "backlog", c.Backlog, "bulk requests put on the bulk topic, straight to Kafka, before the load (scenarios two and single)")
	fs.Float64Var(&c.BulkRate, "bulk-rate", c.BulkRate, "more bulk requests/s meanwhile")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "counted window of each run (with the warm-up, at most 2m)")
	fs.DurationVar(&c.Warmup, "warmup", c.Warmup, "load before each window, uncounted")
	fs.DurationVar(&c.Bin, "bin", c.Bin, "width of the bins of the time series and the plot")
	fs.IntVar(&c.WaitMS, "wait-ms", c.WaitMS, "wait_ms of the interactive questions")
	fs.StringVar(&c.Redis, "redis", c.Redis, "auto, embedded or host:port, as for sluice bench")
	fs.Var(int32Value{&c.Partitions}, "partitions", "partitions of the topics")
	fs.StringVar(&c.Out, "out", c.Out, "directory for lanes.png (latency and bulk throughput over time) and lanes.json")
	fs.BoolVar(jsonOut, "json", false, "print the report as one line of JSON on stdout instead of the table")
	return fs
}

// runBenchLanes runs `sluice bench --lanes`: interactive latency and bulk
// throughput of one consumer with a bulk backlog, on two lanes and on one
// (docs/benchmarks.md "Two lanes").
func runBenchLanes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := bench.DefaultLanesConfig()
	var jsonOut bool
	fs := lanesFlags(&cfg, &jsonOut, stderr)
	if err := configure(fs, args, func() error { return cfg.Validate() }); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rep, err := bench.RunLanes(ctx, cfg, log, func(r bench.LanesRun) {
		fmt.Fprintf(stderr, "bench lanes: %s run %d: interactive p50 %.0f ms p99 %.0f ms (200 %d, 202 %d, refused %d); bulk %.1f/s, lowest bin %.1f/s; rest of the machine %.2f cores\n",
			r.Scenario, r.Run, r.P50MS, r.P99MS, r.Answered, r.Queued, r.Refused, r.BulkPS, r.BulkMinBinPS, r.OtherCores)
	})
	if len(rep.Runs) > 0 {
		err = writeReport(stdout, jsonOut, rep.WriteText, rep.WriteJSON, err)
	}
	return err
}

// runFloorPart runs `sluice bench --floor-part ROLE [flags]`, a hidden
// command: one side of a primitive of `sluice bench --floor`, which starts
// it in a process of its own and reads the lines it prints on stdout.
func runFloorPart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c bench.PartConfig
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Role, args = args[0], args[1:]
	}
	fs := newFlagSet("bench --floor-part ROLE", stderr)
	fs.StringVar(&c.Addr, "addr", "", "the server's host:port (http-server: where to listen), or the Kafka brokers")
	fs.StringVar(&c.Topic, "topic", "", "Kafka topic")
	fs.StringVar(&c.Group, "group", "", "Kafka consumer group")
	fs.StringVar(&c.Prefix, "prefix", "", "Redis key prefix")
	fs.Float64Var(&c.Rate, "rate", 0, "operations a second, open loop")
	fs.DurationVar(&c.Warmup, "warmup", 0, "load before the window")
	fs.DurationVar(&c.Duration, "duration", 0, "the window")
	if err := configure(fs, args, func() error { return c.Validate() }); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return bench.RunPart(ctx, c, stdout, log)
}
