package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"sluice/hpa/lab"
)

// WriteJSON writes r as one line of JSON.
func (r LanesReport) WriteJSON(w io.Writer) error { return writeJSON(w, r) }

// scenarios returns the scenarios of r in the order first run, and their
// runs.
func (r LanesReport) scenarios() ([]string, map[string][]LanesRun) {
	var names []string
	runs := map[string][]LanesRun{}
	for _, x := range r.Runs {
		if _, ok := runs[x.Scenario]; !ok {
			names = append(names, x.Scenario)
		}
		runs[x.Scenario] = append(runs[x.Scenario], x)
	}
	return names, runs
}

// WriteText writes the conditions and one row per scenario, each figure
// given for every run ("a / b"), and the interactive p99 over the
// scenario alone's (its worst run against alone's worst).
func (r LanesReport) WriteText(w io.Writer) error {
	c := r.Conditions
	fmt.Fprintf(w, "%s; Redis %s\n", c.Processes, c.Redis)
	fmt.Fprintf(w, "in-flight %d, LLM %g ms: capacity %.0f/s; interactive %.1f/s wait mode (wait_ms %d); bulk backlog %d + %.0f/s; bulk minimum share %.1f/s; window %gs after %gs warm-up, %d partitions\n\n",
		c.InFlight, c.LatencyMS, c.CapacityPS, c.Rate, c.WaitMS, c.Backlog, c.BulkRate, c.BulkMinPS, c.WindowS, c.WarmupS, c.Partitions)
	names, runs := r.scenarios()
	worst := func(rs []LanesRun) float64 {
		m := 0.0
		for _, x := range rs {
			m = math.Max(m, x.P99MS)
		}
		return m
	}
	alone := worst(runs[ScenarioAlone])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tp50 ms\tp99 ms\tmax ms\tp99 / alone\t200/s\t202\trefused\tbulk/s\tbulk lowest bin/s\tother cores\t")
	for _, n := range names {
		rs := runs[n]
		each := func(f func(LanesRun) string) string {
			s := make([]string, len(rs))
			for i, x := range rs {
				s[i] = f(x)
			}
			return strings.Join(s, " / ")
		}
		ratio := "-"
		if alone > 0 {
			ratio = fmt.Sprintf("%.2f", worst(rs)/alone)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", n,
			each(func(x LanesRun) string { return fmt.Sprintf("%.0f", x.P50MS) }),
			each(func(x LanesRun) string { return fmt.Sprintf("%.0f", x.P99MS) }),
			each(func(x LanesRun) string { return fmt.Sprintf("%.0f", x.MaxMS) }),
			ratio,
			each(func(x LanesRun) string { return fmt.Sprintf("%.1f", float64(x.Answered)/c.WindowS) }),
			each(func(x LanesRun) string { return fmt.Sprint(x.Queued) }),
			each(func(x LanesRun) string { return fmt.Sprint(x.Refused) }),
			each(func(x LanesRun) string { return fmt.Sprintf("%.1f", x.BulkPS) }),
			each(func(x LanesRun) string { return fmt.Sprintf("%.1f", x.BulkMinBinPS) }),
			each(func(x LanesRun) string { return fmt.Sprintf("%.2f", x.OtherCores) }))
	}
	return tw.Flush()
}

// write puts lanes.json and lanes.png in dir.
func (r LanesReport) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lanes output: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "lanes.json"))
	if err != nil {
		return fmt.Errorf("lanes output: %w", err)
	}
	if err := r.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	png, err := os.Create(filepath.Join(dir, "lanes.png"))
	if err != nil {
		return fmt.Errorf("lanes output: %w", err)
	}
	if err := r.Plot(png); err != nil {
		png.Close()
		return err
	}
	return png.Close()
}

// Plot draws the first run of each scenario over time, up to the end of
// the load: the interactive p99 of each bin, and the bulk answers/s with,
// dashed, the bulk lane's minimum share.
func (r LanesReport) Plot(w io.Writer) error {
	names, runs := r.scenarios()
	var p99, bulk []lab.Line
	var tmax float64
	for _, n := range names {
		x := runs[n][0]
		var t, lat, b []float64
		for _, bn := range x.Bins {
			if bn.T > r.Conditions.WarmupS+r.Conditions.WindowS+1e-9 {
				break // the tail after the load, a part of a bin
			}
			t, lat, b = append(t, bn.T), append(lat, float64(bn.P99MS)), append(b, bn.Bulk)
			tmax = math.Max(tmax, bn.T)
		}
		name := scenarioTitle(n)
		p99 = append(p99, lab.Line{Name: name, X: t, Y: lat})
		if n != ScenarioAlone {
			bulk = append(bulk, lab.Line{Name: name, X: t, Y: b})
		}
	}
	bulk = append(bulk, lab.Line{Name: "bulk minimum share", X: []float64{0, tmax}, Y: []float64{r.Conditions.BulkMinPS, r.Conditions.BulkMinPS}, Dashed: true})
	c := r.Conditions
	title := fmt.Sprintf("One consumer, in-flight %d, LLM %g ms: interactive %.0f/s, bulk backlog %d + %.0f/s", c.InFlight, c.LatencyMS, c.Rate, c.Backlog, c.BulkRate)
	return lab.PlotPanels(w, title, []lab.Panel{
		{Title: fmt.Sprintf("Interactive latency p99 per %gs bin (warm-up until %gs)", c.BinS, c.WarmupS), YLabel: "ms", Lines: p99},
		{Title: "Bulk answered", YLabel: "answers/s", Lines: bulk},
	})
}

// scenarioTitle is a scenario's name in the plot's legend.
func scenarioTitle(s string) string {
	switch s {
	case ScenarioAlone:
		return "interactive alone"
	case ScenarioTwo:
		return "two lanes, bulk backlog"
	case ScenarioSingle:
		return "single lane, bulk backlog"
	}
	return s
}
