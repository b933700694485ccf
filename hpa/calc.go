package hpa

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// ErrMissingMetric is wrapped by the error of MetricReplicas, and of Sync,
// when a metric has no usable value this sync: MetricValue.Missing is set, a
// Pods or Resource metric has no pod values, or a value is NaN or infinite
// (what a query over no series can return; a Quantity cannot hold it).
var ErrMissingMetric = errors.New("metric not available")

// MetricReplicas is the replica calculator for one metric
// (ReplicaCalculator in replica_calculator.go): the replica count that metric
// m, at value v, asks for when the target runs current replicas.
//
// Per source and target, as Kubernetes computes them:
//
//   - Pods AverageValue and Resource AverageValue (GetMetricReplicas,
//     GetRawResourceReplicas → calcPlainMetricReplicas): usage is the mean of
//     the pod values, ratio = usage / target; within the tolerance the count
//     stays current, else ceil(ratio × ready pods).
//   - Resource Utilization (GetResourceReplicas): utilization is the whole
//     percentage of the pods' mean (GetResourceUtilizationRatio truncates
//     it), ratio = utilization / target, then as above.
//   - Object and External Value (GetObjectMetricReplicas,
//     GetExternalMetricReplicas → getUsageRatioReplicaCount): ratio = value /
//     target; within the tolerance current, else ceil(ratio × current); from
//     current == 0, ceil(ratio) without tolerance.
//   - Object and External AverageValue (GetObjectPerPodMetricReplicas,
//     GetExternalPerPodMetricReplicas): if value / (target × current) is
//     within the tolerance, current, else ceil(value / target).
//
// The tolerance is used as given: a ratio in [1-tolerance, 1+tolerance]
// keeps the current count (Tolerances.isWithin). Values and targets are taken
// in thousandths, rounded up, as the controller reads a resource.Quantity
// (MilliValue); results beyond int32 are capped at math.MaxInt32.
//
// The error wraps ErrMissingMetric when the metric has no usable value, and
// ErrInvalidSpec when m is not a valid metric.
func MetricReplicas(m MetricSpec, v MetricValue, current int32, tolerance float64) (int32, error) {
	var errs []string
	validateMetric(m, "metric", func(field, format string, args ...any) {
		errs = append(errs, field+": "+fmt.Sprintf(format, args...))
	})
	if len(errs) > 0 {
		return 0, fmt.Errorf("%w: %s", ErrInvalidSpec, strings.Join(errs, "; "))
	}
	if current < 0 {
		return 0, fmt.Errorf("current replicas %d: must be >= 0", current)
	}
	return metricReplicas(m, v, current, tolerance)
}

// metricReplicas is MetricReplicas for a metric already validated.
func metricReplicas(m MetricSpec, v MetricValue, current int32, tolerance float64) (int32, error) {
	if v.Missing {
		return 0, fmt.Errorf("%s metric %s: %w", m.Source, m.Name, ErrMissingMetric)
	}
	target := milli(m.Value)
	switch m.Source {
	case PodsSource, ResourceSource:
		if len(v.PodValues) == 0 {
			return 0, fmt.Errorf("%s metric %s: no pod values: %w", m.Source, m.Name, ErrMissingMetric)
		}
		var total int64
		for i, pv := range v.PodValues {
			x, err := milliValue(pv)
			if err != nil {
				return 0, fmt.Errorf("%s metric %s, pod %d: %w", m.Source, m.Name, i, err)
			}
			total = addCapped(total, x)
		}
		n := int64(len(v.PodValues))
		var ratio float64
		if m.Target == UtilizationTarget {
			// GetResourceUtilizationRatio: (Σusage × 100) / Σrequests in
			// integers; with per-pod percentages and equal requests that
			// is Σpercent / n, here Σ(thousandths of a percent) / (1000 n).
			utilization := total / (1000 * n)
			ratio = float64(utilization) / float64(int64(m.Value))
		} else {
			// GetMetricUsageRatio: the integer mean of the thousandths.
			ratio = float64(total/n) / float64(target)
		}
		if isWithin(ratio, tolerance) {
			return current, nil
		}
		return ceilReplicas(ratio * float64(n)), nil
	case ObjectSource, ExternalSource:
		usage, err := milliValue(v.Value)
		if err != nil {
			return 0, fmt.Errorf("%s metric %s: %w", m.Source, m.Name, err)
		}
		if m.Target == ValueTarget {
			return usageRatioReplicaCount(current, float64(usage)/float64(target), tolerance), nil
		}
		ratio := float64(usage) / (float64(target) * float64(current))
		if isWithin(ratio, tolerance) {
			return current, nil
		}
		return ceilReplicas(float64(usage) / float64(target)), nil
	}
	return 0, fmt.Errorf("%w: source %q", ErrInvalidSpec, m.Source) // unreachable after validate
}

// usageRatioReplicaCount follows getUsageRatioReplicaCount: from zero
// replicas the ratio alone decides, so an Object or External metric can scale
// a target up from zero; otherwise the tolerance applies and the ratio scales
// the ready pods, here the current count.
func usageRatioReplicaCount(current int32, ratio, tolerance float64) int32 {
	if current == 0 {
		return ceilReplicas(ratio)
	}
	if isWithin(ratio, tolerance) {
		return current
	}
	return ceilReplicas(ratio * float64(current))
}

// isWithin follows Tolerances.isWithin with one tolerance for both
// directions. A NaN ratio (0/0) is not within, as in Go's comparisons there.
func isWithin(ratio, tolerance float64) bool {
	return 1.0-tolerance <= ratio && ratio <= 1.0+tolerance
}

// ceilReplicas is int32(math.Ceil(x)) with the cap at math.MaxInt32 that
// getUsageRatioReplicaCount and GetExternalPerPodMetricReplicas apply; a NaN
// or negative proposal is 0 (a negative metric can only ask for none).
func ceilReplicas(x float64) int32 {
	c := math.Ceil(x)
	switch {
	case c > math.MaxInt32:
		return math.MaxInt32
	case c > 0:
		return int32(c)
	}
	return 0
}

// milliValue is milli for a metric value, which may be anything the metrics
// pipeline returned.
func milliValue(v float64) (int64, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("value %v is not a finite number: %w", v, ErrMissingMetric)
	}
	return milli(v), nil
}

// milli returns v in thousandths rounded up, as resource.Quantity.MilliValue
// does for the decimal that v prints as (strconv's shortest form): 0.7 is
// 700, 0.0001 is 1. The arithmetic is exact (math/big); values beyond the
// int64 range are capped.
func milli(v float64) int64 {
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(v, 'g', -1, 64))
	if !ok { // only NaN and ±Inf print in a form big.Rat rejects
		return 0
	}
	r.Mul(r, big.NewRat(1000, 1))
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if m.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	switch {
	case q.IsInt64():
		return q.Int64()
	case q.Sign() > 0:
		return math.MaxInt64
	}
	return math.MinInt64
}

// addCapped adds like the controller's overflow guard on summed metrics
// (GetExternalMetricReplicas): a positive overflow gives math.MaxInt64.
func addCapped(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	if b < 0 && a < math.MinInt64-b {
		return math.MinInt64
	}
	return a + b
}
