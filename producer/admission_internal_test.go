package producer

import (
	"math"
	"slices"
	"testing"
	"time"
)

// TestAdmissionProbesWithoutAnswerTimes: a replica with no recent answer
// time lets one refused wait-mode request in every probeEvery, and none
// once it has one; answer times decide then.
func TestAdmissionProbesWithoutAnswerTimes(t *testing.T) {
	a := &admission{}
	if !a.probe() {
		t.Fatal("no probe on a replica that never answered")
	}
	if a.probe() {
		t.Fatal("a second probe within probeEvery")
	}
	a.probed.Store(time.Now().Add(-2 * probeEvery).UnixNano())
	if !a.probe() {
		t.Fatal("no probe after probeEvery")
	}

	a.observe(5 * time.Millisecond)
	a.probed.Store(0)
	if a.probe() {
		t.Error("a probe although answer times are fresh")
	}
	if !a.answersFast(300 * time.Millisecond) {
		t.Error("5 ms answers are not fast for a 300 ms wait")
	}
	if a.answersFast(10 * time.Millisecond) {
		t.Error("5 ms answers are fast for a 10 ms wait")
	}
	a.observed.Store(time.Now().Add(-11 * time.Second).UnixNano())
	if a.answersFast(300*time.Millisecond) || !a.probe() {
		t.Error("answer times older than 10 s still count, or no probe then")
	}
}

// TestAdmissionAnswerTimesAreAMedian: a slow first answer (cold
// connections) or one slow answer among fast ones does not make answers
// look slow; a majority of slow ones does.
func TestAdmissionAnswerTimesAreAMedian(t *testing.T) {
	a := &admission{}
	a.observe(2 * time.Second) // the first answer of a cold consumer
	for range 4 {
		a.observe(10 * time.Millisecond)
	}
	if !a.answersFast(300 * time.Millisecond) {
		t.Error("one slow first answer among five makes answers slow")
	}
	for range 9 {
		a.observe(time.Second)
	}
	if a.answersFast(300 * time.Millisecond) {
		t.Error("ten slow answers of the last fourteen still count as fast")
	}
	for range 16 {
		a.observe(5 * time.Millisecond)
	}
	if !a.answersFast(300 * time.Millisecond) {
		t.Error("sixteen fast answers after slow ones are not fast")
	}
}

// TestAdmissionLeavesOutStalledPartitions: a partition whose commit stops
// while the others' move (its consumer died, the group has not noticed
// yet) leaves the estimate; when every partition stops, none is left out.
func TestAdmissionLeavesOutStalledPartitions(t *testing.T) {
	a := &admission{interval: time.Second, minRate: 1}
	now := time.Unix(1000, 0)
	// Three partitions; each refresh the live ones complete 100 records
	// and keep 10 in flight. Partition 2's consumer is dead with 500 queued.
	committed := [3]int64{0, 0, 0}
	step := func(dead ...int32) {
		now = now.Add(time.Second)
		offsets := map[int32][2]int64{}
		for p := range int32(3) {
			if !slices.Contains(dead, p) {
				committed[p] += 100
			}
			end := committed[p] + 10
			if p == 2 && slices.Contains(dead, p) {
				end = committed[p] + 500
			}
			offsets[p] = [2]int64{committed[p], end}
		}
		a.update(now, offsets)
	}
	for range 3 {
		step()
	}
	if a.stalled.Load() != 0 || a.lag.Load() != 30 {
		t.Fatalf("all live: stalled %d lag %d, want 0 and 30", a.stalled.Load(), a.lag.Load())
	}
	rate := math.Float64frombits(a.rate.Load())
	if rate < 250 || rate > 350 {
		t.Fatalf("rate %v, want about 300/s", rate)
	}
	for range 2 {
		step(2)
	}
	if a.stalled.Load() != 0 {
		t.Fatalf("partition 2 stalled after 2 s, before stallAfter (%v)", a.stallAfter())
	}
	for range 2 {
		step(2)
	}
	if a.stalled.Load() != 1 || a.lag.Load() != 20 {
		t.Fatalf("partition 2 dead for 4 s: stalled %d lag %d, want 1 and 20 (the live partitions' lag)", a.stalled.Load(), a.lag.Load())
	}
	if est := a.estimate(); est > 200*time.Millisecond {
		t.Errorf("estimate %v with a dead partition and two live ones keeping up, want the live ones' short wait", est)
	}
	// Every partition stops: nothing is answered, so nothing is left out.
	offsets := map[int32][2]int64{0: {committed[0], committed[0] + 10}, 1: {committed[1], committed[1] + 10}, 2: {committed[2], committed[2] + 500}}
	for range 5 {
		now = now.Add(time.Second)
		a.update(now, offsets)
	}
	if a.stalled.Load() != 0 || a.lag.Load() != 520 {
		t.Errorf("every partition stopped: stalled %d lag %d, want 0 and 520", a.stalled.Load(), a.lag.Load())
	}
}

// TestAdmissionRateNotStarvedByRefusing: while the consumers are idle (the
// door refuses, or nothing arrives), the completion rate keeps what they
// last showed they can do instead of decaying to what was let in.
func TestAdmissionRateNotStarvedByRefusing(t *testing.T) {
	a := &admission{interval: time.Second, minRate: 1}
	now := time.Unix(1000, 0)
	var c int64
	// Busy: 400/s completed with 50 in flight.
	for range 4 {
		now = now.Add(time.Second)
		c += 400
		a.update(now, map[int32][2]int64{0: {c, c + 50}})
	}
	busy := math.Float64frombits(a.rate.Load())
	// Idle: 2 requests a second get in, and are done by the next refresh.
	for range 10 {
		now = now.Add(time.Second)
		c += 2
		a.update(now, map[int32][2]int64{0: {c, c}})
	}
	if got := math.Float64frombits(a.rate.Load()); got < busy*0.9 {
		t.Errorf("rate %v after 10 idle seconds, want it near the busy %v", got, busy)
	}
}
