#!/usr/bin/env bash
# protocols.sh: AoE against iSCSI and NBD, measured on one link (issue 26).
#
# Builds its own link (namespaces xp-t and xp-i, veth xpt <-> xpi, IPv4
# link-local addresses 169.254.213.1/.2 on the veth only, no route out), one
# backing file (/var/tmp/xp-protocols.PID.img, 256 MiB, in the page cache or
# dropped from it for the O_DIRECT rows), and runs in turn:
#   AoE    xblade --datapath xdp (native), xblade --datapath afpacket
#          (1 KiB only), vblade -b 64                    <- xblade bench
#   iSCSI  tgtd (tgt, rdwr backing store)                <- iscsi-perf (reads),
#                                                           qemu-img bench (writes)
#   NBD    nbdkit file plugin; qemu-nbd --cache=none     <- fio --ioengine=nbd
# target pinned to core 1, initiator to core 0: reads and writes, 1 KiB at
# MTU 1500, 4 KiB and 8 KiB at MTU 9000, depth 1 and 64, page cache and
# O_DIRECT (4 KiB) where the target can. Per row: requests/s, MB/s, p50/p99
# (xblade bench and fio), target and initiator CPU per request, TCP
# retransmits, and a check of the request count against the link's own
# frame (AoE) or byte (TCP) counters. Medians and ranges over repetitions.
#
# Usage: sudo bash benches/protocols.sh
# Environment:
#   PROTOCOLS_SMOKE=1     a few seconds: every target and initiator once
#   PROTOCOLS_CELL=S      seconds per cell (default 0.7; iscsi-perf: whole seconds, at least 1)
#   PROTOCOLS_REPS=N      repetitions of every cell (default 3)
#   PROTOCOLS_TARGETS=..  comma-separated subset ("xblade XDP,tgtd")
#   PROTOCOLS_CORES=T,I   target and initiator cores (default 1,0)
#   PROTOCOLS_OUT=DIR     output (default target/protocols)
#   XBLADE_BIN=PATH       use this xblade instead of building one
# Output: DIR/protocols.{txt,md,json,svg}, DIR/protocols-readme.md (the
# rows README "AoE or iSCSI?" shows, also printed at the end) and DIR/cells/
# (logs and raw JSON of every cell). Exit status 1 if any row failed or
# disagreed with the link's counters. Afterwards, without measuring:
#   python3 benches/protocols.py --render DIR/protocols.json   (tables again)
#   python3 benches/protocols.py --ranges A/protocols.json B/protocols.json ...
#     (README's table of ranges over several runs) Everything it starts or creates is removed on exit,
# including on SIGINT/SIGTERM.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "protocols.sh: must run as root (network namespaces, raw sockets, XDP)" >&2
  exit 1
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for d in /usr/local/sbin /usr/sbin /sbin "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  if [[ -d $d && :$PATH: != *:$d:* ]]; then PATH=$PATH:$d; fi
done
export PATH
START=$SECONDS

# A missing tool is an error, never a silently skipped row.
missing=()
for tool in ip taskset python3 vblade tgtd tgtadm iscsi-perf qemu-img qemu-nbd nbdkit fio; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
  echo "protocols.sh: missing: ${missing[*]} (run scripts/setup.sh)" >&2
  exit 1
fi
if [[ ! -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ]] && ! qemu-img --help | grep -q 'formats:.* iscsi'; then
  echo "protocols.sh: qemu-img has no iscsi driver (apt-get install qemu-block-extra)" >&2
  exit 1
fi

if [[ -z ${XBLADE_BIN:-} ]]; then
  echo "protocols.sh: building xblade (release)" >&2
  cargo build --release --bin xblade --bin xblade-bench
  XBLADE_BIN=$PWD/target/release/xblade
fi
[[ -x $XBLADE_BIN ]] || {
  echo "protocols.sh: $XBLADE_BIN is not an executable" >&2
  exit 1
}

OUT=${PROTOCOLS_OUT:-target/protocols}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PIDFILE=$OUT/xp-pids
FILE=/var/tmp/xp-protocols.$$.img
TGT_PORT=${PROTOCOLS_TGT_PORT:-7213}
for ns in xp-t xp-i; do
  if [[ -e /run/netns/$ns ]]; then
    echo "protocols.sh: network namespace $ns exists: another run of this script? (else: ip netns del $ns)" >&2
    exit 1
  fi
done
if [[ -e /var/run/tgtd/socket.$TGT_PORT ]]; then
  echo "protocols.sh: /var/run/tgtd/socket.$TGT_PORT exists: a tgtd uses control port $TGT_PORT (set PROTOCOLS_TGT_PORT)" >&2
  exit 1
fi
: >"$PIDFILE"
PY=

# From here on xp-t, xp-i and the tgtd control socket are this run's.
# Whatever happens to the driver: stop what it started (pid and start time
# recorded, so a recycled pid is never hit), remove the link and the files.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $PY ]] && kill -0 "$PY" 2>/dev/null; then
    kill -TERM "$PY" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PY" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PY" 2>/dev/null || true
  fi
  if [[ -s $PIDFILE ]]; then
    while read -r pid st; do
      [[ -r /proc/$pid/stat ]] || continue
      now=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f20)
      [[ $now == "$st" ]] && kill -KILL "$pid" 2>/dev/null || true
    done <"$PIDFILE"
  fi
  ip netns del xp-t 2>/dev/null || true
  ip netns del xp-i 2>/dev/null || true
  rm -f "$FILE" "$PIDFILE" "$OUT/xp-xblade.sock" "/var/run/tgtd/socket.$TGT_PORT" "/var/run/tgtd/socket.$TGT_PORT.lock"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background, so that a TERM reaches the trap at once rather than
# after the driver finished.
PROTOCOLS_OUT=$OUT PROTOCOLS_PIDFILE=$PIDFILE PROTOCOLS_FILE=$FILE PROTOCOLS_TGT_PORT=$TGT_PORT \
  XBLADE_BIN=$XBLADE_BIN PROTOCOLS_GIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
  PYTHONDONTWRITEBYTECODE=1 python3 benches/protocols.py &
PY=$!
set +e
wait "$PY"
rc=$?
set -e
PY=
echo "protocols.sh: total $((SECONDS - START)) s" >&2
exit "$rc"
