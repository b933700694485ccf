#!/usr/bin/env bash
# make verify-k8s: dry-runs Sluice's Kubernetes objects on a real
# kube-apiserver and etcd (see doc.go beside this script for what is
# checked, docs/operations.md for how to use it).
#
#   1. etcd: Debian's etcd-server, installed when missing (as root).
#   2. kube-apiserver: built once and cached (build-apiserver.sh).
#   3. The KEDA and Prometheus Operator CRDs: the YAML files those projects
#      publish in their Go modules, downloaded at the pinned versions below
#      and checked against the pinned module hashes.
#   4. TestDryRun: starts both on 127.0.0.1, installs the CRDs, dry-runs
#      testdata/manifests, the chart's rendering (when there is a chart)
#      and every directory in SLUICE_K8S_RENDERED (colon-separated).
#
# Everything it starts is stopped when it exits, however it exits.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

keda_module=github.com/kedacore/keda/v2@v2.21.0
keda_sum=h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps=
keda_crds=config/crd/bases/keda.sh_scaledobjects.yaml
promop_module=github.com/prometheus-operator/prometheus-operator@v0.92.0
promop_sum=h1:tAbsod3+9sQsxDeAvLP27dAe9terToht5M+YdDwLGP0=
promop_crds="example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"

work=$(mktemp -d)
pid=
cleanup() {
  # The test runs in its own process group: end it whole, with the etcd
  # and kube-apiserver it started.
  if [[ -n $pid ]]; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. etcd
etcd=${SLUICE_ETCD:-$(command -v etcd || true)}
if [[ -z $etcd ]]; then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "verify-k8s: no etcd: install Debian's etcd-server, or set SLUICE_ETCD to an etcd binary" >&2
    exit 1
  fi
  echo "verify-k8s: installing Debian's etcd-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  etcd=$(command -v etcd)
fi

# 2. kube-apiserver
apiserver=$("$here/build-apiserver.sh")

# 3. CRDs, from the module cache (downloaded there when missing)
module_dir() { # module@version expected-sum
  local json dir sum
  json=$(cd / && go mod download -json "$1")
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  if [[ $sum != "$2" ]]; then
    echo "verify-k8s: $1 has hash $sum, want $2" >&2
    return 1
  fi
  echo "$dir"
}
crds=
dir=$(module_dir "$keda_module" "$keda_sum")
for f in $keda_crds; do crds+="$dir/$f:"; done
dir=$(module_dir "$promop_module" "$promop_sum")
for f in $promop_crds; do crds+="$dir/$f:"; done

# 4. What to dry-run
manifests="$here/testdata/manifests"
if [[ -n ${SLUICE_K8S_RENDERED:-} ]]; then
  manifests+=":$SLUICE_K8S_RENDERED"
fi

# ---- HOOK(chart): connect the chart's renderer here -------------------
# Once charts/sluice exists, render_chart must write the chart's objects,
# one directory per values set (defaults, keda, hpa-off, existing-secret,
# ...), as YAML files under $1. The chart is rendered with the Helm SDK by
# its Go tests, so this is one go test call, e.g.
#   SLUICE_RENDER_DIR="$1" go -C "$root" test -count=1 -run '^TestRender' ./charts/...
# with the render test writing each values set's output there when
# SLUICE_RENDER_DIR is set.
render_chart() {
  SLUICE_RENDER_DIR="$1" go -C "$root" test -count=1 -run '^TestRenderToDir$' ./charts/ >/dev/null
}
# -----------------------------------------------------------------------
if [[ -d $root/charts/sluice ]]; then
  mkdir -p "$work/chart"
  render_chart "$work/chart"
  manifests+=":$work/chart"
fi

echo "verify-k8s: kube-apiserver $apiserver, $("$etcd" --version | head -1)"
# A hung start or request ends the test (-timeout) and with it both
# servers, which get SIGKILL when the test process dies.
set -m
SLUICE_KUBE_APISERVER=$apiserver SLUICE_ETCD=$etcd SLUICE_K8S_CRDS=${crds%:} \
  SLUICE_K8S_MANIFESTS=$manifests TMPDIR=$work \
  go test -count=1 -timeout 10m -v . &
pid=$!
wait "$pid"
