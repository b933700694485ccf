package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"sluice/shared/devstack/loadgen"
	"sluice/shared/devstack/proc"
)

// Roles of the processes measured; "loadgen" is the bench's own process.
const (
	roleProducer = "producer"
	roleConsumer = "consumer"
	roleBroker   = "broker"
	roleLoadgen  = "loadgen"
)

// snapshot is what was read at one edge of a window.
type snapshot struct {
	at      time.Time
	procs   map[string]proc.Usage
	machine proc.Machine
	kafka   map[string]map[string]float64 // role → request key → requests written
	hotHits float64                       // the producer's answers from the hot-answer cache
	redis   *redisInfo                    // the machine's Redis; nil when embedded
	errs    []error
}

// take reads the processes, the machine, the clients' Kafka counters and
// Redis. Reading /metrics and INFO costs the processes some CPU: at the
// window's beginning they are read before /proc, at its end after, so that
// the window does not pay for them.
func (d *deployment) take(ctx context.Context, begin bool) snapshot {
	s := newSnapshot()
	scrape := func() {
		for _, role := range []string{roleProducer, roleConsumer} {
			m, err := d.scrape(ctx, role)
			if err != nil {
				s.errs = append(s.errs, err)
			}
			s.kafka[role] = m.requests
			if role == roleProducer {
				s.hotHits = m.hotHits
			}
		}
		readRedis(ctx, d.rdb, &s, "cpu", "stats", "commandstats")
	}
	if begin {
		scrape()
		readProcs(&s, d.pids())
	} else {
		readProcs(&s, d.pids())
		scrape()
	}
	return s
}

// usage reads the processes', the machine's and Redis's CPU time only.
func (d *deployment) usage(ctx context.Context) snapshot {
	return usage(ctx, d.rdb, d.pids())
}

// usage reads the CPU time of the processes of pids, the machine's and,
// when rdb is not nil, Redis's.
func usage(ctx context.Context, rdb *redis.Client, pids map[string]int) snapshot {
	s := newSnapshot()
	readRedis(ctx, rdb, &s, "cpu", "stats")
	readProcs(&s, pids)
	return s
}

func newSnapshot() snapshot {
	return snapshot{procs: map[string]proc.Usage{}, kafka: map[string]map[string]float64{}}
}

// pids are the deployment's processes and the bench's own, by role.
func (d *deployment) pids() map[string]int {
	return map[string]int{roleProducer: d.producer.Pid(), roleConsumer: d.consumer.Pid(),
		roleBroker: d.dev.Pid(), roleLoadgen: os.Getpid()}
}

// readProcs reads the usage of the processes of pids, by role, and the
// machine's CPU time.
func readProcs(s *snapshot, pids map[string]int) {
	s.at = time.Now()
	for role, pid := range pids {
		u, err := proc.Read(pid)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s: %w", role, err))
		}
		s.procs[role] = u
	}
	m, err := proc.ReadMachine()
	if err != nil {
		s.errs = append(s.errs, err)
	}
	s.machine = m
}

// readRedis reads sections of the machine's Redis's INFO through rdb; nil
// (an embedded Redis, whose CPU is its process's) reads nothing.
func readRedis(ctx context.Context, rdb *redis.Client, s *snapshot, sections ...string) {
	if rdb == nil {
		return
	}
	info, err := rdb.Info(ctx, sections...).Result()
	if err == nil {
		var ri redisInfo
		if ri, err = parseRedisInfo(info); err == nil {
			s.redis = &ri
		}
	}
	if err != nil {
		s.errs = append(s.errs, fmt.Errorf("redis info: %w", err))
	}
}

// otherCores is the CPU the rest of the machine used between two
// readings, in cores: the machine's busy time less that of the
// deployment's processes, the bench's own and, when it is measured,
// Redis's.
func otherCores(before, after snapshot) float64 {
	secs := after.at.Sub(before.at).Seconds()
	if secs <= 0 {
		return 0
	}
	var ours float64
	for role, u := range after.procs {
		ours += u.Sub(before.procs[role]).CPU().Seconds()
	}
	if before.redis != nil && after.redis != nil {
		ours += after.redis.CPU - before.redis.CPU
	}
	busy := float64(after.machine.Sub(before.machine).Busy) / float64(proc.ClockTicks())
	return max(0, busy-ours) / secs
}

// scrape reads role's /metrics.
func (d *deployment) scrape(ctx context.Context, role string) (scraped, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.admin[role]+"/metrics", nil)
	if err != nil {
		return scraped{}, err
	}
	resp, err := d.cl.Do(req)
	if err != nil {
		return scraped{}, fmt.Errorf("scrape %s: %w", role, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return scraped{}, fmt.Errorf("scrape %s: status %d", role, resp.StatusCode)
	}
	m, err := parseMetrics(resp.Body)
	if err != nil {
		return scraped{}, fmt.Errorf("scrape %s: %w", role, err)
	}
	return m, nil
}

// scraped is what the bench reads of a process's /metrics.
type scraped struct {
	// requests are the requests its Kafka clients wrote, summed by key.
	requests map[string]float64
	// hotHits are the questions the hot-answer cache answered (a
	// producer's): a bench run must have none, or it measures the cache.
	hotHits float64
}

var kafkaRequestsName = regexp.MustCompile(`^sluice_kafka_[a-z]+_requests_total$`)

// parseMetrics reads a /metrics page (Prometheus text format): the requests
// of every Kafka client of the process, summed by request key, and the
// hot-answer cache's hits.
func parseMetrics(r io.Reader) (scraped, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return scraped{}, err
	}
	out := map[string]float64{}
	found := false
	for name, f := range families {
		if !kafkaRequestsName.MatchString(name) {
			continue
		}
		found = true
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "key" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if !found {
		return scraped{}, errors.New("no sluice_kafka_<role>_requests_total: a sluice binary from before the request counters?")
	}
	var hits float64
	for _, m := range families["sluice_producer_hot_answers_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" && l.GetValue() == "hit" {
				hits += m.GetCounter().GetValue()
			}
		}
	}
	return scraped{requests: out, hotHits: hits}, nil
}

// redisInfo is what INFO says of Redis's own work.
type redisInfo struct {
	CPU      float64 // seconds, used_cpu_user + used_cpu_sys
	Commands float64 // total_commands_processed
	// ByCommand counts the calls of each command (commandstats): those
	// a script runs as well as the script's own EVALSHA.
	ByCommand map[string]float64
}

// parseRedisInfo reads the cpu, stats and commandstats sections of INFO.
func parseRedisInfo(info string) (redisInfo, error) {
	ri := redisInfo{ByCommand: map[string]float64{}}
	seen := 0
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		if cmd, ok := strings.CutPrefix(k, "cmdstat_"); ok {
			// calls=12,usec=34,...
			for field := range strings.SplitSeq(v, ",") {
				if n, ok := strings.CutPrefix(field, "calls="); ok {
					if calls, err := strconv.ParseFloat(n, 64); err == nil {
						ri.ByCommand[cmd] = calls
					}
				}
			}
			continue
		}
		var dst *float64
		switch k {
		case "used_cpu_user", "used_cpu_sys":
			dst = &ri.CPU
		case "total_commands_processed":
			dst = &ri.Commands
		default:
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return redisInfo{}, fmt.Errorf("%s: %w", k, err)
		}
		*dst += f
		seen++
	}
	if seen != 3 {
		return redisInfo{}, errors.New("INFO lacks used_cpu_user, used_cpu_sys or total_commands_processed")
	}
	return ri, nil
}

// startProfiles asks every process for a CPU profile of the next secs
// seconds, written to path(role). wait returns once all are written.
func (d *deployment) startProfiles(ctx context.Context, secs int, path func(role string) string) (wait func() error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	cl := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second}
	for role, addr := range d.admin {
		wg.Go(func() {
			if err := fetchProfile(ctx, cl, addr, secs, path(role)); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", role, err))
				mu.Unlock()
			}
		})
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

func fetchProfile(ctx context.Context, cl *http.Client, addr string, secs int, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("cpu profile: status %d: %s", resp.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// compute turns a run's load result and the readings at its window's
// edges into figures per answered request.
func compute(rate float64, run int, l loadgen.Result, before, after snapshot) RunResult {
	secs := after.at.Sub(before.at).Seconds()
	r := RunResult{Rate: rate, Run: run, Seconds: secs, Sent: l.Sent, Answered: l.Answered, Queued: l.Queued, Refused: l.Refused,
		Errors: l.Errors, Missed: l.Missed, AnsweredPerSecond: l.PerSecond,
		P50MS: l.P50MS, P99MS: l.P99MS, MaxMS: l.MaxMS, MaxSendLagMS: l.MaxSendLagMS}
	r.CacheHits = int64(after.hotHits - before.hotHits)
	r.OtherCores = otherCores(before, after)
	n := float64(l.Answered)
	if n == 0 || secs <= 0 {
		return r
	}
	cost := func(role string) ProcessCost {
		c := costOf(after.procs[role].Sub(before.procs[role]), n, secs)
		if a, ok := after.kafka[role]; ok {
			b := before.kafka[role]
			var all float64
			for k, v := range a {
				all += v - b[k]
			}
			c.KafkaProduce = (a["produce"] - b["produce"]) / n
			c.KafkaFetch = (a["fetch"] - b["fetch"]) / n
			c.KafkaOther = all/n - c.KafkaProduce - c.KafkaFetch
		}
		return c
	}
	r.Producer, r.Consumer, r.Broker, r.LoadGen = cost(roleProducer), cost(roleConsumer), cost(roleBroker), cost(roleLoadgen)
	r.AppCPUUS = r.Producer.CPUUS + r.Consumer.CPUUS
	r.Redis = redisCostOf(before, after, n, secs)
	return r
}

// redisCostOf is what the machine's Redis used between two snapshots, per
// operation of n, over a window of secs seconds; nil when it was not read.
func redisCostOf(before, after snapshot, n, secs float64) *RedisCost {
	if before.redis == nil || after.redis == nil {
		return nil
	}
	cpu := after.redis.CPU - before.redis.CPU
	rc := &RedisCost{CPUUS: cpu * 1e6 / n, Commands: (after.redis.Commands - before.redis.Commands) / n, Cores: cpu / secs,
		ByCommand: map[string]float64{}}
	for cmd, calls := range after.redis.ByCommand {
		if d := calls - before.redis.ByCommand[cmd]; d > 0 {
			rc.ByCommand[cmd] = d / n
		}
	}
	return rc
}

// costOf is what a process used, u, per operation of n, over a window of
// secs seconds.
func costOf(u proc.Usage, n, secs float64) ProcessCost {
	hz := float64(proc.ClockTicks())
	c := ProcessCost{
		CPUUS:  float64(u.UserTicks+u.SysTicks) / hz * 1e6 / n,
		SysUS:  float64(u.SysTicks) / hz * 1e6 / n,
		Reads:  float64(u.ReadCalls) / n,
		Writes: float64(u.WriteCalls) / n,
		Sleeps: float64(u.Sleeps) / n,
		Cores:  float64(u.UserTicks+u.SysTicks) / hz / secs,
	}
	c.Syscalls = c.Reads + c.Writes
	return c
}
