#!/usr/bin/env bash
# xblade-tune.sh: prepare a NIC for xblade's AF_XDP datapath, print every
# change, and undo it later.
#
#   xblade-tune.sh apply IFACE [--queues N] [--cores LIST] [--ring N]
#                              [--hugepages N] [--busy-poll USEC]
#   xblade-tune.sh undo  IFACE       # restore what apply changed
#   xblade-tune.sh show  IFACE       # current settings, changes nothing
#
# apply:
#   - sets the combined channel count to N (xblade --queues N),
#   - pins the IRQ of queue i to core LIST[i] (xblade --cores LIST),
#   - sets rx/tx ring sizes,
#   - turns GRO and LRO off (AF_XDP wants frames as they arrived),
#   - reserves 2 MiB hugepages for UMEM,
#   - with --busy-poll: net.core.busy_poll/busy_read and the interface's
#     napi_defer_hard_irqs/gro_flush_timeout (use with xblade --busy-poll).
# Each previous value is saved in /var/lib/xblade/tune-IFACE.state before it
# is changed; undo replays that file in reverse. Settings a driver does not
# support are reported and skipped.
set -euo pipefail

die() { echo "xblade-tune: error: $*" >&2; exit 1; }
say() { echo "xblade-tune: $*"; }

usage() { sed -n '5,20p' "$0" | sed 's/^# \{0,1\}//'; }
case ${1:-} in
  -h|--help|help) usage; exit 0 ;;
esac
cmd=${1:-}; iface=${2:-}
if [[ -z $cmd || -z $iface ]]; then
  usage >&2
  die "missing arguments: apply|undo|show IFACE [options]"
fi
case $cmd in
  apply|undo|show) ;;
  *) die "unknown command '$cmd': expected apply, undo or show (--help for more)" ;;
esac
[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ -d /sys/class/net/$iface ]] || die "unknown interface $iface"
shift 2
STATE_DIR=${XBLADE_TUNE_STATE_DIR:-/var/lib/xblade}
STATE=$STATE_DIR/tune-$iface.state

queues="" cores="" ring="" hugepages="" busy=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --queues) queues=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --ring) ring=$2; shift 2 ;;
    --hugepages) hugepages=$2; shift 2 ;;
    --busy-poll) busy=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
for v in "$queues" "$ring" "$hugepages" "$busy"; do
  [[ -z $v || $v =~ ^[0-9]+$ ]] || die "not a number: $v"
done

command -v ethtool >/dev/null || die "ethtool is missing (apt-get install ethtool)"

# record KIND ARGS... : one line per previous value, replayed by undo.
record() { mkdir -p "$STATE_DIR"; printf '%s\n' "$*" >>"$STATE"; }

set_sysctl() { # key value
  local old; old=$(sysctl -n "$1")
  [[ $old == "$2" ]] && { say "$1 already $2"; return; }
  record sysctl "$1" "$old"
  sysctl -qw "$1=$2"; say "$1: $old -> $2"
}

set_sysfs() { # path value
  local old; old=$(cat "$1")
  [[ $old == "$2" ]] && { say "$1 already $2"; return; }
  record sysfs "$1" "$old"
  echo "$2" >"$1"; say "$1: $old -> $2"
}

feature() { ethtool -k "$iface" 2>/dev/null | awk -v f="$1:" '$1 == f {print $2}'; }

set_feature() { # ethtool-k-name short-name value(on/off)
  local old; old=$(feature "$1")
  [[ -z $old ]] && { say "$1: not reported by the driver, skipped"; return; }
  [[ $old == "$3" ]] && { say "$1 already $3"; return; }
  if ethtool -K "$iface" "$2" "$3" 2>/dev/null; then
    record feature "$2" "$old"; say "$1: $old -> $3"
  else
    say "$1: driver refused $3, left $old"
  fi
}

channels() { # current combined (or rx) count
  ethtool -l "$iface" 2>/dev/null | awk '/Current hardware settings/ {c=1} c && /^(Combined|RX):/ {print $1, $2}' | head -n 2
}

irqs_of() { # IRQ numbers whose /proc/interrupts name mentions the interface, in order
  awk -v i="$iface" 'index($0, i) {sub(":", "", $1); print $1}' /proc/interrupts
}

apply() {
  if [[ -f $STATE ]]; then die "$STATE exists: run '$0 undo $iface' first"; fi
  if [[ -n $queues ]]; then
    local cur; cur=$(channels | awk '$1 == "Combined:" {print $2}')
    if [[ -n $cur && $cur != "n/a" ]]; then
      if [[ $cur != "$queues" ]]; then
        if ethtool -L "$iface" combined "$queues" 2>/dev/null; then
          record channels combined "$cur"; say "combined channels: $cur -> $queues"
        else say "combined channels: driver refused $queues, left $cur"; fi
      else say "combined channels already $queues"; fi
    else
      local rx; rx=$(channels | awk '$1 == "RX:" {print $2}')
      if [[ -n $rx && $rx != "$queues" ]] && ethtool -L "$iface" rx "$queues" tx "$queues" 2>/dev/null; then
        record channels rx "$rx"; say "rx/tx channels: $rx -> $queues"
      else say "channels: left as they are (${rx:-unknown})"; fi
    fi
  fi
  if [[ -n $cores ]]; then
    IFS=, read -r -a list <<<"$cores"
    mapfile -t irqs < <(irqs_of)
    if [[ ${#irqs[@]} -eq 0 ]]; then
      say "no IRQ named after $iface in /proc/interrupts (virtual device?): pinning skipped"
    fi
    local i=0
    for irq in "${irqs[@]}"; do
      [[ $i -lt ${#list[@]} ]] || break
      set_sysfs "/proc/irq/$irq/smp_affinity_list" "${list[$i]}"
      i=$((i + 1))
    done
  fi
  if [[ -n $ring ]]; then
    local old; old=$(ethtool -g "$iface" 2>/dev/null | awk '/Current hardware settings/ {c=1} c && /^RX:/ {print $2; exit}')
    if [[ -n $old && $old != "n/a" ]] && ethtool -G "$iface" rx "$ring" tx "$ring" 2>/dev/null; then
      record ring "$old"; say "ring sizes: $old -> $ring"
    else say "ring sizes: not settable on this driver, skipped"; fi
  fi
  set_feature generic-receive-offload gro off
  set_feature large-receive-offload lro off
  if [[ -n $hugepages ]]; then set_sysctl vm.nr_hugepages "$hugepages"; fi
  if [[ -n $busy ]]; then
    set_sysctl net.core.busy_poll "$busy"
    set_sysctl net.core.busy_read "$busy"
    set_sysfs "/sys/class/net/$iface/napi_defer_hard_irqs" 2
    set_sysfs "/sys/class/net/$iface/gro_flush_timeout" 200000
  fi
  [[ -f $STATE ]] && say "saved previous values in $STATE (undo: $0 undo $iface)" || say "nothing changed"
}

undo() {
  [[ -f $STATE ]] || { say "nothing to undo ($STATE not found)"; return; }
  tac "$STATE" | while read -r kind a b; do
    case $kind in
      sysctl) sysctl -qw "$a=$b" && say "$a restored to $b" ;;
      sysfs) echo "$b" >"$a" && say "$a restored to $b" ;;
      feature) ethtool -K "$iface" "$a" "$b" && say "$a restored to $b" ;;
      channels) if [[ $a == combined ]]; then ethtool -L "$iface" combined "$b"; else ethtool -L "$iface" rx "$b" tx "$b"; fi && say "channels restored to $b" ;;
      ring) ethtool -G "$iface" rx "$a" tx "$a" && say "ring sizes restored to $a" ;;
    esac
  done
  rm -f "$STATE"
}

show() {
  echo "interface $iface: mtu $(cat /sys/class/net/$iface/mtu), rx queues $(ls -d /sys/class/net/$iface/queues/rx-* | wc -l)"
  channels | sed 's/^/  channels /'
  echo "  gro $(feature generic-receive-offload), lro $(feature large-receive-offload)"
  echo "  busy_poll $(sysctl -n net.core.busy_poll), busy_read $(sysctl -n net.core.busy_read), hugepages $(sysctl -n vm.nr_hugepages)"
  for irq in $(irqs_of); do echo "  irq $irq -> cores $(cat /proc/irq/$irq/smp_affinity_list)"; done
  [[ -f $STATE ]] && echo "  pending undo: $STATE"
  return 0
}

case $cmd in
  apply) apply ;;
  undo) undo ;;
  show) show ;;
  *) die "unknown command $cmd (apply, undo, show)" ;;
esac
