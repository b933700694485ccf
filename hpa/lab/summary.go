package lab

import (
	"bytes"
	"encoding/json"
	"math"
)

// Summary is what a lab or simulation run ends with: one JSON line on
// standard output. The field names are a contract (scripts and tests read
// them). A float that does not exist — the queue wait of a run in which no
// request started — is NaN in Go and null in the JSON, since encoding/json
// refuses NaN and the line must be written whatever the run did.
type Summary struct {
	Mode           string  `json:"mode"` // "lab" or "sim"
	Profile        string  `json:"profile"`
	Signal         string  `json:"signal"`
	TimeFactor     float64 `json:"time_factor"`
	Offered        int64   `json:"offered"`
	Accepted       int64   `json:"accepted"`
	Answered       int64   `json:"answered"`
	Expired        int64   `json:"expired"` // accepted, then expired by the pipeline at its deadline
	Lost           int64   `json:"lost"`
	DuplicateTurns int64   `json:"duplicate_turns"`
	Refused        int64   `json:"refused"`
	Failed         int64   `json:"failed"` // questions that got neither an answer nor a refusal (transport errors, 5xx other than 503)
	QueueWaitP50Ms float64 `json:"queue_wait_p50_ms"`
	QueueWaitP99Ms float64 `json:"queue_wait_p99_ms"`
	MaxReplicas    int     `json:"max_replicas"`
	FinalReplicas  int     `json:"final_replicas"`
	PodSeconds     float64 `json:"pod_seconds"`
	ScaleUps       int     `json:"scale_ups"`
	ScaleDowns     int     `json:"scale_downs"`
	DrainedOK      int     `json:"drained_ok"`
	DrainedFailed  int     `json:"drained_failed"`
	// The calibration a simulation takes from a lab run: how long a new
	// consumer took to be ready, and a removed one to drain and exit (mean
	// seconds), its in-flight budget and the LLM's latency.
	PodStartS    float64 `json:"pod_start_s"`
	PodWorkS     float64 `json:"pod_work_s"` // from start to the first records in flight: start, rebalance, first fetch
	DrainS       float64 `json:"drain_s"`
	InFlight     int     `json:"in_flight"`
	LLMLatencyMs float64 `json:"llm_latency_ms"`
	// ServiceMs is how long a record stayed in flight on a consumer on
	// average (in flight over completions per second): the LLM's latency
	// and the consumer's own work.
	ServiceMs float64 `json:"service_ms"`
	// Compare is set on a simulation calibrated from a lab run: how well
	// it predicts that run.
	Compare *Comparison `json:"compare,omitempty"`
	Out     string      `json:"out"`
}

// summaryJSON is Summary with its floats as jsonFloat. It is kept field for
// field in step with Summary: TestSummaryJSONFields fails when they differ.
type summaryJSON struct {
	Mode           string      `json:"mode"`
	Profile        string      `json:"profile"`
	Signal         string      `json:"signal"`
	TimeFactor     jsonFloat   `json:"time_factor"`
	Offered        int64       `json:"offered"`
	Accepted       int64       `json:"accepted"`
	Answered       int64       `json:"answered"`
	Expired        int64       `json:"expired"`
	Lost           int64       `json:"lost"`
	DuplicateTurns int64       `json:"duplicate_turns"`
	Refused        int64       `json:"refused"`
	Failed         int64       `json:"failed"`
	QueueWaitP50Ms jsonFloat   `json:"queue_wait_p50_ms"`
	QueueWaitP99Ms jsonFloat   `json:"queue_wait_p99_ms"`
	MaxReplicas    int         `json:"max_replicas"`
	FinalReplicas  int         `json:"final_replicas"`
	PodSeconds     jsonFloat   `json:"pod_seconds"`
	ScaleUps       int         `json:"scale_ups"`
	ScaleDowns     int         `json:"scale_downs"`
	DrainedOK      int         `json:"drained_ok"`
	DrainedFailed  int         `json:"drained_failed"`
	PodStartS      jsonFloat   `json:"pod_start_s"`
	PodWorkS       jsonFloat   `json:"pod_work_s"`
	DrainS         jsonFloat   `json:"drain_s"`
	InFlight       int         `json:"in_flight"`
	LLMLatencyMs   jsonFloat   `json:"llm_latency_ms"`
	ServiceMs      jsonFloat   `json:"service_ms"`
	Compare        *Comparison `json:"compare,omitempty"`
	Out            string      `json:"out"`
}

// MarshalJSON encodes the summary with a non-finite float as null.
func (s Summary) MarshalJSON() ([]byte, error) {
	return json.Marshal(summaryJSON{
		Mode: s.Mode, Profile: s.Profile, Signal: s.Signal, TimeFactor: jsonFloat(s.TimeFactor),
		Offered: s.Offered, Accepted: s.Accepted, Answered: s.Answered, Expired: s.Expired, Lost: s.Lost,
		DuplicateTurns: s.DuplicateTurns, Refused: s.Refused, Failed: s.Failed,
		QueueWaitP50Ms: jsonFloat(s.QueueWaitP50Ms), QueueWaitP99Ms: jsonFloat(s.QueueWaitP99Ms),
		MaxReplicas: s.MaxReplicas, FinalReplicas: s.FinalReplicas, PodSeconds: jsonFloat(s.PodSeconds),
		ScaleUps: s.ScaleUps, ScaleDowns: s.ScaleDowns, DrainedOK: s.DrainedOK, DrainedFailed: s.DrainedFailed,
		PodStartS: jsonFloat(s.PodStartS), PodWorkS: jsonFloat(s.PodWorkS), DrainS: jsonFloat(s.DrainS), InFlight: s.InFlight,
		LLMLatencyMs: jsonFloat(s.LLMLatencyMs), ServiceMs: jsonFloat(s.ServiceMs), Compare: s.Compare,
		Out: s.Out,
	})
}

// UnmarshalJSON decodes a summary line; a null float reads as NaN, a
// missing field as zero.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var j summaryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Summary{
		Mode: j.Mode, Profile: j.Profile, Signal: j.Signal, TimeFactor: float64(j.TimeFactor),
		Offered: j.Offered, Accepted: j.Accepted, Answered: j.Answered, Expired: j.Expired, Lost: j.Lost,
		DuplicateTurns: j.DuplicateTurns, Refused: j.Refused, Failed: j.Failed,
		QueueWaitP50Ms: float64(j.QueueWaitP50Ms), QueueWaitP99Ms: float64(j.QueueWaitP99Ms),
		MaxReplicas: j.MaxReplicas, FinalReplicas: j.FinalReplicas, PodSeconds: float64(j.PodSeconds),
		ScaleUps: j.ScaleUps, ScaleDowns: j.ScaleDowns, DrainedOK: j.DrainedOK, DrainedFailed: j.DrainedFailed,
		PodStartS: float64(j.PodStartS), PodWorkS: float64(j.PodWorkS), DrainS: float64(j.DrainS), InFlight: j.InFlight,
		LLMLatencyMs: float64(j.LLMLatencyMs), ServiceMs: float64(j.ServiceMs), Compare: j.Compare,
		Out: j.Out,
	}
	return nil
}

// jsonFloat is a float64 that encodes NaN and ±Inf as null and decodes
// null as NaN.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(v)
}

func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*f = jsonFloat(math.NaN())
		return nil
	}
	return json.Unmarshal(b, (*float64)(f))
}

// Quantile returns the q-quantile (0..1) of sorted, an ascending slice, by
// the nearest-rank method: the smallest value with at least q×n values at
// or below it, so the result is always one of the values (p99 of 100
// waits is the 99th, not an interpolation). q below 0 or above 1 is taken
// as 0 or 1. It returns NaN for an empty slice or a NaN q.
func Quantile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	// q×n carries the rounding of q: 0.07×100 is 7.000000000000001, whose
	// ceiling would skip a rank.
	rank := int(math.Ceil(q*float64(n) - 1e-9))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}
