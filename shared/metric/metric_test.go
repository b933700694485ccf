package metric_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/shared/metric"
)

func TestRegisterer(t *testing.T) {
	t.Run("Registers", func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		r := metric.NewRegisterer(reg)
		c := promauto.With(r).NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
		c.Inc()
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := testutil.GatherAndCount(reg, "a_total"); err != nil || n != 1 {
			t.Fatalf("a_total gathered %d times, err %v; want once", n, err)
		}
	})
	t.Run("KeepsErrorsInsteadOfPanicking", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		r := metric.NewRegisterer(reg)
		f := promauto.With(r)
		f.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
		f.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
		f.NewGauge(prometheus.GaugeOpts{Name: "b", Help: "b"})
		var are prometheus.AlreadyRegisteredError
		if err := r.Err(); !errors.As(err, &are) {
			t.Fatalf("Err() = %v, want AlreadyRegisteredError", err)
		}
		if n, _ := testutil.GatherAndCount(reg, "b"); n != 1 {
			t.Errorf("b gathered %d times after the error, want once", n)
		}
	})
	t.Run("NilRegistersNothing", func(t *testing.T) {
		r := metric.NewRegisterer(nil)
		f := promauto.With(r)
		f.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"}).Inc()
		f.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
		if err := r.Err(); err != nil {
			t.Fatalf("Err() = %v with a nil registerer", err)
		}
	})
}

func TestChildren(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	vec := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"outcome"})
	c := metric.Resolve(vec, "done", "failed")
	if n, err := testutil.GatherAndCount(reg, "c_total"); err != nil || n != 0 {
		t.Fatalf("%d series after Resolve (err %v), want none before first use", n, err)
	}
	c.With("done").Inc()
	c.With("done").Inc()
	c.With("other").Inc() // not resolved: through the vector
	want := "# HELP c_total c\n# TYPE c_total counter\n" +
		"c_total{outcome=\"done\"} 2\nc_total{outcome=\"other\"} 1\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "c_total"); err != nil {
		t.Error(err)
	}
	if n := testing.AllocsPerRun(100, func() { c.With("done").Inc() }); n != 0 {
		t.Errorf("counting a resolved child allocates %v times, want 0", n)
	}

	h := promauto.With(reg).NewHistogramVec(prometheus.HistogramOpts{Name: "d_seconds", Help: "d"}, []string{"endpoint", "outcome"})
	o := metric.Resolve(h.MustCurryWith(prometheus.Labels{"endpoint": "primary"}), "ok")
	o.With("ok").Observe(1)
	if n, _ := testutil.GatherAndCount(reg, "d_seconds"); n != 1 {
		t.Errorf("%d histogram series, want 1", n)
	}
}

// TestChildrenConcurrentFirstUse has many goroutines use a child first at
// once: every count lands on the one series (run with -race).
func TestChildrenConcurrentFirstUse(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"outcome"})
	c := metric.Resolve(vec, "done")
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { c.With("done").Inc() })
	}
	wg.Wait()
	if got := testutil.ToFloat64(vec.WithLabelValues("done")); got != 16 {
		t.Errorf("done = %v after 16 counts, want 16", got)
	}
}
