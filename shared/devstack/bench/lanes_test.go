package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// TestBins: answers go to the bin they were due in, with its p50 and
// p99; bulk replies and gauge reads to the bin they came in; a bin
// without answers has no latency (null in JSON).
func TestBins(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	var samples []sample
	for i := range 100 {
		samples = append(samples, sample{at: at(0.5), took: time.Duration(i+1) * time.Millisecond})
	}
	samples = append(samples, sample{at: at(-1), took: time.Hour}) // before the start: left out
	replies := []time.Time{at(0.1), at(2.5), at(2.6), at(9)}
	gauges := []gaugeRead{{at: at(2.1), inFlight: map[string]float64{"bulk": 4, "interactive": 2}}, {at: at(2.9), inFlight: map[string]float64{"bulk": 6, "interactive": 0}}}
	b := bins(start, at(3), time.Second, samples, replies, gauges)
	if len(b) != 3 {
		t.Fatalf("%d bins for 3 s of 1 s, want 3", len(b))
	}
	if b[0].T != 1 || b[0].P50MS != 51 || b[0].P99MS != 100 || b[0].Bulk != 1 {
		t.Errorf("first bin %+v, want t 1, p50 51, p99 100, bulk 1", b[0])
	}
	if !math.IsNaN(float64(b[1].P99MS)) || b[1].Bulk != 0 {
		t.Errorf("second bin %+v, want no latency and no bulk", b[1])
	}
	if b[2].Bulk != 2 || b[2].InFlight["bulk"] != 5 || b[2].InFlight["interactive"] != 1 {
		t.Errorf("third bin %+v, want bulk 2, in flight bulk 5 and interactive 1 (means)", b[2])
	}
	j, err := json.Marshal(b[1])
	if err != nil || !strings.Contains(string(j), `"p99_ms":null`) {
		t.Errorf("JSON of a bin without answers: %s, %v; want p99_ms null", j, err)
	}
	var back LanesBin
	if err := json.Unmarshal(j, &back); err != nil || !math.IsNaN(float64(back.P99MS)) {
		t.Errorf("null read back as %v, %v; want NaN", back.P99MS, err)
	}
}

// TestLanesConfig: the defaults are valid, the interactive rate is half
// the capacity, and every setting out of range is named by its flag.
func TestLanesConfig(t *testing.T) {
	c := DefaultLanesConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if r := c.rate(); math.Abs(r-106.7) > 0.01 {
		t.Errorf("interactive rate %g, want 64 / 0.3 s / 2 = 106.7", r)
	}
	if m := c.bulkMinRate(); math.Abs(m-7/0.3) > 0.01 {
		t.Errorf("bulk minimum %g/s, want 7 slots / 0.3 s", m)
	}
	c.Scenarios, c.Runs, c.Duration, c.Warmup, c.Bin = []string{"two", "both"}, 0, 2*time.Minute, 10*time.Second, 0
	err := c.Validate()
	for _, want := range []string{`"both" is none of`, "--runs", "--warmup", "--bin"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want it to name %q", err, want)
		}
	}
}

// TestLanesReport: one row per scenario with each run's figure, the p99
// against the scenario alone's, and a plot of the scenarios.
func TestLanesReport(t *testing.T) {
	bin := func(t, p99, bulk float64) LanesBin {
		return LanesBin{T: t, P50MS: nullable(p99 / 2), P99MS: nullable(p99), Bulk: bulk}
	}
	r := LanesReport{Conditions: LanesConditions{InFlight: 64, LatencyMS: 300, CapacityPS: 213, Rate: 106.7, Backlog: 50000, BulkRate: 20, BulkMinPS: 23.3, WindowS: 60, WarmupS: 10, BinS: 5}, Runs: []LanesRun{
		{Scenario: ScenarioAlone, Run: 1, Answered: 6400, P50MS: 320, P99MS: 800, Bins: []LanesBin{bin(5, 700, 0), bin(10, 800, 0)}},
		{Scenario: ScenarioAlone, Run: 2, Answered: 6400, P50MS: 330, P99MS: 1000, Bins: []LanesBin{bin(5, 900, 0)}},
		{Scenario: ScenarioTwo, Run: 1, Answered: 6400, P50MS: 400, P99MS: 1200, BulkPS: 84, BulkMinBinPS: 72, Bins: []LanesBin{bin(5, 1200, 80), bin(10, 1100, 84)}},
		{Scenario: ScenarioSingle, Run: 1, Queued: 138, Refused: 6264, P50MS: 5000, P99MS: 5500, BulkPS: 160, Bins: []LanesBin{{T: 5, P50MS: nullable(math.NaN()), P99MS: nullable(math.NaN()), Bulk: 150}}},
	}}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"capacity 213/s", "320 / 330", "800 / 1000", "1.20", "5.50", "6264", "84.0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	var png bytes.Buffer
	if err := r.Plot(&png); err != nil || !bytes.HasPrefix(png.Bytes(), []byte("\x89PNG")) {
		t.Errorf("plot: %v", err)
	}
}
