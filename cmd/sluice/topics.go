package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strconv"

	"sluice/shared/bus"
)

// topicsFlags returns the flags of `sluice topics`, bound to st: the Kafka
// settings the services have, so that one environment serves all three,
// and the replication factor of the topics it creates.
func topicsFlags(st *config, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("topics", out)
	registerLog(fs, &st.log)
	st.bus.RegisterFlags(fs)
	fs.Var(replicationFactor{&st.bus.ReplicationFactor}, "topic-replication-factor",
		"replication factor of topics Sluice creates; -1 is the broker's default")
	return fs
}

// runTopics creates Sluice's topics when missing and returns: the one-shot
// step that a deployment runs before its services (the Helm chart's hook
// Job), where the services' own --create-topics would create them only
// once a pod starts, with a pod's rights. Existing topics are left as they
// are.
func runTopics(ctx context.Context, args []string, stderr io.Writer) error {
	st := defaultSettings()
	fs := topicsFlags(st, stderr)
	if err := configure(fs, args, func() error { return errors.Join(st.log.validate(), st.bus.Validate()) }); err != nil {
		return err
	}
	log := newLogger(st.log, stderr)
	warnIgnoredEnv(log, fs)
	if err := bus.CreateTopics(ctx, st.bus, log); err != nil {
		return err
	}
	log.Info("topics exist", "topics", st.bus.Topics(),
		"partitions_of_created", st.bus.Partitions, "replication_factor", st.bus.ReplicationFactor)
	return nil
}

// replicationFactor is a flag of a topic replication factor: -1 (the
// broker's default) or 1 to 32767.
type replicationFactor struct{ p *int16 }

func (v replicationFactor) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(int(*v.p))
}

func (v replicationFactor) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 16)
	if err != nil || n == 0 || n < -1 {
		return errors.New("must be -1 (the broker's default) or a number from 1 to 32767")
	}
	*v.p = int16(n)
	return nil
}
