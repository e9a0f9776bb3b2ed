#!/usr/bin/env bash
# 77-ceph-gateways.sh: scale-out on Ceph RBD with the Linux initiator (aoe.ko in a
# qemu guest): two xblade gateways, separate processes with distinct MACs, each on
# its own interface, export the same RBD images as the same shelf.slots.
#
#   netns xl77-t: one-node Ceph cluster on its 127.0.0.1 (../shared/tools/ceph-one-node.sh)
#                 gateway A on xl77ta ==veth== xl77a --+
#                 gateway B on xl77tb ==veth== xl77b --+-- bridge xl77br (root ns) -- guest tap
#
# Images rbd/gw (e77.1, data), rbd/fs (e77.2, a filesystem), rbd/st (e77.3, stalls)
# and rbd/sig (e77.4, a signal to the guest), layering only (no exclusive-lock: two
# writers at once).
# Checks: the guest sees one device per image with two targets (both gateway MACs in
# debugfs); a file system made in the guest (busybox mke2fs) is read back after a
# remount, and `e2fsck -fn` is clean on `rbd export` of the image on the host; 16 MiB
# written with O_DIRECT read back identical, I/O spread over both gateways; during a
# 32 MiB O_DIRECT copy gateway A is SIGKILLed after 20 MiB: the copy completes through
# B, reads back identical in the guest and in `rbd export` on the host.
# Fencing (docs/fencing.md), on image rbd/st (e77.3), 8 MiB regions: A is restarted
# and rejoins; then, on the first datapath and again on xdp:native (both gateways
# restarted, announcing e77.4 to the guest), 5 times each at a different point of an
# 8 MiB O_DIRECT write: A is SIGSTOPped past the initiator's failover (10 s), the
# write completes through B, newer data is written over the region through B, A gets
# SIGCONT with old frames in its rings: the region holds the newer data in the guest
# and in `rbd export`, and A (fenced, blocklisted by B) starts again and rejoins.
# Once more with A's TCP connections to the OSD cut (an XDP program on the namespace's
# lo drops them) instead of a stop, restored after the newer data is written.
# One guest run carries the copy and 11 stalls of ~23 s each.
XL_VM_TIMEOUT=${XL_VM_TIMEOUT:-600}
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init
CEPH_TOOL=${CEPH_ONE_NODE:-$(dirname "$XL_VM_TOOL")/ceph-one-node.sh}
[[ -r $CEPH_TOOL ]] || xl_die "no Ceph tool at $CEPH_TOOL (shared/tools beside the repo, or set CEPH_ONE_NODE)"
xl_require ceph-mon ceph-osd rbd e2fsck debugfs ss clang

NS=xl77-t BR=xl77br SHELF=77
W=$XL_WORK
MIB=$((1 << 20))
DP=${XL_DATAPATHS%% *} # the first datapath of the list
DP2=xdp:native         # the stall cases again on this one
[[ $DP == "$DP2" ]] && DP2=afpacket
xl_dp_args "$DP"
CEPH_DIR=$W/ceph

# The cluster goes down before the namespace it lives in (gateways first).
gw_cleanup() {
  local rc=$? pid
  set +e # a pid already gone must not end the cleanup (set -e holds in traps)
  for pid in "${XL_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; done
  [[ -d $CEPH_DIR ]] && ip netns exec "$NS" timeout 30 bash "$CEPH_TOOL" down "$CEPH_DIR" >/dev/null 2>&1
  (exit "$rc")
  xl_cleanup
}
trap gw_cleanup EXIT

xl_netns "$NS"
xl_bridge "$BR" 1500
for s in a b; do
  xl_veth "xl77$s" "$NS" "xl77t$s" 1500
  ip link set dev "xl77$s" master "$BR"
done
ip -n "$NS" link set lo up
MAC_A=$(xl_mac "$NS" xl77ta) MAC_B=$(xl_mac "$NS" xl77tb)

t=$SECONDS
eval "$(ip netns exec "$NS" timeout 120 bash "$CEPH_TOOL" up "$CEPH_DIR" --image gw:64M --image fs:64M --image st:96M --image sig:4M 2>"$W/ceph-up.log")" ||
  { cat "$W/ceph-up.log" >&2; xl_die "one-node Ceph cluster did not come up (log above)"; }
[[ -n ${CEPH_CONF:-} ]] || xl_die "ceph-one-node.sh printed no CEPH_CONF"
export CEPH_CONF
xl_log "Ceph cluster up in $((SECONDS - t)) s (CEPH_CONF=$CEPH_CONF)"
rbdx() { ip netns exec "$NS" timeout 60 rbd "$@"; }

# gw_config G SLOTS...: gateway G's configuration, exporting the images of SLOTS.
IMAGES=(- gw fs st sig)
gw_config() {
  local g=$1 n
  shift
  : >"$W/gw-$g.toml"
  for n in "$@"; do
    printf '[[export]]\nshelf = %s\nslot = %s\nfile = "rbd:rbd/%s"\ninterfaces = ["xl77t%s"]\n\n' \
      "$SHELF" "$n" "${IMAGES[$n]}" "$g" >>"$W/gw-$g.toml"
  done
}
# gw_start G: start gateway G (its config, datapath XL_DP_ARGS); sets PID_G.
gw_start() {
  xl_target "$NS" "$W/gw-$1.log" serve --config "$W/gw-$1.toml" "${XL_DP_ARGS[@]}"
  declare -g "PID_${1^^}=$XL_TARGET_PID"
}
for g in a b; do
  gw_config "$g" 1 2 3
  gw_start "$g"
done

xl_guest_script "$W/gw.sh" S="$SHELF" MAC_A="${MAC_A//:/}" MAC_B="${MAC_B//:/}" <<'EOF'
for n in 1 2 3; do
  waitdev e$S.$n
  waittargets e$S.$n "gateway MAC" $MAC_A $MAC_B
done
expect "AoE devices" "$(ls -d /sys/block/etherd!* | wc -l)" 3
# A file system on e77.2, through both gateways.
F=/dev/etherd/e$S.2
mke2fs -q -b 4096 -L xl77 "$F" >/tmp/mkfs.log 2>&1 || { cat /tmp/mkfs.log; fail "mke2fs $F"; }
mkdir -p /mnt
mount -t ext2 "$F" /mnt || fail "mount $F"
mkdir -p /mnt/dir
dd if=/dev/urandom of=/mnt/dir/a bs=1M count=5 2>/dev/null
echo "hello from the guest, through two gateways" >/mnt/hello.txt
for f in dir/a hello.txt; do val "file:/$f" "$(sha /mnt/$f)"; done
for f in dir/a hello.txt; do sha /mnt/$f; done >/tmp/sums
umount /mnt || fail "umount"
sync; echo 3 >/proc/sys/vm/drop_caches; blockdev --flushbufs "$F"
mount -t ext2 -o ro "$F" /mnt || fail "mount again"
for f in dir/a hello.txt; do sha /mnt/$f; done >/tmp/sums2
cmp /tmp/sums /tmp/sums2 || fail "files differ after umount, drop_caches, mount"
umount /mnt || fail "final umount"
ok "file system on e$S.2 read back after remount"
# 16 MiB with O_DIRECT on e77.1, spread over both gateways.
DEV=/dev/etherd/e$S.1 DBG=/sys/kernel/debug/aoe/e$S.1
spread_write $DEV $DBG 16 gateways $MAC_A $MAC_B
mark spread-done
dd if=/dev/urandom of=/tmp/big bs=1M count=32 2>/dev/null
val big "$(sha /tmp/big)"
chunked_write /tmp/big $DEV 32 60
ok "32 MiB written"
expect "32 MiB read back" "$(devsha $DEV 0 32)" "$(sha /tmp/big)"
cat $DBG
mark copy-done
# Stalls (fencing) on e77.3: region K is MiB 8K..8K+7.
D=/dev/etherd/e$S.3 DBG3=/sys/kernel/debug/aoe/e$S.3
wframes() { awk -v m="$2" '$0 ~ "^" m ":" { t = 1; next } /^[0-9a-f]{12}:/ { t = 0 } t && /^\tw:/ { sub(/^\tw:/, ""); print; exit }' "$1"; }
taint() { awk -v m="$2" '$0 ~ "^" m ":" { t = 1; next } /^[0-9a-f]{12}:/ { t = 0 } t && /^\ttaint:/ { sub(/^\ttaint:/, ""); print; exit }' "$1"; }
rejoined() { # MAC WHAT: until MAC is untainted and was sent 256 more WRITE frames of
  # O_DIRECT writes (to MiB 88-95, scratch): in the rotation with an open window again
  rj_i=0 rj_w0=$(wframes $DBG3 $1)
  until [ "$(taint $DBG3 $1)" = 0 ] && [ $(($(wframes $DBG3 $1) - rj_w0)) -ge 256 ]; do
    dd if=/dev/zero of=$D bs=1M seek=88 count=8 oflag=direct conv=notrunc 2>/dev/null
    rj_i=$((rj_i + 1)); [ $rj_i -gt 200 ] && { cat $DBG3; fail "$2 did not serve again"; }
    sleep 0.2
  done
  ok "$2 serves again ($(up) s)"
}
rep() { # K: old data over region K with a mark per MiB, newer data over it, check
  at=$(($1 * 8))
  dd if=/dev/urandom of=/tmp/old bs=1M count=8 2>/dev/null
  dd if=/dev/urandom of=/tmp/new bs=1M count=8 2>/dev/null
  t0=$(up) c=0
  while [ $c -lt 8 ]; do
    timeout 60 dd if=/tmp/old of=$D bs=1M skip=$c seek=$((at + c)) count=1 oflag=direct conv=notrunc 2>/tmp/dd.err ||
      { cat /tmp/dd.err; fail "r$1: old write of MiB $c failed or took over 60 s"; }
    mark "r$1-old $c"
    c=$((c + 1))
  done
  t1=$(up)
  devwrite /tmp/new $D $((at << 20)) || fail "r$1: newer write"
  ok "r$1: old write $(awk -v a=$t0 -v b=$t1 'BEGIN { print b - a }') s, newer write $(awk -v a=$t1 -v b="$(up)" 'BEGIN { print b - a }') s"
  mark "r$1-new-done"
  sleep 6 # the stalled gateway resumes meanwhile, with old frames in its rings
  sync; echo 3 >/proc/sys/vm/drop_caches
  expect "r$1: region $1 holds the newer data" "$(devsha $D $((at << 20)) 8)" "$(sha /tmp/new)"
  val "new$1" "$(sha /tmp/new)"
  rejoined $MAC_A "gateway A"
}
rejoined $MAC_A "gateway A (restarted after SIGKILL)"
for k in 0 1 2 3 4; do rep $k; done
mark phase1-done
waitdev e$S.4 # both gateways restarted on the other datapath
rejoined $MAC_A "gateway A"
rejoined $MAC_B "gateway B"
for k in 5 6 7 8 9 10; do rep $k; done
cat $DBG3
EOF

# stopped PID: until every thread of PID is stopped (kill returns before they are).
stopped() {
  local i s all
  for ((i = 0; i < 100; i++)); do
    all=1
    for s in /proc/"$1"/task/*/stat; do
      [[ $(sed 's/.*) //' "$s" 2>/dev/null | cut -d' ' -f1) == T ]] || { all=0; break; }
    done
    ((all)) && return 0
    sleep 0.05
  done
  xl_die "xblade (pid $1) not stopped 5 s after SIGSTOP"
}
# osd_cut PID on|off: drop (or stop dropping) the packets of PID's TCP connections to
# the OSD (ports 6800-7300), both ways, with a generic XDP program on lo of $NS (this
# kernel has no tc drop action); the mon connection stays.
osd_cut() {
  if [[ $2 == off ]]; then
    ip -n "$NS" link set dev lo xdpgeneric off
    return
  fi
  local ports
  ports=$(ip netns exec "$NS" ss -tnpH state established '( dport >= :6800 and dport <= :7300 )' |
    awk -v p="pid=$1," 'index($0, p) { n = split($3, a, ":"); print a[n] }' | sort -u)
  [[ -n $ports ]] || xl_die "gateway (pid $1) has no connection to the OSD to cut"
  cat >"$W/cut.c" <<'C'
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
static const unsigned short ports[] = { PORTS };
__attribute__((section("xdp"), used)) int cut(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *tcp;
	unsigned int i;

	if ((void *)(ip + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP) ||
	    ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > end)
		return XDP_PASS;
	for (i = 0; i < sizeof(ports) / sizeof(ports[0]); i++)
		if (tcp->source == __builtin_bswap16(ports[i]) || tcp->dest == __builtin_bswap16(ports[i]))
			return XDP_DROP;
	return XDP_PASS;
}
__attribute__((section("license"), used)) char _license[] = "GPL";
C
  clang -O2 -target bpf -I/usr/include/"$(uname -m)"-linux-gnu -DPORTS="$(echo $ports | tr ' ' ,)" \
    -c "$W/cut.c" -o "$W/cut.o" || xl_die "cannot build the XDP program that cuts the OSD path"
  ip -n "$NS" link set dev lo xdpgeneric obj "$W/cut.o" sec xdp
  xl_log "cut gateway A's OSD connections (local ports $(echo $ports))"
}
# served_again G N: until gateway G's log has N "xblade serving" lines (it fenced
# itself and started again as a new client).
served_again() {
  local i
  for ((i = 0; i < 600; i++)); do
    (($(grep -c 'xblade serving' "$W/gw-$1.log") >= $2)) && return 0
    sleep 0.1
  done
  cat "$W/gw-$1.log" >&2
  xl_die "gateway ${1^^} did not start again within 60 s after being fenced (log above)"
}
# stall K POINT stop|cut: stall gateway A once MiB POINT of region K is written, until
# the newer data is written through B; then resume it and wait for it to serve again.
stall() {
  local k=$1 p=$2 how=$3 t n
  xl_vm_wait_mark gw "$VPID" "r$k-old $p" 120
  n=$(($(grep -c 'xblade serving' "$W/gw-a.log") + 1))
  if [[ $how == stop ]]; then
    kill -STOP "$PID_A"
    stopped "$PID_A"
  else
    osd_cut "$PID_A" on
  fi
  t=$SECONDS
  xl_vm_wait_mark gw "$VPID" "r$k-new-done" 120
  xl_log "r$k: gateway A $([[ $how == stop ]] && echo stopped || echo 'cut from the OSD') after MiB $p for $((SECONDS - t)) s (failover and newer data through B)"
  # Shorter than the initiator's 10 s failover: A held none of the guest's requests.
  ((SECONDS - t >= 9)) || xl_die "r$k: the guest's writes did not wait for gateway A: the stall tested nothing"
  if [[ $how == stop ]]; then kill -CONT "$PID_A"; else osd_cut "$PID_A" off; fi
  served_again a "$n"
  xl_target_alive "$PID_B" "$W/gw-b.log"
}

T0=$SECONDS
xl_vm_start gw --ifname "$BR" --script "$W/gw.sh" --mtu 1500 --mem 384 --module crc32c_generic --module ext4
VPID=$XL_VM_PID
xl_vm_wait_mark gw "$VPID" spread-done 240
xl_vm_wait_mark gw "$VPID" "chunk 19 " 120
xl_stop "$PID_A" KILL
xl_log "gateway A (pid $PID_A, $MAC_A) SIGKILLed after 20 MiB of the 32 MiB copy"
xl_target_alive "$PID_B" "$W/gw-b.log"
xl_vm_wait_mark gw "$VPID" copy-done 120
gw_start a
xl_log "gateway A restarted (pid $PID_A)"
points=(1 3 5 0 6)
for k in 0 1 2 3 4; do stall "$k" "${points[k]}" stop; done
xl_vm_wait_mark gw "$VPID" phase1-done 120
xl_stop "$PID_A"
xl_stop "$PID_B"
xl_dp_args "$DP2"
for g in a b; do
  gw_config "$g" 1 2 3 4
  gw_start "$g"
done
xl_log "both gateways restarted on $DP2"
points=(- - - - - 2 4 6 1 5 3)
for k in 5 6 7 8 9; do stall "$k" "${points[k]}" stop; done
stall 10 "${points[10]}" cut
xl_target_alive "$PID_A" "$W/gw-a.log"
xl_target_alive "$PID_B" "$W/gw-b.log"
xl_vm_wait gw "$VPID"
SLOW=$(xl_vm_val gw slowest_mib_s)
xl_log "slowest MiB of the copy (the failover): ${SLOW}s; replies before: A $(xl_vm_val gw replies_a), B $(xl_vm_val gw replies_b)"
fenced=$(cat "$W"/gw-b.log | grep -c 'fenced a gateway' || true)
xl_log "gateway B fenced $fenced gateway instances; A: $(grep -c 'this gateway was fenced' "$W/gw-a.log" || true) fenced restarts in its last log"

rbdx export rbd/gw "$W/gw.img" >/dev/null 2>"$W/export.err" || { cat "$W/export.err" >&2; xl_die "rbd export rbd/gw"; }
xl_expect_eq "rbd export rbd/gw: the 32 MiB copy" "$(xl_file_sha "$W/gw.img" 0 $((32 * MIB)))" "$(xl_vm_val gw big)"
rbdx export rbd/fs "$W/fs.img" >/dev/null 2>"$W/export.err" || { cat "$W/export.err" >&2; xl_die "rbd export rbd/fs"; }
e2fsck -fn "$W/fs.img" >"$W/fsck.log" 2>&1 || { cat "$W/fsck.log" >&2; xl_die "e2fsck -fn on rbd export of rbd/fs: not clean (above)"; }
xl_log "e2fsck: $(tail -n1 "$W/fsck.log")"
for f in /dir/a /hello.txt; do
  got=$(debugfs -R "cat $f" "$W/fs.img" 2>/dev/null | sha256sum | cut -d' ' -f1)
  xl_expect_eq "fs image $f (debugfs)" "$got" "$(xl_vm_val gw "file:$f")"
done
rbdx export rbd/st "$W/st.img" >/dev/null 2>"$W/export.err" || { cat "$W/export.err" >&2; xl_die "rbd export rbd/st"; }
for k in 0 1 2 3 4 5 6 7 8 9 10; do
  xl_expect_eq "rbd export rbd/st: region $k holds the newer data" \
    "$(xl_file_sha "$W/st.img" $((k * 8 * MIB)) $((8 * MIB)))" "$(xl_vm_val gw "new$k")"
done
xl_stop "$PID_A"
xl_stop "$PID_B"
xl_pass "Ceph: two gateways, one disk with 2 targets; fs clean under e2fsck on rbd export; gateway A killed mid-copy: copy completes through B (slowest MiB ${SLOW}s), identical in the guest and in rbd export; A restarted rejoins; 10 stalls of A past the failover ($DP, $DP2) and one cut of its OSD path: newer data kept in the guest and in rbd export" "$T0"
