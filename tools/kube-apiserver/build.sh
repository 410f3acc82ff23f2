#!/bin/sh
# Builds kube-apiserver v1.36.3 (for the datastore/kubernetes integration tests) and prints the
# path of the binary. The binary is kept in $FELIS_TOOLS_BIN (default: ./bin next to this script),
# so later runs only check that it exists; the Go build cache makes a rebuild after a clean cheap.
# Exit status 0 with the path on stdout, non-zero with the reason on stderr.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=v1.36.3
bindir=${FELIS_TOOLS_BIN:-$here/bin}
out=$bindir/kube-apiserver-$version
if [ -x "$out" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$bindir"
cd "$here"
# -mod=mod: the module's go.sum is committed; GOFLAGS from the caller (e.g. -mod=vendor) must
# not apply to this separate module.
# Build to a private name and rename: concurrent runs (two test binaries) never see half a file.
tmp=$(mktemp "$bindir/.kube-apiserver.XXXXXX")
trap 'rm -f "$tmp"' EXIT
GOFLAGS=-mod=mod GOWORK=off go build -trimpath -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
chmod +x "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
