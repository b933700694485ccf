// Package charts renders the Helm chart charts/sluice with the Helm SDK, so
// that Go tests can check what a `helm install` would create without a
// cluster: this package's tests decode every object strictly into the
// Kubernetes API types and the CRDs' schemas, parse every PromQL expression
// and compare the metrics it names with docs/metrics.md; cmd/sluice's tests
// check every container's settings against the binary's flag sets; a
// kube-apiserver dry run can take the same objects from Render.
//
// The chart and the named values sets (values/*.yaml, over the chart's
// values.yaml) are embedded, so Render works from any directory.
//
// hpa/'s manifests are generated from the chart (go test ./charts -update):
// Manifests returns them.
package charts
