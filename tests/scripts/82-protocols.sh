#!/usr/bin/env bash
# 82-protocols.sh: benches/protocols.sh (AoE against iSCSI and NBD) cannot rot.
#
#  1. its smoke mode (PROTOCOLS_SMOKE=1: every target and every initiator once,
#     0.3 s cells, a 32 MiB file) exits 0: xblade XDP and AF_PACKET and vblade
#     under xblade bench, tgtd under iscsi-perf and qemu-img bench, nbdkit and
#     qemu-nbd under fio's nbd engine, at MTU 1500 and 9000, page cache and
#     O_DIRECT; every row agrees with the link's frame or byte counters;
#     protocols.{txt,md,json,svg} are written, the JSON has every target, the
#     markdown table its header, the SVG parses;
#  2. a run stopped by SIGTERM in the middle leaves nothing behind;
#  3. after both: no netns xp-t/xp-i, no backing file, no tgtd control socket,
#     no process of the run;
#  4. --render and --ranges work from the run's JSON.
# About 15 s. Output and logs: a scratch dir in /var/tmp, removed at the end
# (kept and printed on failure).
set -euo pipefail
export LC_ALL=C
for d in /usr/local/sbin /usr/sbin /sbin "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  [[ -d $d && :$PATH: != *:$d:* ]] && PATH=$PATH:$d
done
ROOT=${XBLADE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BIN=${XBLADE_BIN:-$ROOT/target/release/xblade}
T0=$SECONDS
W='' BG=''
log() { printf '[82-protocols +%ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
  printf '[82-protocols +%ds] FAIL: %s\n' "$((SECONDS - T0))" "$*" >&2
  exit 1
}
cleanup() {
  local rc=$?
  set +e
  if [[ -n $BG ]]; then
    kill -TERM "$BG" 2>/dev/null
    wait "$BG" 2>/dev/null
  fi
  if ((rc == 0)); then
    [[ -n $W ]] && rm -rf "$W"
    echo "[82-protocols] all passed in $((SECONDS - T0))s"
  else
    [[ -n $W ]] && echo "[82-protocols] logs kept in $W" >&2
    echo "[82-protocols] FAILED (exit $rc)" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
[[ $EUID -eq 0 ]] || die "must run as root (network namespaces)"
[[ -x $BIN ]] || die "$BIN missing: build first (cargo build --release)"
W=$(mktemp -d /var/tmp/xp-82.XXXXXX)

# Nothing of a protocols run may be left: namespaces, file, tgtd socket, processes.
nothing_left() {
  local what=$1 p
  for ns in xp-t xp-i; do
    [[ ! -e /run/netns/$ns ]] || die "$what: netns $ns left behind"
  done
  compgen -G '/var/tmp/xp-protocols.*.img' >/dev/null && die "$what: backing file left: $(ls /var/tmp/xp-protocols.*.img)"
  [[ ! -e /var/run/tgtd/socket.7213 ]] || die "$what: tgtd control socket left"
  p=$(pgrep -af 'xp-protocols\.|tgtd -f -C 7213|protocols\.py' || true)
  [[ -z $p ]] || die "$what: processes left: $p"
}

# -- 1. smoke run -------------------------------------------------------------------------
log "smoke run"
if ! PROTOCOLS_SMOKE=1 XBLADE_BIN=$BIN PROTOCOLS_OUT=$W/out bash "$ROOT/benches/protocols.sh" >"$W/smoke.out" 2>"$W/smoke.err"; then
  tail -n 40 "$W/smoke.err" "$W/smoke.out" >&2
  die "PROTOCOLS_SMOKE=1 benches/protocols.sh failed"
fi
grep -E '^protocols: \[' "$W/smoke.err" || true
for f in protocols.txt protocols.md protocols-readme.md protocols.json protocols.svg; do
  [[ -s $W/out/$f ]] || die "$f not written"
done
grep -q '^| workload | target (initiator) | req/s' "$W/out/protocols.md" || die "markdown table header missing"
grep -q '^Ready to paste' "$W/smoke.out" || die "no ready-to-paste table on stdout"
python3 - "$W/out" <<'EOF' || die "protocols.json / protocols.svg check"
import json, sys, xml.etree.ElementTree as ET
out = sys.argv[1]
d = json.load(open(f"{out}/protocols.json"))
rows = d["rows"]
want = {"xblade XDP", "xblade AF_PACKET", "vblade", "tgtd", "nbdkit", "qemu-nbd"}
got = {r["target"] for r in rows}
assert got == want, f"targets {sorted(got)} != {sorted(want)}"
inits = {r["initiator"] for r in rows}
assert inits == {"xblade bench", "iscsi-perf", "qemu-img bench", "fio --ioengine=nbd"}, inits
for r in rows:
    name = f"{r['target']} / {r['workload']}"
    assert not r["failed"], f"{name}: {r['failed']}"
    assert r["count_check"]["ok"], f"{name}: {r['count_check']}"
    assert r["requests_per_s"]["median"] > 0, name
    assert r["target_cpu_ns_per_request"]["median"] > 0, name
    assert r["initiator_cpu_ns_per_request"]["median"] > 0, name
    if r["protocol"] != "AoE":
        assert r["tcp_retransmits"] is not None, name
assert {r["mtu"] for r in rows} == {1500, 9000}
assert {r["backing"] for r in rows} == {"page", "direct"}
ET.parse(f"{out}/protocols.svg")
print(f"  {len(rows)} rows ok")
EOF
# The modes that work from a run's JSON alone.
cp "$W/out/protocols.txt" "$W/first.txt"
python3 "$ROOT/benches/protocols.py" --render "$W/out/protocols.json" >"$W/render.out" || die "--render failed"
cmp -s "$W/out/protocols.txt" "$W/first.txt" || die "--render wrote a different protocols.txt"
python3 "$ROOT/benches/protocols.py" --ranges "$W/out/protocols.json" "$W/out/protocols.json" >"$W/ranges.out" ||
  die "--ranges failed"
grep -q '^| xblade XDP (AoE) | [0-9]' "$W/ranges.out" || die "--ranges printed no xblade row: $(cat "$W/ranges.out")"
nothing_left "after the smoke run"

# -- 2. stopped in the middle -------------------------------------------------------------
log "SIGTERM in the middle of a run"
PROTOCOLS_SMOKE=1 XBLADE_BIN=$BIN PROTOCOLS_OUT=$W/out2 PROTOCOLS_TARGETS="tgtd,nbdkit" \
  bash "$ROOT/benches/protocols.sh" >"$W/term.out" 2>"$W/term.err" &
BG=$!
for _ in $(seq 200); do
  pgrep -f 'tgtd -f -C 7213' >/dev/null && break
  kill -0 "$BG" 2>/dev/null || break
  sleep 0.05
done
pgrep -f 'tgtd -f -C 7213' >/dev/null || die "tgtd never started: $(tail -n 5 "$W/term.err")"
sleep 0.5
kill -TERM "$BG"
rc=0
wait "$BG" || rc=$?
# (wait can return before the script's EXIT trap finished: wait for the pid.)
for _ in $(seq 300); do kill -0 "$BG" 2>/dev/null || break; sleep 0.1; done
kill -0 "$BG" 2>/dev/null && die "protocols.sh still running 30 s after SIGTERM"
BG=''
((rc != 0)) || die "a run stopped by SIGTERM exited 0"
nothing_left "after SIGTERM"
log "stopped run exited $rc and left nothing"
