package main

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"sluice/shared/devstack/loadgen"
)

// loadgenFlags registers the settings of sluice loadgen into cfg.
func loadgenFlags(cfg *loadgen.Config, jsonOut *bool, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("loadgen", out)
	fs.StringVar(&cfg.Target, "target", cfg.Target, "http: closed-loop users against the API; kafka: requests produced straight to Kafka, replies counted")
	fs.StringVar(&cfg.URL, "url", cfg.URL, "API base URL (target http)")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "concurrent users, each asking, waiting for the answer, asking again (target http)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to run (target http)")
	fs.IntVar(&cfg.Count, "count", cfg.Count, "stop after this many requests (0: duration only; target kafka: requests to produce, default 5000)")
	fs.StringVar(&cfg.Mode, "mode", cfg.Mode, "request mode: wait or async (target http)")
	fs.IntVar(&cfg.WaitMS, "wait-ms", cfg.WaitMS, "wait_ms of wait-mode requests")
	fs.StringVar(&cfg.Secret, "jwt-secret", devSecret, "HS256 secret to mint the users' tokens with")
	fs.StringVar(&cfg.Tenant, "tenant", cfg.Tenant, "tenant of the users")
	fs.StringVar(&cfg.Text, "text", cfg.Text, "question to ask")
	fs.IntVar(&cfg.Dialogs, "dialogs", cfg.Dialogs, "distinct dialogs (target kafka)")
	fs.IntVar(&cfg.Turns, "turns", cfg.Turns, "questions a user asks in one dialog before starting a new one (target http)")
	fs.DurationVar(&cfg.RetryAfterMax, "retry-after-max", cfg.RetryAfterMax, "longest Retry-After of a 429 or 503 a user waits before asking again; 0 asks again at once")
	fs.DurationVar(&cfg.GiveUp, "give-up-after", cfg.GiveUp, "stop with an error when requests kept failing this long with none answered in between; 0 never")
	fs.DurationVar(&cfg.ReplyTimeout, "reply-timeout", cfg.ReplyTimeout, "stop when no reply came for this long (target kafka)")
	fs.BoolVar(jsonOut, "json", false, "print the result as one line of JSON on stdout instead of the summary")
	cfg.Kafka.RegisterFlags(fs)
	return fs
}

// runLoadgen runs sluice loadgen. It prints the summary, or the JSON line
// with --json, on stdout, also when the run failed; the error (nothing
// answered, gave up, Kafka unreachable) makes the exit code 1.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := loadgen.DefaultConfig()
	var jsonOut bool
	fs := loadgenFlags(&cfg, &jsonOut, stderr)
	if err := configure(fs, args, func() error { return cfg.Validate() }); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := loadgen.Run(ctx, cfg, log)
	switch {
	case jsonOut:
		if werr := res.WriteJSON(stdout); err == nil {
			err = werr
		}
	case res.Sent > 0 || err == nil:
		if werr := res.WriteText(stdout); err == nil {
			err = werr
		}
	}
	return err
}
