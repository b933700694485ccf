package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/shared/devstack/proc"
	"sluice/shared/settings"
)

// The floor (`sluice bench --floor`) measures, at the bench's open-loop
// rates, what the network exchanges one answer must make cost at the
// least: each in its minimal form, its sides in OS processes of their own
// (the sluice binary again, `sluice bench --floor-part`), read from /proc
// as the bench reads Sluice's processes. The primitives' figures per
// operation, times how many of each one answer makes today
// (AnswerExchanges), are the floor of the producer's and the consumer's
// CPU per answer: what no change inside Sluice's own code can go under
// while an answer makes these exchanges. docs/benchmarks.md, "The floor".

// The floor's primitives (FloorConfig.Primitives).
const (
	// PrimitiveHTTP is a keep-alive HTTP/1.1 POST of a small JSON body to
	// a minimal net/http server that reads it and writes a small JSON
	// reply: the ingress every answer pays (server side), and the
	// consumer's LLM call (client side).
	PrimitiveHTTP = "http"
	// PrimitiveKafka is one kgo produce of a ~340-byte record, awaited
	// until acknowledged, to the embedded broker, and its consume by
	// another client in a consumer group: each hop of an answer.
	PrimitiveKafka = "kafka"
	// PrimitiveRedis is one go-redis round trip, a SET with a TTL, to the
	// machine's Redis.
	PrimitiveRedis = "redis"
	// PrimitivePace is the drivers' own pacing: an operation that does
	// nothing, sent as the others are (a timer's wake-up and a goroutine
	// each). In Sluice an exchange is started by the one before it, not
	// by a timer, so the floor also gives its sum less this much for each
	// exchange a driver started.
	PrimitivePace = "pace"
)

// Primitives lists every primitive, in the order they are measured.
var Primitives = []string{PrimitiveHTTP, PrimitiveKafka, PrimitiveRedis, PrimitivePace}

// Sides of the primitives: the processes whose CPU an operation costs.
const (
	SideServer   = "server"
	SideClient   = "client"
	SideProducer = "producer"
	SideConsumer = "consumer"
	SideBroker   = "broker"
	SideDriver   = "driver"
)

// driverSide is the side of each primitive that its driver, paced open
// loop, is.
var driverSide = map[string]string{PrimitiveHTTP: SideClient, PrimitiveKafka: SideProducer, PrimitiveRedis: SideClient, PrimitivePace: SideDriver}

// sidesOf are the sides of each primitive measured from /proc; the Redis
// server's CPU comes from its INFO instead (FloorRun.Redis).
var sidesOf = map[string][]string{
	PrimitiveHTTP:  {SideServer, SideClient},
	PrimitiveKafka: {SideProducer, SideConsumer, SideBroker},
	PrimitiveRedis: {SideClient},
	PrimitivePace:  {SideDriver},
}

// FloorConfig is the settings of `sluice bench --floor`: the bench's
// (Rates, Duration, Warmup, Runs, Turns, Redis, Partitions,
// MaxOtherCores, QuietWait, Binary; the others do not apply) and the
// primitives to measure.
type FloorConfig struct {
	Config
	// Primitives to measure. Default all (Primitives). The floor of an
	// answer is summed only when all were measured.
	Primitives []string
}

// DefaultFloorConfig returns the defaults.
func DefaultFloorConfig() FloorConfig {
	return FloorConfig{Config: DefaultConfig(), Primitives: slices.Clone(Primitives)}
}

// Validate reports every setting out of range, each named by its flag.
func (c FloorConfig) Validate() error {
	var p settings.Problems
	p.Add(c.Config.Validate())
	p.Check(len(c.Env) == 0, "env", "does not apply to --floor: it runs no producer or consumer")
	p.Check(c.ProfileDir == "", "profile-dir", "does not apply to --floor")
	p.Check(len(c.Primitives) > 0, "primitives", "at least one is needed")
	for _, x := range c.Primitives {
		p.Check(slices.Contains(Primitives, x), "primitives", "%q is none of %s", x, strings.Join(Primitives, ", "))
	}
	return p.Err()
}

// floorTopic and floorGroup are the Kafka primitive's: the requests topic
// the embedded broker creates with Sluice's partitions.
const (
	floorTopic = "chat.requests"
	floorGroup = "sluice-floor"
)

// RunFloor measures cfg's primitives at each of cfg's rates, Runs times
// each (a run during which the rest of the machine was busy discarded and
// run again, as Run does), and returns the report with the floor of an
// answer per rate. It returns the report of what was measured also when
// it fails. The Redis primitive is left out, and said so, when no Redis
// answers at DefaultRedis (cfg.Redis auto) or cfg.Redis is embedded: the
// embedded one is not the server a deployment runs. progress, when set,
// receives each run as it ends.
func RunFloor(ctx context.Context, cfg FloorConfig, log *slog.Logger, progress func(FloorRun)) (FloorReport, error) {
	if err := cfg.Validate(); err != nil {
		return FloorReport{}, err
	}
	bin, err := binary(cfg.Binary)
	if err != nil {
		return FloorReport{}, err
	}
	rep := FloorReport{Conditions: floorConditions(cfg.Config)}
	for _, r := range cfg.Rates {
		rep.Rates = append(rep.Rates, FloorRate{Rate: r})
	}
	prims := slices.Clone(cfg.Primitives)
	if slices.Contains(prims, PrimitiveRedis) {
		addr, why := floorRedis(ctx, cfg.Redis)
		if addr == "" {
			log.Warn("bench floor: the Redis primitive is left out", "why", why)
			rep.Conditions.Skipped = append(rep.Conditions.Skipped, PrimitiveRedis+": "+why)
			prims = slices.DeleteFunc(prims, func(p string) bool { return p == PrimitiveRedis })
		} else {
			rep.Conditions.Redis = addr
			rep.Conditions.RedisPrefix = fmt.Sprintf("sluicefloor:%d", time.Now().UnixNano())
		}
	}
	// done sums the floor of each rate from what was measured.
	done := func(err error) (FloorReport, error) {
		for i := range rep.Rates {
			rep.Rates[i].Floor = floorOf(rep.Rates[i], rep.Conditions.Exchanges)
		}
		return rep, err
	}
	for _, prim := range prims {
		st, err := startStand(ctx, prim, bin, cfg.Config, rep.Conditions, log)
		if err != nil {
			st.stop(log)
			return done(fmt.Errorf("%s primitive: %w", prim, err))
		}
		log.Info("bench floor: up", "primitive", prim)
		for i, rate := range cfg.Rates {
			fp, err := st.runs(ctx, cfg.Config, rate, log, progress)
			rep.Rates[i].Primitives = append(rep.Rates[i].Primitives, fp)
			if err != nil {
				st.stop(log)
				return done(fmt.Errorf("%s primitive, rate %g/s: %w", prim, rate, err))
			}
		}
		st.stop(log)
	}
	return done(nil)
}

// floorRedis returns the address of the Redis the floor measures, or ""
// and why there is none.
func floorRedis(ctx context.Context, choice string) (addr, why string) {
	switch choice {
	case RedisEmbedded:
		return "", "--redis embedded: the embedded Redis is not the server a deployment runs"
	case RedisAuto:
		choice = DefaultRedis
	}
	if err := ping(ctx, choice); err != nil {
		return "", fmt.Sprintf("no Redis answers at %s: %v", choice, err)
	}
	return choice, ""
}

// stand is one primitive's standing processes, those that serve the
// driver each run starts, and how to start that driver.
type stand struct {
	prim   string
	bin    string
	env    []string
	serve  map[string]*proc.Process // side → process
	order  []*proc.Process          // serve's, in the order started
	driver string                   // the side the driver is
	args   []string                 // the driver's arguments but the rate and times
	rdb    *redis.Client            // the Redis primitive's server, read by INFO
	prefix string
}

// startStand starts prim's standing processes and waits until they are
// ready. The returned stand must be stopped, also when the error is not
// nil.
func startStand(ctx context.Context, prim, bin string, cfg Config, cond FloorConditions, log *slog.Logger) (*stand, error) {
	st := &stand{prim: prim, bin: bin, serve: map[string]*proc.Process{},
		env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}}
	part := func(side string, args ...string) (*proc.Process, error) {
		p, err := proc.Start("sluice bench --floor-part "+args[0], bin, st.env, append([]string{"bench", "--floor-part"}, args...)...)
		if p != nil {
			st.serve[side] = p
			st.order = append(st.order, p)
		}
		return p, err
	}
	switch prim {
	case PrimitiveHTTP:
		p, err := part(SideServer, PartHTTPServer)
		if err != nil {
			return st, err
		}
		addr, err := p.Addr(ctx, partListening, startTimeout)
		if err != nil {
			return st, err
		}
		st.driver, st.args = SideClient, []string{PartHTTPClient, "--addr", addr}
	case PrimitiveKafka:
		dev, err := proc.Start("sluice dev", bin, st.env, "dev", "--roles", "broker",
			"--dev-kafka-addr", "127.0.0.1:0", "--topic-partitions", fmt.Sprint(cfg.Partitions))
		if err != nil {
			return st, err
		}
		st.serve[SideBroker] = dev
		st.order = append(st.order, dev)
		brokers, err := dev.Addr(ctx, proc.BannerKafka, startTimeout)
		if err != nil {
			return st, err
		}
		c, err := part(SideConsumer, PartKafkaConsumer, "--addr", brokers, "--topic", floorTopic, "--group", floorGroup)
		if err != nil {
			return st, err
		}
		if _, err := c.WaitLine(ctx, partReady, startTimeout); err != nil {
			return st, err
		}
		st.driver, st.args = SideProducer, []string{PartKafkaProducer, "--addr", brokers, "--topic", floorTopic}
	case PrimitiveRedis:
		st.rdb = redis.NewClient(&redis.Options{Addr: cond.Redis})
		st.prefix = cond.RedisPrefix
		st.driver, st.args = SideClient, []string{PartRedisClient, "--addr", cond.Redis, "--prefix", cond.RedisPrefix}
	case PrimitivePace:
		st.driver, st.args = SideDriver, []string{PartPace}
	}
	return st, nil
}

// stop stops the standing processes and deletes the Redis primitive's
// keys.
func (st *stand) stop(log *slog.Logger) {
	if st == nil {
		return
	}
	// The clients first, the broker they talk to last.
	ps := slices.Clone(st.order)
	slices.Reverse(ps)
	teardown(log, st.rdb, ps, st.prefix+":*")
}

// pids are the processes read around a window: the standing ones, the
// driver when there is one, and the bench's own (for the rest of the
// machine's share).
func (st *stand) pids(driver *proc.Process) map[string]int {
	m := map[string]int{roleLoadgen: os.Getpid()}
	for side, p := range st.serve {
		m[side] = p.Pid()
	}
	if driver != nil {
		m[st.driver] = driver.Pid()
	}
	return m
}

// runs measures rate cfg.Runs times.
func (st *stand) runs(ctx context.Context, cfg Config, rate float64, log *slog.Logger, progress func(FloorRun)) (FloorPrimitive, error) {
	fp := FloorPrimitive{Name: st.prim}
	a := attempts{cfg: cfg, log: log, what: []any{"primitive", st.prim, "rate", rate},
		usage: func(ctx context.Context) snapshot { return usage(ctx, st.rdb, st.pids(nil)) }}
	for len(fp.Runs) < cfg.Runs {
		var res FloorRun
		kept, err := a.run(ctx, func(n int) (float64, error) {
			var err error
			if res, err = st.measure(ctx, cfg, rate, n); err != nil {
				return 0, err
			}
			if progress != nil {
				progress(res)
			}
			return res.OtherCores, nil
		})
		if err != nil {
			return fp.summarize(), err
		}
		if kept {
			fp.Runs = append(fp.Runs, res)
		} else {
			fp.Discarded = append(fp.Discarded, res)
		}
	}
	return fp.summarize(), nil
}

// measure starts a driver at rate, reads every side at its window's edges
// and stops it.
func (st *stand) measure(ctx context.Context, cfg Config, rate float64, run int) (FloorRun, error) {
	args := append([]string{"bench", "--floor-part"}, st.args...)
	args = append(args, "--rate", fmt.Sprint(rate), "--warmup", cfg.Warmup.String(), "--duration", cfg.Duration.String())
	d, err := proc.Start("sluice bench --floor-part "+st.args[0], st.bin, st.env, args...)
	if err != nil {
		return FloorRun{}, err
	}
	defer func() { _, _ = d.Stop(10 * time.Second) }()
	if _, err := d.WaitLine(ctx, partWindowBegin, startTimeout+cfg.Warmup); err != nil {
		return FloorRun{}, err
	}
	pids := st.pids(d)
	snap := func(begin bool) snapshot {
		s := newSnapshot()
		if begin {
			readRedis(ctx, st.rdb, &s, "cpu", "stats")
		}
		readProcs(&s, pids)
		if !begin {
			readRedis(ctx, st.rdb, &s, "cpu", "stats")
		}
		return s
	}
	before := snap(true)
	m, err := d.WaitLine(ctx, partWindowEnd, cfg.Duration+startTimeout)
	if err != nil {
		return FloorRun{}, err
	}
	after := snap(false)
	if err := errors.Join(append(before.errs, after.errs...)...); err != nil {
		return FloorRun{}, err
	}
	var w windowResult
	if err := json.Unmarshal([]byte(m[1]), &w); err != nil {
		return FloorRun{}, fmt.Errorf("the driver's window: %w", err)
	}
	if w.Ops == 0 {
		return FloorRun{}, fmt.Errorf("no operation succeeded in the window (%d failed, first: %s)", w.Errors, w.FirstError)
	}
	return computeFloor(st.prim, rate, run, w, before, after), nil
}

// computeFloor turns a driver's window and the readings at its edges into
// figures per operation.
func computeFloor(prim string, rate float64, run int, w windowResult, before, after snapshot) FloorRun {
	secs := after.at.Sub(before.at).Seconds()
	r := FloorRun{Primitive: prim, Rate: rate, Run: run, Seconds: secs, Ops: w.Ops, Errors: w.Errors, Missed: w.Missed,
		FirstError: w.FirstError, P50MS: w.P50MS, P99MS: w.P99MS, MaxSendLagMS: w.MaxSendLagMS,
		OtherCores: otherCores(before, after), Sides: map[string]ProcessCost{}}
	n := float64(w.Ops)
	if n == 0 || secs <= 0 {
		return r
	}
	r.OpsPerSecond = n / secs
	for _, side := range sidesOf[prim] {
		r.Sides[side] = costOf(after.procs[side].Sub(before.procs[side]), n, secs)
	}
	if r.Redis = redisCostOf(before, after, n, secs); r.Redis != nil {
		r.Sides[SideRedisServer] = ProcessCost{CPUUS: r.Redis.CPUUS, Cores: r.Redis.Cores}
	}
	return r
}
