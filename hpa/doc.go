// Package hpa is a port of the replica decision of the Kubernetes
// HorizontalPodAutoscaler controller (autoscaling/v2), so that Sluice can
// replay what an HPA would do with its consumers' signals without a cluster:
// the autoscaling lab, the cluster-scale simulation and the tests of the
// chart's hpa.yaml run this code, sync by sync, on a clock they control.
//
// It follows pkg/controller/podautoscaler of kubernetes/kubernetes
// (Apache-2.0): horizontal.go for the reconcile loop, the stabilization
// windows and the scaling policies, replica_calculator.go for the proposal of
// one metric. Each function's doc comment names the Kubernetes function it
// follows. The code is written anew from reading that source; the arithmetic
// (float64 ratios, math.Ceil, int32 truncation, strict time comparisons) is
// kept as Kubernetes has it, because the replica counts on the boundaries
// (a ratio of exactly 1.1, a scale event exactly one period old) depend on it.
//
// # One sync
//
// [Autoscaler.Sync] is reconcileAutoscaler for one HPA:
//
//   - the first sync records the current count as a recommendation
//     (recordInitialRecommendation), so a fresh autoscaler does not scale
//     down before the scale-down window has passed;
//   - current == 0 with minReplicas > 0 means scaling is disabled (the
//     "implicit maintenance-mode deactivation" of the docs): no change;
//   - current above maxReplicas or below minReplicas is brought into range at
//     once, without reading the metrics;
//   - otherwise every metric proposes a count ([MetricReplicas]), the largest
//     wins; if every metric is missing, or some are and the rest would scale
//     down, nothing changes and Sync returns an error; if some are missing
//     and the rest ask for at least the current count, the autoscaler scales
//     and still returns the error (computeReplicasForMetrics);
//   - the proposal is stabilized (the lowest proposal of the scale-up window,
//     the highest of the scale-down window), then limited by the policies of
//     the direction from the scale events of their periods, and by
//     min/maxReplicas (normalizeDesiredReplicasWithBehaviors);
//   - a change is recorded as a scale event (storeScaleEvent).
//
// # Where the port is simpler than Kubernetes
//
//   - No pod readiness. The controller lists the pods, sets aside pending,
//     unready, failed and deleted pods, and, for CPU, pods still in their
//     initialization period (--horizontal-pod-autoscaler-cpu-initialization-period,
//     --horizontal-pod-autoscaler-initial-readiness-delay); it then reruns the
//     ratio with missing pods at 100 % (scale-down) or 0 % (scale-up) and
//     unready pods at 0 %, and refuses a change of direction (groupPods and
//     the second half of calcPlainMetricReplicas and GetResourceReplicas).
//     None of that is here: [MetricValue.PodValues] are the values of the
//     ready pods, their count is the ready pod count, and the Value targets
//     of Object and External metrics take the current count as the ready
//     pod count (getReadyPodsCount).
//   - One replica count. Kubernetes reads spec.replicas of the scale
//     subresource, and status.replicas for the AverageValue targets of Object
//     and External metrics; the port has the one current count.
//   - Resource metrics take one utilization percentage per pod. Kubernetes
//     divides the summed usage by the summed requests; that is the mean of
//     the pods' percentages when every pod requests the same, as the pods of
//     one Deployment do. ContainerResource metrics are not supported.
//   - One tolerance for both directions. Kubernetes 1.33 added per-direction
//     tolerances (behavior.scaleUp/scaleDown.tolerance, feature
//     HPAConfigurableTolerance); [ParseHPA] accepts them only when equal.
//   - A Spec always has a Behavior. Kubernetes runs a legacy path when
//     spec.behavior is nil (normalizeDesiredReplicas: the highest proposal of
//     the downscale window, at most max(2×current, 4) per sync); it adds the
//     same replicas per 15 s sync as [DefaultBehavior], which [ParseHPA]
//     gives a manifest without a behavior.
//   - minReplicas is at least 1: scale to zero (feature HPAScaleToZero) is
//     not modeled, although [MetricReplicas] computes the current == 0 case.
//   - One clock reading per sync, where the controller calls time.Now at
//     each step of a reconcile; policy limits are computed in 64 bits and
//     capped to int32 where Kubernetes would overflow.
//   - Metric values arrive as float64. The controller reads every target and
//     value as a resource.Quantity in thousandths (MilliValue, rounded up);
//     the port rounds each float the same way from its shortest decimal
//     form, so 0.7 is 700 thousandths, as "0.7" in a manifest is. An
//     External metric is one value: the caller sums the series a selector
//     matches, as the controller does.
//   - No status, conditions or events; [Decision.Reason] carries the one
//     condition reason that explains the count.
package hpa
