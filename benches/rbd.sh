#!/usr/bin/env bash
# rbd.sh: an xblade gateway on Ceph RBD against librbd's own `rbd bench`, same
# image, same request size and queue depth, in one run: the gateway's throughput as
# a fraction of librbd's.
#
# Builds its own throwaway one-node cluster (../shared/tools/ceph-one-node.sh, memstore
# OSD, every daemon on 127.0.0.1 of namespace xbrb-t) and a veth link xbrbt <-> xbrbi
# (namespaces xbrb-t and xbrb-i, MTU 9000 so that one AoE request carries 4 KiB).
# For each workload (4 KiB random reads, then writes, queue depth 64), interleaved
# RUNS times: `rbd bench` in xbrb-t, then `xblade bench` from xbrb-i against
# `xblade --datapath DP 1 1 xbrbt rbd:rbd/bench` in xbrb-t. The gateway process and
# librbd share the same two cores with the OSD: compare rows of one run only.
#
# Usage: sudo [XBLADE_BIN=PATH] bash benches/rbd.sh [--secs N] [--runs N] [--datapath xdp|afpacket]
# Output: a table on stdout, and target/bench-rbd/rbd.txt.
set -euo pipefail

SECS=5 RUNS=2 DP=xdp
while [[ $# -gt 0 ]]; do
  case $1 in
    --secs) SECS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --datapath) DP=$2; shift 2 ;;
    *) echo "rbd.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "rbd.sh: must run as root" >&2; exit 1; }
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOOL=${CEPH_ONE_NODE:-../shared/tools/ceph-one-node.sh}
[[ -r $TOOL ]] || { echo "rbd.sh: no $TOOL (set CEPH_ONE_NODE)" >&2; exit 1; }
for c in rbd ceph-mon ceph-osd ip python3; do
  command -v "$c" >/dev/null || { echo "rbd.sh: $c not found (run scripts/setup.sh)" >&2; exit 1; }
done
# XBLADE_BIN: another build to measure (say main's, to compare: gateway leases
# are always on for a writable rbd: export); else this tree's, built here.
if [[ -n ${XBLADE_BIN:-} ]]; then
  XB=$XBLADE_BIN
else
  cargo build --release --bin xblade --bin xblade-bench >&2
  XB=$PWD/target/release/xblade
fi
OUT=target/bench-rbd
mkdir -p "$OUT"
W=$(mktemp -d /var/tmp/xblade-rbdbench.XXXXXX)
NT=xbrb-t NI=xbrb-i
GW=
cleanup() {
  set +e
  [[ -n $GW ]] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null
  [[ -d $W/ceph ]] && ip netns exec "$NT" timeout 30 bash "$TOOL" down "$W/ceph" >/dev/null 2>&1
  ip netns del "$NT" 2>/dev/null
  ip netns del "$NI" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NT"
ip netns add "$NI"
ip link add xbrbt netns "$NT" mtu 9000 type veth peer name xbrbi netns "$NI" mtu 9000
for n in "$NT" "$NI"; do ip -n "$n" link set lo up; done
ip -n "$NT" link set xbrbt up
ip -n "$NI" link set xbrbi up

eval "$(ip netns exec "$NT" timeout 120 bash "$TOOL" up "$W/ceph" --image bench:1G 2>"$W/up.log")" ||
  { cat "$W/up.log" >&2; exit 1; }
export CEPH_CONF
rbdx() { ip netns exec "$NT" timeout $((SECS * 4 + 60)) rbd "$@"; }
# Fill the image once so that reads hit written objects on both sides.
rbdx bench --io-type write --io-size 4M --io-threads 4 --io-total 1G --io-pattern seq rbd/bench >/dev/null

librbd() { # TYPE: "ops/s cpu_us_per_op" of rbd bench (4 KiB random, 64 in flight) over SECS s
  # rbd bench runs to --io-total: stop it after SECS s, rate its last progress
  # line ("SEC OPS OPS/SEC BYTES/SEC") and take its CPU time from wait4.
  ip netns exec "$NT" python3 - "$SECS" "$1" "$W/rbd-$1.log" <<'PY'
import os, re, signal, subprocess, sys, time
secs, kind, log = float(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(log, "w") as out:
    p = subprocess.Popen(["rbd", "bench", "--io-type", kind, "--io-size", "4K", "--io-threads", "64",
                          "--io-pattern", "rand", "--io-total", "100G", "rbd/bench"],
                         stdout=out, stderr=subprocess.STDOUT)
    time.sleep(secs)
    p.send_signal(signal.SIGINT)
    _, _, ru = os.wait4(p.pid, 0)
s = o = 0
for line in open(log):
    f = line.split()
    if len(f) >= 4 and f[0].isdigit():
        s, o = int(f[0]), int(f[1])
print(f"{o / s:.0f} {(ru.ru_utime + ru.ru_stime) / max(o, 1) * 1e6:.1f}" if s else "0 0")
PY
}

gateway_start() {
  local dpargs=(--datapath "$DP")
  [[ $DP == xdp ]] && dpargs+=(--xdp-mode native)
  ip netns exec "$NT" "$XB" "${dpargs[@]}" 1 1 xbrbt rbd:rbd/bench >"$W/gw.log" 2>&1 &
  GW=$!
  for _ in $(seq 100); do grep -q 'xblade serving' "$W/gw.log" && return 0; sleep 0.1; done
  cat "$W/gw.log" >&2
  exit 1
}
gateway() { # OP: req/s of xblade bench through the gateway
  ip netns exec "$NI" "$XB" bench --iface xbrbi --target 1.1 --op "$1" --bytes 4k --window 64 \
    --duration "${SECS}s" --warmup 1s --target-pid "$GW" --json "$W/xb-$1.json" >"$W/xb-$1.log" 2>&1 ||
    { cat "$W/xb-$1.log" >&2; exit 1; }
  python3 -c 'import json,sys; r = json.load(open(sys.argv[1]))
print(round(r["requests_per_s"]), round(r["target_cpu"]["cpu"]["ns_per_request"] / 1000, 1))' "$W/xb-$1.json"
}

gateway_start
{
  echo "# xblade gateway ($DP) on Ceph RBD vs librbd's rbd bench: 4 KiB random, 64 in flight, ${SECS} s"
  echo "# $(date -u +%F) $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); one-node memstore cluster on 127.0.0.1"
  printf '%-6s %-4s %12s %12s %8s %16s %16s\n' workload run "rbd bench" gateway ratio "librbd CPU/op" "gateway CPU/op"
  for r in $(seq "$RUNS"); do
    for op in read write; do
      read -r lib libcpu <<<"$(librbd "$op")"
      read -r gw gwcpu <<<"$(gateway "$op")"
      printf '%-6s %-4s %12.0f %12.0f %7.2fx %13.1f us %13.1f us\n' "$op" "$r" "$lib" "$gw" \
        "$(python3 -c "print($gw / max($lib, 1))")" "$libcpu" "$gwcpu"
    done
  done
} | tee "$OUT/rbd.txt"
