package lab

import (
	"bytes"
	"flag"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gonum.org/v1/plot/plotter"
)

// -plotdir keeps the PNGs the tests draw, for a person to look at:
// go test ./hpa/lab -run Plot -plotdir /tmp/lab-plots
var plotDir = flag.String("plotdir", "", "write the test plots into this directory")

// syntheticRun is a flash sale through a toy pipeline: each pod answers 25
// questions/s, the autoscaler asks for enough pods 5 s after the load
// changes and they are ready 10 s later; the backlog is the lag, and the
// queue wait grows with it. The first seconds and every 37th have no queue
// wait (NaN), so the plots have gaps.
func syntheticRun(p Profile, perPod float64) []Sample {
	var out []Sample
	replicas, backlog := 1, 0.0
	pending := map[int]int{} // second → replicas ready then
	for sec := 1; sec <= int(p.Duration()); sec++ {
		t := float64(sec)
		offered := p.RateAt(t - 1)
		desired := max(1, int(math.Ceil(p.RateAt(t-5)/perPod/0.7)))
		if desired != replicas {
			pending[sec+10] = desired
		}
		if r, ok := pending[sec]; ok {
			replicas = r
		}
		capacity := float64(replicas) * perPod
		refused := 0.0
		if backlog > 500 {
			refused = offered * 0.2
		}
		backlog += offered - refused
		completed := math.Min(backlog, capacity)
		backlog -= completed
		wait := 5 + 1000*backlog/capacity
		s := Sample{
			T: t, Offered: offered, Completed: completed, Refused: refused,
			Lag: backlog, OldestAge: backlog / capacity, InFlightRatio: math.Min(1, offered/capacity),
			QueueWaitP50: wait / 2, QueueWaitP99: wait,
			Replicas: replicas, Desired: desired,
		}
		if sec < 3 || sec%37 == 0 {
			s.QueueWaitP50, s.QueueWaitP99 = math.NaN(), math.NaN()
		}
		out = append(out, s)
	}
	return out
}

// checkPNG decodes the image and checks its size and that it is not blank:
// more than two colours, and the given colours drawn (within a small
// distance, for the anti-aliasing) on at least minPixels pixels each.
func checkPNG(t *testing.T, b []byte, wantW int, colours map[string]color.RGBA) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode png: %v", err)
	}
	bounds := img.Bounds()
	if bounds.Dx() != wantW || bounds.Dy() < 400 || bounds.Dy() > 2000 {
		t.Errorf("size %dx%d, want %d wide and 400 to 2000 high", bounds.Dx(), bounds.Dy(), wantW)
	}
	seen := map[color.RGBA]bool{}
	count := map[string]int{}
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			seen[c] = true
			for name, want := range colours {
				if near(c, want) {
					count[name]++
				}
			}
		}
	}
	if len(seen) <= 2 {
		t.Errorf("%d colours: the image is blank", len(seen))
	}
	const minPixels = 200 // far more than a legend thumbnail draws
	for name := range colours {
		if count[name] < minPixels {
			t.Errorf("%s: %d pixels of its colour, want at least %d", name, count[name], minPixels)
		}
	}
	return img
}

func near(a, b color.RGBA) bool {
	d := func(x, y uint8) int { return max(int(x)-int(y), int(y)-int(x)) }
	return d(a.R, b.R) < 24 && d(a.G, b.G) < 24 && d(a.B, b.B) < 24
}

func savePlot(t *testing.T, name string, b []byte) {
	t.Helper()
	if *plotDir == "" {
		return
	}
	if err := os.WriteFile(filepath.Join(*plotDir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPlot(t *testing.T) {
	lab := syntheticRun(FlashSale(20, 5), 25)
	flat := syntheticRun(FlashSale(20, 1), 25) // never queues: a linear wait axis
	allNaN := func() []Sample {
		s := syntheticRun(FlashSale(20, 5), 25)
		for i := range s {
			s[i].Lag, s[i].QueueWaitP99 = math.NaN(), math.NaN()
		}
		return s
	}()
	tests := []struct {
		name    string
		samples []Sample
		colours map[string]color.RGBA
	}{
		{"FlashSale", lab, map[string]color.RGBA{
			"offered": colorOffered, "completed": colorCompleted, "refused": colorRefused,
			"lag": colorLag, "wait": colorWait, "desired": colorDesired,
		}},
		{"Steady", flat, map[string]color.RGBA{"offered": colorOffered, "wait": colorWait}},
		{"NoLagNoWait", allNaN, map[string]color.RGBA{"offered": colorOffered}},
		{"OneSample", lab[40:41], nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Plot(&buf, "sluice lab: "+tt.name, tt.samples); err != nil {
				t.Fatalf("Plot: %v", err)
			}
			checkPNG(t, buf.Bytes(), plotWidthPx, tt.colours)
			savePlot(t, "plot-"+tt.name+".png", buf.Bytes())
		})
	}
}

func TestPlotNoSamples(t *testing.T) {
	if err := Plot(&bytes.Buffer{}, "empty", nil); err == nil {
		t.Error("Plot of no samples: no error")
	}
	if err := PlotCompare(&bytes.Buffer{}, "empty", []NamedRun{{Name: "a"}}); err == nil {
		t.Error("PlotCompare of no samples: no error")
	}
	if err := PlotCompare(&bytes.Buffer{}, "empty", nil); err == nil {
		t.Error("PlotCompare of no runs: no error")
	}
}

func TestPlotCompare(t *testing.T) {
	p := FlashSale(20, 5)
	runs := []NamedRun{
		{Name: "lab", Samples: syntheticRun(p, 25)},
		{Name: "sim", Samples: syntheticRun(p, 30)},
		{Samples: syntheticRun(p, 50)}, // unnamed: "run 3"
	}
	var buf bytes.Buffer
	if err := PlotCompare(&buf, "lab vs simulation", runs); err != nil {
		t.Fatalf("PlotCompare: %v", err)
	}
	toRGBA := func(c color.Color) color.RGBA { return color.RGBAModel.Convert(c).(color.RGBA) }
	checkPNG(t, buf.Bytes(), plotWidthPx, map[string]color.RGBA{
		"lab": toRGBA(paletteColor(0)), "sim": toRGBA(paletteColor(1)), "run 3": toRGBA(paletteColor(2)),
	})
	savePlot(t, "compare.png", buf.Bytes())
}

func TestSegments(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	all := func(float64) bool { return true }
	positive := func(v float64) bool { return v > 0 }
	tests := []struct {
		name string
		x, y []float64
		keep func(float64) bool
		want []plotter.XYs
	}{
		{"NoGap", []float64{1, 2, 3}, []float64{5, 6, 7}, all,
			[]plotter.XYs{{{X: 1, Y: 5}, {X: 2, Y: 6}, {X: 3, Y: 7}}}},
		{"NaNSplits", []float64{1, 2, 3, 4, 5}, []float64{5, nan, 7, 8, nan}, all,
			[]plotter.XYs{{{X: 1, Y: 5}}, {{X: 3, Y: 7}, {X: 4, Y: 8}}}},
		{"InfAndNaNTime", []float64{1, nan, 3, 4}, []float64{5, 6, inf, 8}, all,
			[]plotter.XYs{{{X: 1, Y: 5}}, {{X: 4, Y: 8}}}},
		{"ZeroOnLogAxis", []float64{1, 2, 3}, []float64{5, 0, 7}, positive,
			[]plotter.XYs{{{X: 1, Y: 5}}, {{X: 3, Y: 7}}}},
		{"AllNaN", []float64{1, 2}, []float64{nan, nan}, all, nil},
		{"Empty", nil, nil, all, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := segments(tt.x, tt.y, tt.keep); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("segments = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUseLogScale(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		v    []float64
		want bool
	}{
		{"TwoDecadesExactly", []float64{5, 500}, false},
		{"MoreThanTwo", []float64{5, 50, 501}, true},
		{"ZerosAndNaNIgnored", []float64{0, nan, 3, 400}, true},
		{"OnlyZeros", []float64{0, 0}, false},
		{"Empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := useLogScale(tt.v); got != tt.want {
				t.Errorf("useLogScale(%v) = %v, want %v", tt.v, got, tt.want)
			}
		})
	}
}

// TestPlotPanels: panels of named lines draw a PNG; no points is an error.
func TestPlotPanels(t *testing.T) {
	var buf bytes.Buffer
	err := PlotPanels(&buf, "lanes", []Panel{
		{Title: "p99", YLabel: "ms", Lines: []Line{{Name: "a", X: []float64{0, 5, 10}, Y: []float64{300, 310, 20000}}, {Name: "b", X: []float64{0, 5}, Y: []float64{math.NaN(), 1}}}},
		{Title: "bulk", YLabel: "answered/s", Lines: []Line{{Name: "a", X: []float64{0, 5, 10}, Y: []float64{100, 90, 95}}, {Name: "min", X: []float64{0, 10}, Y: []float64{23, 23}, Dashed: true}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("\x89PNG")) {
		t.Fatalf("not a PNG: % x", buf.Bytes()[:min(8, buf.Len())])
	}
	if err := PlotPanels(&buf, "empty", []Panel{{Title: "p99"}}); err == nil {
		t.Fatal("no points drew a plot")
	}
}
