package hpa

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Decision is one sync's outcome.
type Decision struct {
	// Desired is the replica count to set; it equals the current count when
	// nothing changes.
	Desired int32
	// PerMetric holds the proposal of each metric, in the order of
	// Spec.Metrics, -1 for a metric that was missing. It is nil when the
	// metrics were not evaluated (current count 0, or outside
	// [MinReplicas, MaxReplicas]).
	PerMetric []int32
	// Proposal is the largest proposal of the metrics that were read, before
	// stabilization and policies; -1 when none was, 0 when the metrics were
	// not evaluated.
	Proposal int32
	// Stabilized is the proposal after the stabilization windows, before the
	// policies and min/maxReplicas; 0 when the metrics were not evaluated.
	Stabilized int32
	// Reason says what decided Desired, with the reasons of the controller's
	// conditions:
	//   - "DesiredWithinRange": the proposal, unchanged;
	//   - "ScaleUpStabilized", "ScaleDownStabilized": the stabilization
	//     window held the count back;
	//   - "ScaleUpLimit", "ScaleDownLimit": a policy limited the change;
	//   - "TooManyReplicas", "TooFewReplicas": maxReplicas or minReplicas did;
	//   - "AboveMaxReplicas", "BelowMinReplicas": the current count was out of
	//     range and is brought back without reading the metrics;
	//   - "ScalingDisabled": the current count is 0 (maintenance mode);
	//   - "FailedGet<Source>Metric" (e.g. "FailedGetExternalMetric"): the
	//     metrics could not be used, nothing changes, Sync returns an error.
	Reason string
}

type timestampedRecommendation struct {
	recommendation int32
	timestamp      time.Time
}

type timestampedScaleEvent struct {
	replicaChange int32 // absolute value, positive
	timestamp     time.Time
	outdated      bool
}

// Autoscaler keeps the recommendation history and scale events of one HPA,
// as HorizontalController keeps them per HPA key. It is safe for concurrent
// use; Syncs are serialized.
type Autoscaler struct {
	spec      Spec
	tolerance float64
	now       func() time.Time

	mu sync.Mutex
	// recommendations is nil until the first Sync records the initial
	// count: an empty, non-nil history is a different state (no initial
	// recommendation), as in the controller.
	recommendations []timestampedRecommendation
	scaleUpEvents   []timestampedScaleEvent
	scaleDownEvents []timestampedScaleEvent
}

// New returns the Autoscaler of spec, reading the time from now (time.Now
// when nil): the stabilization windows and policy periods are measured on that
// clock, so a simulation can run days of syncs in a test.
//
// The error wraps ErrInvalidSpec and names every invalid field when spec
// breaks a rule of the Kubernetes API validation (minReplicas >= 1,
// maxReplicas >= minReplicas, valid targets, at least one policy per
// direction, policy values and periods > 0, periods <= 30 min, windows in
// [0, 1 h]) or has no metric.
func New(spec Spec, now func() time.Time) (*Autoscaler, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	tolerance := spec.Tolerance
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}
	return &Autoscaler{spec: spec.clone(), tolerance: tolerance, now: now}, nil
}

// Sync is one reconcile (reconcileAutoscaler): current is the target's
// replica count, values[i] what the metrics API returned for
// Spec.Metrics[i]. It records the recommendation and, when Desired differs
// from current, the scale event, exactly as the controller does after a
// successful update of the scale subresource: the caller is expected to set
// Desired.
//
// Sync returns an error when values does not match the metrics or current is
// negative (then nothing is recorded), and an error wrapping ErrMissingMetric
// when metrics were missing. With missing metrics the Decision is still the
// controller's: when every metric is missing, or the others would scale down,
// Desired is current; when the others ask for at least the current count,
// Desired is their count, as the controller scales and reports the error.
// Apply Decision.Desired in every case.
func (a *Autoscaler) Sync(current int32, values []MetricValue) (Decision, error) {
	if current < 0 {
		return Decision{Desired: current}, fmt.Errorf("current replicas %d: must be >= 0", current)
	}
	if len(values) != len(a.spec.Metrics) {
		return Decision{Desired: current}, fmt.Errorf("%d metric values for %d metrics", len(values), len(a.spec.Metrics))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if a.recommendations == nil { // recordInitialRecommendation
		a.recommendations = []timestampedRecommendation{{current, now}}
	}

	d := Decision{Desired: current}
	var err error
	switch {
	case current == 0 && a.spec.MinReplicas != 0:
		d.Reason = "ScalingDisabled"
		return d, nil
	case current > a.spec.MaxReplicas:
		d.Desired, d.Reason = a.spec.MaxReplicas, "AboveMaxReplicas"
	case current < a.spec.MinReplicas:
		d.Desired, d.Reason = a.spec.MinReplicas, "BelowMinReplicas"
	default:
		var refused bool
		d.Proposal, d.PerMetric, d.Reason, refused, err = a.computeReplicasForMetrics(current, values)
		if refused {
			return d, err
		}
		d.Desired, d.Stabilized, d.Reason = a.normalizeDesiredReplicasWithBehaviors(current, max(d.Proposal, 0), now)
	}
	if d.Desired != current {
		a.storeScaleEvent(current, d.Desired, now)
	}
	return d, err
}

// computeReplicasForMetrics follows the controller's function of that name:
// the largest proposal of the metrics that could be read. When every metric
// is missing, or some are and the rest propose fewer replicas than current,
// the sync is refused (the controller returns -1 and does not scale); the
// reason is the condition reason of the first missing metric. When some are
// missing and the sync goes on, err is still set.
func (a *Autoscaler) computeReplicasForMetrics(current int32, values []MetricValue) (proposal int32, perMetric []int32, reason string, refused bool, err error) {
	perMetric = make([]int32, len(values))
	proposal = -1
	invalid := 0
	var firstErr error
	for i, m := range a.spec.Metrics {
		p, mErr := metricReplicas(m, values[i], current, a.tolerance)
		if mErr != nil {
			if invalid == 0 {
				firstErr = mErr
				reason = "FailedGet" + string(m.Source) + "Metric"
			}
			invalid++
			perMetric[i] = -1
			continue
		}
		perMetric[i] = p
		proposal = max(proposal, p)
	}
	if invalid == 0 {
		return proposal, perMetric, "", false, nil
	}
	err = fmt.Errorf("invalid metrics (%d invalid out of %d), first error is: %w", invalid, len(values), firstErr)
	if invalid == len(values) || proposal < current {
		return proposal, perMetric, reason, true, err
	}
	return proposal, perMetric, "", false, err
}

// normalizeDesiredReplicasWithBehaviors follows the controller's function of
// that name: stabilize the proposal, then limit it by the policies and
// min/maxReplicas. The reason is the limit's when one applied, else the
// stabilization's when it changed the proposal, else "DesiredWithinRange".
func (a *Autoscaler) normalizeDesiredReplicasWithBehaviors(current, proposal int32, now time.Time) (desired, stabilized int32, reason string) {
	stabilized, stabilizedReason := a.stabilizeRecommendationWithBehaviors(current, proposal, now)
	desired, reason = a.convertDesiredReplicasWithBehaviorRate(current, stabilized, now)
	if desired == stabilized && stabilized != proposal {
		reason = stabilizedReason
	}
	return desired, stabilized, reason
}

// stabilizeRecommendationWithBehaviors follows the controller's function of
// that name. The upper bound is the highest recommendation of the scale-down
// window, the lower bound the lowest of the scale-up window (both include
// the proposal itself); the current count is brought within the bounds. The
// proposal is then recorded, in place of a recommendation older than both
// windows when there is one (the last such), so the history stays as long as
// the longer window.
func (a *Autoscaler) stabilizeRecommendationWithBehaviors(current, proposal int32, now time.Time) (int32, string) {
	upCutoff := now.Add(-a.spec.Behavior.ScaleUp.StabilizationWindow)
	downCutoff := now.Add(-a.spec.Behavior.ScaleDown.StabilizationWindow)
	upRecommendation, downRecommendation := proposal, proposal
	old := -1
	for i, rec := range a.recommendations {
		if rec.timestamp.After(upCutoff) {
			upRecommendation = min(rec.recommendation, upRecommendation)
		}
		if rec.timestamp.After(downCutoff) {
			downRecommendation = max(rec.recommendation, downRecommendation)
		}
		if rec.timestamp.Before(upCutoff) && rec.timestamp.Before(downCutoff) {
			old = i
		}
	}
	recommendation := current
	if recommendation < upRecommendation {
		recommendation = upRecommendation
	}
	if recommendation > downRecommendation {
		recommendation = downRecommendation
	}
	if old >= 0 {
		a.recommendations[old] = timestampedRecommendation{proposal, now}
	} else {
		a.recommendations = append(a.recommendations, timestampedRecommendation{proposal, now})
	}
	if proposal >= current {
		return recommendation, "ScaleUpStabilized"
	}
	return recommendation, "ScaleDownStabilized"
}

// convertDesiredReplicasWithBehaviorRate follows the controller's function of
// that name: a scale-up stops at the lower of maxReplicas and the policies'
// limit (never below current), a scale-down at the higher of minReplicas and
// the policies' limit (never above current).
func (a *Autoscaler) convertDesiredReplicasWithBehaviorRate(current, desired int32, now time.Time) (int32, string) {
	switch {
	case desired > current:
		limit := calculateScaleUpLimitWithScalingRules(current, a.scaleUpEvents, a.scaleDownEvents, a.spec.Behavior.ScaleUp, now)
		if limit < current { // events of an earlier policy can put the limit below current
			limit = current
		}
		maximum, reason := a.spec.MaxReplicas, "TooManyReplicas"
		if maximum > limit {
			maximum, reason = limit, "ScaleUpLimit"
		}
		if desired > maximum {
			return maximum, reason
		}
	case desired < current:
		limit := calculateScaleDownLimitWithBehaviors(current, a.scaleUpEvents, a.scaleDownEvents, a.spec.Behavior.ScaleDown, now)
		if limit > current {
			limit = current
		}
		minimum, reason := a.spec.MinReplicas, "TooFewReplicas"
		if minimum < limit {
			minimum, reason = limit, "ScaleDownLimit"
		}
		if desired < minimum {
			return minimum, reason
		}
	}
	return desired, "DesiredWithinRange"
}

// calculateScaleUpLimitWithScalingRules follows the controller's function of
// that name: per policy, the count at the start of its period (current minus
// the pods added plus the pods removed within the period) plus Value pods,
// or times 1+Value/100 rounded up ("the proposal has to be rounded up because
// the proposed change might not increase the replica count"); Max selects the
// highest limit, Min the lowest, Disabled keeps current.
func calculateScaleUpLimitWithScalingRules(current int32, upEvents, downEvents []timestampedScaleEvent, rules Rules, now time.Time) int32 {
	return policyLimit(current, upEvents, downEvents, rules, now, rules.SelectPolicy != MinChange, func(start int64, p Policy) int64 {
		if p.Type == PodsPolicy {
			return start + int64(p.Value)
		}
		return int64(clampFloat(math.Ceil(float64(start) * (1 + float64(p.Value)/100))))
	})
}

// calculateScaleDownLimitWithBehaviors follows the controller's function of
// that name: per policy, the count at the start of its period minus Value
// pods, or times 1-Value/100 truncated toward zero (int32 conversion, so 10 %
// off 9 leaves 8); Max selects the lowest limit (the largest change), Min the
// highest, Disabled keeps current.
func calculateScaleDownLimitWithBehaviors(current int32, upEvents, downEvents []timestampedScaleEvent, rules Rules, now time.Time) int32 {
	return policyLimit(current, upEvents, downEvents, rules, now, rules.SelectPolicy == MinChange, func(start int64, p Policy) int64 {
		if p.Type == PodsPolicy {
			return start - int64(p.Value)
		}
		return int64(clampFloat(float64(start) * (1 - float64(p.Value)/100)))
	})
}

// policyLimit is the loop the two limits share: the limit of each policy
// from the count at the start of its period, the highest of them or the
// lowest; current when the direction is Disabled.
func policyLimit(current int32, upEvents, downEvents []timestampedScaleEvent, rules Rules, now time.Time, highest bool, limit func(start int64, p Policy) int64) int32 {
	if rules.SelectPolicy == Disabled {
		return current
	}
	var result int64 = math.MaxInt32
	if highest {
		result = math.MinInt32
	}
	for _, p := range rules.Policies {
		l := limit(periodStartReplicas(current, upEvents, downEvents, p.Period, now), p)
		if highest {
			result = max(result, l)
		} else {
			result = min(result, l)
		}
	}
	return clampInt32(result)
}

// periodStartReplicas is the count at the start of a policy's period as the
// limits compute it: current, minus the pods added and plus the pods removed
// by the scale events of both directions within the period.
func periodStartReplicas(current int32, upEvents, downEvents []timestampedScaleEvent, period time.Duration, now time.Time) int64 {
	return int64(current) - getReplicasChangePerPeriod(period, upEvents, now) + getReplicasChangePerPeriod(period, downEvents, now)
}

// getReplicasChangePerPeriod follows the controller's function of that name:
// the replicas changed by the events strictly younger than period, so an
// event exactly one period old no longer counts.
func getReplicasChangePerPeriod(period time.Duration, events []timestampedScaleEvent, now time.Time) int64 {
	cutoff := now.Add(-period)
	var replicas int64
	for _, e := range events {
		if e.timestamp.After(cutoff) {
			replicas += int64(e.replicaChange)
		}
	}
	return replicas
}

// storeScaleEvent follows the controller's function of that name: the
// events of the direction older than its longest policy period are marked
// outdated (markScaleEventsOutdated), and the new event takes the place of the
// last outdated one, or is appended. Outdated events that were not replaced
// still count toward the other direction's limits when they are within its
// periods, as in the controller.
func (a *Autoscaler) storeScaleEvent(prev, next int32, now time.Time) {
	events, change, rules := &a.scaleDownEvents, prev-next, a.spec.Behavior.ScaleDown
	if next > prev {
		events, change, rules = &a.scaleUpEvents, next-prev, a.spec.Behavior.ScaleUp
	}
	cutoff := now.Add(-longestPolicyPeriod(rules))
	old := -1
	for i := range *events {
		if (*events)[i].timestamp.Before(cutoff) {
			(*events)[i].outdated = true
		}
		if (*events)[i].outdated {
			old = i
		}
	}
	e := timestampedScaleEvent{replicaChange: change, timestamp: now}
	if old >= 0 {
		(*events)[old] = e
	} else {
		*events = append(*events, e)
	}
}

// longestPolicyPeriod follows getLongestPolicyPeriod.
func longestPolicyPeriod(r Rules) time.Duration {
	var longest time.Duration
	for _, p := range r.Policies {
		longest = max(longest, p.Period)
	}
	return longest
}

func clampInt32(v int64) int32 {
	return int32(min(max(v, math.MinInt32), math.MaxInt32))
}

// clampFloat keeps a policy's float proposal within int32 before the
// conversion, which Go leaves implementation-defined beyond the range.
func clampFloat(f float64) float64 {
	return min(max(f, math.MinInt32), math.MaxInt32)
}
