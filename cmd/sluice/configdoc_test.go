package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sluice/shared/settings"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the flag definitions")

// configurationDoc renders every setting of the services, sluice dev and
// sluice mockllm from their flag definitions.
func configurationDoc() string {
	st, d := devDefaults()
	sets := map[string]*flag.FlagSet{
		"producer": producerFlags(defaultSettings(), io.Discard),
		"consumer": consumerFlags(defaultSettings(), io.Discard),
		"mockllm":  mockFlags(defaultSettings(), io.Discard),
		"dev":      devFlags(st, &d, io.Discard),
	}
	type entry struct {
		f    *flag.Flag
		cmds []string
	}
	entries := map[string]*entry{}
	for _, cmd := range []string{"producer", "consumer", "mockllm", "dev"} {
		sets[cmd].VisitAll(func(f *flag.Flag) {
			e := entries[f.Name]
			if e == nil {
				e = &entry{f: f}
				entries[f.Name] = e
			}
			e.cmds = append(e.cmds, cmd)
		})
	}
	in := func(e *entry, cmd string) bool { return slices.Contains(e.cmds, cmd) }
	sections := []struct {
		title string
		match func(*entry) bool
	}{
		{"Every service (producer and consumer)", func(e *entry) bool { return in(e, "producer") && in(e, "consumer") }},
		{"Producer (HTTP ingress)", func(e *entry) bool { return in(e, "producer") && !in(e, "consumer") }},
		{"Consumer (worker, LLM, fallbacks)", func(e *entry) bool { return in(e, "consumer") && !in(e, "producer") }},
		{"Mock LLM (sluice mockllm, and sluice dev's embedded mock)", func(e *entry) bool { return in(e, "mockllm") && !in(e, "producer") }},
		{"sluice dev only", func(e *entry) bool { return len(e.cmds) == 1 && in(e, "dev") }},
	}
	var b strings.Builder
	b.WriteString(`# Configuration

<!-- Generated from the flag definitions by cmd/sluice/configdoc_test.go:
     go test ./cmd/sluice -run TestConfigurationDoc -update
     Do not edit by hand: the test fails when this file and the code differ. -->

Every setting is a flag and an environment variable: ` + "`--kafka-brokers`" + ` is
` + "`SLUICE_KAFKA_BROKERS`" + `. A flag on the command line wins over the environment. A
start with missing or invalid settings exits with code 2 and lists every problem,
each named by both spellings; a ` + "`SLUICE_*`" + ` variable that is not a setting of the
command is named too, with the setting it most likely means.

Durations take a unit (` + "`300ms`, `5s`, `2m`" + `); lists are comma-separated. The
column *Commands* says which subcommands read a setting. ` + "`sluice dev`" + ` starts with
the defaults below except that it runs the mock model (` + "`--llm-model sluice-mock`" + `),
answers from the sample FAQ (` + "`--faq-sample`" + `), signs tokens with a dev secret, and
turns the per-user rate limit off.
`)
	for _, sec := range sections {
		var names []string
		for n, e := range entries {
			if sec.match(e) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			continue
		}
		slices.Sort(names)
		fmt.Fprintf(&b, "\n## %s\n\n| Environment | Flag | Default | Commands | What it does |\n|---|---|---|---|---|\n", sec.title)
		for _, n := range names {
			e := entries[n]
			def := e.f.DefValue
			if def == "" {
				def = "—"
			} else {
				def = "`" + def + "`"
			}
			fmt.Fprintf(&b, "| `%s` | `--%s` | %s | %s | %s |\n", settings.EnvName(n), n, def,
				strings.Join(e.cmds, ", "), strings.ReplaceAll(e.f.Usage, "|", "\\|"))
		}
	}
	return b.String()
}

// TestConfigurationDoc: docs/configuration.md is what the flag definitions
// say, so that it cannot drift from the code.
func TestConfigurationDoc(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "configuration.md")
	want := configurationDoc()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./cmd/sluice -run TestConfigurationDoc -update)", err)
	}
	if string(got) != want {
		t.Errorf("docs/configuration.md differs from the flag definitions; regenerate it: go test ./cmd/sluice -run TestConfigurationDoc -update")
	}
}
