package lab

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func fullSummary() Summary {
	return Summary{
		Mode: "lab", Profile: "flash-sale", Signal: "in_flight_ratio", TimeFactor: 10,
		Offered: 6200, Accepted: 6100, Answered: 6097, Expired: 1, Lost: 0, DuplicateTurns: 2, Refused: 100, Failed: 3,
		QueueWaitP50Ms: 4.5, QueueWaitP99Ms: 1830.25,
		MaxReplicas: 6, FinalReplicas: 2, PodSeconds: 512.5,
		ScaleUps: 3, ScaleDowns: 2, DrainedOK: 4, DrainedFailed: 0,
		PodStartS: 0.6, PodWorkS: 1.5, DrainS: 0.4, InFlight: 4, LLMLatencyMs: 200, ServiceMs: 230,
		Compare: &Comparison{ReplicasMAE: 0.8, MaxReplicasLab: 6, MaxReplicasSim: 7, QueueWaitP99LabMs: 1830.25, QueueWaitP99SimMs: 1500},
		Out:     "/tmp/lab-out",
	}
}

// TestSummaryGolden pins the JSON line, the contract scripts read.
func TestSummaryGolden(t *testing.T) {
	got, err := json.Marshal(fullSummary())
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "summary.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.TrimSpace(want)) {
		t.Errorf("summary JSON\n got %s\nwant %s", got, want)
	}
}

// TestSummaryJSONFields fails when Summary and summaryJSON, which encodes
// it, no longer have the same fields in the same order with the same tags.
func TestSummaryJSONFields(t *testing.T) {
	s, j := reflect.TypeFor[Summary](), reflect.TypeFor[summaryJSON]()
	if s.NumField() != j.NumField() {
		t.Fatalf("Summary has %d fields, summaryJSON %d", s.NumField(), j.NumField())
	}
	for i := range s.NumField() {
		fs, fj := s.Field(i), j.Field(i)
		if fs.Name != fj.Name || fs.Tag.Get("json") != fj.Tag.Get("json") || fs.Type.Kind() != fj.Type.Kind() {
			t.Errorf("field %d: Summary %s %s %q, summaryJSON %s %s %q",
				i, fs.Name, fs.Type, fs.Tag.Get("json"), fj.Name, fj.Type, fj.Tag.Get("json"))
		}
	}
	// Every field set to a non-zero value comes back: none is forgotten in
	// the copying of MarshalJSON and UnmarshalJSON.
	in := fullSummary()
	v := reflect.ValueOf(in)
	for i := range v.NumField() {
		if v.Field(i).IsZero() && s.Field(i).Name != "Lost" && s.Field(i).Name != "DrainedFailed" {
			t.Errorf("fullSummary leaves %s zero: the round trip would not check it", s.Field(i).Name)
		}
	}
	in.Lost, in.DrainedFailed = 7, 8
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Summary
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

func TestSummaryNaN(t *testing.T) {
	in := fullSummary()
	in.QueueWaitP50Ms, in.QueueWaitP99Ms, in.PodSeconds = math.NaN(), math.Inf(1), math.NaN()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("Marshal of a summary with NaN: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"queue_wait_p50_ms", "queue_wait_p99_ms", "pod_seconds"} {
		if v, ok := raw[k]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", k, v, ok)
		}
	}
	var out Summary
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(out.QueueWaitP50Ms) || !math.IsNaN(out.QueueWaitP99Ms) || !math.IsNaN(out.PodSeconds) {
		t.Errorf("null read back as %v, %v, %v; want NaN", out.QueueWaitP50Ms, out.QueueWaitP99Ms, out.PodSeconds)
	}
	if out.Answered != in.Answered || out.Out != in.Out {
		t.Errorf("other fields lost: %+v", out)
	}
	if err := json.Unmarshal([]byte(`{"queue_wait_p99_ms":"slow"}`), &out); err == nil {
		t.Error("a string for a float: no error")
	}
}

func TestQuantile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(i + 1)
	}
	tests := []struct {
		name   string
		sorted []float64
		q      float64
		want   float64
	}{
		{"Median odd", []float64{1, 2, 3, 4, 5}, 0.5, 3},
		{"Median even is the lower", []float64{1, 2, 3, 4}, 0.5, 2},
		{"P99 of 100", hundred, 0.99, 99},
		{"P50 of 100", hundred, 0.5, 50},
		{"P07 of 100 despite float rounding", hundred, 0.07, 7},
		{"P100", hundred, 1, 100},
		{"P0 is the minimum", hundred, 0, 1},
		{"P99 of 10 is the max", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99, 10},
		{"P90 of 10", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9},
		{"One value", []float64{42}, 0.99, 42},
		{"Above 1 clamps", []float64{1, 2}, 1.5, 2},
		{"Below 0 clamps", []float64{1, 2}, -1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quantile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("Quantile(q=%g) = %g, want %g", tt.q, got, tt.want)
			}
		})
	}
	if got := Quantile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("Quantile(empty) = %g, want NaN", got)
	}
	if got := Quantile([]float64{1}, math.NaN()); !math.IsNaN(got) {
		t.Errorf("Quantile(q=NaN) = %g, want NaN", got)
	}
}
