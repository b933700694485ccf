package lab

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The PNGs are drawn at 96 dots per inch, where gonum/plot's default 10 to
// 12 pt fonts read well at 1200 pixels wide.
const (
	plotDPI     = 96
	plotWidthPx = 1200
	panelHeight = 330 // px, one panel of Plot
	// logDecades: a queue-wait axis becomes logarithmic when its values
	// span more than two decades (a 5 ms wait next to a 20 s one), where a
	// linear axis would flatten everything but the worst second.
	logDecades = 2
)

var (
	colorOffered   = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colorCompleted = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	colorRefused   = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colorLag       = color.RGBA{R: 148, G: 103, B: 189, A: 255}
	colorWait      = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colorReplicas  = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colorDesired   = color.RGBA{A: 255}
	dashed         = []vg.Length{vg.Points(6), vg.Points(4)}
)

// px converts pixels at plotDPI to a vg length.
func px(n float64) vg.Length { return vg.Length(n) * vg.Inch / plotDPI }

// series is one line of a panel.
type series struct {
	name   string
	color  color.Color
	dashes []vg.Length
	step   bool // a step line: the value holds from its sample to the next
	x, y   []float64
}

// Plot draws a PNG, 1200 px wide, of four stacked panels sharing the time
// axis: offered, completed and refused questions/s; the group lag; the
// queue wait p99 (on a log axis when it spans more than two decades); the
// ready replicas and, dashed, the replicas the autoscaler asks for. The
// title goes on top. NaN figures leave gaps in their line (and, on a log
// axis, so do waits of zero). It returns an error when there are no
// samples or the image cannot be drawn or written.
func Plot(w io.Writer, title string, s []Sample) (err error) {
	if len(s) == 0 {
		return errors.New("plot: no samples")
	}
	defer recoverPlot(&err)
	t := column64(s, func(x Sample) float64 { return x.T })
	xmin, xmax := timeRange([][]float64{t})
	panels := []*plot.Plot{
		panel("Traffic", "questions/s", false, []series{
			{name: "offered", color: colorOffered, x: t, y: column64(s, func(x Sample) float64 { return x.Offered })},
			{name: "completed", color: colorCompleted, x: t, y: column64(s, func(x Sample) float64 { return x.Completed })},
			{name: "refused", color: colorRefused, x: t, y: column64(s, func(x Sample) float64 { return x.Refused })},
		}),
		panel("Group lag", "records", false, []series{
			{name: "lag", color: colorLag, x: t, y: column64(s, func(x Sample) float64 { return x.Lag })},
		}),
		nil, // queue wait, below: its scale depends on its values
		panel("Consumer pods", "replicas", false, []series{
			{name: "ready", color: colorReplicas, step: true, x: t, y: column64(s, func(x Sample) float64 { return float64(x.Replicas) })},
			{name: "desired", color: colorDesired, dashes: dashed, step: true, x: t, y: column64(s, func(x Sample) float64 { return float64(x.Desired) })},
		}),
	}
	p99 := column64(s, func(x Sample) float64 { return x.QueueWaitP99 })
	log := useLogScale(p99)
	panels[2] = panel("Queue wait p99"+logNote(log), "ms", log, []series{
		{name: "p99", color: colorWait, x: t, y: p99},
	})
	return render(w, title, panels, xmin, xmax, panelHeight)
}

// NamedRun is one run of a comparison: its name in the legend and its
// samples.
type NamedRun struct {
	Name    string
	Samples []Sample
}

// PlotCompare draws a PNG, 1200 px wide, of the ready replicas and the
// queue wait p99 of several runs over time, in two panels with one colour
// per run (the lab against the simulation, or one signal against another).
// A run without a name is called "run N". It returns an error when no run
// has samples or the image cannot be drawn or written.
func PlotCompare(w io.Writer, title string, runs []NamedRun) (err error) {
	var ts, waits [][]float64
	for _, r := range runs {
		ts = append(ts, column64(r.Samples, func(x Sample) float64 { return x.T }))
		waits = append(waits, column64(r.Samples, func(x Sample) float64 { return x.QueueWaitP99 }))
	}
	xmin, xmax := timeRange(ts)
	if math.IsInf(xmin, 1) {
		return errors.New("plot compare: no run has samples")
	}
	defer recoverPlot(&err)
	var all []float64
	for _, v := range waits {
		all = append(all, v...)
	}
	log := useLogScale(all)
	var replicas, wait []series
	for i, r := range runs {
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("run %d", i+1)
		}
		c := paletteColor(i)
		replicas = append(replicas, series{name: name, color: c, step: true, x: ts[i],
			y: column64(r.Samples, func(x Sample) float64 { return float64(x.Replicas) })})
		wait = append(wait, series{name: name, color: c, x: ts[i], y: waits[i]})
	}
	panels := []*plot.Plot{
		panel("Ready consumer pods", "replicas", false, replicas),
		panel("Queue wait p99"+logNote(log), "ms", log, wait),
	}
	return render(w, title, panels, xmin, xmax, 1.3*panelHeight)
}

// paletteColor is the colour of the i-th run of a comparison: dark enough
// to tell seven runs apart on white, then they repeat.
func paletteColor(i int) color.Color {
	return plotutil.DarkColors[i%len(plotutil.DarkColors)]
}

// recoverPlot turns a panic of gonum/plot into the error of the function
// that defers it: the library panics on inputs it finds impossible (a log
// axis reaching zero, an empty canvas), and a lab run must still end with
// its summary line when its plot fails.
func recoverPlot(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("plot: %v", r)
	}
}

func column64(s []Sample, f func(Sample) float64) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = f(x)
	}
	return out
}

// timeRange returns the range of the time axis: from zero (where every
// profile starts, though the first sample ends the first interval) or the
// earliest time if it is negative, to the latest finite time of all runs;
// +Inf, -Inf when there is none.
func timeRange(ts [][]float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, t := range ts {
		for _, v := range t {
			if finite(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		return lo, hi
	}
	return math.Min(lo, 0), hi
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// useLogScale reports whether the positive finite values span more than
// logDecades decades.
func useLogScale(v []float64) bool {
	lo, hi := math.Inf(1), 0.0
	for _, x := range v {
		if finite(x) && x > 0 {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
	}
	return hi > 0 && hi/lo > math.Pow(10, logDecades)
}

func logNote(log bool) string {
	if log {
		return " (log scale)"
	}
	return ""
}

// segments splits a series into the runs of consecutive points that can be
// drawn: both coordinates finite and y accepted by keep. A point that
// cannot be drawn ends a segment, so a missing figure is a gap, not a
// drop to zero. No NaN may reach gonum/plot: a NaN in an axis range makes
// its tick search loop for ever (seen with v0.17.0), not fail.
func segments(x, y []float64, keep func(float64) bool) []plotter.XYs {
	var out []plotter.XYs
	var cur plotter.XYs
	for i := range min(len(x), len(y)) {
		if !finite(x[i]) || !finite(y[i]) || !keep(y[i]) {
			if len(cur) > 0 {
				out = append(out, cur)
				cur = nil
			}
			continue
		}
		cur = append(cur, plotter.XY{X: x[i], Y: y[i]})
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// panel builds one panel: a grid, the series with a legend entry each
// (even a series with nothing to draw, so every panel of a kind shows the
// same legend), and a y axis from zero unless it is logarithmic.
func panel(title, yLabel string, log bool, ss []series) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = px(8)
	p.Add(plotter.NewGrid())
	keep := func(float64) bool { return true }
	if log {
		keep = func(v float64) bool { return v > 0 }
	}
	for _, s := range ss {
		style := draw.LineStyle{Color: s.color, Width: vg.Points(1.5), Dashes: s.dashes}
		for _, seg := range segments(s.x, s.y, keep) {
			if len(seg) == 1 {
				// A line of one point draws nothing: mark it.
				sc := &plotter.Scatter{XYs: seg, GlyphStyle: draw.GlyphStyle{
					Color: s.color, Radius: vg.Points(2), Shape: draw.CircleGlyph{}}}
				p.Add(sc)
				continue
			}
			l := &plotter.Line{XYs: seg, LineStyle: style}
			if s.step {
				l.StepStyle = plotter.PostStep
			}
			p.Add(l)
		}
		p.Legend.Add(s.name, &plotter.Line{LineStyle: style})
	}
	if math.IsInf(p.Y.Max, -1) {
		// Nothing to draw: an empty axis with a range that is not
		// degenerate, and never zero on a log axis.
		p.Y.Min, p.Y.Max = 0, 1
		if log {
			p.Y.Min, p.Y.Max = 1, 10
		}
	}
	p.X.Tick.Marker = tidyTicks{}
	p.Y.Tick.Marker = tidyTicks{}
	if log {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = logTicks{}
	} else {
		p.Y.Min = math.Min(p.Y.Min, 0)
		if p.Y.Max <= p.Y.Min {
			p.Y.Max = p.Y.Min + 1
		}
	}
	return p
}

// tidyTicks are gonum/plot's default ticks labelled in the shortest form
// ("250", not the "250.00" it writes when the step is 2.5×10ⁿ).
type tidyTicks struct{}

func (tidyTicks) Ticks(lo, hi float64) []plot.Tick {
	return tidy(plot.DefaultTicks{}.Ticks(lo, hi))
}

// logTicks are gonum/plot's log ticks, with 2 and 5 labelled too when the
// axis spans fewer than four decades: otherwise a wait axis from 5 ms to
// 20 s has three labels.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.LogTicks{Prec: -1}.Ticks(lo, hi)
	if math.Log10(hi/lo) < 4 {
		for i, t := range ticks {
			m := t.Value / math.Pow10(int(math.Floor(math.Log10(t.Value)+1e-9)))
			if math.Abs(m-2) < 1e-6 || math.Abs(m-5) < 1e-6 {
				ticks[i].Label = strconv.FormatFloat(t.Value, 'g', -1, 64)
			}
		}
	}
	return tidy(ticks)
}

// tidy writes every label as its value in the shortest form, after
// rounding away the float noise of the tick arithmetic (0.30000000000000004).
func tidy(ticks []plot.Tick) []plot.Tick {
	for i, t := range ticks {
		if t.Label == "" {
			continue
		}
		v, err := strconv.ParseFloat(strconv.FormatFloat(t.Value, 'g', 10, 64), 64)
		if err != nil {
			v = t.Value
		}
		ticks[i].Label = strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ticks
}

// render stacks the panels (each panelPx high) under the title on one
// canvas, their data areas aligned on the shared time axis [xmin, xmax],
// and writes it as PNG.
func render(w io.Writer, title string, panels []*plot.Plot, xmin, xmax, panelPx float64) error {
	for i, p := range panels {
		p.X.Min, p.X.Max = xmin, xmax
		if i == len(panels)-1 {
			p.X.Label.Text = "time (s)"
		}
	}
	titleStyle := plot.New().Title.TextStyle
	titleStyle.Font = font.From(plot.DefaultFont, 16)
	pad := px(10)
	titleHeight := vg.Length(0)
	if title != "" {
		titleHeight = titleStyle.Rectangle(title).Size().Y + 2*pad
	}
	heightPx := panelPx*float64(len(panels)) + math.Ceil(float64(titleHeight)/float64(px(1)))
	c := vgimg.NewWith(vgimg.UseWH(px(plotWidthPx), px(heightPx)), vgimg.UseDPI(plotDPI))
	dc := draw.New(c)
	if title != "" {
		dc.FillText(titleStyle, vg.Point{X: dc.Center().X, Y: dc.Max.Y - pad}, title)
	}
	body := draw.Crop(dc, 0, 0, 0, -titleHeight)
	rows := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		rows[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{
		Rows: len(panels), Cols: 1,
		PadY:   px(18),
		PadTop: px(4), PadBottom: px(6), PadLeft: px(10), PadRight: px(24),
	}
	for i, cv := range plot.Align(rows, tiles, body) {
		panels[i].Draw(cv[0])
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(w); err != nil {
		return fmt.Errorf("plot: write png: %w", err)
	}
	return nil
}

// Line is one line of a panel of PlotPanels.
type Line struct {
	Name   string
	X, Y   []float64
	Dashed bool
}

// Panel is one panel of PlotPanels: its title, the unit of its y axis and
// its lines.
type Panel struct {
	Title, YLabel string
	Lines         []Line
}

// PlotPanels draws a PNG, 1200 px wide, of panels stacked over a shared
// time axis (s), as Plot does: a line's colour follows its name, the same
// in every panel; an axis whose values span more than two decades is
// logarithmic. `sluice bench --lanes` draws its comparison with it. It
// returns an error when no line has points or the image cannot be drawn
// or written.
func PlotPanels(w io.Writer, title string, panels []Panel) (err error) {
	var ts [][]float64
	for _, p := range panels {
		for _, l := range p.Lines {
			ts = append(ts, l.X)
		}
	}
	xmin, xmax := timeRange(ts)
	if math.IsInf(xmin, 1) {
		return errors.New("plot panels: no line has points")
	}
	defer recoverPlot(&err)
	colors := map[string]color.Color{}
	var out []*plot.Plot
	for _, p := range panels {
		var all []float64
		var ss []series
		for _, l := range p.Lines {
			all = append(all, l.Y...)
			c, ok := colors[l.Name]
			if !ok {
				c = paletteColor(len(colors))
				colors[l.Name] = c
			}
			s := series{name: l.Name, color: c, x: l.X, y: l.Y}
			if l.Dashed {
				s.dashes = dashed
			}
			ss = append(ss, s)
		}
		log := useLogScale(all)
		out = append(out, panel(p.Title+logNote(log), p.YLabel, log, ss))
	}
	return render(w, title, out, xmin, xmax, 1.3*panelHeight)
}
