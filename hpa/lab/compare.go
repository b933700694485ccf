package lab

import "math"

// Comparison says how well a simulation predicts a lab run of the same
// profile: the ready replicas second by second, their peak, and the queue
// wait p99 over the run.
type Comparison struct {
	ReplicasMAE       float64 `json:"replicas_mae"` // mean absolute difference of the ready replicas per second
	MaxReplicasLab    int     `json:"max_replicas_lab"`
	MaxReplicasSim    int     `json:"max_replicas_sim"`
	QueueWaitP99LabMs float64 `json:"queue_wait_p99_lab_ms"`
	QueueWaitP99SimMs float64 `json:"queue_wait_p99_sim_ms"`
}

// Compare compares a lab run's samples and summary with a simulation's.
func Compare(labRun, sim []Sample, labSum, simSum Summary) Comparison {
	c := Comparison{QueueWaitP99LabMs: labSum.QueueWaitP99Ms, QueueWaitP99SimMs: simSum.QueueWaitP99Ms}
	n := min(len(labRun), len(sim))
	var diff float64
	for i := range n {
		diff += math.Abs(float64(labRun[i].Replicas - sim[i].Replicas))
	}
	if n > 0 {
		c.ReplicasMAE = diff / float64(n)
	}
	for _, s := range labRun {
		c.MaxReplicasLab = max(c.MaxReplicasLab, s.Replicas)
	}
	for _, s := range sim {
		c.MaxReplicasSim = max(c.MaxReplicasSim, s.Replicas)
	}
	return c
}
