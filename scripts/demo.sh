#!/usr/bin/env bash
# demo.sh: xblade end to end on one machine, no hardware and no network needed.
#
#   netns xbdemo-i                                         netns xbdemo-t
#   aoetools (initiator) -- xbd-i <== veth, MTU 1500 ==> xbd-t -- xblade e1.1
#                               (no IP addresses)              (64 MiB sparse file)
#
# Builds the release binary, starts `xblade --datapath afpacket 1 1 xbd-t FILE`
# in xbdemo-t, then from xbdemo-i shows discovery (Query Config), ATA IDENTIFY
# and a config-string round trip with aoetools, then a verified read/write run
# with xblade bench --verify. Everything it creates (both
# namespaces, the backing file, the xblade process) is removed on any exit,
# Ctrl-C included. Must run as root.
#
# Usage: sudo bash scripts/demo.sh
# Environment:
#   XBLADE_BIN=PATH        demo this target binary instead of target/release/xblade
#                          (it gets the same arguments); skips the build
#   XBLADE_DEMO_NO_BUILD=1 do not run cargo build
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
BIN=${XBLADE_BIN:-target/release/xblade}

target_pid="" target_start="" backing="" tlog="" failures=0

# ---- cleanup: on every exit path ------------------------------------------------
# /proc/PID/stat field 22 (start time) identifies our process even if the pid
# were recycled after it exited: never signal a pid that is not the one we started.
start_time() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
still_ours() { [[ -n $target_pid && $(start_time "$target_pid") == "$target_start" ]]; }

cleanup() {
  local rc=$?
  trap '' INT TERM HUP # finish cleaning up even if Ctrl-C is pressed again
  set +e
  if still_ours; then
    kill -TERM "$target_pid" 2>/dev/null
    for _ in $(seq 30); do still_ours || break; sleep 0.1; done
    if still_ours; then
      echo "demo.sh: xblade (pid $target_pid) ignored SIGTERM for 3 s: SIGKILL" >&2
      kill -KILL "$target_pid" 2>/dev/null
    fi
  fi
  [[ -n $target_pid ]] && wait "$target_pid" 2>/dev/null
  for ns in "$TNS" "$INS"; do
    [[ -e /run/netns/$ns ]] && ip netns del "$ns"
  done
  [[ -n $backing ]] && rm -f "$backing"
  [[ -n $tlog ]] && rm -f "$tlog"
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

# ---- 1. build ---------------------------------------------------------------------
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
backing=$(mktemp /var/tmp/xblade-demo.XXXXXX.img)
truncate -s "$SIZE" "$backing"
tlog=$(mktemp /tmp/xblade-demo.XXXXXX.log)
args=(--datapath afpacket "$SHELF" "$SLOT" "$TIF" "$backing")
section "target: $BIN ${args[*]}  (in $TNS)"
# `ip netns exec` execs in place, so $! is xblade's own pid.
ip netns exec "$TNS" "$BIN" "${args[@]}" >"$tlog" 2>&1 </dev/null &
target_pid=$!
target_start=$(start_time "$target_pid")

# Ready = the process is alive and has a packet socket open in its namespace
# (/proc/net/packet lists the sockets of the reader's namespace; only xblade runs there).
ready=0
for _ in $(seq 100); do
  if ! still_ours; then
    echo "    xblade exited during startup"
    wait "$target_pid" || echo "    exit status $?"
    show_target_log
    exit 1
  fi
  if ip netns exec "$TNS" awk 'NR > 1 { found = 1 } END { exit !found }' /proc/net/packet; then
    ready=1
    break
  fi
  sleep 0.1
done
if [[ $ready != 1 ]]; then
  echo "    xblade (pid $target_pid) opened no packet socket within 10 s"
  show_target_log
  exit 1
fi
sleep 0.2 # let it finish starting after the socket exists
echo "    running, pid $target_pid, exporting e$SHELF.$SLOT ($SIZE sparse file $backing)"

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
  out=$(ini 30 "$PWD/target/release/xblade" bench -q --iface "$IIF" --target "$SHELF.$SLOT" --op mix:70 \
    --bytes 1k --window 16 --duration 2s --verify --lba-range 8M 2>&1) || rc=$?
  [[ -n $out ]] && indent <<<"$out"
  if [[ $rc -eq 0 ]]; then
    pass "verified reads and writes, no error"
  else
    fail "xblade bench --verify (rc=$rc$(why $rc))"
  fi
}
run_check

# ---- 5. result ----------------------------------------------------------------------
section "result"
if still_ours; then
  pass "xblade still running after the checks"
else
  fail "xblade exited during the checks"
fi
show_target_log
if ((failures > 0)); then
  echo
  echo "demo: $failures check(s) FAILED"
  exit 1
fi
echo
echo "demo: all checks passed (cleaning up: namespaces, backing file, xblade pid $target_pid)"
