package mockllm

import (
	"slices"
	"testing"
	"time"
)

// TestLatencyDistribution draws latencies and checks the median and the
// 99th percentile against the knobs.
func TestLatencyDistribution(t *testing.T) {
	s, err := New(Config{Latency: 100 * time.Millisecond, LatencyP99: time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	d := make([]time.Duration, n)
	for i := range d {
		d[i] = s.latency()
	}
	slices.Sort(d)
	p50, p99 := d[n/2], d[n*99/100]
	if p50 < 90*time.Millisecond || p50 > 110*time.Millisecond {
		t.Errorf("median %v, want about 100ms", p50)
	}
	if p99 < 800*time.Millisecond || p99 > 1250*time.Millisecond {
		t.Errorf("p99 %v, want about 1s", p99)
	}
	if d[n-1] > 5*time.Second {
		t.Errorf("max %v above the cap of 5 x p99", d[n-1])
	}

	s.cfg = Config{Latency: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}
	for range 100 {
		if l := s.latency(); l < 10*time.Millisecond || l >= 15*time.Millisecond {
			t.Fatalf("latency %v outside latency + 0..jitter", l)
		}
	}
}
