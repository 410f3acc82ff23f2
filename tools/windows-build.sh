#!/bin/sh
# Cross-build and vet the whole module for Windows (the HNS dataplane's real client lives behind
# //go:build windows). On failure it lists the packages that do not compile for Windows and
# exits 1. Usage: tools/windows-build.sh [PACKAGES...]   (default ./...)
set -u
cd "$(dirname "$0")/.."
GO=${GO:-go}
[ $# -gt 0 ] || set -- ./...
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for step in build vet; do
	echo "GOOS=windows GOARCH=amd64 $GO $step $*"
	if ! GOOS=windows GOARCH=amd64 "$GO" "$step" "$@" >"$out" 2>&1; then
		cat "$out" >&2
		echo "windows $step failed; packages that do not compile for Windows:" >&2
		grep '^# ' "$out" | sed 's/^# /  /' | sort -u >&2
		exit 1
	fi
done
echo "windows build and vet: ok"
