package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"sluice/shared/devstack/proc"
)

// TargetUS is issue 15's target: producer and consumer CPU per answer, µs.
const TargetUS = 150

// SideRedisServer is the Redis primitive's server side, read from its INFO
// cpu: its CPU only (its system calls are another user's /proc).
const SideRedisServer = "redis-server"

// Who pays for an exchange (Exchange.Role).
const (
	// PaidByProducer and PaidByConsumer are issue 15's figure.
	PaidByProducer = "producer"
	PaidByConsumer = "consumer"
	// PaidByOthers is the broker, the Redis server and the LLM's server:
	// beside the figure, not in it.
	PaidByOthers = "others"
)

// Exchange is one kind of network exchange an answer makes, from one side,
// and how many of it: a term of the floor.
type Exchange struct {
	Role      string  `json:"role"`
	Primitive string  `json:"primitive"`
	Side      string  `json:"side"`
	Count     float64 `json:"count"`
	// What says which exchange it is and where Sluice makes it.
	What string `json:"what"`
}

// AnswerExchanges returns the exchanges one wait-mode answer makes in
// Sluice today, as `sluice bench` asks (dialogs of turns questions, the
// first turn of each new, the per-user limit on, every question distinct),
// counted from the code paths:
//
//   - producer: POST /v1/chat, server side (producer/chat.go postChat);
//     the request record produced and acknowledged (chat.go put/produce);
//     the reply record read by the reply router (producer/replies.go); the
//     per-user rate limit, one EVALSHA of redis_rate's script
//     (producer/ratelimit.go; the tenant limit is off by default); on a
//     dialog's first turn, the hot-answer lookup (MGET) and, once
//     answered, its SET (producer/hot.go): 2 per turns answers;
//   - consumer: the request record read (consumer/consumer.go, group
//     "sluice"); store.Load, HMGET of the request and then LRANGE of the
//     history, two round trips one after the other (shared/store/store.go);
//     the LLM call, client side (consumer/llm); store.Complete, one
//     EVALSHA of complete.lua; the reply record produced and acknowledged
//     (consumer.go publish);
//   - beside them: the broker's side of both records, the Redis server's
//     of every round trip, the LLM server's of its call.
//
// A Kafka record is one produce request and one fetch request at 600/s
// (the bench measures 0.99 produce and 0.75 fetch requests per answer per
// role there); at higher rates records share requests, in the primitive
// as in Sluice. The store's commands go through go-redis's auto-pipeliner
// (store.Pipe), which at these rates sends one round trip each.
func AnswerExchanges(turns int) []Exchange {
	first := 2 / float64(max(turns, 1))
	return []Exchange{
		{PaidByProducer, PrimitiveHTTP, SideServer, 1, "POST /v1/chat, the ingress (producer/chat.go postChat)"},
		{PaidByProducer, PrimitiveKafka, SideProducer, 1, "the request record, produced and acknowledged (producer/chat.go produce)"},
		{PaidByProducer, PrimitiveKafka, SideConsumer, 1, "the reply record, read by the reply router (producer/replies.go)"},
		{PaidByProducer, PrimitiveRedis, SideClient, 1, "the per-user rate limit, EVALSHA (producer/ratelimit.go)"},
		{PaidByProducer, PrimitiveRedis, SideClient, first, fmt.Sprintf("a first turn's hot-answer MGET and SET, 2 a dialog of %d (producer/hot.go)", turns)},
		{PaidByConsumer, PrimitiveKafka, SideConsumer, 1, "the request record, read in group sluice (consumer/consumer.go)"},
		{PaidByConsumer, PrimitiveRedis, SideClient, 2, "store.Load: HMGET, then LRANGE (shared/store/store.go)"},
		{PaidByConsumer, PrimitiveHTTP, SideClient, 1, "the LLM call (consumer/llm)"},
		{PaidByConsumer, PrimitiveRedis, SideClient, 1, "store.Complete: EVALSHA complete.lua (shared/store/store.go)"},
		{PaidByConsumer, PrimitiveKafka, SideProducer, 1, "the reply record, produced and acknowledged (consumer/consumer.go publish)"},
		{PaidByOthers, PrimitiveKafka, SideBroker, 2, "the broker's side of the request and the reply records"},
		{PaidByOthers, PrimitiveRedis, SideRedisServer, 4 + first, "the Redis server's side of every round trip above"},
		{PaidByOthers, PrimitiveHTTP, SideServer, 1, "the LLM's server side of its call"},
	}
}

// FloorReport is what `sluice bench --floor` measured. Its JSON is the
// line `sluice bench --floor --json` prints.
type FloorReport struct {
	Conditions FloorConditions `json:"conditions"`
	Rates      []FloorRate     `json:"rates"`
}

// FloorConditions are what the figures were measured under, and the
// exchanges the floor counts.
type FloorConditions struct {
	Processes   string  `json:"processes"`
	Redis       string  `json:"redis,omitempty"`
	RedisPrefix string  `json:"redis_prefix,omitempty"`
	WindowS     float64 `json:"window_s"`
	WarmupS     float64 `json:"warmup_s"`
	Runs        int     `json:"runs"`
	Turns       int     `json:"turns"`
	Partitions  int32   `json:"partitions"`
	ClockTicks  int64   `json:"clock_ticks"`
	// Skipped names the primitives left out, and why.
	Skipped   []string   `json:"skipped,omitempty"`
	Exchanges []Exchange `json:"exchanges"`
	TargetUS  float64    `json:"target_us"`
}

func floorConditions(cfg Config) FloorConditions {
	return FloorConditions{
		Processes: "each side of a primitive a process of the sluice binary (sluice bench --floor-part ROLE; " +
			"the Kafka broker: sluice dev --roles broker, embedded kfake)",
		WindowS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(), Runs: cfg.Runs, Turns: cfg.Turns,
		Partitions: cfg.Partitions, ClockTicks: proc.ClockTicks(), Exchanges: AnswerExchanges(cfg.Turns), TargetUS: TargetUS,
	}
}

// FloorRate is every primitive's runs at one rate, and the floor of an
// answer they make.
type FloorRate struct {
	Rate       float64          `json:"rate"`
	Primitives []FloorPrimitive `json:"primitives"`
	Floor      FloorSum         `json:"floor"`
}

// FloorPrimitive is one primitive's runs at a rate and their spread.
type FloorPrimitive struct {
	Name string     `json:"name"`
	Runs []FloorRun `json:"runs"`
	// Discarded are the runs during which the rest of the machine was
	// busy; they are not in the summary.
	Discarded []FloorRun        `json:"discarded,omitempty"`
	Summary   map[string]Spread `json:"summary"`
}

// FloorRun is one run of a primitive: the costs per operation that
// succeeded in the window.
type FloorRun struct {
	Primitive    string  `json:"primitive"`
	Rate         float64 `json:"rate"`
	Run          int     `json:"run"`
	Seconds      float64 `json:"seconds"`
	Ops          int64   `json:"ops"`
	OpsPerSecond float64 `json:"ops_per_second"`
	Errors       int64   `json:"errors,omitempty"`
	Missed       int64   `json:"missed,omitempty"`
	FirstError   string  `json:"first_error,omitempty"`
	// Latencies of an operation, from the moment it was due.
	P50MS        float64 `json:"p50_ms"`
	P99MS        float64 `json:"p99_ms"`
	MaxSendLagMS float64 `json:"max_send_lag_ms"`
	// Sides are the costs per operation of each side (sidesOf, and the
	// Redis server's CPU as SideRedisServer).
	Sides map[string]ProcessCost `json:"sides"`
	// Redis is the Redis server's INFO per operation (the Redis
	// primitive; its commands per operation should be 1).
	Redis      *RedisCost `json:"redis,omitempty"`
	OtherCores float64    `json:"other_cores"`
}

// floorFigures are the summary's keys of a primitive: per side, CPU,
// kernel CPU and syscalls per operation; the operations' pace.
func floorFigures(prim string) []figure[FloorRun] {
	fs := []figure[FloorRun]{
		{"ops_per_second", "operations/s", 1, func(r FloorRun) float64 { return r.OpsPerSecond }},
		{"p50_ms", "latency p50, ms", 2, func(r FloorRun) float64 { return r.P50MS }},
		{"p99_ms", "latency p99, ms", 2, func(r FloorRun) float64 { return r.P99MS }},
	}
	sides := slices.Clone(sidesOf[prim])
	if prim == PrimitiveRedis {
		sides = append(sides, SideRedisServer)
	}
	for _, s := range sides {
		fs = append(fs,
			figure[FloorRun]{s + "_cpu_us", s + " CPU µs/op", 1, func(r FloorRun) float64 { return r.Sides[s].CPUUS }},
			figure[FloorRun]{s + "_sys_us", s + " kernel µs/op", 1, func(r FloorRun) float64 { return r.Sides[s].SysUS }},
			figure[FloorRun]{s + "_syscalls", s + " syscalls/op", 2, func(r FloorRun) float64 { return r.Sides[s].Syscalls }},
			figure[FloorRun]{s + "_sleeps", s + " thread sleeps/op", 2, func(r FloorRun) float64 { return r.Sides[s].Sleeps }})
	}
	return fs
}

// summarize fills the spread of every figure over the runs.
func (fp FloorPrimitive) summarize() FloorPrimitive {
	fp.Summary = summary(fp.Runs, floorFigures(fp.Name))
	return fp
}

// FloorSum is the floor of one answer at a rate: each exchange's count
// times its side's CPU per operation (the median of the runs, and the
// least and greatest), summed per role.
type FloorSum struct {
	Terms []FloorTerm `json:"terms"`
	// Producer, Consumer and App (the two together: issue 15's figure)
	// sum their terms' medians, least and greatest values.
	Producer Spread `json:"producer_us"`
	Consumer Spread `json:"consumer_us"`
	App      Spread `json:"app_us"`
	// AppSyscalls are the read and write system calls of App's terms.
	AppSyscalls float64 `json:"app_syscalls"`
	// Pacer is the pace primitive's CPU per operation, and AppLessPacer
	// App less Pacer for each operation of App's terms that a driver
	// started (PacedOps a answer): zero without a run of pace.
	Pacer        Spread  `json:"pacer_us"`
	PacedOps     float64 `json:"paced_ops"`
	AppLessPacer Spread  `json:"app_less_pacer_us"`
	// Others sums the broker's, the Redis server's and the LLM server's
	// terms: beside the figure.
	Others   Spread  `json:"others_us"`
	TargetUS float64 `json:"target_us"`
	// Missing names the primitives without runs at this rate: the sums
	// then leave their terms out.
	Missing []string `json:"missing,omitempty"`
}

// FloorTerm is one exchange of an answer and what it costs.
type FloorTerm struct {
	Exchange
	// PerOp is the side's CPU per operation, µs; US is Count × PerOp.
	PerOp    Spread  `json:"per_op_us"`
	US       Spread  `json:"us"`
	Syscalls float64 `json:"syscalls"`
}

// floorOf sums the floor of an answer at rr's rate over exchanges.
func floorOf(rr FloorRate, exchanges []Exchange) FloorSum {
	fs := FloorSum{TargetUS: TargetUS}
	byName := map[string]FloorPrimitive{}
	for _, p := range rr.Primitives {
		if len(p.Runs) > 0 {
			byName[p.Name] = p
		}
	}
	for _, e := range exchanges {
		p, ok := byName[e.Primitive]
		if !ok {
			if !slices.Contains(fs.Missing, e.Primitive) {
				fs.Missing = append(fs.Missing, e.Primitive)
			}
			continue
		}
		per := p.Summary[e.Side+"_cpu_us"]
		t := FloorTerm{Exchange: e, PerOp: per,
			US:       Spread{Median: e.Count * per.Median, Min: e.Count * per.Min, Max: e.Count * per.Max},
			Syscalls: e.Count * p.Summary[e.Side+"_syscalls"].Median}
		fs.Terms = append(fs.Terms, t)
		add := func(s *Spread) {
			s.Median += t.US.Median
			s.Min += t.US.Min
			s.Max += t.US.Max
		}
		switch e.Role {
		case PaidByProducer, PaidByConsumer:
			if e.Role == PaidByProducer {
				add(&fs.Producer)
			} else {
				add(&fs.Consumer)
			}
			add(&fs.App)
			fs.AppSyscalls += t.Syscalls
			if e.Side == driverSide[e.Primitive] {
				fs.PacedOps += e.Count
			}
		default:
			add(&fs.Others)
		}
	}
	if pace, ok := byName[PrimitivePace]; ok {
		fs.Pacer = pace.Summary[SideDriver+"_cpu_us"]
		// The least floor less the greatest pacing, and the other way
		// round: the range holds every combination of the runs.
		fs.AppLessPacer = Spread{Median: fs.App.Median - fs.PacedOps*fs.Pacer.Median,
			Min: fs.App.Min - fs.PacedOps*fs.Pacer.Max, Max: fs.App.Max - fs.PacedOps*fs.Pacer.Min}
	}
	return fs
}

// WriteJSON writes r as one line of JSON.
func (r FloorReport) WriteJSON(w io.Writer) error { return writeJSON(w, r) }

// sideLabels name the sides in the text report.
var sideLabels = map[string]map[string]string{
	PrimitiveHTTP: {SideServer: "server (net/http: read the body, write a JSON reply)", SideClient: "client (net/http keep-alive POST)"},
	PrimitiveKafka: {SideProducer: "producer client (kgo produce, acks=all, idempotent)", SideConsumer: "consumer client (kgo, consumer group)",
		SideBroker: "broker (embedded kfake: the produce and the fetch)"},
	PrimitiveRedis: {SideClient: "client (go-redis SET with a TTL)", SideRedisServer: "Redis server (INFO cpu)"},
	PrimitivePace:  {SideDriver: "driver alone (the pacing: a timer wake-up, a goroutine)"},
}

// WriteText writes r for a person: the conditions; per rate, each
// primitive's sides, CPU µs per operation (median and min – max of the
// runs), kernel µs and syscalls per operation; then the floor of an
// answer, term by term, against the target.
func (r FloorReport) WriteText(w io.Writer) error {
	var b strings.Builder
	c := r.Conditions
	fmt.Fprintf(&b, "sluice bench --floor: CPU and system calls per operation of the exchanges one answer makes, at the least\n")
	fmt.Fprintf(&b, "  processes: %s\n", c.Processes)
	if c.Redis != "" {
		fmt.Fprintf(&b, "  Redis: %s, keys under %s:* (deleted at the end)\n", c.Redis, c.RedisPrefix)
	}
	for _, s := range c.Skipped {
		fmt.Fprintf(&b, "  left out: %s\n", s)
	}
	fmt.Fprintf(&b, "  open loop, evenly spaced; each run: %g s warm-up, then %g s counted; %d run(s) a primitive a rate; %d partitions\n",
		c.WarmupS, c.WindowS, c.Runs, c.Partitions)
	fmt.Fprintf(&b, "  CPU: utime+stime of /proc/PID/stat (%d ticks/s); syscalls: syscr+syscw of /proc/PID/io; Redis server: INFO cpu\n", c.ClockTicks)
	for _, rr := range r.Rates {
		fmt.Fprintf(&b, "\noffered %g/s\n  %-58s %9s  %-17s %9s %11s\n", rr.Rate, "per operation", "CPU µs", "(min – max)", "kernel µs", "syscalls")
		for _, p := range rr.Primitives {
			head := fmt.Sprintf("%s: %d run(s)", p.Name, len(p.Runs)) +
				discardedNote(p.Discarded, func(r FloorRun) float64 { return r.OtherCores })
			if len(p.Runs) == 0 {
				fmt.Fprintf(&b, "  %s\n", head)
				continue
			}
			s := p.Summary
			fmt.Fprintf(&b, "  %s, %s ops/s, latency p50 %s ms, p99 %s ms\n", head,
				num(s["ops_per_second"].Median, 1), num(s["p50_ms"].Median, 2), num(s["p99_ms"].Median, 2))
			if rc := p.Runs[0].Redis; rc != nil {
				fmt.Fprintf(&b, "    (Redis commands per operation, first run: %s)\n", num(rc.Commands, 2))
			}
			sides := slices.Clone(sidesOf[p.Name])
			if p.Name == PrimitiveRedis {
				sides = append(sides, SideRedisServer)
			}
			for _, side := range sides {
				cpu := s[side+"_cpu_us"]
				sys := "n/a"
				if side != SideRedisServer {
					sys = num(s[side+"_syscalls"].Median, 2)
				}
				kernel := "n/a"
				if side != SideRedisServer {
					kernel = num(s[side+"_sys_us"].Median, 1)
				}
				fmt.Fprintf(&b, "    %-56s %9s  %-17s %9s %11s\n", sideLabels[p.Name][side], num(cpu.Median, 1),
					"("+num(cpu.Min, 1)+" – "+num(cpu.Max, 1)+")", kernel, sys)
			}
		}
		writeFloor(&b, rr.Floor)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeFloor(b *strings.Builder, f FloorSum) {
	fmt.Fprintf(b, "  floor of one answer: each exchange it makes × its side's CPU µs/op (median of the runs)\n")
	for _, role := range []string{PaidByProducer, PaidByConsumer, PaidByOthers} {
		for _, t := range f.Terms {
			if t.Role != role {
				continue
			}
			fmt.Fprintf(b, "    %-9s %5s × %-7s %-13s %7s µs/op = %7s µs  %s\n", t.Role, num(t.Count, 2), t.Primitive, t.Side,
				num(t.PerOp.Median, 1), num(t.US.Median, 1), t.What)
		}
	}
	if len(f.Missing) > 0 {
		fmt.Fprintf(b, "    PARTIAL: no runs of %s: their terms are left out of the sums\n", strings.Join(f.Missing, ", "))
	}
	line := func(label string, s Spread) {
		fmt.Fprintf(b, "  %-58s %9s  (%s – %s)\n", label, num(s.Median, 1), num(s.Min, 1), num(s.Max, 1))
	}
	line("floor, producer µs/answer", f.Producer)
	line("floor, consumer µs/answer", f.Consumer)
	line("floor, producer + consumer µs/answer", f.App)
	fmt.Fprintf(b, "  %-58s %9s\n", "  target (issue 15), µs/answer", num(f.TargetUS, 0))
	if f.TargetUS > 0 {
		fmt.Fprintf(b, "  %-58s %9s\n", "  floor / target", num(f.App.Median/f.TargetUS, 2))
	}
	if f.PacedOps > 0 && f.Pacer != (Spread{}) {
		line(fmt.Sprintf("  less the pacing, %s × %s µs", num(f.PacedOps, 2), num(f.Pacer.Median, 1)), f.AppLessPacer)
	}
	fmt.Fprintf(b, "  %-58s %9s\n", "floor, producer + consumer read+write syscalls/answer", num(f.AppSyscalls, 1))
	line("beside it: broker, Redis server, LLM server µs/answer", f.Others)
}

// WriteRun writes one run's main figures on one line, as progress.
func (r FloorRun) WriteRun(w io.Writer) error {
	var parts []string
	sides := slices.Clone(sidesOf[r.Primitive])
	if r.Redis != nil {
		sides = append(sides, SideRedisServer)
	}
	for _, s := range sides {
		c := r.Sides[s]
		if s == SideRedisServer {
			parts = append(parts, fmt.Sprintf("%s %.1f µs", s, c.CPUUS))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f µs %.2f syscalls", s, c.CPUUS, c.Syscalls))
	}
	_, err := fmt.Fprintf(w, "bench floor: %s %g/s run %d: %d ops (%.1f/s, %d failed), p50 %.2f ms, p99 %.2f ms; per op: %s; other cores %.2f\n",
		r.Primitive, r.Rate, r.Run, r.Ops, r.OpsPerSecond, r.Errors, r.P50MS, r.P99MS, strings.Join(parts, ", "), r.OtherCores)
	return err
}
