package backoff_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"sluice/shared/backoff"
)

func TestLinear(t *testing.T) {
	for _, tt := range []struct {
		attempt     int
		base, limit time.Duration
		lo, hi      time.Duration
	}{
		{1, 100 * time.Millisecond, 0, 100 * time.Millisecond, 150 * time.Millisecond},
		{3, 100 * time.Millisecond, 0, 300 * time.Millisecond, 450 * time.Millisecond},
		{50, 100 * time.Millisecond, 2 * time.Second, 2 * time.Second, 3 * time.Second},
		{0, 10 * time.Millisecond, 0, 10 * time.Millisecond, 15 * time.Millisecond},
	} {
		for range 100 {
			if d := backoff.Linear(tt.attempt, tt.base, tt.limit); d < tt.lo || d > tt.hi {
				t.Fatalf("Linear(%d, %v, %v) = %v, want within %v..%v", tt.attempt, tt.base, tt.limit, d, tt.lo, tt.hi)
			}
		}
	}
}

func TestExponential(t *testing.T) {
	for _, tt := range []struct {
		attempt     int
		base, limit time.Duration
		lo, hi      time.Duration
	}{
		{1, 50 * time.Millisecond, time.Second, 50 * time.Millisecond, 75 * time.Millisecond},
		{2, 50 * time.Millisecond, time.Second, 100 * time.Millisecond, 150 * time.Millisecond},
		{4, 50 * time.Millisecond, time.Second, 400 * time.Millisecond, 600 * time.Millisecond},
		{6, 50 * time.Millisecond, time.Second, time.Second, 1500 * time.Millisecond},
		{1000, 50 * time.Millisecond, time.Second, time.Second, 1500 * time.Millisecond},
		{0, 10 * time.Millisecond, 0, 10 * time.Millisecond, 15 * time.Millisecond},
		{100, time.Second, 0, time.Duration(math.MaxInt64 / 4), time.Duration(math.MaxInt64)},
	} {
		for range 100 {
			if d := backoff.Exponential(tt.attempt, tt.base, tt.limit); d < tt.lo || d > tt.hi {
				t.Fatalf("Exponential(%d, %v, %v) = %v, want within %v..%v", tt.attempt, tt.base, tt.limit, d, tt.lo, tt.hi)
			}
		}
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := backoff.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep on a cancelled context: %v", err)
	}
	if err := backoff.Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep(0) on a cancelled context: %v", err)
	}
	if err := backoff.Sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := backoff.Sleep(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"None", nil, 0},
		{"Seconds", map[string]string{"Retry-After": "2"}, 2 * time.Second},
		{"FractionalSeconds", map[string]string{"Retry-After": "0.5"}, 500 * time.Millisecond},
		{"HTTPDate", map[string]string{"Retry-After": now.Add(3 * time.Second).Format(http.TimeFormat)}, 3 * time.Second},
		{"HTTPDatePast", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"Milliseconds", map[string]string{"Retry-After-Ms": "300"}, 300 * time.Millisecond},
		{"MillisecondsWin", map[string]string{"Retry-After-Ms": "300", "Retry-After": "5"}, 300 * time.Millisecond},
		{"ZeroMillisecondsFallBack", map[string]string{"Retry-After-Ms": "0", "Retry-After": "5"}, 5 * time.Second},
		{"Negative", map[string]string{"Retry-After": "-3"}, 0},
		{"NaN", map[string]string{"Retry-After": "NaN"}, 0},
		{"Huge", map[string]string{"Retry-After": "1e300"}, math.MaxInt64},
		{"Garbage", map[string]string{"Retry-After": "soon"}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			if got := backoff.RetryAfter(h, now); got != tt.want {
				t.Errorf("RetryAfter(%v) = %v, want %v", tt.header, got, tt.want)
			}
		})
	}
}
