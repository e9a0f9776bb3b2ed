#!/usr/bin/env bash
# 80-resize-linux.sh: online resize under the Linux kernel initiator (aoe.ko in a qemu
# guest, via ../shared/tools/aoe-client-vm.sh and tests/scripts/lib/), without restarting
# xblade (`xblade serve --config`, size_check_interval = 1):
#
#  1. device closed: the host grows the backing file 16 -> 24 MiB; xblade's periodic size
#     check grows the export and announces it (an unsolicited Query Config reply); the
#     guest's aoe driver re-IDENTIFIES (it does so on a QC reply while nobody has the
#     disk open) and /sys/block/etherd!e80.1/size shows the new sector count by itself.
#  2. device open (ext4 mounted, a file written): the host grows the file to 32 MiB and
#     runs `xblade resize 80.1` (grown + announced). The driver ignores QC replies for an
#     open disk, so the guest then writes e80.1 to /dev/etherd/revalidate (what
#     `aoe-revalidate e80.1` does: the driver sends IDENTIFY at once, open or not), sees
#     the new size, grows the mounted file system with resize2fs (online, the ext4
#     ioctl): a 22 MiB allocation refused before (ENOSPC) now fits; a second file is
#     written, the file system unmounted, remounted and both files read back.
#  Host: e2fsck -fn is clean, the file system spans the whole 32 MiB file, debugfs reads
#  the second file, and `xblade status --json` shows the export at 65536 sectors.
#
# Under TCG (no usable KVM) the guest's I/O is slow: the data stays at a few MiB.
#
#   netns xo80-t: xo80t ==veth== xo80v (root ns; the VM tool bridges it to the guest)
#
# The guest is busybox only: mke2fs and resize2fs are the host's e2fsprogs binaries,
# run through the host's dynamic loader (copied in with their libraries by --add).
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init
xl_require e2fsck dumpe2fs debugfs ldd

NS=xo80-t SHELF=80
W=$XL_WORK
MIB=$((1 << 20))
DP=${XL_DATAPATHS%% *}
xl_dp_args "$DP"

xl_netns "$NS"
xl_veth xo80v "$NS" xo80t 1500
xl_sparse "$W/grow.img" $((16 * MIB))
cat >"$W/xblade.toml" <<EOF
size_check_interval = 1
[[export]]
shelf = $SHELF
slot = 1
file = "$W/grow.img"
interfaces = ["xo80t"]
EOF
CTL=$W/ctl.sock
xl_target "$NS" "$W/xblade.log" serve --config "$W/xblade.toml" --control-socket "$CTL" "${XL_DP_ARGS[@]}"
TPID=$XL_TARGET_PID

# e2fsprogs for the guest: each binary renamed *.bin, its libraries and the loader, and
# a wrapper that runs it through the loader with /bin as the library path.
adds=()
for tool in mke2fs resize2fs; do
  bin=$(command -v "$tool") || xl_die "no $tool on the host"
  cp "$bin" "$W/$tool.bin"
  printf '#!/bin/sh\nexec /bin/ld-linux-x86-64.so.2 --library-path /bin /bin/%s.bin "$@"\n' "$tool" >"$W/x$tool"
  chmod 755 "$W/x$tool"
  adds+=(--add "$W/$tool.bin" --add "$W/x$tool")
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }'); do
    [[ " ${adds[*]} " == *" $lib "* ]] || adds+=(--add "$lib")
  done
done

xl_guest_script "$W/rs.sh" S="$SHELF" <<'EOF'
N=e$S.1 DEV=/dev/etherd/e$S.1
size() { sysval $N size; }
wait_size() { # SECTORS SECS
  i=0
  while [ "$(size)" != "$1" ]; do
    i=$((i + 1)); [ $i -gt $(($2 * 10)) ] && fail "size still $(size) after $2 s, want $1"
    sleep 0.1
  done
}
mkdir -p /etc /mnt && ln -sf /proc/mounts /etc/mtab
waitdev $N
expect "$N sectors at start" "$(size)" 32768
mark grow1
t=$(up)
wait_size 49152 20
ok "1. closed: size 49152 by itself after $(awk -v a="$t" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }') s (periodic check, announce, re-IDENTIFY)"
xmke2fs -q -F -t ext4 -b 4096 -E lazy_itable_init=1,lazy_journal_init=1 -L xo80 $DEV >/tmp/mkfs.log 2>&1 ||
  { cat /tmp/mkfs.log; fail "mke2fs -t ext4"; }
mount -t ext4 $DEV /mnt || fail "mount ext4"
dd if=/dev/urandom of=/mnt/a bs=1M count=1 2>/dev/null
sha /mnt/a >/tmp/a.sum; sync
blocks1=$(df -k /mnt | awk 'NR == 2 { print $2 }')
val blocks1 "$blocks1"
fallocate -l 22M /mnt/big 2>/dev/null && fail "22 MiB fit in the 24 MiB file system already"
rm -f /mnt/big
mark grow2
# The host grows the file and runs `xblade resize` now (its announcement reaches us at
# once); give it 3 s, then see whether the open disk took the size by itself.
sleep 3
val size_open_after_announce "$(size)"
# aoe-revalidate: IDENTIFY now, open or not (again each second, should the host be late).
i=0
while [ "$(size)" != 65536 ]; do
  i=$((i + 1)); [ $i -gt 15 ] && fail "size still $(size) 15 s after revalidate, want 65536"
  echo $N >/dev/etherd/revalidate || fail "write to /dev/etherd/revalidate"
  sleep 1
done
ok "2. open: size 65536 after revalidate"
xresize2fs $DEV >/tmp/rs.log 2>&1 || { cat /tmp/rs.log; fail "resize2fs (online)"; }
grep -q 'on-line resizing required' /tmp/rs.log || { cat /tmp/rs.log; fail "resize2fs did not resize on-line"; }
blocks2=$(df -k /mnt | awk 'NR == 2 { print $2 }')
val blocks2 "$blocks2"
[ "$blocks2" -ge $((blocks1 + 8000)) ] || fail "df: $blocks1 KiB -> $blocks2 KiB after resize2fs"
fallocate -l 22M /mnt/big || fail "22 MiB do not fit after the resize"
ok "resize2fs grew the mounted ext4: $blocks1 -> $blocks2 KiB; a 22 MiB allocation fits now"
dd if=/dev/urandom of=/mnt/b bs=1M count=1 2>/dev/null
sha /mnt/b >/tmp/b.sum
umount /mnt || fail umount
echo 3 >/proc/sys/vm/drop_caches
mount -t ext4 -o ro $DEV /mnt || fail "mount again"
expect "a after remount" "$(sha /mnt/a)" "$(cat /tmp/a.sum)"
expect "b after remount" "$(sha /mnt/b)" "$(cat /tmp/b.sum)"
val sha_b "$(cat /tmp/b.sum)"
umount /mnt || fail "final umount"
EOF

T0=$SECONDS
xl_vm_start rs --ifname xo80v --script "$W/rs.sh" --mtu 1500 --mem 320 \
  --module crc32c_generic --module ext4 "${adds[@]}"
VPID=$XL_VM_PID
xl_vm_wait_mark rs "$VPID" grow1 120
truncate -s $((24 * MIB)) "$W/grow.img"
xl_log "grew grow.img to 24 MiB; waiting for xblade's size check"
xl_vm_wait_mark rs "$VPID" grow2 120
t=$SECONDS
truncate -s $((32 * MIB)) "$W/grow.img"
out=$("$XL_BIN" resize "$SHELF.1" --socket "$CTL") || xl_die "xblade resize failed: $out"
xl_log "xblade resize: $out"
[[ $out == *"grown from 49152 to 65536 sectors"* ]] || xl_die "unexpected resize answer: $out"
((SECONDS - t <= 2)) || xl_log "warning: growing took $((SECONDS - t)) s; the guest sampled the size after 3 s"
xl_vm_wait rs "$VPID"
xl_target_alive "$TPID" "$W/xblade.log"
grep -q 'grown from 32768 to 49152 sectors' "$W/xblade.log" || xl_die "no periodic growth in the log"

open_size=$(xl_vm_val rs size_open_after_announce)
if [[ $open_size == 49152 ]]; then
  xl_log "as documented: the mounted disk ignored the announcement (still 49152 sectors); revalidate applied it"
else
  xl_log "note: the mounted disk took the announcement by itself ($open_size sectors)"
fi
sectors=$("$XL_BIN" status --json --socket "$CTL" | python3 -c 'import json, sys; print(json.load(sys.stdin)["exports"][0]["sectors"])')
xl_expect_eq "xblade status: exported sectors" "$sectors" 65536
xl_stop "$TPID"
e2fsck -fn "$W/grow.img" >"$W/fsck.log" 2>&1 || { cat "$W/fsck.log" >&2; xl_die "e2fsck -fn grow.img: not clean"; }
blocks=$(dumpe2fs -h "$W/grow.img" 2>/dev/null | awk -F: '$1 == "Block count" { gsub(/ /, "", $2); print $2 }')
xl_expect_eq "file system blocks (4 KiB) after the online resize" "$blocks" $((32 * MIB / 4096))
xl_expect_eq "/b on the host (debugfs)" "$(debugfs -R 'cat /b' "$W/grow.img" 2>/dev/null | sha256sum | cut -d' ' -f1)" "$(xl_vm_val rs sha_b)"
xl_pass "online resize: closed disk by itself; mounted ext4 via revalidate + resize2fs; no restart" "$T0"
