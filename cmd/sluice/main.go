// Command sluice is Sluice's one binary.
//
//	sluice dev        everything in one process on embedded defaults (--roles picks a subset)
//	sluice producer   the HTTP ingress
//	sluice consumer   the worker
//	sluice mockllm    the OpenAI-compatible mock LLM
//	sluice topics     create the Kafka topics when missing, and exit
//	sluice token      mint a bearer token with the configured key
//	sluice loadgen    generate load and measure throughput and latency
//	sluice drain      drain a running producer or consumer (a preStop hook)
//	sluice lab        the autoscaling lab: consumers scaled by the HPA on a traffic profile
//	sluice bench      CPU and system calls per answer of each process at fixed open-loop rates;
//	                  with --lanes, a bulk backlog's effect on interactive latency, two lanes vs one
//	                  with --floor, the least one answer's network exchanges cost (issue 15)
//
// Every flag has an environment twin: --kafka-brokers is SLUICE_KAFKA_BROKERS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"sluice/shared/pii"
	"sluice/shared/settings"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Sluice: a Kafka-backed asynchronous chat pipeline for e-commerce customer service.

Usage: sluice <command> [flags]

Commands:
  dev        run everything in one process on embedded Kafka, Redis and mock LLM
  producer   run the HTTP ingress
  consumer   run the worker that answers requests
  mockllm    run the OpenAI-compatible mock LLM
  topics     create the Kafka topics when missing, and exit
  token      mint a bearer token (--sub U --tenant T --ttl 2h [--lane bulk])
  loadgen    generate load against the API or straight into Kafka, and measure
  drain      drain a running producer or consumer through its admin listener
             (a Kubernetes preStop hook); exits 0 once drained
  lab        the autoscaling lab: a traffic profile against consumer processes
             scaled by the Kubernetes HPA algorithm (--sim: a model of it)
  bench      CPU time and system calls per answered request of the producer,
             consumer and broker processes at fixed open-loop rates;
             --lanes first: interactive latency and bulk throughput with a
             bulk backlog, two lanes against one; --floor: CPU and system
             calls per operation of the exchanges one answer makes, at the
             least, and their sum for one answer
  version    print the version

Run 'sluice <command> -h' for a command's flags. Every flag has an
environment twin: --kafka-brokers is SLUICE_KAFKA_BROKERS.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// run executes one subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "dev":
		err = runDev(ctx, rest, stdout, stderr)
	case "producer":
		err = runProducer(ctx, rest, stderr)
	case "consumer":
		err = runConsumer(ctx, rest, stderr)
	case "mockllm":
		err = runMock(ctx, rest, stdout, stderr)
	case "topics":
		err = runTopics(ctx, rest, stderr)
	case "token":
		err = runToken(rest, stdout, stderr)
	case "loadgen":
		err = runLoadgen(ctx, rest, stdout, stderr)
	case "drain":
		err = runDrain(ctx, rest, stdout, stderr)
	case "lab":
		err = runLab(ctx, rest, stdout, stderr)
	case "bench":
		err = runBench(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "sluice", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var se *settings.Error
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage) || errors.As(err, &se):
		printConfigError(stderr, args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return 1
	}
}

// errUsage marks configuration errors (exit code 2).
var errUsage = errors.New("configuration")

func usageError(err error) error { return fmt.Errorf("%w: %w", errUsage, err) }

// printConfigError writes a configuration error of command cmd, one
// problem a line.
func printConfigError(w io.Writer, cmd string, err error) {
	msg := strings.TrimPrefix(err.Error(), errUsage.Error()+": ")
	lines := strings.Split(msg, "\n")
	if len(lines) == 1 {
		fmt.Fprintf(w, "sluice %s: configuration: %s\n", cmd, msg)
		return
	}
	fmt.Fprintf(w, "sluice %s: configuration: %d problems:\n", cmd, len(lines))
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintf(w, "Run 'sluice %s -h' for every setting.\n", cmd)
}

// newLogger returns the logger l describes; l was validated.
func newLogger(l logSettings, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.level))
	opts := &slog.HandlerOptions{Level: level}
	// Every line goes through the PII mask: no phone number, ID or card
	// number, or e-mail address reaches the logs, whoever logs it.
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if strings.EqualFold(l.format, "json") {
		h = slog.NewJSONHandler(w, opts)
	}
	log := slog.New(pii.NewHandler(h))
	// go-redis logs (pool and reconnect trouble) through the same handler.
	redis.SetLogger(redisLogger{log.With("component", "go-redis")})
	return log
}

// redisLogger adapts slog to go-redis's logger.
type redisLogger struct{ log *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.log.WarnContext(ctx, fmt.Sprintf(format, v...))
}
