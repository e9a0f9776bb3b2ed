#!/usr/bin/env bash
# 77-ceph-gateways.sh: scale-out on Ceph RBD with the Linux initiator (aoe.ko in a
# qemu guest): two xblade gateways, separate processes with distinct MACs, each on
# its own interface, export the same RBD images as the same shelf.slots.
#
#   netns xl77-t: one-node Ceph cluster on its 127.0.0.1 (../shared/tools/ceph-one-node.sh)
#                 gateway A on xl77ta ==veth== xl77a --+
#                 gateway B on xl77tb ==veth== xl77b --+-- bridge xl77br (root ns) -- guest tap
#
# Images rbd/gw (e77.1, data) and rbd/fs (e77.2, a filesystem), layering only (no
# exclusive-lock: two writers at once).
# Checks: the guest sees one device per image with two targets (both gateway MACs in
# debugfs); a file system made in the guest (busybox mke2fs) is read back after a
# remount, and `e2fsck -fn` is clean on `rbd export` of the image on the host; 16 MiB
# written with O_DIRECT read back identical, I/O spread over both gateways; during a
# 32 MiB O_DIRECT copy gateway A is SIGKILLed after 20 MiB: the copy completes through
# B, reads back identical in the guest and in `rbd export` on the host.
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init
CEPH_TOOL=${CEPH_ONE_NODE:-$(dirname "$XL_VM_TOOL")/ceph-one-node.sh}
[[ -r $CEPH_TOOL ]] || xl_die "no Ceph tool at $CEPH_TOOL (shared/tools beside the repo, or set CEPH_ONE_NODE)"
xl_require ceph-mon ceph-osd rbd e2fsck debugfs

NS=xl77-t BR=xl77br SHELF=77
W=$XL_WORK
MIB=$((1 << 20))
DP=${XL_DATAPATHS%% *} # the first datapath of the list
xl_dp_args "$DP"
CEPH_DIR=$W/ceph

# The cluster goes down before the namespace it lives in (gateways first).
gw_cleanup() {
  local rc=$? pid
  for pid in "${XL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
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
eval "$(ip netns exec "$NS" timeout 120 bash "$CEPH_TOOL" up "$CEPH_DIR" --image gw:64M --image fs:64M 2>"$W/ceph-up.log")" ||
  { cat "$W/ceph-up.log" >&2; xl_die "one-node Ceph cluster did not come up (log above)"; }
[[ -n ${CEPH_CONF:-} ]] || xl_die "ceph-one-node.sh printed no CEPH_CONF"
export CEPH_CONF
xl_log "Ceph cluster up in $((SECONDS - t)) s (CEPH_CONF=$CEPH_CONF)"
rbdx() { ip netns exec "$NS" timeout 60 rbd "$@"; }

for g in a b; do
  cat >"$W/gw-$g.toml" <<EOF
[[export]]
shelf = $SHELF
slot = 1
file = "rbd:rbd/gw"
interfaces = ["xl77t$g"]

[[export]]
shelf = $SHELF
slot = 2
file = "rbd:rbd/fs"
interfaces = ["xl77t$g"]
EOF
  xl_target "$NS" "$W/gw-$g.log" serve --config "$W/gw-$g.toml" "${XL_DP_ARGS[@]}"
  declare "PID_${g^^}=$XL_TARGET_PID"
done

xl_guest_script "$W/gw.sh" S="$SHELF" MAC_A="${MAC_A//:/}" MAC_B="${MAC_B//:/}" <<'EOF'
for n in 1 2; do
  waitdev e$S.$n
  waittargets e$S.$n "gateway MAC" $MAC_A $MAC_B
done
expect "AoE devices" "$(ls -d /sys/block/etherd!* | wc -l)" 2
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
EOF

T0=$SECONDS
xl_vm_start gw --ifname "$BR" --script "$W/gw.sh" --mtu 1500 --mem 384 --module crc32c_generic --module ext4
VPID=$XL_VM_PID
xl_vm_wait_mark gw "$VPID" spread-done 240
xl_vm_wait_mark gw "$VPID" "chunk 19 " 120
xl_stop "$PID_A" KILL
xl_log "gateway A (pid $PID_A, $MAC_A) SIGKILLed after 20 MiB of the 32 MiB copy"
xl_target_alive "$PID_B" "$W/gw-b.log"
xl_vm_wait gw "$VPID"
xl_target_alive "$PID_B" "$W/gw-b.log"
SLOW=$(xl_vm_val gw slowest_mib_s)
xl_log "slowest MiB of the copy (the failover): ${SLOW}s; replies before: A $(xl_vm_val gw replies_a), B $(xl_vm_val gw replies_b)"

rbdx export rbd/gw "$W/gw.img" >/dev/null 2>"$W/export.err" || { cat "$W/export.err" >&2; xl_die "rbd export rbd/gw"; }
xl_expect_eq "rbd export rbd/gw: the 32 MiB copy" "$(xl_file_sha "$W/gw.img" 0 $((32 * MIB)))" "$(xl_vm_val gw big)"
rbdx export rbd/fs "$W/fs.img" >/dev/null 2>"$W/export.err" || { cat "$W/export.err" >&2; xl_die "rbd export rbd/fs"; }
e2fsck -fn "$W/fs.img" >"$W/fsck.log" 2>&1 || { cat "$W/fsck.log" >&2; xl_die "e2fsck -fn on rbd export of rbd/fs: not clean (above)"; }
xl_log "e2fsck: $(tail -n1 "$W/fsck.log")"
for f in /dir/a /hello.txt; do
  got=$(debugfs -R "cat $f" "$W/fs.img" 2>/dev/null | sha256sum | cut -d' ' -f1)
  xl_expect_eq "fs image $f (debugfs)" "$got" "$(xl_vm_val gw "file:$f")"
done
xl_stop "$PID_B"
xl_pass "Ceph: two gateways, one disk with 2 targets; fs clean under e2fsck on rbd export; gateway A killed mid-copy: copy completes through B (slowest MiB ${SLOW}s), identical in the guest and in rbd export" "$T0"
