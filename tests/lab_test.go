package tests

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/hpa/lab"
)

// TestLabFollowsASpike runs the autoscaling lab on a short spike: consumer
// processes with a budget of 2 and a 200 ms LLM (10 answers/s each) see 4
// questions/s, then 40/s for 8 s, then 4/s again. The HPA on the chart's
// signals and behaviour, its periods compressed 60 times, must add
// consumers for the spike and remove them after it through the preStop
// drain, with every accepted question answered exactly once (read from the
// dialogs' histories) and every drained consumer exiting 0.
func TestLabFollowsASpike(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process lab run skipped in -short mode")
	}
	p, err := lab.ParseProfile(strings.NewReader("0,4\n3,40\n11,4\n26,4\n"), "short-spike")
	if err != nil {
		t.Fatal(err)
	}
	cfg := lab.DefaultConfig()
	cfg.Profile = p
	cfg.Out = t.TempDir()
	cfg.Binary = sluiceBinary(t)
	cfg.TimeFactor = 60
	cfg.InFlight, cfg.LLMLatency = 2, 200*time.Millisecond
	cfg.MinReplicas, cfg.MaxReplicas = 1, 6
	cfg.Wait = 15 * time.Second
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	sum, err := lab.Run(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary: %+v", sum)
	if sum.ScaleUps == 0 || sum.MaxReplicas < 3 {
		t.Errorf("no scale-up for a spike of 40/s on 10/s consumers: %d scale-ups, at most %d replicas", sum.ScaleUps, sum.MaxReplicas)
	}
	if sum.ScaleDowns == 0 || sum.FinalReplicas >= sum.MaxReplicas {
		t.Errorf("no scale-down after the spike: %d scale-downs, %d replicas at the end of %d", sum.ScaleDowns, sum.FinalReplicas, sum.MaxReplicas)
	}
	if sum.Lost != 0 || sum.DuplicateTurns != 0 || sum.Accepted == 0 || sum.Answered+sum.Expired != sum.Accepted {
		t.Errorf("accepted %d, answered %d, expired %d, lost %d, duplicate turns %d", sum.Accepted, sum.Answered, sum.Expired, sum.Lost, sum.DuplicateTurns)
	}
	if sum.DrainedFailed != 0 || sum.DrainedOK < sum.MaxReplicas {
		t.Errorf("drained %d consumers, %d failed; %d ran at most", sum.DrainedOK, sum.DrainedFailed, sum.MaxReplicas)
	}
	for _, f := range []string{"lab.csv", "lab.png", "lab.json"} {
		if fi, err := os.Stat(filepath.Join(cfg.Out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v, %v", f, fi, err)
		}
	}
}
