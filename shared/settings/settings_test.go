package settings_test

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"sluice/shared/settings"
)

func newFS() (*flag.FlagSet, *time.Duration, *int, *bool, *[]string) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	d, n, b := new(time.Duration), new(int), new(bool)
	list := new([]string)
	fs.DurationVar(d, "drain-timeout", time.Second, "")
	fs.IntVar(n, "in-flight", 1, "")
	fs.BoolVar(b, "create-topics", false, "")
	fs.Var(settings.List{P: list}, "kafka-brokers", "")
	return fs, d, n, b, list
}

func env(kv map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
}

func TestParseFlagWinsOverEnv(t *testing.T) {
	fs, d, n, b, list := newFS()
	err := settings.Parse(fs, []string{"--in-flight", "7", "-create-topics", "--kafka-brokers= a:1 , b:2 "},
		env(map[string]string{"SLUICE_IN_FLIGHT": "3", "SLUICE_DRAIN_TIMEOUT": "2m", "SLUICE_CREATE_TOPICS": "", "SLUICE_KAFKA_BROKERS": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if *n != 7 || *d != 2*time.Minute || !*b || !slices.Equal(*list, []string{"a:1", "b:2"}) {
		t.Errorf("got in-flight %d, drain %v, create %v, brokers %q", *n, *d, *b, *list)
	}
	// An empty variable is unset: the default stands.
	fs, d, _, _, _ = newFS()
	if err := settings.Parse(fs, nil, env(map[string]string{"SLUICE_DRAIN_TIMEOUT": ""})); err != nil || *d != time.Second {
		t.Errorf("empty SLUICE_DRAIN_TIMEOUT: %v, drain %v; want the default 1s", err, *d)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	fs, _, _, _, _ := newFS()
	err := settings.Parse(fs, []string{"--drain-timeout", "30", "--bogus", "x", "stray", "--in-flight"},
		env(map[string]string{"SLUICE_IN_FLIGHT": "many"}))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`SLUICE_IN_FLIGHT (--in-flight): invalid value "many"`,
		`SLUICE_DRAIN_TIMEOUT (--drain-timeout): invalid value "30": a duration needs a unit, e.g. 30s or 30ms`,
		"unknown flag --bogus",
		`unexpected argument "stray"`,
		"SLUICE_IN_FLIGHT (--in-flight): needs a value",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	var se *settings.Error
	if !errors.As(err, &se) {
		t.Error("no *settings.Error in the joined error")
	}
}

func TestParseHelp(t *testing.T) {
	fs, _, _, _, _ := newFS()
	if err := settings.Parse(fs, []string{"-h"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestIgnoredEnvSuggests(t *testing.T) {
	fs, _, _, _, _ := newFS()
	got := settings.IgnoredEnv(fs, []string{"SLUICE_KAFKA_BROKER=x", "SLUICE_IN_FLIGHT=3", "HOME=/root", "SLUICE_LLM_MODEL=m"})
	want := []settings.Ignored{{Name: "SLUICE_KAFKA_BROKER", Suggest: "SLUICE_KAFKA_BROKERS"}, {Name: "SLUICE_LLM_MODEL"}}
	if !slices.Equal(got, want) {
		t.Errorf("IgnoredEnv = %+v, want %+v", got, want)
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"in-flight", "drain-timeout", "kafka-brokers"}
	for in, want := range map[string]string{"in-flite": "in-flight", "drain-timout": "drain-timeout", "redis-addr": "", "kafka-broker": "kafka-brokers"} {
		if got := settings.Suggest(in, names); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProblems(t *testing.T) {
	var p settings.Problems
	if p.Err() != nil {
		t.Fatal("empty Problems has an error")
	}
	p.Check(true, "a", "fine")
	p.Check(false, "in-flight", "must be at least %d", 1)
	p.Add(nil)
	p.Add(errors.New("other"))
	if got := p.Err().Error(); got != "SLUICE_IN_FLIGHT (--in-flight): must be at least 1\nother" {
		t.Errorf("Err = %q", got)
	}
	if settings.EnvName("kafka-brokers") != "SLUICE_KAFKA_BROKERS" || settings.FlagName("SLUICE_KAFKA_BROKERS") != "kafka-brokers" || settings.FlagName("HOME") != "" {
		t.Error("EnvName/FlagName do not round-trip")
	}
}
