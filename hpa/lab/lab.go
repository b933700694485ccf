// Package lab is Sluice's autoscaling lab: it replays a traffic profile
// against real `sluice consumer` processes that the Go port of the
// Kubernetes HorizontalPodAutoscaler (package hpa) scales on the consumers'
// own metrics, with the chart's behaviour, and removes through the same
// preStop drain as the chart; and it simulates the same loop at cluster
// scale with a model calibrated from those runs (Simulate).
//
// A lab run (Run) starts `sluice dev --roles broker,redis,llm,producer`
// (the embedded Kafka broker, Redis and a mock LLM with a fixed latency,
// and one producer) and the consumers as separate processes of the same
// binary, each with a small in-flight budget, so that pods and not the
// machine's cores are the bottleneck. Questions go to the producer in wait
// mode, open loop (and a share straight to Kafka, as bots do); the answers'
// queue waits are read from the reply records. At each sync the lab
// scrapes every consumer's /metrics as Prometheus would, aggregates them as
// the chart's Prometheus Adapter rules do, and runs the HPA. The
// autoscaler's clock runs TimeFactor times faster than the wall clock, so
// every period of it (sync period, stabilization windows, policy periods)
// is compressed by that factor; the profile, the pods' start and drain and
// the LLM run in real time.
//
// At the end it checks every accepted question against the dialogs'
// histories in Redis: answered exactly once, or expired by the pipeline,
// never lost, never a turn twice.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/hpa"
	"sluice/shared/admin"
	"sluice/shared/devstack"
	"sluice/shared/devstack/proc"
	"sluice/shared/settings"
	"sluice/shared/store"
)

// Config is a lab run's settings.
type Config struct {
	Profile Profile
	// Out is the directory the CSV, the plot and the summary go to.
	Out string
	// Signal is what the consumers scale on: one of Signals.
	Signal string
	// TimeFactor compresses every period of the autoscaler. Default 20.
	TimeFactor float64
	// Binary is the sluice binary the processes run. Default: this one.
	Binary string
	// InFlight is each consumer's in-flight budget. Default 8: with the
	// 800 ms LLM a consumer answers 10 questions/s, so that 13 of them
	// carry the built-in flash sale's peak at the chart's 0.7. Each pod is
	// a queue with InFlight servers fed by its own partitions: with a
	// budget of 2 a pod at 60 % had a queue-wait p99 of 730 ms, with 8 of
	// 297 ms (docs/autoscaling.md); production's 256 has none to speak of.
	InFlight int
	// LLMLatency is the mock LLM's fixed latency. Default 800 ms.
	LLMLatency time.Duration
	// CommitInterval of the consumers. Default 1 s.
	CommitInterval time.Duration
	// MinReplicas and MaxReplicas bound the consumers (default 2 and 16);
	// Partitions of the requests topic (default 3 × MaxReplicas: with as
	// many partitions as pods, a pod that gets two of them has twice the
	// others' load on the same budget, and its queue grows while the
	// group's average looks fine; docs/autoscaling.md).
	MinReplicas, MaxReplicas int32
	Partitions               int32
	// Wait is the wait_ms of the HTTP questions. Default 20 s.
	Wait time.Duration
	// RedisAddr, when set, is the Redis the run uses (under a key prefix of
	// its own); by default the embedded one.
	RedisAddr string
	// Behavior is how fast the autoscaler may scale. Default the chart's
	// (ChartBehavior); --hpa takes it from a manifest.
	Behavior hpa.Behavior
}

// syncPeriod is the HPA controller's default sync period
// (--horizontal-pod-autoscaler-sync-period), before compression.
const syncPeriod = 15 * time.Second

// ChartBehavior is the scaling behaviour of the chart's consumer HPA
// (charts/sluice values consumer.autoscaling.behavior, hpa/hpa.yaml):
// double every 15 s, and after a 5-minute window, shed 10 % a minute.
func ChartBehavior() hpa.Behavior {
	return hpa.Behavior{
		ScaleUp: hpa.Rules{SelectPolicy: hpa.MaxChange, Policies: []hpa.Policy{
			{Type: hpa.PercentPolicy, Value: 100, Period: 15 * time.Second}}},
		ScaleDown: hpa.Rules{StabilizationWindow: 5 * time.Minute, SelectPolicy: hpa.MaxChange, Policies: []hpa.Policy{
			{Type: hpa.PercentPolicy, Value: 10, Period: time.Minute}}},
	}
}

// DefaultConfig returns the defaults: a 150-second flash-sale profile
// shows a full scale-up and scale-down at time factor 20.
func DefaultConfig() Config {
	return Config{Signal: "chart", TimeFactor: 20, InFlight: 8, LLMLatency: 800 * time.Millisecond,
		CommitInterval: time.Second, MinReplicas: 2, MaxReplicas: 16, Wait: 20 * time.Second, Behavior: ChartBehavior()}
}

// Validate reports every setting of a lab run out of range, each named by
// its flag.
func (c Config) Validate() error { return c.validate(64) }

// validate is Validate with at most maxPods consumers: 64 processes on one
// machine, 10,000 in a simulation.
func (c Config) validate(maxPods int32) error {
	var p settings.Problems
	p.Check(slices.Contains(Signals, c.Signal), "signal", "%q is not one of %s", c.Signal, strings.Join(Signals, ", "))
	p.Check(c.TimeFactor >= 1 && c.TimeFactor <= 1000, "time-factor", "must be from 1 to 1000, got %g", c.TimeFactor)
	p.Check(c.InFlight >= 1, "in-flight", "must be at least 1, got %d", c.InFlight)
	p.Check(c.LLMLatency > 0, "llm-latency", "must be positive")
	p.Check(c.CommitInterval > 0, "commit-interval", "must be positive")
	p.Check(c.MinReplicas >= 1 && c.MinReplicas <= c.MaxReplicas, "min-replicas", "must be from 1 to --max-replicas (%d), got %d", c.MaxReplicas, c.MinReplicas)
	p.Check(c.MaxReplicas <= maxPods, "max-replicas", "at most %d, got %d", maxPods, c.MaxReplicas)
	p.Check(c.Partitions == 0 || c.Partitions >= c.MaxReplicas, "partitions", "must be at least --max-replicas, or pods would idle")
	p.Check(c.Wait >= time.Second, "wait", "must be at least 1s")
	p.Check(c.Out != "", "out", "is required")
	p.Check(len(c.Profile.Steps) > 0, "profile", "is empty")
	return p.Err()
}

// labSecret signs the lab users' tokens; the producer is the lab's own.
const labSecret = "sluice-lab-secret-not-for-production"

// pod is one consumer process.
type pod struct {
	n       int
	p       *proc.Process
	started time.Time

	mu      sync.Mutex
	admin   string // admin listener, once known
	readyAt time.Time
	workAt  time.Time     // first seen with records in flight
	up      chan struct{} // closed once ready, or failed to be
}

func (p *pod) adminAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.admin
}

func (p *pod) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.readyAt.IsZero()
}

// run is one lab run under way.
type run struct {
	cfg   Config
	log   *slog.Logger
	env   []string // the consumers' environment
	topic string
	cl    *http.Client
	tl    *timeline

	mu      sync.Mutex
	pods    []*pod // current replicas, oldest first
	next    int
	ups     int
	downs   int
	drainOK int
	drainNo int
	starts  []time.Duration // start to ready, per pod
	works   []time.Duration // start to first records in flight, per pod
	drains  []time.Duration // drain request to exit, per pod
	podSecs float64
	maxReps int
	drainWG sync.WaitGroup
}

// Run runs the lab and writes its CSV, plot and summary to cfg.Out. The
// summary is returned even when the run found lost or duplicated work.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (Summary, error) {
	if cfg.Partitions == 0 {
		cfg.Partitions = 3 * cfg.MaxReplicas
	}
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return Summary{}, fmt.Errorf("find the sluice binary: %w", err)
		}
		cfg.Binary = exe
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return Summary{}, err
	}
	targets := defaultTargets(cfg.InFlight, cfg.CommitInterval, cfg.LLMLatency)
	metrics, err := metricsFor(cfg.Signal, targets)
	if err != nil {
		return Summary{}, err
	}

	// The stand-ins and the producer: one `sluice dev` process.
	prefix := fmt.Sprintf("sluicelab:%d", time.Now().UnixNano())
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "SLUICE_JWT_SECRET=" + labSecret,
		"SLUICE_REDIS_PREFIX=" + prefix, "SLUICE_LOG_LEVEL=info"}
	devArgs := []string{"dev", "--roles", "broker,redis,llm,producer", "--dev-kafka-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--topic-partitions", fmt.Sprint(cfg.Partitions),
		"--mock-latency", cfg.LLMLatency.String(), "--mock-jitter", "0"}
	if cfg.RedisAddr != "" {
		devArgs = append(devArgs, "--redis-addr", cfg.RedisAddr)
	}
	dev, err := proc.Start("sluice dev", cfg.Binary, base, devArgs...)
	if err != nil {
		return Summary{}, err
	}
	defer func() {
		if _, err := dev.Stop(20 * time.Second); err != nil {
			log.Warn("stopping sluice dev", "err", err)
		}
	}()
	line := func(re *regexp.Regexp) (string, error) { return dev.Addr(ctx, re, time.Minute) }
	if _, err := dev.WaitLine(ctx, proc.BannerUp, time.Minute); err != nil {
		return Summary{}, err
	}
	api, err := line(proc.BannerAPI)
	if err != nil {
		return Summary{}, err
	}
	brokers, err := line(proc.BannerKafka)
	if err != nil {
		return Summary{}, err
	}
	llmURL, err := line(proc.BannerLLM)
	if err != nil {
		return Summary{}, err
	}
	redisAddr := cfg.RedisAddr
	if redisAddr == "" {
		if redisAddr, err = line(proc.BannerRedis); err != nil {
			return Summary{}, err
		}
	}

	r := &run{cfg: cfg, log: log, topic: "chat.requests", cl: &http.Client{Timeout: 2 * time.Second}}
	r.env = append(slices.Clone(base),
		"SLUICE_KAFKA_BROKERS="+brokers, "SLUICE_REDIS_ADDR="+redisAddr, "SLUICE_LLM_BASE_URL="+llmURL,
		"SLUICE_LLM_MODEL=sluice-mock", "SLUICE_ADMIN_ADDR=127.0.0.1:0",
		fmt.Sprintf("SLUICE_IN_FLIGHT=%d", cfg.InFlight),
		"SLUICE_COMMIT_INTERVAL="+cfg.CommitInterval.String(),
		// The lag is read once per sync, as a scrape would find it.
		"SLUICE_LAG_INTERVAL="+max(syncPeriod/time.Duration(cfg.TimeFactor), 100*time.Millisecond).String(),
		"SLUICE_SESSION_TIMEOUT=6s", "SLUICE_DRAIN_TIMEOUT=15s")

	kc, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...),
		kgo.ConsumeTopics("chat.replies", botReplies), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.AllowAutoTopicCreation(), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return Summary{}, fmt.Errorf("kafka client: %w", err)
	}
	defer kc.Close()

	// The minimum replicas first, ready, as a Deployment would have them.
	r.scaleTo(ctx, int(cfg.MinReplicas))
	if err := r.awaitReady(ctx, time.Minute); err != nil {
		r.stopAll()
		return Summary{}, err
	}

	start := time.Now()
	r.tl = newTimeline(start)
	replyCtx, stopReplies := context.WithCancel(ctx)
	replyDone := make(chan struct{})
	go func() { defer close(replyDone); r.tl.readReplies(replyCtx, kc) }()
	defer func() { stopReplies(); <-replyDone }()

	clock := func() time.Time { return start.Add(time.Duration(float64(time.Since(start)) * cfg.TimeFactor)) }
	as, err := hpa.New(hpa.Spec{MinReplicas: cfg.MinReplicas, MaxReplicas: cfg.MaxReplicas, Metrics: metrics, Behavior: cfg.Behavior}, clock)
	if err != nil {
		r.stopAll()
		return Summary{}, err
	}
	hpaCtx, stopHPA := context.WithCancel(ctx)
	hpaDone := make(chan struct{})
	go func() { defer close(hpaDone); r.autoscale(hpaCtx, as, metrics, start) }()

	tr := &traffic{api: api, secret: labSecret, cl: &http.Client{Timeout: cfg.Wait + 10*time.Second},
		kafka: kc, topic: r.topic, replyTo: botReplies, wait: cfg.Wait, tl: r.tl, errs: map[string]int{}}
	log.Info("lab: profile started", "profile", cfg.Profile.Name, "seconds", cfg.Profile.Duration(), "signal", cfg.Signal, "time_factor", cfg.TimeFactor)
	tr.run(ctx, cfg.Profile, start)
	end := time.Since(start).Seconds()
	log.Info("lab: profile ended; awaiting the answers")
	awaitAll(&tr.wg, cfg.Wait+40*time.Second)
	r.awaitBots(ctx, tr, 60*time.Second)
	stopHPA()
	<-hpaDone
	final := r.current()
	r.stopAll()
	r.drainWG.Wait()

	st, err := store.Dial(store.ClientConfig{Addrs: []string{redisAddr}}, withPrefix(prefix))
	if err != nil {
		return Summary{}, err
	}
	defer st.Close()
	v, err := verify(ctx, st, tr.accepted)
	if err != nil {
		return Summary{}, err
	}
	if cfg.RedisAddr != "" {
		// The embedded Redis goes with the dev process; a shared one keeps
		// nothing of the run.
		if _, err := devstack.DeleteKeys(ctx, st.Client(), prefix+":*", "rate:"+prefix+":*"); err != nil {
			log.Warn("lab: deleting the run's keys", "err", err)
		}
	}

	samples := r.tl.samples(end)
	p50, p99 := r.tl.waitQuantiles()
	r.mu.Lock()
	sum := Summary{
		Mode: "lab", Profile: cfg.Profile.Name, Signal: cfg.Signal, TimeFactor: cfg.TimeFactor,
		Offered: tr.offered.Load(), Accepted: int64(len(tr.accepted)), Answered: v.answered, Expired: v.expired,
		Lost: v.lost, DuplicateTurns: v.duplicates, Refused: tr.refused.Load(), Failed: tr.failed.Load(),
		QueueWaitP50Ms: p50, QueueWaitP99Ms: p99,
		MaxReplicas: r.maxReps, FinalReplicas: final, PodSeconds: r.podSecs,
		ScaleUps: r.ups, ScaleDowns: r.downs, DrainedOK: r.drainOK, DrainedFailed: r.drainNo,
		PodStartS: meanSeconds(r.starts), PodWorkS: meanSeconds(r.works), DrainS: meanSeconds(r.drains),
		InFlight: cfg.InFlight, LLMLatencyMs: float64(cfg.LLMLatency.Milliseconds()),
		ServiceMs: 1000 * r.tl.serviceTime(cfg.InFlight, 5),
		Out:       cfg.Out,
	}
	r.mu.Unlock()
	for text, n := range tr.errs {
		log.Warn("lab: questions failed", "error", text, "count", n)
	}
	return sum, writeOutputs(cfg.Out, "lab", fmt.Sprintf("Sluice autoscaling lab: %s, signal %s, time ×%g", cfg.Profile.Name, cfg.Signal, cfg.TimeFactor), samples, sum)
}

// botReplies is the topic the lab's bots ask their answers on.
const botReplies = "lab.bot.replies"

func withPrefix(prefix string) store.Config {
	c := store.DefaultConfig()
	c.Prefix = prefix
	return c
}

func meanSeconds(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return (s / time.Duration(len(ds))).Seconds()
}

// awaitAll waits for wg, at most d.
func awaitAll(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// awaitBots waits until every bot question produced has a reply, at most d.
func (r *run) awaitBots(ctx context.Context, tr *traffic, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		missing := 0
		tr.mu.Lock()
		for _, a := range tr.accepted {
			if strings.HasPrefix(a.user, "bot-") && !r.tl.seen(a.requestID) {
				missing++
			}
		}
		tr.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// autoscale runs the HPA every compressed sync period until ctx ends, and
// counts the pod-seconds.
func (r *run) autoscale(ctx context.Context, as *hpa.Autoscaler, metrics []hpa.MetricSpec, start time.Time) {
	period := time.Duration(float64(syncPeriod) / r.cfg.TimeFactor)
	t := time.NewTicker(period)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := r.current()
			r.mu.Lock()
			r.podSecs += float64(cur) * now.Sub(last).Seconds()
			r.mu.Unlock()
			last = now
			pods, addrs := r.scraped()
			obs, per := scrape(ctx, r.cl, addrs, r.topic)
			r.noteWork(pods, per, now)
			// As the controller does, a sync with a missing metric still
			// scales when the others ask for more; Desired is always safe.
			d, err := as.Sync(int32(cur), obs.values(metrics))
			if err != nil {
				r.log.Warn("lab: autoscaler", "err", err)
			}
			r.tl.sync(syncPoint{t: now.Sub(start).Seconds(), obs: obs, replicas: r.readyCount(), desired: int(d.Desired)})
			if int(d.Desired) != cur {
				r.log.Info("lab: scale", "from", cur, "to", d.Desired, "reason", d.Reason, "per_metric", d.PerMetric,
					"in_flight_ratio", obs.InFlightRatio, "lag", obs.Lag, "age_s", obs.OldestAge)
				r.mu.Lock()
				if int(d.Desired) > cur {
					r.ups++
				} else {
					r.downs++
				}
				r.mu.Unlock()
				r.scaleTo(ctx, int(d.Desired))
			}
		}
	}
}

func (r *run) current() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pods)
}

func (r *run) readyCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.pods {
		if p.ready() {
			n++
		}
	}
	return n
}

// scraped returns the pods whose admin listener is known, and its
// addresses.
func (r *run) scraped() ([]*pod, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []*pod
	var as []string
	for _, p := range r.pods {
		if a := p.adminAddr(); a != "" {
			ps = append(ps, p)
			as = append(as, a)
		}
	}
	return ps, as
}

// noteWork records, for each pod seen with records in flight for the
// first time, how long it took from its start to take work: its start,
// the group's rebalance and a first fetch. It is the pod start a
// simulation takes (pod_work_s); readiness alone comes before the
// partitions do.
func (r *run) noteWork(pods []*pod, per []podMetrics, now time.Time) {
	for i, p := range pods {
		if !per[i].ok || per[i].ratio <= 0 {
			continue
		}
		p.mu.Lock()
		first := p.workAt.IsZero()
		if first {
			p.workAt = now
		}
		p.mu.Unlock()
		if first {
			r.mu.Lock()
			r.works = append(r.works, now.Sub(p.started))
			r.mu.Unlock()
		}
	}
}

// scaleTo starts or removes consumers until n run. New ones start at once
// and become ready in the background; removed ones (the newest first, as a
// ReplicaSet picks) leave the replicas at once and are drained in the
// background as Kubernetes does: the preStop GET /drain, then SIGTERM.
func (r *run) scaleTo(ctx context.Context, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.pods) < n {
		r.next++
		p := &pod{n: r.next, started: time.Now(), up: make(chan struct{})}
		pr, err := proc.Start(fmt.Sprintf("consumer-%d", p.n), r.cfg.Binary, r.env, "consumer")
		if err != nil {
			r.log.Error("lab: start consumer", "err", err)
			return
		}
		p.p = pr
		r.pods = append(r.pods, p)
		go r.becomeReady(ctx, p)
	}
	r.maxReps = max(r.maxReps, len(r.pods))
	for len(r.pods) > n {
		p := r.pods[len(r.pods)-1]
		r.pods = r.pods[:len(r.pods)-1]
		r.drainWG.Add(1)
		go r.drain(p)
	}
}

// becomeReady waits for a new consumer's admin listener and its readiness,
// as the kubelet's readiness probe does.
func (r *run) becomeReady(ctx context.Context, p *pod) {
	defer close(p.up)
	addr, err := p.p.Addr(ctx, proc.AdminListening, time.Minute)
	if err != nil {
		r.log.Error("lab: consumer did not start", "pod", p.n, "err", err)
		return
	}
	p.mu.Lock()
	p.admin = addr
	p.mu.Unlock()
	// No bound but the run's: a consumer that never gets ready is what
	// awaitReady and the autoscaler see.
	if p.p.AwaitReady(ctx, r.cl, addr, 24*time.Hour) != nil {
		return
	}
	now := time.Now()
	p.mu.Lock()
	p.readyAt = now
	p.mu.Unlock()
	r.mu.Lock()
	r.starts = append(r.starts, now.Sub(p.started))
	r.mu.Unlock()
}

// awaitReady waits until every current pod is ready.
func (r *run) awaitReady(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	pods := slices.Clone(r.pods)
	r.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	for _, p := range pods {
		select {
		case <-p.up:
			if !p.ready() {
				return fmt.Errorf("consumer %d did not become ready; its last lines:\n%s", p.n, p.p.Tail(20))
			}
		case <-t.C:
			return fmt.Errorf("consumer %d not ready within %s", p.n, d)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// drain removes a consumer as Kubernetes does with the chart's preStop
// hook: GET /drain on its admin listener (which answers once the consumer
// finished its in-flight records, committed and left the group), then
// SIGTERM. It counts as drained when both went through and the process
// exited 0.
func (r *run) drain(p *pod) {
	defer r.drainWG.Done()
	<-p.up
	t0 := time.Now()
	var err error
	if a := p.adminAddr(); a != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = admin.RequestDrain(ctx, a)
		cancel()
	} else {
		err = errors.New("never listened")
	}
	killed, exit := p.p.Stop(30 * time.Second)
	took := time.Since(t0)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil && exit == nil && !killed {
		r.drainOK++
		r.drains = append(r.drains, took)
		return
	}
	r.drainNo++
	r.log.Error("lab: consumer drain failed", "pod", p.n, "drain", err, "exit", exit, "last_lines", p.p.Tail(10))
}

// stopAll removes every consumer through the drain.
func (r *run) stopAll() {
	r.scaleTo(context.Background(), 0)
}

// writeOutputs writes the CSV, the plot and the summary of a run to dir.
func writeOutputs(dir, name, title string, samples []Sample, sum Summary) error {
	var errs []error
	write := func(file string, f func(io.Writer) error) {
		path := filepath.Join(dir, file)
		w, err := os.Create(path)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if err := f(w); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", path, err))
		}
		if err := w.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	write(name+".csv", func(w io.Writer) error { return WriteCSV(w, samples) })
	write(name+".png", func(w io.Writer) error { return Plot(w, title, samples) })
	write(name+".json", func(w io.Writer) error {
		b, err := json.MarshalIndent(sum, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	})
	return errors.Join(errs...)
}
