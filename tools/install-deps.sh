#!/usr/bin/env bash
# Installs the Debian packages felis's tests and tools need, only those that are missing.
# Needs root for apt-get; as a normal user it only reports what is missing (root-only tests
# skip with a message in that case).
set -euo pipefail

# command -> Debian package
declare -A want=(
  [nft]=nftables
  [ip]=iproute2
  [iptables-legacy]=iptables
  [iptables-nft]=iptables
  [ipset]=ipset
  [clang-14]=clang-14
  [llvm-strip]=llvm
  [bpftool]=bpftool
)

missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
# headers without a command: the BPF C programs need libbpf's
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (need root to install): ${missing[*]}" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
