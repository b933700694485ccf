package main

import (
	"flag"
	"io"
)

// serviceCommand returns the settings, flag set and validation of the
// subcommand sub that deployment files run (producer, consumer, mockllm,
// topics), as the binary builds them; ok is false for any other.
func serviceCommand(sub string) (st *config, fs *flag.FlagSet, validate func() error, ok bool) {
	st = defaultSettings()
	switch sub {
	case "producer":
		return st, producerFlags(st, io.Discard), func() error { return st.producerSettings().Validate() }, true
	case "consumer":
		return st, consumerFlags(st, io.Discard), func() error { return st.consumerSettings().Validate() }, true
	case "mockllm":
		return st, mockFlags(st, io.Discard), func() error { return st.mock.Validate() }, true
	case "topics":
		return st, topicsFlags(st, io.Discard), func() error { return st.bus.Validate() }, true
	}
	return nil, nil, nil, false
}
