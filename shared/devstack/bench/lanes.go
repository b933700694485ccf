package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"sluice/shared/bus"
	"sluice/shared/devstack/loadgen"
	"sluice/shared/envelope"
	"sluice/shared/settings"
)

// Scenarios of a lanes run (LanesConfig.Scenarios).
const (
	// ScenarioAlone: the interactive load alone.
	ScenarioAlone = "alone"
	// ScenarioTwo: the interactive load while LanesConfig.Backlog bulk
	// requests are queued and more arrive, on the two lanes.
	ScenarioTwo = "two"
	// ScenarioSingle: ScenarioTwo with the consumer's single lane
	// (SLUICE_LANES=single), the design before the lanes.
	ScenarioSingle = "single"
)

// LanesConfig is the settings of `sluice bench --lanes`: what a bulk
// backlog does to the storefront's answers, on the two lanes and on one.
type LanesConfig struct {
	// Scenarios to run, in order. Default alone, two, single.
	Scenarios []string
	// Runs of each scenario, each on a deployment of its own. Default 2.
	Runs int
	// InFlight is the consumer's budget (SLUICE_IN_FLIGHT). Default 64.
	InFlight int
	// Latency is the mock LLM's fixed time to answer. Default 300 ms.
	Latency time.Duration
	// Rate is the interactive load, wait-mode questions/s, open loop; 0
	// is half the consumer's capacity, InFlight / Latency / 2.
	Rate float64
	// Backlog is how many bulk requests are put on the bulk topic, straight
	// to Kafka as a bot does, before the interactive load starts
	// (scenarios two and single). Default 50000.
	Backlog int
	// BulkRate is how many more bulk requests a second arrive meanwhile.
	// Default 20.
	BulkRate float64
	// Duration is the counted window, Warmup the uncounted load before
	// it. Defaults 60 s and 10 s.
	Duration, Warmup time.Duration
	// Bin is the width of the time series' bins. Default 5 s.
	Bin time.Duration
	// WaitMS is the interactive questions' wait_ms. Default 5000.
	WaitMS int
	// Redis and Partitions as in Config.
	Redis      string
	Partitions int32
	// Out, when set, is a directory that receives lanes.png (interactive
	// p99 and bulk answered/s over time, first run of each scenario) and
	// lanes.json (the report).
	Out string
	// Binary is the sluice binary the processes run. Default: this one.
	Binary string
}

// DefaultLanesConfig returns the defaults.
func DefaultLanesConfig() LanesConfig {
	return LanesConfig{Scenarios: []string{ScenarioAlone, ScenarioTwo, ScenarioSingle}, Runs: 2, InFlight: 64,
		Latency: 300 * time.Millisecond, Backlog: 50000, BulkRate: 20, Duration: 60 * time.Second,
		Warmup: 10 * time.Second, Bin: 5 * time.Second, WaitMS: 5000, Redis: RedisAuto, Partitions: 12}
}

// Validate reports every setting out of range, each named by its flag.
func (c LanesConfig) Validate() error {
	var p settings.Problems
	p.Check(len(c.Scenarios) > 0, "scenarios", "at least one is needed")
	for _, s := range c.Scenarios {
		p.Check(s == ScenarioAlone || s == ScenarioTwo || s == ScenarioSingle, "scenarios", "%q is none of %s, %s, %s", s, ScenarioAlone, ScenarioTwo, ScenarioSingle)
	}
	p.Check(c.Runs >= 1 && c.Runs <= 20, "runs", "must be from 1 to 20, got %d", c.Runs)
	p.Check(c.InFlight >= 1, "in-flight", "must be at least 1, got %d", c.InFlight)
	p.Check(c.Latency > 0, "llm-latency", "must be positive, got %v", c.Latency)
	p.Check(c.Rate >= 0 && c.Rate <= 50000, "rate", "must be from 0 (half the capacity) to 50000, got %g", c.Rate)
	p.Check(c.Backlog >= 0 && c.Backlog <= 1000000, "backlog", "must be from 0 to 1000000, got %d", c.Backlog)
	p.Check(c.BulkRate >= 0 && c.BulkRate <= 10000, "bulk-rate", "must be from 0 to 10000, got %g", c.BulkRate)
	p.Check(c.Duration >= time.Second && c.Duration <= 2*time.Minute, "duration", "must be from 1s to 2m (a scenario stays within two minutes), got %v", c.Duration)
	p.Check(c.Warmup >= 0 && c.Warmup+c.Duration <= 2*time.Minute, "warmup", "must not be negative, and with --duration at most 2m, got %v", c.Warmup)
	p.Check(c.Bin >= time.Second && c.Bin <= c.Duration, "bin", "must be from 1s to --duration, got %v", c.Bin)
	p.Check(c.WaitMS >= 100, "wait-ms", "must be at least 100, got %d", c.WaitMS)
	p.Check(c.Redis != "", "redis", "must be auto, embedded or host:port")
	p.Check(c.Partitions >= 1, "partitions", "must be at least 1, got %d", c.Partitions)
	return p.Err()
}

// rate returns the interactive load: Rate, or half the capacity.
func (c LanesConfig) rate() float64 {
	if c.Rate > 0 {
		return c.Rate
	}
	return math.Round(float64(c.InFlight)/c.Latency.Seconds()/2*10) / 10
}

// bulkMinRate is the bulk lane's guaranteed throughput: its minimum share
// of the budget (the consumer's default, 10 %, at least one slot) over
// the LLM's latency.
func (c LanesConfig) bulkMinRate() float64 {
	return math.Ceil(0.1*float64(c.InFlight)) / c.Latency.Seconds()
}

// LanesReport is what `sluice bench --lanes` measured.
type LanesReport struct {
	Conditions LanesConditions `json:"conditions"`
	Runs       []LanesRun      `json:"runs"`
}

// LanesConditions describes the deployment and the load.
type LanesConditions struct {
	Processes string  `json:"processes"`
	Redis     string  `json:"redis"`
	InFlight  int     `json:"in_flight"`
	LatencyMS float64 `json:"llm_latency_ms"`
	// CapacityPS is InFlight over the latency: the consumer's answers/s
	// with its budget full.
	CapacityPS float64 `json:"capacity_per_second"`
	Rate       float64 `json:"interactive_rate"`
	Backlog    int     `json:"bulk_backlog"`
	BulkRate   float64 `json:"bulk_rate"`
	// BulkMinPS is the bulk lane's minimum share over the latency.
	BulkMinPS  float64 `json:"bulk_min_per_second"`
	WindowS    float64 `json:"window_s"`
	WarmupS    float64 `json:"warmup_s"`
	BinS       float64 `json:"bin_s"`
	WaitMS     int     `json:"wait_ms"`
	Partitions int32   `json:"partitions"`
}

// LanesRun is one run of a scenario. Latencies are the loadgen's, from
// the moment a question was due to its answer, over the window.
type LanesRun struct {
	Scenario string  `json:"scenario"`
	Run      int     `json:"run"`
	Answered int64   `json:"interactive_answered"`
	Queued   int64   `json:"interactive_queued"` // 202: the wait ran out
	Refused  int64   `json:"interactive_refused"`
	Errors   int64   `json:"interactive_errors"`
	P50MS    float64 `json:"interactive_p50_ms"`
	P99MS    float64 `json:"interactive_p99_ms"`
	MaxMS    float64 `json:"interactive_max_ms"`
	// BulkPS is the bulk answers/s over the window, BulkMinBinPS the
	// lowest of its bins.
	BulkPS       float64 `json:"bulk_per_second"`
	BulkMinBinPS float64 `json:"bulk_min_bin_per_second"`
	// OtherCores is the CPU the rest of the machine used during the run
	// (the deployment, the bench and Redis not counted), in cores of 2:
	// what the run competed with.
	OtherCores float64 `json:"other_cores"`
	// Failures are the interactive load's first distinct refusals and
	// errors (loadgen.Result.Failures).
	Failures []loadgen.Failure `json:"interactive_failures,omitempty"`
	// Bins are the time series, from the start of the warm-up.
	Bins []LanesBin `json:"bins"`
}

// LanesBin is one bin of a run's time series.
type LanesBin struct {
	T float64 `json:"t"` // end of the bin, s from the start of the load
	// P50MS and P99MS are NaN (null in JSON) when no answer was due in
	// the bin.
	P50MS nullable `json:"p50_ms"`
	P99MS nullable `json:"p99_ms"`
	// Bulk is the bulk answers/s of the bin.
	Bulk float64 `json:"bulk_per_second"`
	// InFlight is the consumer's records in flight by lane, the mean of
	// its sluice_consumer_lane_in_flight read every second of the bin.
	InFlight map[string]float64 `json:"in_flight,omitempty"`
}

// bulkReplies is the topic the bench's bulk requests name for their
// replies, as a bot's own topic.
const bulkReplies = "bench.bulk.replies"

// RunLanes runs each scenario of cfg Runs times, each on a deployment of
// its own, and returns the report (with the runs done when it fails).
// progress, when set, receives each run as it ends.
func RunLanes(ctx context.Context, cfg LanesConfig, log *slog.Logger, progress func(LanesRun)) (LanesReport, error) {
	if err := cfg.Validate(); err != nil {
		return LanesReport{}, err
	}
	var err error
	if cfg.Binary, err = binary(cfg.Binary); err != nil {
		return LanesReport{}, err
	}
	rep := LanesReport{Conditions: LanesConditions{InFlight: cfg.InFlight, LatencyMS: float64(cfg.Latency.Milliseconds()),
		CapacityPS: float64(cfg.InFlight) / cfg.Latency.Seconds(), Rate: cfg.rate(), Backlog: cfg.Backlog, BulkRate: cfg.BulkRate,
		BulkMinPS: cfg.bulkMinRate(), WindowS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(), BinS: cfg.Bin.Seconds(),
		WaitMS: cfg.WaitMS, Partitions: cfg.Partitions}}
	for _, sc := range cfg.Scenarios {
		for run := 1; run <= cfg.Runs; run++ {
			r, cond, err := runLanesScenario(ctx, cfg, sc, run, log)
			if rep.Conditions.Processes == "" {
				rep.Conditions.Processes, rep.Conditions.Redis = cond.Processes, cond.Redis
			}
			if err != nil {
				return rep, fmt.Errorf("scenario %s, run %d: %w", sc, run, err)
			}
			rep.Runs = append(rep.Runs, r)
			if progress != nil {
				progress(r)
			}
		}
	}
	if cfg.Out != "" {
		if err := rep.write(cfg.Out); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// runLanesScenario deploys, queues the backlog, runs the loads and
// measures one run of scenario.
func runLanesScenario(ctx context.Context, cfg LanesConfig, scenario string, run int, log *slog.Logger) (LanesRun, Conditions, error) {
	lanes := "two"
	if scenario == ScenarioSingle {
		lanes = "single"
	}
	dcfg := DefaultConfig()
	dcfg.Redis, dcfg.Partitions, dcfg.Binary, dcfg.MockLatency = cfg.Redis, cfg.Partitions, cfg.Binary, cfg.Latency
	dcfg.Env = []string{fmt.Sprintf("SLUICE_IN_FLIGHT=%d", cfg.InFlight), "SLUICE_LANES=" + lanes}
	out := LanesRun{Scenario: scenario, Run: run}
	d, err := deploy(ctx, dcfg, log)
	if d != nil {
		defer d.stop(log)
	}
	if err != nil {
		return out, Conditions{}, err
	}
	cond := d.conditions(dcfg)
	log.Info("bench lanes: deployment up", "scenario", scenario, "run", run, "consumer_pid", d.consumer.Pid())

	brokers := d.brokers
	b := bus.DefaultConfig()
	b.Brokers = []string{brokers}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ConsumeTopics(bulkReplies), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return out, cond, err
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, bulkReplies); err != nil {
		return out, cond, fmt.Errorf("create %s: %w", bulkReplies, err)
	}
	bulk := scenario != ScenarioAlone
	if bulk && cfg.Backlog > 0 {
		t0 := time.Now()
		if err := produceBulk(ctx, cl, b.BulkTopic, 0, cfg.Backlog); err != nil {
			return out, cond, err
		}
		log.Info("bench lanes: bulk backlog queued", "records", cfg.Backlog, "took", time.Since(t0).Round(time.Millisecond))
	}

	var mu sync.Mutex
	var samples []sample
	var replies []time.Time
	start := time.Now()
	rctx, stopReplies := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for rctx.Err() == nil {
			cl.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
				mu.Lock()
				replies = append(replies, r.Timestamp)
				mu.Unlock()
			})
		}
	}()
	var gauges []gaugeRead
	gaugesDone := make(chan struct{})
	go func() {
		defer close(gaugesDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			g, err := d.laneGauges(rctx)
			if err != nil {
				if rctx.Err() == nil {
					log.Warn("bench lanes: reading the consumer's in-flight gauges", "err", err)
				}
				continue
			}
			mu.Lock()
			gauges = append(gauges, g)
			mu.Unlock()
		}
	}()
	tctx, stopTrickle := context.WithCancel(ctx)
	trickleDone := make(chan error, 1)
	go func() {
		if !bulk || cfg.BulkRate <= 0 {
			trickleDone <- nil
			return
		}
		trickleDone <- trickle(tctx, cl, b.BulkTopic, cfg.Backlog, cfg.BulkRate)
	}()

	lc := loadgen.DefaultConfig()
	lc.URL, lc.Rate = d.api, cfg.rate()
	lc.Users = max(1, int(lc.Rate*dcfg.UserInterval.Seconds()))
	lc.Duration, lc.Warmup = cfg.Duration, cfg.Warmup
	lc.Mode, lc.WaitMS, lc.Turns = "wait", cfg.WaitMS, dcfg.Turns
	lc.Secret, lc.Tenant = benchSecret, benchTenant
	lc.GiveUp = 0
	lc.OnAnswer = func(from time.Time, took time.Duration, status int) {
		mu.Lock()
		samples = append(samples, sample{at: from, took: took})
		mu.Unlock()
	}
	before := d.usage(ctx)
	lres, lerr := loadgen.Run(ctx, lc, nil)
	after := d.usage(ctx)
	end := time.Now()
	stopTrickle()
	terr := <-trickleDone
	stopReplies()
	<-readerDone
	<-gaugesDone
	if err := errors.Join(lerr, terr); err != nil {
		return out, cond, err
	}
	out.Answered, out.Queued, out.Refused, out.Errors = lres.Answered, lres.Queued, lres.Refused, lres.Errors
	out.P50MS, out.P99MS, out.MaxMS = lres.P50MS, lres.P99MS, lres.MaxMS
	out.Failures = lres.Failures
	out.OtherCores = otherCores(before, after)
	window := start.Add(cfg.Warmup)
	mu.Lock()
	defer mu.Unlock()
	out.Bins = bins(start, end, cfg.Bin, samples, replies, gauges)
	n := 0
	for _, t := range replies {
		if !t.Before(window) && t.Before(window.Add(cfg.Duration)) {
			n++
		}
	}
	out.BulkPS = float64(n) / cfg.Duration.Seconds()
	out.BulkMinBinPS = math.Inf(1)
	for _, bn := range out.Bins {
		// Whole bins of the window only.
		if bn.T-cfg.Bin.Seconds() >= cfg.Warmup.Seconds()-1e-9 && bn.T <= (cfg.Warmup+cfg.Duration).Seconds()+1e-9 {
			out.BulkMinBinPS = min(out.BulkMinBinPS, bn.Bulk)
		}
	}
	if math.IsInf(out.BulkMinBinPS, 1) {
		out.BulkMinBinPS = 0
	}
	return out, cond, nil
}

// sample is one interactive answer: when it was due and how long it took.
type sample struct {
	at   time.Time
	took time.Duration
}

// bins cuts [start, end) into bins of width w: the p50 and p99 of the
// interactive answers due in each, and the bulk replies produced in each.
func bins(start, end time.Time, w time.Duration, samples []sample, replies []time.Time, gauges []gaugeRead) []LanesBin {
	n := int(math.Ceil(float64(end.Sub(start)) / float64(w)))
	took := make([][]time.Duration, n)
	bulk := make([]int, n)
	idx := func(t time.Time) int {
		if t.Before(start) {
			return -1
		}
		return int(t.Sub(start) / w)
	}
	for _, s := range samples {
		if i := idx(s.at); i >= 0 && i < n {
			took[i] = append(took[i], s.took)
		}
	}
	for _, t := range replies {
		if i := idx(t); i >= 0 && i < n {
			bulk[i]++
		}
	}
	inflight := make([]map[string][]float64, n)
	for _, g := range gauges {
		if i := idx(g.at); i >= 0 && i < n {
			if inflight[i] == nil {
				inflight[i] = map[string][]float64{}
			}
			for lane, v := range g.inFlight {
				inflight[i][lane] = append(inflight[i][lane], v)
			}
		}
	}
	out := make([]LanesBin, n)
	for i := range out {
		out[i] = LanesBin{T: float64(i+1) * w.Seconds(), P50MS: nullable(math.NaN()), P99MS: nullable(math.NaN()), Bulk: float64(bulk[i]) / w.Seconds()}
		for lane, vs := range inflight[i] {
			if out[i].InFlight == nil {
				out[i].InFlight = map[string]float64{}
			}
			sum := 0.0
			for _, v := range vs {
				sum += v
			}
			out[i].InFlight[lane] = sum / float64(len(vs))
		}
		if d := took[i]; len(d) > 0 {
			slices.Sort(d)
			out[i].P50MS = nullable(ms(d[min(len(d)/2, len(d)-1)]))
			out[i].P99MS = nullable(ms(d[min(int(0.99*float64(len(d))), len(d)-1)]))
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// bulkRequest returns the record of bulk request i, as a bot writes it:
// a dialog of its own, a deadline of 10 minutes, replies on bulkReplies.
func bulkRequest(topic string, i int, now time.Time) (*kgo.Record, error) {
	req := envelope.Request{V: envelope.Version, RequestID: fmt.Sprintf("bench-bulk-%d-%d", now.UnixNano(), i),
		Tenant: benchTenant, User: "bot-" + strconv.Itoa(i%100), DialogID: envelope.NewDialogID(),
		Text: "order " + strconv.Itoa(i) + ": where is it?", CreatedAt: now.UTC(), Deadline: now.UTC().Add(10 * time.Minute),
		Reply: envelope.ReplyTo{Topic: bulkReplies, Partition: -1}}
	v, err := json.Marshal(&req)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: topic, Key: []byte(req.Key()), Value: v}, nil
}

// produceBulk puts bulk requests first to first+n-1 on topic and waits
// for Kafka's acknowledgements.
func produceBulk(ctx context.Context, cl *kgo.Client, topic string, first, n int) error {
	const batch = 1000
	now := time.Now()
	for lo := first; lo < first+n; lo += batch {
		var recs []*kgo.Record
		for i := lo; i < min(lo+batch, first+n); i++ {
			r, err := bulkRequest(topic, i, now)
			if err != nil {
				return err
			}
			recs = append(recs, r)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("produce the bulk backlog: %w", err)
		}
	}
	return nil
}

// trickle produces rate more bulk requests a second, numbered from first,
// until ctx ends.
func trickle(ctx context.Context, cl *kgo.Client, topic string, first int, rate float64) error {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for i := first; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := produceBulk(ctx, cl, topic, i, 1); err != nil && ctx.Err() == nil {
			return err
		}
	}
}

// nullable is a figure that may be missing (NaN): null in JSON.
type nullable float64

func (n nullable) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

func (n *nullable) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = nullable(math.NaN())
		return nil
	}
	return json.Unmarshal(b, (*float64)(n))
}

// gaugeRead is one read of the consumer's in-flight records by lane.
type gaugeRead struct {
	at       time.Time
	inFlight map[string]float64
}

// laneGauges reads sluice_consumer_lane_in_flight of the consumer.
func (d *deployment) laneGauges(ctx context.Context) (gaugeRead, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.admin["consumer"]+"/metrics", nil)
	if err != nil {
		return gaugeRead{}, err
	}
	resp, err := d.cl.Do(req)
	if err != nil {
		return gaugeRead{}, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return gaugeRead{}, err
	}
	g := gaugeRead{at: time.Now(), inFlight: map[string]float64{}}
	for _, m := range fams["sluice_consumer_lane_in_flight"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "lane" {
				g.inFlight[l.GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return g, nil
}
