package main

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"sluice/shared/devstack/loadgen"
)

// loadgenFlags returns the flags of `sluice loadgen`, bound to cfg and
// jsonOut.
func loadgenFlags(cfg *loadgen.Config, jsonOut *bool, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("loadgen", out)
	cfg.RegisterFlags(fs)
	fs.BoolVar(jsonOut, "json", false, "print the result as one line of JSON on stdout instead of the summary")
	return fs
}

// runLoadgen runs sluice loadgen. It prints the summary, or the JSON line
// with --json, on stdout, also when the run failed; the error (nothing
// answered, gave up, Kafka unreachable) makes the exit code 1.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := loadgen.DefaultConfig()
	cfg.Secret = devSecret // the tokens make run accepts
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
