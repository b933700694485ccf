package lab

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
)

// sameSamples compares samples with NaN equal to NaN, which DeepEqual
// does not do.
func sameSamples(a, b []Sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := reflect.ValueOf(a[i]), reflect.ValueOf(b[i])
		for f := range x.NumField() {
			switch fx, fy := x.Field(f), y.Field(f); fx.Kind() {
			case reflect.Float64:
				u, v := fx.Float(), fy.Float()
				if u != v && !(math.IsNaN(u) && math.IsNaN(v)) {
					return false
				}
			default:
				if fx.Interface() != fy.Interface() {
					return false
				}
			}
		}
	}
	return true
}

func TestCSVRoundTrip(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name    string
		samples []Sample
	}{
		{"Synthetic", syntheticRun(FlashSale(20, 5), 25)},
		{"NaNEverywhere", []Sample{{T: 1, Offered: nan, Completed: nan, Refused: nan, Lag: nan, OldestAge: nan,
			InFlightRatio: nan, QueueWaitP50: nan, QueueWaitP99: nan, Replicas: 3, Desired: 4}}},
		{"AwkwardFloats", []Sample{{T: 0.1 + 0.2, Offered: 1.0 / 3, Completed: 1e-9, Refused: 0, Lag: 123456789012,
			OldestAge: math.Inf(1), InFlightRatio: 0.7, QueueWaitP50: 0.5, QueueWaitP99: 20000.25, Replicas: 0, Desired: -1}}},
		{"NoSamples", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteCSV(&buf, tt.samples); err != nil {
				t.Fatalf("WriteCSV: %v", err)
			}
			got, err := ReadCSV(bytes.NewReader(buf.Bytes()))
			if err != nil {
				t.Fatalf("ReadCSV: %v\n%s", err, buf.String())
			}
			if !sameSamples(got, tt.samples) {
				t.Errorf("round trip:\n got %+v\nwant %+v\ncsv:\n%s", got, tt.samples, buf.String())
			}
		})
	}
}

func TestWriteCSV(t *testing.T) {
	var buf bytes.Buffer
	s := []Sample{
		{T: 1, Offered: 20, Completed: 19.5, Refused: 0, Lag: 12, OldestAge: 0.25, InFlightRatio: 0.5,
			QueueWaitP50: 3, QueueWaitP99: 41.5, Replicas: 2, Desired: 3},
		{T: 2, Offered: 20, Completed: 20, Refused: 1, Lag: 0, OldestAge: 0, InFlightRatio: 0,
			QueueWaitP50: math.NaN(), QueueWaitP99: math.NaN(), Replicas: 2, Desired: 2},
	}
	if err := WriteCSV(&buf, s); err != nil {
		t.Fatal(err)
	}
	want := "t_s,offered_per_s,completed_per_s,refused_per_s,lag,oldest_age_s,in_flight_ratio,queue_wait_p50_ms,queue_wait_p99_ms,replicas,desired\n" +
		"1,20,19.5,0,12,0.25,0.5,3,41.5,2,3\n" +
		"2,20,20,1,0,0,0,,,2,2\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestReadCSVColumnsByName(t *testing.T) {
	in := "desired,replicas,extra,queue_wait_p99_ms,queue_wait_p50_ms,in_flight_ratio,oldest_age_s,lag,refused_per_s,completed_per_s,offered_per_s,t_s\n" +
		"4,3,whatever,,,0.5,1,10,0,9,10,7\n"
	got, err := ReadCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{{T: 7, Offered: 10, Completed: 9, Refused: 0, Lag: 10, OldestAge: 1, InFlightRatio: 0.5,
		QueueWaitP50: math.NaN(), QueueWaitP99: math.NaN(), Replicas: 3, Desired: 4}}
	if !sameSamples(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestReadCSVErrors(t *testing.T) {
	const header = "t_s,offered_per_s,completed_per_s,refused_per_s,lag,oldest_age_s,in_flight_ratio,queue_wait_p50_ms,queue_wait_p99_ms,replicas,desired\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"Empty", "", []string{"no header row"}},
		{"MissingColumn", "t_s,offered_per_s\n1,2\n", []string{"line 1:", "no column completed_per_s"}},
		{"NotANumber", header + "1,2,3,4,5,6,0.5,7,8,1,1\n2,x,3,4,5,6,0.5,7,8,1,1\n", []string{"line 3:", `offered_per_s "x" is not a number`}},
		{"EmptyTime", header + ",2,3,4,5,6,0.5,7,8,1,1\n", []string{"line 2:", "t_s is empty"}},
		{"EmptyReplicas", header + "1,2,3,4,5,6,0.5,7,8,,1\n", []string{"line 2:", `replicas "" is not a whole number`}},
		{"FractionalDesired", header + "1,2,3,4,5,6,0.5,7,8,1,1.5\n", []string{"line 2:", `desired "1.5" is not a whole number`}},
		{"ShortRow", header + "1,2,3\n", []string{"line 2", "wrong number of fields"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ReadCSV(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("no error, samples %+v", s)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
