#!/usr/bin/env bash
# compare.sh: the side-by-side comparison, from a fresh clone, in one command.
#
# Builds xblade (release) and the independent load generator
# (benches/loadgen/loadgen.rs, plain rustc, no crates), then runs
# `xblade bench compare`: it builds its own link (namespaces xbc-t and
# xbc-i, veth xbct <-> xbci, MTU 1500 then 9000), backing files in
# /var/tmp (one in the page cache, one served with O_DIRECT -d), and runs
# the same workloads against vblade, xblade --datapath afpacket, xblade
# --datapath xdp --xdp-mode native and skb, and the null backend, target
# pinned to core 1 and bench to core 0, plus the loadgen cross-check.
#
# Usage: sudo bash benches/compare.sh [xblade bench compare options]
#   e.g. --cell 3s (measured seconds per cell), --full (every combination),
#        --out DIR, --cores TARGET,BENCH, --check-runs N
# Output: target/bench-compare/compare.{txt,json,svg} and cells/ (per-cell JSON).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "compare.sh: must run as root (network namespaces, raw sockets, XDP)" >&2
  exit 1
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for d in /usr/local/sbin /usr/sbin /sbin "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  if [[ -d $d && :$PATH: != *:$d:* ]]; then PATH=$PATH:$d; fi
done
export PATH

START=$SECONDS
for tool in ip taskset cargo rustc; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found (run scripts/setup.sh)" >&2; exit 1; }
done
if [[ ! -x /usr/sbin/vblade ]]; then
  echo "compare.sh: /usr/sbin/vblade not installed (apt-get install vblade): its rows will be n/a" >&2
fi

echo "compare.sh: building xblade (release) and benches/loadgen" >&2
cargo build --release --bin xblade --bin xblade-bench
mkdir -p target/loadgen
rustc -O --edition 2021 benches/loadgen/loadgen.rs -o target/loadgen/loadgen
echo "compare.sh: built in $((SECONDS - START)) s" >&2

target/release/xblade bench compare --loadgen target/loadgen/loadgen "$@"
echo "compare.sh: total $((SECONDS - START)) s (build included)" >&2
