package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Report is what a bench run measured. Its JSON is the line `sluice bench
// --json` prints.
type Report struct {
	Conditions Conditions   `json:"conditions"`
	Rates      []RateReport `json:"rates"`
}

// Conditions are what the figures were measured under.
type Conditions struct {
	Processes string `json:"processes"`
	Redis     string `json:"redis"`
	// RedisPrefix is the key prefix of the run on a shared Redis; its
	// keys are deleted when the run ends.
	RedisPrefix string `json:"redis_prefix,omitempty"`
	Mode        string `json:"mode"`
	// WindowS is the counted window of a run, WarmupS the uncounted start.
	WindowS float64 `json:"window_s"`
	WarmupS float64 `json:"warmup_s"`
	Runs    int     `json:"runs"`
	// UserIntervalS is how often one user asks; Turns how many questions
	// a dialog has.
	UserIntervalS float64 `json:"user_interval_s"`
	Turns         int     `json:"turns"`
	Partitions    int32   `json:"partitions"`
	// ClockTicks is the rate /proc/PID/stat counts CPU time in, per second.
	ClockTicks int64    `json:"clock_ticks"`
	Env        []string `json:"env,omitempty"`
}

// RateReport is the runs of one rate and their spread.
type RateReport struct {
	Rate float64     `json:"rate"`
	Runs []RunResult `json:"runs"`
	// Discarded are the runs during which the rest of the machine was
	// busy (Config.MaxOtherCores); they are not in the summary.
	Discarded []RunResult `json:"discarded,omitempty"`
	// Profiled is the run the CPU profiles were taken in, not counted.
	Profiled *RunResult        `json:"profiled,omitempty"`
	Summary  map[string]Spread `json:"summary"`
}

// Spread is a figure's median, least and greatest value over the runs.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// RunResult is one run's figures. The costs are per answered request
// (HTTP 200) of the window.
type RunResult struct {
	Rate float64 `json:"rate"`
	Run  int     `json:"run"`
	// Seconds is the window as read at its edges: the requests due in it,
	// and the time their answers took to finish.
	Seconds  float64 `json:"seconds"`
	Sent     int64   `json:"sent"`
	Answered int64   `json:"answered"`
	Queued   int64   `json:"queued,omitempty"`
	Refused  int64   `json:"refused,omitempty"`
	Errors   int64   `json:"errors,omitempty"`
	Missed   int64   `json:"missed,omitempty"`
	// CacheHits are the answers of the window the producer's hot-answer
	// cache gave (none: every question is distinct).
	CacheHits         int64   `json:"cache_hits"`
	AnsweredPerSecond float64 `json:"answered_per_second"`
	P50MS             float64 `json:"p50_ms"`
	P99MS             float64 `json:"p99_ms"`
	MaxMS             float64 `json:"max_ms"`
	MaxSendLagMS      float64 `json:"max_send_lag_ms"`
	// AppCPUUS is the producer's and the consumer's CPU per answer
	// together: issue 15's figure.
	AppCPUUS float64     `json:"app_cpu_us"`
	Producer ProcessCost `json:"producer"`
	Consumer ProcessCost `json:"consumer"`
	// Broker is the dev process: the embedded Kafka broker and the mock
	// LLM (and Redis, when embedded).
	Broker ProcessCost `json:"broker"`
	// LoadGen is the bench's own process, the load generator.
	LoadGen ProcessCost `json:"loadgen"`
	Redis   *RedisCost  `json:"redis,omitempty"`
	// OtherCores is the CPU the rest of the machine used during the
	// window, in cores: well above 0 means the figures were taken on a
	// busy machine.
	OtherCores float64 `json:"other_cores"`
}

// ProcessCost is what one process spent per answer.
type ProcessCost struct {
	CPUUS float64 `json:"cpu_us"`
	// SysUS is the part of CPUUS spent in the kernel.
	SysUS float64 `json:"sys_us"`
	// Syscalls is Reads plus Writes: read and write system calls.
	Syscalls float64 `json:"syscalls"`
	Reads    float64 `json:"reads"`
	Writes   float64 `json:"writes"`
	// Sleeps is how often the process's threads blocked and were woken
	// again (voluntary context switches): each wake-up of an idle Go
	// process costs its scheduler and the kernel, whatever it then does.
	Sleeps float64 `json:"sleeps"`
	// Cores is the process's average CPU use over the window.
	Cores float64 `json:"cores"`
	// Kafka requests its clients wrote, per answer: produce, fetch, and
	// every other kind together (metadata, commits, heartbeats...).
	KafkaProduce float64 `json:"kafka_produce,omitempty"`
	KafkaFetch   float64 `json:"kafka_fetch,omitempty"`
	KafkaOther   float64 `json:"kafka_other,omitempty"`
}

// RedisCost is what the machine's Redis spent per answer, as its INFO says
// (all its clients together: the bench's alone on a quiet machine).
type RedisCost struct {
	CPUUS    float64 `json:"cpu_us"`
	Commands float64 `json:"commands"`
	Cores    float64 `json:"cores"`
	// ByCommand is the calls per answer of each command, those scripts
	// run included (INFO commandstats); INFO itself is among them.
	ByCommand map[string]float64 `json:"by_command,omitempty"`
}

// figure is one line of the text report, and one key of a summary, of a
// run of type R.
type figure[R any] struct {
	key, label string
	decimals   int
	get        func(R) float64
}

var figures = []figure[RunResult]{
	{"answered_per_second", "answered/s", 1, func(r RunResult) float64 { return r.AnsweredPerSecond }},
	{"answered", "answered in the window", 0, func(r RunResult) float64 { return float64(r.Answered) }},
	{"not_answered", "not answered (202, 429/503, errors, missed)", 0, func(r RunResult) float64 {
		return float64(r.Queued + r.Refused + r.Errors + r.Missed)
	}},
	{"cache_hits", "of the answered, from the hot-answer cache", 0, func(r RunResult) float64 { return float64(r.CacheHits) }},
	{"p50_ms", "latency p50, ms", 2, func(r RunResult) float64 { return r.P50MS }},
	{"p99_ms", "latency p99, ms", 2, func(r RunResult) float64 { return r.P99MS }},
	{"app_cpu_us", "producer + consumer CPU µs/answer", 0, func(r RunResult) float64 { return r.AppCPUUS }},
	{"producer_cpu_us", "producer CPU µs/answer", 0, func(r RunResult) float64 { return r.Producer.CPUUS }},
	{"producer_sys_us", "  of which kernel", 0, func(r RunResult) float64 { return r.Producer.SysUS }},
	{"producer_syscalls", "producer read+write syscalls/answer", 1, func(r RunResult) float64 { return r.Producer.Syscalls }},
	{"producer_sleeps", "producer thread sleeps/answer (voluntary context switches)", 1, func(r RunResult) float64 { return r.Producer.Sleeps }},
	{"consumer_cpu_us", "consumer CPU µs/answer", 0, func(r RunResult) float64 { return r.Consumer.CPUUS }},
	{"consumer_sys_us", "  of which kernel", 0, func(r RunResult) float64 { return r.Consumer.SysUS }},
	{"consumer_syscalls", "consumer read+write syscalls/answer", 1, func(r RunResult) float64 { return r.Consumer.Syscalls }},
	{"consumer_sleeps", "consumer thread sleeps/answer (voluntary context switches)", 1, func(r RunResult) float64 { return r.Consumer.Sleeps }},
	{"producer_kafka_produce", "Kafka produce requests/answer, producer", 2, func(r RunResult) float64 { return r.Producer.KafkaProduce }},
	{"consumer_kafka_produce", "Kafka produce requests/answer, consumer", 2, func(r RunResult) float64 { return r.Consumer.KafkaProduce }},
	{"producer_kafka_fetch", "Kafka fetch requests/answer, producer", 2, func(r RunResult) float64 { return r.Producer.KafkaFetch }},
	{"consumer_kafka_fetch", "Kafka fetch requests/answer, consumer", 2, func(r RunResult) float64 { return r.Consumer.KafkaFetch }},
	{"kafka_other", "Kafka other requests/answer, both", 3, func(r RunResult) float64 { return r.Producer.KafkaOther + r.Consumer.KafkaOther }},
	{"broker_cpu_us", "dev process (broker + mock LLM) CPU µs/answer", 0, func(r RunResult) float64 { return r.Broker.CPUUS }},
	{"broker_syscalls", "dev process read+write syscalls/answer", 1, func(r RunResult) float64 { return r.Broker.Syscalls }},
	{"broker_sleeps", "dev process thread sleeps/answer", 1, func(r RunResult) float64 { return r.Broker.Sleeps }},
	{"redis_cpu_us", "Redis CPU µs/answer", 0, func(r RunResult) float64 { return redisOf(r).CPUUS }},
	{"redis_commands", "Redis commands/answer", 1, func(r RunResult) float64 { return redisOf(r).Commands }},
	{"loadgen_cpu_us", "load generator CPU µs/answer", 0, func(r RunResult) float64 { return r.LoadGen.CPUUS }},
	{"cores_used", "cores used by all of the above", 2, func(r RunResult) float64 {
		return r.Producer.Cores + r.Consumer.Cores + r.Broker.Cores + redisOf(r).Cores + r.LoadGen.Cores
	}},
	{"other_cores", "cores used by the rest of the machine", 2, func(r RunResult) float64 { return r.OtherCores }},
}

func redisOf(r RunResult) RedisCost {
	if r.Redis == nil {
		return RedisCost{}
	}
	return *r.Redis
}

// summarize fills the spread of every figure over the runs.
func (rr RateReport) summarize() RateReport {
	rr.Summary = summary(rr.Runs, figures)
	return rr
}

// summary returns the spread of each figure of fs over runs, by key.
func summary[R any](runs []R, fs []figure[R]) map[string]Spread {
	out := map[string]Spread{}
	if len(runs) == 0 {
		return out
	}
	for _, f := range fs {
		vs := make([]float64, len(runs))
		for i, r := range runs {
			vs[i] = f.get(r)
		}
		out[f.key] = spread(vs)
	}
	return out
}

// spread returns the median (of an even count, the mean of the middle
// two), least and greatest of vs, which must not be empty.
func spread(vs []float64) Spread {
	s := slices.Clone(vs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// WriteJSON writes r as one line of JSON.
func (r Report) WriteJSON(w io.Writer) error { return writeJSON(w, r) }

// writeJSON writes a report as one line of JSON.
func writeJSON(w io.Writer, report any) error {
	b, err := json.Marshal(report)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteText writes r for a person: the conditions, then per rate every
// figure's median and its spread over the runs.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	c := r.Conditions
	fmt.Fprintf(&b, "sluice bench: CPU and system calls per answered request\n")
	fmt.Fprintf(&b, "  processes: %s\n  Redis: %s", c.Processes, c.Redis)
	if c.RedisPrefix != "" {
		fmt.Fprintf(&b, ", keys under %s:* (deleted at the end)", c.RedisPrefix)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  open loop, %s mode, every question distinct; a user asks every %g s, %d questions a dialog; %d partitions\n",
		c.Mode, c.UserIntervalS, c.Turns, c.Partitions)
	fmt.Fprintf(&b, "  each run: %g s warm-up, then %g s counted; %d run(s) a rate\n", c.WarmupS, c.WindowS, c.Runs)
	fmt.Fprintf(&b, "  CPU: utime+stime of /proc/PID/stat (%d ticks/s); syscalls: syscr+syscw of /proc/PID/io;\n", c.ClockTicks)
	fmt.Fprintf(&b, "  Kafka requests: the clients' sluice_kafka_<role>_requests_total{key}\n")
	if len(c.Env) > 0 {
		fmt.Fprintf(&b, "  producer and consumer settings: %s\n", strings.Join(c.Env, " "))
	}
	for _, rr := range r.Rates {
		head := fmt.Sprintf("offered %g/s, %d run(s)", rr.Rate, len(rr.Runs)) +
			discardedNote(rr.Discarded, func(r RunResult) float64 { return r.OtherCores })
		fmt.Fprintf(&b, "\n%s\n  %-50s %10s   %s\n", head, "", "median", "min – max")
		if len(rr.Runs) == 0 {
			continue
		}
		for _, f := range figures {
			s := rr.Summary[f.key]
			if f.key == "redis_cpu_us" || f.key == "redis_commands" {
				if rr.Runs[0].Redis == nil {
					continue
				}
			}
			fmt.Fprintf(&b, "  %-50s %10s   %s – %s\n", f.label, num(s.Median, f.decimals), num(s.Min, f.decimals), num(s.Max, f.decimals))
		}
		if rc := rr.Runs[0].Redis; rc != nil && len(rc.ByCommand) > 0 {
			fmt.Fprintf(&b, "  Redis calls/answer by command, first run: %s\n", byCommand(rc.ByCommand))
		}
		if p := rr.Profiled; p != nil {
			fmt.Fprintf(&b, "  profiled run, not counted: producer %s, consumer %s, dev process %s CPU µs/answer; p99 %.2f ms\n",
				num(p.Producer.CPUUS, 0), num(p.Consumer.CPUUS, 0), num(p.Broker.CPUUS, 0), p.P99MS)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// byCommand lists the commands that are called at least once in 100
// answers, most called first.
func byCommand(m map[string]float64) string {
	cmds := make([]string, 0, len(m))
	for c, v := range m {
		if v >= 0.01 {
			cmds = append(cmds, c)
		}
	}
	slices.SortFunc(cmds, func(a, b string) int {
		if m[a] != m[b] {
			return cmp.Compare(m[b], m[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(cmds))
	for i, c := range cmds {
		parts[i] = fmt.Sprintf("%s %.2f", c, m[c])
	}
	return strings.Join(parts, ", ")
}

// WriteRun writes one run's main figures on one line, as progress.
func (r RunResult) WriteRun(w io.Writer) error {
	_, err := fmt.Fprintf(w, "bench: %g/s run %d: answered %d (%.1f/s), p50 %.2f ms, p99 %.2f ms; CPU µs/answer: producer %.0f, consumer %.0f, dev %.0f; syscalls/answer: producer %.1f, consumer %.1f; other cores %.2f\n",
		r.Rate, r.Run, r.Answered, r.AnsweredPerSecond, r.P50MS, r.P99MS, r.Producer.CPUUS, r.Consumer.CPUUS, r.Broker.CPUUS,
		r.Producer.Syscalls, r.Consumer.Syscalls, r.OtherCores)
	return err
}

// num formats v with decimals and thousands separators.
func num(v float64, decimals int) string {
	s := fmt.Sprintf("%.*f", decimals, v)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var out []byte
	for i := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, intPart[i])
	}
	s = string(out)
	if neg {
		s = "-" + s
	}
	if frac != "" {
		s += "." + frac
	}
	return s
}

// discardedNote says how many runs were discarded and how busy the rest of
// the machine was in each; "" when none was.
func discardedNote[R any](discarded []R, otherCores func(R) float64) string {
	if len(discarded) == 0 {
		return ""
	}
	others := make([]string, len(discarded))
	for i, d := range discarded {
		others[i] = fmt.Sprintf("%.2f", otherCores(d))
	}
	return fmt.Sprintf(" (%d more discarded: the rest of the machine used %s cores)", len(discarded), strings.Join(others, ", "))
}
