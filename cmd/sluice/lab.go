package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sluice/hpa"
	"sluice/hpa/lab"
	"sluice/shared/settings"
)

// labSettings are the settings of `sluice lab`.
type labSettings struct {
	cfg       lab.Config
	profile   string
	peak      float64
	sim       bool
	calibrate string
	podStart  time.Duration
	compare   []string
	hpaFile   string
}

// labFlags returns the flags of `sluice lab`, bound to s.
func labFlags(s *labSettings, out io.Writer) *flag.FlagSet {
	fs := newFlagSet("lab", out)
	c := &s.cfg
	fs.StringVar(&s.profile, "profile", "flash-sale", "traffic profile: flash-sale (built in) or a file of second,questions_per_second lines")
	fs.Float64Var(&s.peak, "peak", 0, "scale the profile so that its peak is this many questions/s (0: as written)")
	fs.StringVar(&c.Out, "out", "", "directory for the CSV, the PNG plot and the JSON summary (required)")
	fs.StringVar(&c.Signal, "signal", c.Signal, "what the consumers scale on: chart (in-flight ratio, lag per pod and oldest age together), lag, age or inflight")
	fs.Float64Var(&c.TimeFactor, "time-factor", c.TimeFactor, "compress every period of the autoscaler (sync period, windows, policy periods) by this factor")
	fs.IntVar(&c.InFlight, "in-flight", c.InFlight, "each consumer's in-flight budget")
	fs.DurationVar(&c.LLMLatency, "llm-latency", c.LLMLatency, "the mock LLM's fixed latency")
	fs.DurationVar(&c.CommitInterval, "commit-interval", c.CommitInterval, "the consumers' commit interval")
	fs.Var(int32Value{&c.MinReplicas}, "min-replicas", "fewest consumers")
	fs.Var(int32Value{&c.MaxReplicas}, "max-replicas", "most consumers")
	fs.Var(int32Value{&c.Partitions}, "partitions", "partitions of the requests topic (default 3 × --max-replicas)")
	fs.DurationVar(&c.Wait, "wait", c.Wait, "wait_ms of the questions")
	fs.StringVar(&c.RedisAddr, "redis-addr", "", "Redis to use, under a key prefix of the run's own (default the embedded one)")
	fs.BoolVar(&s.sim, "sim", false, "simulate the consumers with a model instead of running processes")
	fs.StringVar(&s.calibrate, "calibrate", "", "with --sim: a lab run's lab.json, whose pod start time, budget and LLM latency the model takes; its lab.csv beside it is compared with the simulation")
	fs.DurationVar(&s.podStart, "pod-start", 2*time.Second, "with --sim: how long a new consumer takes to take work (overrides --calibrate when set)")
	fs.StringVar(&s.hpaFile, "hpa", "", "an autoscaling/v2 HorizontalPodAutoscaler manifest whose behavior (and min and max replicas, unless given as flags) the autoscaler takes instead of the chart's; its metrics' targets are not used: the lab derives them from its budget and LLM latency")
	fs.Var(settings.List{P: &s.compare}, "compare", "NAME=FILE.csv,...: plot the replicas and queue waits of earlier runs side by side into --out/compare.png, and exit")
	return fs
}

// int32Value is a flag.Value of an int32.
type int32Value struct{ p *int32 }

func (v int32Value) String() string {
	if v.p == nil {
		return "0"
	}
	return fmt.Sprint(*v.p)
}

func (v int32Value) Set(s string) error {
	var n int32
	if _, err := fmt.Sscan(s, &n); err != nil {
		return fmt.Errorf("not a whole number: %q", s)
	}
	*v.p = n
	return nil
}

// runLab runs `sluice lab`: the autoscaling lab, or with --sim its model.
// The last line on stdout is the run's summary as one line of JSON; the
// exit code is 1 when a question was lost or a turn duplicated, or a
// consumer did not drain.
func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s := labSettings{cfg: lab.DefaultConfig()}
	fs := labFlags(&s, stderr)
	podStartSet := false
	err := configure(fs, args, func() error {
		fs.Visit(func(f *flag.Flag) { podStartSet = podStartSet || f.Name == "pod-start" })
		p, err := lab.LoadProfile(s.profile)
		if err != nil {
			return settingError("profile", err)
		}
		if s.peak > 0 {
			p = p.Scale(s.peak / peakOf(p))
		}
		s.cfg.Profile = p
		if s.hpaFile != "" {
			b, err := os.ReadFile(s.hpaFile)
			if err != nil {
				return settingError("hpa", err)
			}
			spec, err := hpa.ParseHPA(b)
			if err != nil {
				return settingError("hpa", err)
			}
			s.cfg.Behavior = spec.Behavior
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			if !set["min-replicas"] {
				s.cfg.MinReplicas = spec.MinReplicas
			}
			if !set["max-replicas"] {
				s.cfg.MaxReplicas = spec.MaxReplicas
			}
		}
		if s.sim {
			return nil // Simulate validates, allowing a cluster's pod count
		}
		return s.cfg.Validate()
	})
	if err != nil {
		return err
	}
	if len(s.compare) > 0 {
		return compareRuns(s.cfg.Out, s.compare)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var sum lab.Summary
	if s.sim {
		sum, err = runSim(s, podStartSet)
	} else {
		sum, err = lab.Run(ctx, s.cfg, log)
	}
	if sum.Mode != "" {
		b, jerr := json.Marshal(sum)
		if jerr != nil {
			return errors.Join(err, jerr)
		}
		fmt.Fprintf(stdout, "%s\n", b)
	}
	if err != nil {
		return err
	}
	if sum.Lost > 0 || sum.DuplicateTurns > 0 || sum.DrainedFailed > 0 {
		return fmt.Errorf("lab: %d lost, %d duplicate turns, %d consumers not drained", sum.Lost, sum.DuplicateTurns, sum.DrainedFailed)
	}
	return nil
}

// runSim runs the model, calibrated from a lab run when asked, and
// compares the two when the lab run's samples are beside its summary.
func runSim(s labSettings, podStartSet bool) (lab.Summary, error) {
	sc := lab.SimConfig{Config: s.cfg, PodStart: s.podStart}
	var labRun []lab.Sample
	var ls lab.Summary
	if s.calibrate != "" {
		b, err := os.ReadFile(s.calibrate)
		if err != nil {
			return lab.Summary{}, settingError("calibrate", err)
		}
		if err := json.Unmarshal(b, &ls); err != nil {
			return lab.Summary{}, settingError("calibrate", fmt.Errorf("%s is not a lab summary: %w", s.calibrate, err))
		}
		if !podStartSet && ls.PodStartS > 0 {
			sc.PodStart = time.Duration(ls.PodStartS * float64(time.Second))
			sc.PodWork = time.Duration(ls.PodWorkS * float64(time.Second))
		}
		if ls.InFlight > 0 {
			sc.InFlight = ls.InFlight
		}
		if ls.LLMLatencyMs > 0 {
			sc.LLMLatency = time.Duration(ls.LLMLatencyMs * float64(time.Millisecond))
		}
		if ls.ServiceMs > 0 {
			sc.Service = time.Duration(ls.ServiceMs * float64(time.Millisecond))
		}
		if f, err := os.Open(filepath.Join(filepath.Dir(s.calibrate), "lab.csv")); err == nil {
			labRun, err = lab.ReadCSV(f)
			f.Close()
			if err != nil {
				return lab.Summary{}, err
			}
		}
	}
	if err := os.MkdirAll(sc.Out, 0o755); err != nil {
		return lab.Summary{}, err
	}
	sum, samples, err := lab.Simulate(sc)
	if err != nil || labRun == nil {
		return sum, err
	}
	cmp := lab.Compare(labRun, samples, ls, sum)
	sum.Compare = &cmp
	f, err := os.Create(filepath.Join(sc.Out, "compare.png"))
	if err != nil {
		return sum, err
	}
	defer f.Close()
	return sum, lab.PlotCompare(f, "Lab run and its simulation", []lab.NamedRun{{Name: "lab", Samples: labRun}, {Name: "simulation", Samples: samples}})
}

func peakOf(p lab.Profile) float64 {
	m := 0.0
	for _, st := range p.Steps {
		m = max(m, st.Rate)
	}
	return max(m, 1e-9)
}

// compareRuns plots the runs named NAME=FILE.csv side by side into
// dir/compare.png.
func compareRuns(dir string, specs []string) error {
	var runs []lab.NamedRun
	for _, sp := range specs {
		name, path, ok := strings.Cut(sp, "=")
		if !ok {
			name, path = strings.TrimSuffix(filepath.Base(sp), filepath.Ext(sp)), sp
		}
		f, err := os.Open(path)
		if err != nil {
			return settingError("compare", err)
		}
		samples, err := lab.ReadCSV(f)
		f.Close()
		if err != nil {
			return settingError("compare", fmt.Errorf("%s: %w", path, err))
		}
		runs = append(runs, lab.NamedRun{Name: name, Samples: samples})
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "compare.png"))
	if err != nil {
		return err
	}
	if err := lab.PlotCompare(f, "Sluice autoscaling: runs compared", runs); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
