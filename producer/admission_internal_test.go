package producer

import (
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
