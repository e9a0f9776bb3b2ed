#!/usr/bin/env bash
# demo.sh: xblade end to end on one machine, no hardware and no network needed.
#
#   netns xbdemo-i                                         netns xbdemo-t
#   aoetools (initiator) -- xbd-i <== veth, MTU 1500 ==> xbd-t -- xblade e1.1
#   xblade bench                (no IP addresses)              (64 MiB sparse file)
#
# Installs what is missing (scripts/setup.sh), builds the release binary,
# starts `xblade 1 1 xbd-t FILE` in xbdemo-t with the default datapath (auto:
# AF_XDP when the XDP program attaches, else AF_PACKET) and says which one it
# got and why. From xbdemo-i it then shows discovery (Query Config), ATA
# IDENTIFY and a config-string round trip with aoetools, and a verified
# read/write run with xblade bench --verify. Last, a short side-by-side on the
# same link: 1 KiB reads at window 64 against xblade, then against vblade
# serving the same file (target on one core, bench on the other, as in
# benches/compare.sh), with requests/s, latency and target CPU per request.
# Everything it creates (both namespaces, the backing file, the processes it
# started) is removed on any exit, Ctrl-C included. Must run as root.
#
# Usage: sudo bash scripts/demo.sh
# Environment:
#   XBLADE_BIN=PATH        demo this target binary instead of target/release/xblade
#                          (it gets the same arguments); skips the build
#   XBLADE_DEMO_NO_BUILD=1 do not run cargo build
#   XBLADE_DEMO_BENCH_SECS seconds measured per target in the side-by-side (default 3)
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: ERROR: must run as root (creates network namespaces): sudo bash scripts/demo.sh" >&2
  exit 1
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for d in /usr/local/sbin /usr/sbin /sbin "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  if [[ -d $d && :$PATH: != *:$d:* ]]; then PATH=$PATH:$d; fi
done
export PATH

TNS=xbdemo-t INS=xbdemo-i TIF=xbd-t IIF=xbd-i
SHELF=1 SLOT=1 SIZE=64M MTU=1500
BIN=${XBLADE_BIN:-${CARGO_TARGET_DIR:-target}/release/xblade}
BENCH_SECS=${XBLADE_DEMO_BENCH_SECS:-3}
VBLADE=/usr/sbin/vblade

target_pid="" target_start="" target_name=xblade backing="" tlog="" failures=0
bench_dir=""

# ---- cleanup: on every exit path ------------------------------------------------
# /proc/PID/stat field 22 (start time) identifies our process even if the pid
# were recycled after it exited: never signal a pid that is not the one we started.
start_time() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
still_ours() { [[ -n $target_pid && $(start_time "$target_pid") == "$target_start" ]]; }

# Stop the target we started (xblade or vblade): SIGTERM, then SIGKILL after 3 s.
stop_target() {
  if still_ours; then
    kill -TERM "$target_pid" 2>/dev/null
    for _ in $(seq 30); do still_ours || break; sleep 0.1; done
    if still_ours; then
      echo "demo.sh: $target_name (pid $target_pid) ignored SIGTERM for 3 s: SIGKILL" >&2
      kill -KILL "$target_pid" 2>/dev/null
    fi
  fi
  if [[ -n $target_pid ]]; then wait "$target_pid" 2>/dev/null || true; fi
  target_pid="" target_start=""
}

cleanup() {
  local rc=$?
  trap '' INT TERM HUP # finish cleaning up even if Ctrl-C is pressed again
  set +e
  stop_target
  for ns in "$TNS" "$INS"; do
    [[ -e /run/netns/$ns ]] && ip netns del "$ns"
  done
  [[ -n $backing ]] && rm -f "$backing"
  [[ -n $tlog ]] && rm -f "$tlog"
  [[ -n $bench_dir ]] && rm -rf "$bench_dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- output helpers -----------------------------------------------------------------
section() { printf '\n=== %s\n' "$*"; }
pass() { printf '    [PASS] %s\n' "$*"; }
fail() {
  printf '    [FAIL] %s\n' "$*"
  failures=$((failures + 1))
}
indent() { sed 's/^/    | /'; }
# Run a command in the initiator namespace, never longer than $1 seconds.
# --foreground keeps it in our process group, so Ctrl-C reaches it at once.
ini() {
  local secs=$1
  shift
  timeout --foreground --kill-after=2 "$secs" ip netns exec "$INS" "$@"
}

# Explain an aoetools exit status: 142 = its own -s alarm, 124 = our timeout.
why() {
  case $1 in
    124 | 142) echo ", timed out: no reply" ;;
    *) echo "" ;;
  esac
}

show_target_log() {
  if [[ -s $tlog ]]; then
    echo "    xblade log (last 30 lines):"
    tail -n 30 "$tlog" | indent
  fi
}

# ---- 1. setup and build ---------------------------------------------------------------
# setup.sh is idempotent and prints one line when everything is already present;
# on a fresh machine it installs clang, libelf, vblade, aoetools, ... first.
section "setup (scripts/setup.sh: installs what is missing)"
bash scripts/setup.sh
if [[ -z ${XBLADE_BIN:-} && ${XBLADE_DEMO_NO_BUILD:-0} != 1 ]]; then
  section "building xblade (cargo build --release)"
  cargo build --release --quiet
fi
[[ -x $BIN ]] || {
  echo "demo.sh: ERROR: $BIN not found or not executable" >&2
  exit 1
}

# ---- 2. network: two namespaces joined by a veth pair -----------------------------
section "network: $INS/$IIF <== veth (MTU $MTU, no IP) ==> $TNS/$TIF"
for ns in "$TNS" "$INS"; do # leftovers of an earlier run that was killed hard
  if [[ -e /run/netns/$ns ]]; then ip netns del "$ns"; fi
done
for ns in "$TNS" "$INS"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  if [[ -d /proc/sys/net/ipv6 ]]; then # no IPv6 chatter on the demo link
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1
  fi
done
ip link add name "$TIF" netns "$TNS" mtu "$MTU" type veth peer name "$IIF" netns "$INS" mtu "$MTU"
ip -n "$TNS" link set "$TIF" up
ip -n "$INS" link set "$IIF" up
tmac=$(ip -n "$TNS" -o link show dev "$TIF" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
imac=$(ip -n "$INS" -o link show dev "$IIF" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')
echo "    target    $TNS  $TIF  $tmac"
echo "    initiator $INS  $IIF  $imac"

# ---- 3. backing file and target ---------------------------------------------------
# Target on one core, bench on another (as benches/compare.sh does): on veth
# both ends run on the sender's core otherwise, and the figures mean little.
ncpu=$(nproc)
if ((ncpu >= 2)); then
  TCORE=1 BCORE=0
  pin_target=(taskset -c "$TCORE")
  bench_pin=(--cores "$BCORE")
else
  pin_target=() bench_pin=()
fi

backing=$(mktemp /var/tmp/xblade-demo.XXXXXX.img)
truncate -s "$SIZE" "$backing"
tlog=$(mktemp /tmp/xblade-demo.XXXXXX.log)
bench_dir=$(mktemp -d /tmp/xblade-demo-bench.XXXXXX)

# start_target NAME CMD...: start CMD in the target namespace (pinned), logging
# to $tlog, and wait until it serves. xblade is ready once its control socket
# answers `xblade status` (both datapaths); anything else (vblade, a wrapper
# in XBLADE_BIN) once it has a packet socket open in the namespace
# (/proc/net/packet lists the sockets of the reader's namespace; only the
# target runs there).
start_target() {
  target_name=$1
  shift
  : >"$tlog"
  # `ip netns exec` and taskset exec in place, so $! is the target's own pid.
  ip netns exec "$TNS" "${pin_target[@]}" "$@" >"$tlog" 2>&1 </dev/null &
  target_pid=$!
  target_start=$(start_time "$target_pid")
  local sock=/run/xblade/xblade-$target_pid.sock
  for _ in $(seq 150); do
    if ! still_ours; then
      echo "    $target_name exited during startup"
      wait "$target_pid" || echo "    exit status $?"
      target_pid=""
      show_target_log
      return 1
    fi
    if [[ -S $sock ]] && "$XB" status --socket "$sock" >/dev/null 2>&1; then
      return 0
    fi
    if [[ $target_name != xblade || -n ${XBLADE_BIN:-} ]] &&
      ip netns exec "$TNS" awk 'NR > 1 { found = 1 } END { exit !found }' /proc/net/packet; then
      sleep 0.2 # let it finish starting after the socket exists
      return 0
    fi
    sleep 0.1
  done
  echo "    $target_name (pid $target_pid) was not serving within 15 s"
  show_target_log
  return 1
}

# The client side always uses the freshly built binary (bench, status).
XB=$(realpath -m "${CARGO_TARGET_DIR:-target}/release/xblade")
args=("$SHELF" "$SLOT" "$TIF" "$backing")
section "target: $BIN ${args[*]}  (in $TNS${pin_target:+, pinned to core $TCORE}; default datapath: auto)"
start_target xblade "$BIN" "${args[@]}" || exit 1
echo "    running, pid $target_pid, exporting e$SHELF.$SLOT ($SIZE sparse file $backing)"

# Which datapath it got, and why: its own log lines, and its status.
datapath=unknown
sock=/run/xblade/xblade-$target_pid.sock
if [[ -S $sock ]]; then
  section "datapath: what xblade chose (its log, then xblade status)"
  sleep 0.5 # workers publish their state (XDP mode, zero-copy) shortly after they start
  grep -E 'XDP|AF_XDP|zero-copy|copy mode|datapath|AF_PACKET' "$tlog" |
    sed -E 's/^[0-9T:.-]+Z +//' | indent || true
  status=$("$XB" status --socket "$sock" 2>&1) || true
  awk '/^interfaces:/ { on = 1 } on' <<<"$status" | indent
  datapath=$(sed -n 's/.*datapath \([a-z_]*\).*/\1/p' <<<"$status" | head -n 1)
  mode=$(awk '/^interfaces:/ { getline; print $3; exit }' <<<"$status")
  case $datapath in
    xdp) pass "serving on the AF_XDP datapath (XDP $mode mode): AoE frames go from the XDP program straight to xblade's worker, the kernel's network stack never sees them" ;;
    afpacket) pass "serving on the AF_PACKET datapath: XDP did not attach here (the log above says why), so xblade fell back" ;;
    *) fail "could not tell which datapath xblade serves on" ;;
  esac
fi

# ---- 4. checks from the initiator namespace ---------------------------------------
run_check() {
  # aoetools first (an independent implementation), then our own initiator
  # for a verified read/write run.
  local out rc cfg

  section "discovery: aoecfg broadcast Query Config (any shelf, any slot)"
  rc=0
  out=$(ini 10 aoecfg -t 3 "$IIF" 2>&1) || rc=$?
  [[ -n $out ]] && indent <<<"$out"
  if [[ $rc -eq 0 ]] && grep -q "^$SHELF\.$SLOT" <<<"$out"; then
    pass "e$SHELF.$SLOT answered the broadcast"
  else
    fail "no Query Config reply from e$SHELF.$SLOT (aoecfg rc=$rc$(why $rc))"
  fi

  section "Query Config reply: aoeping -v $SHELF $SLOT $IIF"
  rc=0
  out=$(ini 10 aoeping -v -s 5 "$SHELF" "$SLOT" "$IIF" 2>&1) || rc=$?
  [[ -n $out ]] && indent <<<"$out"
  if [[ $rc -eq 0 ]] && grep -q "found e$SHELF\.$SLOT with mac ${tmac//:/}" <<<"$out"; then
    pass "found e$SHELF.$SLOT at the target's MAC $tmac"
  else
    fail "aoeping Query Config (rc=$rc$(why $rc))"
  fi

  section "ATA IDENTIFY DEVICE: aoeping -I $SHELF $SLOT $IIF"
  rc=0
  out=$(ini 10 aoeping -I -s 5 "$SHELF" "$SLOT" "$IIF" 2>&1) || rc=$?
  [[ -n $out ]] && indent <<<"$out"
  if [[ $rc -eq 0 ]] && grep -q "^model:" <<<"$out"; then
    pass "IDENTIFY answered"
  else
    fail "aoeping IDENTIFY (rc=$rc$(why $rc))"
  fi

  # At least 28 bytes, so the reply is a 60-byte frame even from a target that
  # does not pad (aoetools ignore frames under 60 bytes): the demo also works
  # against vblade (XBLADE_BIN=a wrapper) as a reference.
  cfg=$(printf 'xblade-demo-config-str-%08d' $$)
  section "config string: aoecfg -c fset -s $cfg, then read it back"
  rc=0
  out=$(ini 10 aoecfg -c fset -s "$cfg" -t 2 "$SHELF" "$SLOT" "$IIF" 2>&1) || rc=$?
  [[ -n $out ]] && indent <<<"$out"
  out=$(ini 10 aoecfg -t 2 "$SHELF" "$SLOT" "$IIF" 2>&1) || rc=$?
  [[ -n $out ]] && indent <<<"$out"
  if [[ $rc -eq 0 && $out == "$cfg" ]]; then
    pass "config string stored and read back"
  else
    fail "config string round trip (rc=$rc, read back: '${out}')"
  fi

  section "read/write: xblade bench --op mix:70 --bytes 1k --duration 2s --verify (every byte read back checked)"
  rc=0
  out=$(ini 30 "$XB" bench -q --iface "$IIF" --target "$SHELF.$SLOT" --op mix:70 \
    --bytes 1k --window 16 --duration 2s --verify --lba-range 8M --target-pid "$target_pid" 2>&1) || rc=$?
  [[ -n $out ]] && indent <<<"$out"
  if [[ $rc -eq 0 ]]; then
    pass "verified reads and writes, no error"
  else
    fail "xblade bench --verify (rc=$rc$(why $rc))"
  fi
}
run_check

if still_ours; then
  pass "xblade still running after the checks"
else
  fail "xblade exited during the checks"
  show_target_log
fi

# ---- 5. side by side: xblade, then vblade, on the same link ------------------------
# bench_one LABEL JSON: 1 KiB reads at window 64 for BENCH_SECS against the
# target now running, over the 8 MiB the verified run wrote (in the page cache
# for both), the bench spinning on its own core (as benches/compare.sh does).
bench_one() {
  local label=$1 json=$2 rc=0 out
  out=$(ini $((BENCH_SECS + 30)) "$XB" bench -q --iface "$IIF" --target "$SHELF.$SLOT" --op read \
    --bytes 1k --window 64 --duration "${BENCH_SECS}s" --warmup 500ms --lba-range 8M --busy-poll \
    "${bench_pin[@]}" --target-pid "$target_pid" --json "$json" 2>&1) || rc=$?
  if [[ $rc -ne 0 || ! -s $json ]]; then
    [[ -n $out ]] && indent <<<"$out"
    fail "xblade bench against $label (rc=$rc$(why $rc))"
    return 1
  fi
  pass "$label: measured ${BENCH_SECS} s"
}

xlabel="xblade ($datapath${mode:+ $mode})"
section "side by side on this link: 1 KiB reads, window 64, ${BENCH_SECS} s each${pin_target:+ (target on core $TCORE, bench on core $BCORE)}"
compared=0
if bench_one "$xlabel" "$bench_dir/xblade.json"; then
  stop_target
  if [[ ! -x $VBLADE ]]; then
    fail "$VBLADE not installed (scripts/setup.sh installs the vblade package)"
  elif start_target vblade "$VBLADE" -b 64 "$SHELF" "$SLOT" "$TIF" "$backing"; then
    if bench_one "vblade" "$bench_dir/vblade.json"; then
      compared=1
    fi
    stop_target
  else
    fail "vblade did not start"
  fi
fi
if ((compared)); then
  python3 - "$bench_dir/xblade.json" "$bench_dir/vblade.json" "$xlabel" <<'PY' | indent
import json, sys
x, v = (json.load(open(f)) for f in sys.argv[1:3])
def row(name, r):
    cpu = (r.get("target_cpu") or {}).get("cpu", {}).get("ns_per_request")
    lat = r["latency_us"]
    return [name, f'{r["requests_per_s"]:,.0f}', f'{lat["p50"]:.0f} µs', f'{lat["p99"]:.0f} µs',
            f"{cpu:,.0f} ns" if cpu else "-", str(r["errors"])]
rows = [["target", "requests/s", "p50", "p99", "target CPU/request", "errors"],
        row(sys.argv[3], x), row("vblade", v)]
xc = (x.get("target_cpu") or {}).get("cpu", {}).get("ns_per_request")
vc = (v.get("target_cpu") or {}).get("cpu", {}).get("ns_per_request")
rows.append(["xblade / vblade", f'{x["requests_per_s"] / v["requests_per_s"]:.2f}x',
             f'{x["latency_us"]["p50"] / v["latency_us"]["p50"]:.2f}x',
             f'{x["latency_us"]["p99"] / v["latency_us"]["p99"]:.2f}x',
             f"{xc / vc:.2f}x" if xc and vc else "-", ""])
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for i, r in enumerate(rows):
    print("  ".join(c.ljust(w[k]) if k == 0 else c.rjust(w[k]) for k, c in enumerate(r)).rstrip())
    if i == 0 or i == len(rows) - 2:
        print("  ".join("-" * n for n in w))
PY
  echo "    (a few seconds on one veth pair: read the ratio as a rough figure; the full comparison, every"
  echo "     workload and datapath with repeated cells, is: sudo bash benches/compare.sh)"
fi

# ---- 6. result ----------------------------------------------------------------------
section "result"
if ((failures > 0)); then
  show_target_log
  echo
  echo "demo: $failures check(s) FAILED"
  exit 1
fi
cat <<EOF

demo: all checks passed (cleaning up: namespaces, backing file, the targets it started)

Next, on a real network (see README.md):
  xblade 1 1 eth1 /srv/aoe/disk1.img     # serve a file or block device on eth1 (vblade's command line)
  xblade status                          # exports, datapath and per-queue counters of every running xblade
  sudo bash benches/compare.sh           # the full comparison against vblade (about 2 minutes)
EOF
