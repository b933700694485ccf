// Package k8s is `make verify-k8s`: a server-side dry run of Sluice's
// Kubernetes objects on a real kube-apiserver backed by etcd, the strongest
// check of the deploy files that a machine without a cluster allows.
//
// TestDryRun starts etcd and kube-apiserver on 127.0.0.1 (free ports, a
// temporary directory, both stopped when the test ends and killed if the
// test process dies), installs the CustomResourceDefinitions it is given,
// and sends every object of the given YAML files to the server with
// dryRun=All and fieldValidation=Strict: the server decodes, defaults,
// validates and admits the object exactly as for a real create, then
// stores nothing. An object the server refuses, or accepts with a warning,
// fails its subtest with the server's message. The objects in
// testdata/rejected must be refused, each with the message its "# want:"
// line names: they prove that unknown fields, the built-in validation and
// the CRDs' schemas are enforced, so a pass means something.
//
// The test is driven by the environment, which tests/k8s/verify.sh sets:
//
//	SLUICE_KUBE_APISERVER  the kube-apiserver binary (tests/k8s/build-apiserver.sh); without it the test skips
//	SLUICE_ETCD            the etcd binary; default: etcd on PATH
//	SLUICE_K8S_CRDS        CRD YAML files or directories, colon-separated
//	SLUICE_K8S_MANIFESTS   files or directories of YAML to dry-run, colon-separated; default testdata/manifests
//
// The module builds kube-apiserver too (the tool line of go.mod); it is kept
// apart from the main module so that its Kubernetes dependencies never reach
// Sluice's build.
package k8s
