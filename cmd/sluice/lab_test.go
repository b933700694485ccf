package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/hpa/lab"
)

// TestLabSim: `sluice lab --sim` prints its summary as the last line of
// stdout and writes the CSV, the plot and the summary; a simulation
// calibrated from that summary, with the CSV beside it, compares the two;
// --compare plots earlier runs side by side.
func TestLabSim(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "spike.csv")
	if err := os.WriteFile(profile, []byte("second,questions_per_second\n0,20\n10,100\n40,20\n90,20\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runLabCmd := func(args ...string) lab.Summary {
		t.Helper()
		var out, errb bytes.Buffer
		if code := run(context.Background(), append([]string{"lab"}, args...), &out, &errb); code != 0 {
			t.Fatalf("sluice lab %s: exit %d\n%s", strings.Join(args, " "), code, errb.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		var sum lab.Summary
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
			t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
		}
		return sum
	}
	first := filepath.Join(dir, "first")
	sum := runLabCmd("--sim", "--profile", profile, "--in-flight", "4", "--llm-latency", "200ms", "--out", first)
	if sum.Mode != "sim" || sum.Profile != "spike" || sum.ScaleUps == 0 || sum.ScaleDowns == 0 || sum.Lost != 0 {
		t.Errorf("summary %+v: want a simulation of spike with scale-ups and scale-downs", sum)
	}
	for _, f := range []string{"sim.csv", "sim.png", "sim.json"} {
		if fi, err := os.Stat(filepath.Join(first, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	// The simulation's files stand in for a lab run's.
	for _, f := range []string{"csv", "json"} {
		b, err := os.ReadFile(filepath.Join(first, "sim."+f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(first, "lab."+f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	second := filepath.Join(dir, "second")
	cmp := runLabCmd("--sim", "--profile", profile, "--calibrate", filepath.Join(first, "lab.json"), "--out", second)
	if cmp.Compare == nil || cmp.Compare.ReplicasMAE != 0 || cmp.InFlight != 4 || cmp.LLMLatencyMs != 200 {
		t.Errorf("a simulation calibrated from an identical run: %+v, compare %+v", cmp, cmp.Compare)
	}
	if _, err := os.Stat(filepath.Join(second, "compare.png")); err != nil {
		t.Error(err)
	}

	var out, errb bytes.Buffer
	third := filepath.Join(dir, "third")
	if code := run(context.Background(), []string{"lab", "--out", third, "--compare", "a=" + filepath.Join(first, "sim.csv") + "," + filepath.Join(second, "sim.csv")}, &out, &errb); code != 0 {
		t.Fatalf("--compare: exit %d\n%s", code, errb.String())
	}
	if fi, err := os.Stat(filepath.Join(third, "compare.png")); err != nil || fi.Size() == 0 {
		t.Errorf("--compare wrote no plot: %v", err)
	}
}
