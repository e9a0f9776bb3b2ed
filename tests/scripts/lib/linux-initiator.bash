# shellcheck shell=bash
# Shared by tests/scripts/7*-*.sh: xblade against real AoE initiators (the Linux aoe
# driver in a qemu guest via ../shared/tools/aoe-client-vm.sh, aoetools, tshark).
#
# Not a test itself (scripts/test.sh runs only tests/scripts/*.sh). Source it first:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"; xl_init
#
# Rules kept here for every script: everything it creates is named xl<N>* (namespaces
# xl<N>-t, links xl<N>..., files under one work dir); the EXIT trap stops the pids this
# script started (by pid, never by name), deletes its links and namespaces and its work
# dir; anything missing (qemu, the kernel package, a tool, the xblade binary) fails the
# script loudly: nothing is skipped.
#
# Environment:
#   XBLADE_BIN       xblade binary (scripts/test.sh sets it; default target/release/xblade)
#   AOE_CLIENT_VM    the VM tool (default ../shared/tools/aoe-client-vm.sh beside the repo)
#   XL_DATAPATHS     datapaths for the per-datapath runs, space separated; each is
#                    afpacket | xdp:native | xdp:skb (default: afpacket)
#   XL_VM_TIMEOUT    seconds allowed per guest run (default 150)
#   XL_KEEP=1        keep the work dir (captures, logs, backing files) for a look after
set -euo pipefail
export LC_ALL=C
for d in /usr/local/sbin /usr/sbin /sbin; do
  [[ -d $d && :$PATH: != *:$d:* ]] && PATH=$PATH:$d
done
export PATH

XL_ROOT=${XBLADE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
XL_BIN=${XBLADE_BIN:-$XL_ROOT/target/release/xblade}
XL_VM_TOOL=${AOE_CLIENT_VM:-$XL_ROOT/../shared/tools/aoe-client-vm.sh}
# The datapaths 70-linux-initiator.sh runs scenarios 1-3 and the capture on, in order;
# the other scripts use the first. xl_dp_args maps each to xblade's flags. To cover the
# AF_XDP datapath in CI, make the default "afpacket xdp:native xdp:skb".
XL_DATAPATHS=${XL_DATAPATHS:-afpacket xdp:native xdp:skb}
XL_VM_TIMEOUT=${XL_VM_TIMEOUT:-150}

XL_NAME=${0##*/}
XL_NAME=${XL_NAME%.sh}
XL_T0=$SECONDS
XL_PIDS=() XL_NETNS=() XL_LINKS=() XL_RESULTS=()
XL_WORK='' XL_SHM=''

xl_log() { printf '[%s +%ds] %s\n' "$XL_NAME" "$((SECONDS - XL_T0))" "$*"; }
xl_die() {
  printf '[%s +%ds] FAIL: %s\n' "$XL_NAME" "$((SECONDS - XL_T0))" "$*" >&2
  exit 1
}

# xl_require CMD...: fail unless every CMD is installed.
xl_require() {
  local c missing=()
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  ((${#missing[@]} == 0)) || xl_die "missing commands: ${missing[*]} (run scripts/setup.sh)"
}

# xl_init: root and tool checks, work dirs, cleanup trap.
xl_init() {
  [[ $EUID -eq 0 ]] || xl_die "must run as root (network namespaces, veths, qemu taps)"
  [[ -x $XL_BIN ]] || xl_die "no xblade binary at $XL_BIN (cargo build --release, or set XBLADE_BIN)"
  [[ -r $XL_VM_TOOL ]] ||
    xl_die "no VM tool at $XL_VM_TOOL (shared/tools/aoe-client-vm.sh beside the repo, or set AOE_CLIENT_VM)"
  xl_require ip sysctl sha256sum dd cmp truncate timeout python3
  XL_WORK=$(mktemp -d /var/tmp/xblade-"$XL_NAME".XXXXXX) # real disk: O_DIRECT works
  XL_SHM=$(mktemp -d /dev/shm/xblade-"$XL_NAME".XXXXXX)  # tmpfs: captures
  trap xl_cleanup EXIT
  trap 'exit 130' INT TERM HUP
}

xl_cleanup() {
  local rc=$? pid i
  set +e
  trap - EXIT
  for pid in "${XL_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${XL_PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for l in "${XL_LINKS[@]}"; do ip link show "$l" >/dev/null 2>&1 && ip link del "$l"; done
  for ns in "${XL_NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [[ -n $XL_SHM ]]; then
    if [[ ${XL_KEEP:-0} == 1 || $rc -ne 0 ]] && [[ -n $XL_WORK ]]; then
      mv "$XL_SHM"/* "$XL_WORK"/ 2>/dev/null
    fi
    rm -rf "$XL_SHM"
  fi
  if [[ -n $XL_WORK ]]; then
    if [[ ${XL_KEEP:-0} == 1 || $rc -ne 0 ]]; then
      echo "[$XL_NAME] work dir kept: $XL_WORK" >&2
      # Backing files are big; keep logs, captures and guest output only.
      find "$XL_WORK" -name '*.img' -delete 2>/dev/null
    else
      rm -rf "$XL_WORK"
    fi
  fi
  if ((${#XL_RESULTS[@]})); then
    echo "[$XL_NAME] results:"
    printf '  %s\n' "${XL_RESULTS[@]}"
  fi
  if [[ $rc -eq 0 ]]; then
    echo "[$XL_NAME] all passed in $((SECONDS - XL_T0))s"
  else
    echo "[$XL_NAME] FAILED (exit $rc) after $((SECONDS - XL_T0))s" >&2
  fi
  exit "$rc"
}

# xl_pass NAME T0: record a passed scenario with its duration since T0 (a $SECONDS value).
xl_pass() {
  XL_RESULTS+=("PASS $1 ($((SECONDS - $2))s)")
  xl_log "PASS $1 ($((SECONDS - $2))s)"
}

# xl_forget PID: drop PID from the cleanup list (after it was waited for).
xl_forget() {
  local p keep=()
  for p in "${XL_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  XL_PIDS=("${keep[@]}")
}

# --- network ----------------------------------------------------------------------

# xl_netns NS: a namespace with lo up and IPv6 off (no stray frames in captures).
xl_netns() {
  ip netns del "$1" 2>/dev/null || true # a leftover of an interrupted run of this script
  ip netns add "$1"
  XL_NETNS+=("$1")
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# xl_hostlink_prep IF MTU: IPv6 off, no addresses, up.
xl_hostlink_prep() {
  sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1"
  ip link set dev "$1" addrgenmode none mtu "$2" up
}

# xl_veth HOSTIF NS NSIF MTU: veth pair, HOSTIF in the root namespace (for the VM tool
# or a bridge), NSIF in NS (the target's interface). Both up, no addresses.
xl_veth() {
  ip link del "$1" 2>/dev/null || true
  ip link add "$1" mtu "$4" type veth peer name "$3" netns "$2" mtu "$4"
  XL_LINKS+=("$1")
  xl_hostlink_prep "$1" "$4"
  ip -n "$2" link set dev "$3" up
}

# xl_bridge BR MTU: a host bridge without STP delay, snooping or addresses.
xl_bridge() {
  ip link del "$1" 2>/dev/null || true
  ip link add "$1" type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  XL_LINKS+=("$1")
  xl_hostlink_prep "$1" "$2"
}

# xl_set_mtu MTU HOSTIF NS NSIF: both ends of a veth pair.
xl_set_mtu() {
  ip link set dev "$2" mtu "$1"
  ip -n "$3" link set dev "$4" mtu "$1"
}

xl_mac() { # xl_mac NS IF
  ip -n "$1" -o link show dev "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'
}

xl_counter() { # xl_counter NS IF tx_packets|rx_packets|...
  ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"
}

# --- xblade -------------------------------------------------------------------------

# xl_dp_args DP: XL_DP_ARGS = xblade's flags for datapath DP.
# shellcheck disable=SC2034 # XL_DP_ARGS is for the scripts
xl_dp_args() {
  case $1 in
    afpacket) XL_DP_ARGS=(--datapath afpacket) ;;
    xdp:native | xdp:skb) XL_DP_ARGS=(--datapath xdp --xdp-mode "${1#xdp:}") ;;
    *) xl_die "unknown datapath '$1' in XL_DATAPATHS (afpacket, xdp:native, xdp:skb)" ;;
  esac
}

# xl_target NS LOG ARGS...: start xblade ARGS in NS (logging to LOG), wait until it
# serves. Sets XL_TARGET_PID (xblade's own pid: ip netns exec execs in place).
xl_target() {
  local ns=$1 logf=$2 i
  shift 2
  : >"$logf"
  ip netns exec "$ns" "$XL_BIN" "$@" >"$logf" 2>&1 </dev/null &
  XL_TARGET_PID=$!
  XL_PIDS+=("$XL_TARGET_PID")
  for ((i = 0; i < 100; i++)); do
    grep -q 'xblade serving' "$logf" && return 0
    kill -0 "$XL_TARGET_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$logf" >&2
  xl_die "xblade $* did not start serving in netns $ns (log above)"
}

# xl_target_alive PID LOG: fail loudly (with its log) if xblade PID has exited.
xl_target_alive() {
  kill -0 "$1" 2>/dev/null && ! grep -q 'xblade: error' "$2" && return 0
  cat "$2" >&2
  xl_die "xblade (pid $1) exited during the test; its log is above"
}

# xl_ata_count PID IFACE: ATA reads + writes xblade PID served on IFACE, from its
# control socket (`xblade stats --json`; counters are published every 250 ms).
xl_ata_count() {
  "$XL_BIN" stats --socket "/run/xblade/xblade-$1.sock" --json |
    python3 -c 'import json, sys
d = json.load(sys.stdin)
w = [w for w in d["workers"] if w["iface"] == sys.argv[1]]
assert w, "no worker for " + sys.argv[1]
print(sum(x["engine"]["ata_read"] + x["engine"]["ata_write"] for x in w))' "$2"
}

# xl_stop PID [SIG]: stop a process we started (default SIGTERM), wait for it.
xl_stop() {
  local i
  kill -"${2:-TERM}" "$1" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$1" 2>/dev/null || true
  { wait "$1"; } 2>/dev/null || true # (no "Killed" job notice)
  xl_forget "$1"
}

# --- files --------------------------------------------------------------------------

xl_sparse() { # xl_sparse FILE BYTES
  rm -f "$1"
  truncate -s "$2" "$1"
}

# xl_file_sha FILE OFFSET LENGTH: sha256 of LENGTH bytes at byte OFFSET.
xl_file_sha() {
  dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none | sha256sum | cut -d' ' -f1
}

# xl_expect_zero FILE OFFSET LENGTH WHAT: those bytes are all zero.
xl_expect_zero() {
  ((${3} > 0)) || return 0
  cmp -s -n "$3" <(dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none) /dev/zero ||
    xl_die "$4: bytes $2..$(($2 + $3)) of $1 are not all zero"
}

xl_expect_eq() { # xl_expect_eq WHAT GOT WANT
  [[ $2 == "$3" ]] || xl_die "$1: got '$2', want '$3'"
  xl_log "ok: $1 = $2"
}

# --- guests ---------------------------------------------------------------------------

# xl_guest_script FILE VAR=VALUE...: write a guest script: helpers, then the variables,
# then the body read from stdin. In the guest (busybox sh, cwd a tmpfs):
#   fail MSG / ok MSG / val KEY VALUE (a line "XLV KEY=VALUE" the host reads back)
#   mark TEXT (a line "XL-MARK TEXT" the host can wait for while the guest runs)
#   waitdev eX.Y, waittargets eX.Y WHAT MAC... (debugfs lists those targets), sysval eX.Y ATTR, expect WHAT GOT WANT, devwrite FILE DEV OFF,
#   devread DEV OFF BYTES, devsha DEV OFF MIB (all O_DIRECT, offsets in bytes),
#   chunked_write FILE DEV MIB SECS
xl_guest_script() {
  local f=$1 kv
  shift
  {
    cat <<'EOF'
up() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "GUEST-FAIL: [$(up)] $*"; dmesg | grep -i aoe | tail -n 20; exit 1; }
ok() { echo "GUEST-OK: [$(up)] $*"; }
val() { echo "XLV $1=$2"; }
mark() { echo "XL-MARK $*"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
waitdev() {
  i=0
  until grep -q ^up "/sys/block/etherd!$1/state" 2>/dev/null && [ -b "/dev/etherd/$1" ]; do
    i=$((i + 1)); [ $i -gt 300 ] && fail "device $1 not up after 30 s"
    [ $((i % 20)) = 0 ] && echo >/dev/etherd/discover
    sleep 0.1
  done
}
# waittargets eX.Y WHAT MAC...: until debugfs lists every MAC (12 hex digits, no colons)
# as a target of eX.Y (targets may answer discovery one after the other; ask again every
# second), then expect exactly that many targets.
waittargets() {
  wt_dev=$1 wt_what=$2 wt_dbg=/sys/kernel/debug/aoe/$1 i=0
  shift 2
  until lists_macs "$wt_dbg" "$@"; do
    i=$((i + 1)); [ $i -gt 50 ] && { cat "$wt_dbg"; fail "debugfs does not list every $wt_what: $*"; }
    [ $((i % 10)) = 0 ] && echo >/dev/etherd/discover
    sleep 0.1
  done
  expect "targets of $wt_dev" "$(grep -c '^[0-9a-f]\{12\}:' "$wt_dbg")" $#
}
lists_macs() { # FILE MAC...: whether FILE has a line "MAC:" for each
  lm_f=$1
  shift
  for m in "$@"; do grep -q "^$m:" "$lm_f" || return 1; done
}
sysval() { cat "/sys/block/etherd!$1/$2"; }
expect() { [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; ok "$1 = $2"; }
# O_DIRECT I/O always with bs=1M (a page-aligned buffer): busybox dd with a small bs
# quietly ends up writing through the page cache (bs=512 oflag=direct on an aoe disk
# became a 4 KiB page write-back). Sizes and offsets in bytes, multiples of 512.
devwrite() { # FILE DEV OFFSET: all of FILE at byte OFFSET
  dd if="$1" of="$2" bs=1M seek="$3" oflag=direct,seek_bytes conv=notrunc 2>/tmp/dd.err ||
    { cat /tmp/dd.err; return 1; }
}
devread() { # DEV OFFSET BYTES: to stdout
  dd if="$1" bs=1M skip="$2" count="$3" iflag=direct,skip_bytes,count_bytes 2>/tmp/dd.err
}
devsha() { # DEV OFFSET MIB
  devread "$1" "$2" $(($3 << 20)) | sha256sum | cut -d' ' -f1
}
# Per-target reply counts of a debugfs file ("\tr:N" below each
# "MAC:nout:maxout:nframes" line).
replies() { awk -v m="$2" '$0 ~ "^" m ":" { t = 1; next } /^[0-9a-f]{12}:/ { t = 0 } t && /^\tr:/ { sub(/^\tr:/, ""); print; exit }' "$1"; }
spread_write() {
  # DEV DBG MIB NOUN MAC_A MAC_B: MIB MiB of random data with O_DIRECT at byte 0,
  # read back equal, each of the two targets (NOUN, for messages) answering at
  # least a fifth of the replies.
  sw_a0=$(replies "$2" "$5") sw_b0=$(replies "$2" "$6")
  dd if=/dev/urandom of=/tmp/s bs=1M count="$3" 2>/dev/null
  devwrite /tmp/s "$1" 0 || fail "O_DIRECT write"
  expect "$3 MiB read back" "$(devsha "$1" 0 "$3")" "$(sha /tmp/s)"
  rm /tmp/s
  ra=$(($(replies "$2" "$5") - sw_a0)) rb=$(($(replies "$2" "$6") - sw_b0))
  val replies_a "$ra"; val replies_b "$rb"
  [ $((ra * 5)) -ge $((ra + rb)) ] && [ $((rb * 5)) -ge $((ra + rb)) ] ||
    { cat "$2"; fail "I/O not spread over both $4: $ra and $rb replies"; }
  ok "spread: $ra replies from $5, $rb from $6"
}
chunked_write() {
  # FILE DEV MIB SECS: MiB by MiB with O_DIRECT, a mark after each; each MiB must
  # finish within SECS seconds. Prints the slowest MiB.
  c=0 worst=0
  while [ $c -lt "$3" ]; do
    t0=$(up)
    timeout "$4" dd if="$1" of="$2" bs=1M skip=$c seek=$c count=1 oflag=direct conv=notrunc 2>/tmp/dd.err ||
      { cat /tmp/dd.err; fail "write of MiB $c to $2 failed or took over $4 s"; }
    t=$(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }')
    worst=$(awk -v a="$worst" -v b="$t" 'BEGIN { print (b > a) ? b : a }')
    mark "chunk $c ${t}s"
    c=$((c + 1))
  done
  val slowest_mib_s "$worst"
}
EOF
    for kv in "$@"; do printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"; done
    cat
  } >"$f"
}

# xl_vm_start NAME TOOL-ARGS...: run the VM tool in the background, console in
# $XL_WORK/NAME.out, its log in NAME.err. Sets XL_VM_PID.
xl_vm_start() {
  local name=$1
  shift
  bash "$XL_VM_TOOL" --timeout "$XL_VM_TIMEOUT" "$@" >"$XL_WORK/$name.out" 2>"$XL_WORK/$name.err" </dev/null &
  XL_VM_PID=$!
  XL_PIDS+=("$XL_VM_PID")
}

# xl_vm_wait NAME PID: wait for a VM run; show its guest output; fail unless it exited 0.
xl_vm_wait() {
  local name=$1 pid=$2 rc=0 n
  wait "$pid" || rc=$?
  xl_forget "$pid"
  # Guest lines only; kernel messages (e.g. one "ata error" per refused frame) stay in the file.
  tr -d '\r' <"$XL_WORK/$name.out" | grep -av '^\[ *[0-9]*\.[0-9]*\] ' | sed "s/^/  [$name] /" || true
  n=$(grep -ac '^\[ *[0-9]*\.[0-9]*\] ' "$XL_WORK/$name.out" || true)
  ((n == 0)) || echo "  [$name] ($n kernel messages in $XL_WORK/$name.out)"
  grep -a 'aoe-client-vm:' "$XL_WORK/$name.err" | sed "s/^/  [$name] /" || true
  if [[ $rc -ne 0 ]]; then
    tr -d '\r' <"$XL_WORK/$name.out" | grep -a '^\[ *[0-9]*\.[0-9]*\] ' | tail -n 30 | sed "s/^/  [$name] /" >&2
    cat "$XL_WORK/$name.err" >&2
    case $rc in
      124) xl_die "guest $name timed out (${XL_VM_TIMEOUT}s)" ;;
      125) xl_die "guest $name found no AoE device" ;;
      126) xl_die "guest $name: VM or setup failure (qemu, kernel package, network; see above)" ;;
      *) xl_die "guest $name failed (exit $rc; GUEST-FAIL line above)" ;;
    esac
  fi
}

# xl_vm NAME TOOL-ARGS...: one guest run in the foreground.
xl_vm() {
  xl_vm_start "$@"
  xl_vm_wait "$1" "$XL_VM_PID"
}

# xl_vm_val NAME KEY: a value the guest printed with `val KEY VALUE`.
xl_vm_val() {
  tr -d '\r' <"$XL_WORK/$1.out" | sed -n "s|^XLV $2=||p" | tail -n1
}

# xl_vm_wait_mark NAME PID TEXT SECS: wait until the guest printed "XL-MARK TEXT".
xl_vm_wait_mark() {
  local i
  for ((i = 0; i < $4 * 20; i++)); do
    grep -aq "^XL-MARK $3" "$XL_WORK/$1.out" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  xl_vm_wait "$1" "$2" # shows the output and fails if the guest failed
  xl_die "guest $1 did not reach mark '$3' within $4 s"
}
