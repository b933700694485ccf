package lab

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	"sluice/hpa"
)

// SimConfig is a simulation's settings: a lab run's, plus the pods' start
// and drain times the lab measured, at any scale.
type SimConfig struct {
	Config
	// PodStart is how long a new consumer takes to be ready and scraped
	// (the lab's pod_start_s; on a cluster add the image pull and
	// scheduling), PodWork how long until it takes work: its start, the
	// group's rebalance and a first fetch (the lab's pod_work_s; default
	// PodStart). In between it counts in the in-flight ratio's average
	// with nothing in flight, as in the lab.
	PodStart, PodWork time.Duration
	// Service is how long a record stays in flight on a consumer: the
	// LLM's latency plus the consumer's own work (the lab's service_ms).
	// Default LLMLatency.
	Service time.Duration
	// Step is the simulation's time step. Default 50 ms.
	Step time.Duration
}

// cohort is a fluid batch of records that arrived together.
type cohort struct {
	arrived float64 // s since the start
	started float64
	done    float64
	n       float64
}

// pipeModel is the pipeline as the simulation sees it: a FIFO queue in Kafka,
// records in flight for the LLM's latency on pods of budget InFlight (at
// most one pod per partition takes work), finished records counted as lag
// until the next commit, and pods that take PodStart to be ready and
// PodWork to take work. Removed pods stop taking work at once and finish
// what they hold.
type pipeModel struct {
	cfg      SimConfig
	queue    []cohort
	inflight []cohort
	pods     []simPod // current replicas, oldest first
	rate     float64  // completions/s, smoothed over a commit interval
}

// simPod is a consumer of the model: when it is ready (scraped) and when
// it takes work, s since the start.
type simPod struct{ ready, work float64 }

// ready returns how many pods are ready (scraped) at t.
func (m *pipeModel) ready(t float64) int {
	n := 0
	for _, p := range m.pods {
		if p.ready <= t {
			n++
		}
	}
	return n
}

// working returns how many pods take work at t: at most one per partition.
func (m *pipeModel) working(t float64) int {
	n := 0
	for _, p := range m.pods {
		if p.work <= t {
			n++
		}
	}
	return min(n, int(m.cfg.Partitions))
}

func total(cs []cohort) float64 {
	s := 0.0
	for _, c := range cs {
		s += c.n
	}
	return s
}

// observe returns the consumers' signals as the adapter would serve them.
func (m *pipeModel) observe(t float64) observation {
	ready := m.ready(t)
	if ready == 0 {
		return observation{}
	}
	q, f := total(m.queue), total(m.inflight)
	c := m.cfg.CommitInterval.Seconds()
	o := observation{Pods: ready, Lag: q + f + m.rate*c/2, InFlightRatio: f / float64(ready*m.cfg.InFlight)}
	oldest := math.Inf(1)
	if len(m.queue) > 0 {
		oldest = m.queue[0].arrived
	}
	for _, x := range m.inflight {
		oldest = min(oldest, x.arrived)
	}
	if !math.IsInf(oldest, 1) || m.rate > 0 {
		o.OldestAge = c / 2
		if !math.IsInf(oldest, 1) {
			o.OldestAge += max(t-oldest, m.cfg.LLMLatency.Seconds())
		}
	}
	return o
}

// Simulate runs the model of cfg's pipeline through its profile with the
// ported HPA, and writes sim.csv, sim.png and sim.json to cfg.Out.
func Simulate(cfg SimConfig) (Summary, []Sample, error) {
	if cfg.Partitions == 0 {
		cfg.Partitions = 3 * cfg.MaxReplicas
	}
	if cfg.Step == 0 {
		cfg.Step = 50 * time.Millisecond
	}
	if cfg.Service == 0 {
		cfg.Service = cfg.LLMLatency
	}
	cfg.PodWork = max(cfg.PodWork, cfg.PodStart)
	if err := cfg.validate(10000); err != nil {
		return Summary{}, nil, err
	}
	metrics, err := metricsFor(cfg.Signal, defaultTargets(cfg.InFlight, cfg.CommitInterval, cfg.LLMLatency))
	if err != nil {
		return Summary{}, nil, err
	}
	start := time.Unix(0, 0)
	var now float64
	clock := func() time.Time { return start.Add(time.Duration(now * cfg.TimeFactor * float64(time.Second))) }
	as, err := hpa.New(hpa.Spec{MinReplicas: cfg.MinReplicas, MaxReplicas: cfg.MaxReplicas, Metrics: metrics, Behavior: cfg.Behavior}, clock)
	if err != nil {
		return Summary{}, nil, err
	}
	// The run starts where the autoscaler would have settled on the
	// profile's first rate: ready pods at the in-flight target (the lab
	// starts at its minimum, which its base rate needs).
	m := &pipeModel{cfg: cfg}
	need := math.Ceil(cfg.Profile.RateAt(0) * cfg.Service.Seconds() / (float64(cfg.InFlight) * 0.7))
	for range max(cfg.MinReplicas, min(int32(need), cfg.MaxReplicas)) {
		m.pods = append(m.pods, simPod{})
	}
	dt := cfg.Step.Seconds()
	L := cfg.Service.Seconds()
	period := syncPeriod.Seconds() / cfg.TimeFactor
	nextSync := period
	end := cfg.Profile.Duration()
	sum := Summary{Mode: "sim", Profile: cfg.Profile.Name, Signal: cfg.Signal, TimeFactor: cfg.TimeFactor,
		PodStartS: cfg.PodStart.Seconds(), PodWorkS: cfg.PodWork.Seconds(), InFlight: cfg.InFlight, LLMLatencyMs: float64(cfg.LLMLatency.Milliseconds()),
		ServiceMs: float64(cfg.Service.Milliseconds()), Out: cfg.Out}
	sum.MaxReplicas = len(m.pods)

	var all []weighted
	var samples []Sample
	var cur Sample
	var curWaits []weighted
	var last observation
	desired := len(m.pods)
	flush := func(t float64) {
		slices.SortFunc(curWaits, func(a, b weighted) int { return cmp.Compare(a.wait, b.wait) })
		cur.T = t
		cur.QueueWaitP50, cur.QueueWaitP99 = wquantile(curWaits, 0.5), wquantile(curWaits, 0.99)
		cur.Lag, cur.OldestAge, cur.InFlightRatio = last.Lag, last.OldestAge, last.InFlightRatio
		cur.Replicas, cur.Desired = m.ready(t), desired
		samples = append(samples, cur)
		cur, curWaits = Sample{}, nil
	}
	var due, offered, refused, answered float64
	for step := 1; ; step++ {
		now = float64(step) * dt
		if now > end && total(m.queue)+total(m.inflight) < 0.5 {
			break
		}
		if now > end+600 {
			return sum, samples, fmt.Errorf("the queue did not empty within 10 minutes of the profile's end")
		}
		ready := m.working(now)
		// Arrivals; the producer refuses a wait-mode question whose
		// estimated queue wait is over 80 % of its wait.
		if now <= end {
			a := cfg.Profile.RateAt(now-dt) * dt
			offered += a
			cur.Offered += a / dt * dt
			capacity := float64(ready*cfg.InFlight) / L
			if capacity <= 0 || total(m.queue)/capacity > 0.8*cfg.Wait.Seconds() {
				refused += a
				cur.Refused += a
			} else {
				due += a
				m.queue = append(m.queue, cohort{arrived: now, n: a})
			}
		}
		// Completions.
		done := 0.0
		keep := m.inflight[:0]
		for _, c := range m.inflight {
			if c.done <= now+1e-9 {
				done += c.n
				w := (c.started - c.arrived) * 1000
				curWaits = append(curWaits, weighted{w, c.n})
				all = append(all, weighted{w, c.n})
			} else {
				keep = append(keep, c)
			}
		}
		m.inflight = keep
		cur.Completed += done
		answered += done
		alpha := min(dt/cfg.CommitInterval.Seconds(), 1)
		m.rate = (1-alpha)*m.rate + alpha*done/dt
		// Starts, from the head of the queue, into free slots of the pods
		// that take work.
		free := float64(ready*cfg.InFlight) - total(m.inflight)
		for free > 1e-9 && len(m.queue) > 0 {
			h := &m.queue[0]
			take := min(h.n, free)
			// The LLM's answers do not all take exactly L: spread over a
			// few steps around it (mean L, on the step grid), or the
			// records started together would free their slots together
			// for ever, in pulses.
			offs := spreadSteps(L, dt)
			for _, k := range offs {
				m.inflight = append(m.inflight, cohort{arrived: h.arrived, started: now, done: now + float64(k)*dt, n: take / float64(len(offs))})
			}
			free -= take
			h.n -= take
			if h.n <= 1e-9 {
				m.queue = m.queue[1:]
			}
		}
		// The autoscaler.
		sum.PodSeconds += float64(len(m.pods)) * dt
		if now >= nextSync-1e-9 {
			nextSync += period
			last = m.observe(now)
			d, _ := as.Sync(int32(len(m.pods)), last.values(metrics)) // Desired is safe with a missing metric
			desired = int(d.Desired)
			switch {
			case desired > len(m.pods):
				sum.ScaleUps++
				for len(m.pods) < desired {
					m.pods = append(m.pods, simPod{ready: now + cfg.PodStart.Seconds(), work: now + cfg.PodWork.Seconds()})
				}
			case desired < len(m.pods):
				sum.ScaleDowns++
				m.pods = m.pods[:desired]
			}
			sum.MaxReplicas = max(sum.MaxReplicas, len(m.pods))
		}
		if now <= end && math.Floor(now+1e-9) > math.Floor(now-dt+1e-9) {
			flush(math.Floor(now + 1e-9))
		}
	}
	slices.SortFunc(all, func(a, b weighted) int { return cmp.Compare(a.wait, b.wait) })
	sum.Offered = int64(math.Round(offered))
	sum.Answered = int64(math.Round(answered))
	sum.Refused = int64(math.Round(refused))
	sum.Accepted = int64(math.Round(due))
	sum.QueueWaitP50Ms, sum.QueueWaitP99Ms = wquantile(all, 0.5), wquantile(all, 0.99)
	sum.FinalReplicas = len(m.pods)
	sum.DrainedOK = sum.ScaleDowns // a model pod always drains
	title := fmt.Sprintf("Sluice autoscaling simulation: %s, signal %s, time ×%g", cfg.Profile.Name, cfg.Signal, cfg.TimeFactor)
	return sum, samples, writeOutputs(cfg.Out, "sim", title, samples, sum)
}

// spreadSteps returns the steps of dt the parts of a started cohort take:
// about L on average, spread by up to a third of L either side.
func spreadSteps(L, dt float64) []int {
	n := max(int(math.Round(L/dt)), 1)
	d := n / 3
	if d == 0 {
		return []int{n}
	}
	return []int{n - d, n - (d+1)/2, n + (d+1)/2, n + d}
}

// weighted is a queue wait (ms) shared by n records.
type weighted struct{ wait, n float64 }

// wquantile returns the nearest-rank q-quantile of weighted values sorted
// by value; NaN when there are none.
func wquantile(ws []weighted, q float64) float64 {
	var tot float64
	for _, w := range ws {
		tot += w.n
	}
	if tot <= 0 {
		return math.NaN()
	}
	var acc float64
	for _, w := range ws {
		acc += w.n
		if acc >= q*tot {
			return w.wait
		}
	}
	return ws[len(ws)-1].wait
}
