#!/usr/bin/env bash
# Builds kube-apiserver from the k8s.io/kubernetes module that go.mod beside
# this script pins, into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/sluice/kube-apiserver-<version>
# unless it is there already, and prints that path. The first build
# compiles about 2,000 packages (see docs/operations.md, "Validating the
# deploy files", for how long that takes); later runs reuse the binary.
#
# With --cached it builds nothing: it prints the path and exits 0 if the
# binary is there, exits 1 if not (.ci/run decides on that).
#
# BUILD_PROCS (default 2) is go build -p: the machine is shared, and the
# build runs under nice for the same reason.
set -euo pipefail
cd "$(dirname "$0")"

version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/sluice"
bin="$cache/kube-apiserver-$version"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi
if [[ ${1:-} == --cached ]]; then
  exit 1
fi

mkdir -p "$cache"
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "build-apiserver: building kube-apiserver $version into $cache (once; a cold build takes minutes)" >&2
start=$SECONDS
# The version variables are the ones Kubernetes' own build sets; without
# them the server reports v0.0.0-master.
pkg=k8s.io/component-base/version
minor=${version#v*.}
minor=${minor%%.*}
nice -n 10 go build -p "${BUILD_PROCS:-2}" -trimpath \
  -ldflags "-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
  -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$tmp" "$bin"
echo "build-apiserver: built in $((SECONDS - start)) s" >&2
echo "$bin"
