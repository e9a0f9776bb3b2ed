#!/usr/bin/env bash
# 72-linux-shared.sh: scenario 5, shared storage: two Linux initiators (two qemu guests
# running at the same time, different MACs) on one segment see the same xblade export,
# and what one writes with O_DIRECT the other reads back, in both directions.
#
#   netns xl72-t: xl72t ==veth== xl72v -- bridge xl72br (root ns) -- guest a's tap
#                                                                 \- guest b's tap
#
# The guests sequence themselves through the disk: a writes 16 MiB at 1 MiB, then the
# line "XLA <sha256>" into sector 0; b polls sector 0 (O_DIRECT), reads the data and
# compares, writes 4 MiB at 32 MiB and "XLB <sha256>" into sector 1, which a polls and
# checks. The host then checks both regions of the backing file.
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init

NS=xl72-t BR=xl72br SHELF=72
W=$XL_WORK
MIB=$((1 << 20))
DP=${XL_DATAPATHS%% *}
xl_dp_args "$DP"

xl_netns "$NS"
xl_bridge "$BR" 1500
xl_veth xl72v "$NS" xl72t 1500
ip link set dev xl72v master "$BR"
xl_sparse "$W/shared.img" $((64 * MIB))
xl_target "$NS" "$W/xblade.log" "${XL_DP_ARGS[@]}" "$SHELF" 1 xl72t "$W/shared.img"
TPID=$XL_TARGET_PID

for role in a b; do
  xl_guest_script "$W/$role.sh" ROLE=$role S="$SHELF" <<'EOF'
DEV=/dev/etherd/e$S.1
waitdev e$S.1
# marker N: the first line of sector N, read with O_DIRECT (never from the page cache)
marker() { devread $DEV $(($1 * 512)) 512 | tr -d '\000' | head -n1; }
# await N TAG: wait up to 90 s for "TAG <sha>" in sector N; prints the sha
await() {
  i=0
  while :; do
    m=$(marker "$1")
    case $m in "$2 "*) echo "${m#* }"; return 0 ;; esac
    i=$((i + 1)); [ $i -gt 450 ] && return 1
    sleep 0.2
  done
}
# put N TEXT: TEXT as the first line of sector N (zero padded), O_DIRECT
put() {
  { echo "$2"; head -c 512 /dev/zero; } | head -c 512 >/tmp/m
  devwrite /tmp/m $DEV $(($1 * 512)) || fail "marker write"
}
if [ "$ROLE" = a ]; then
  dd if=/dev/urandom of=/tmp/d bs=1M count=16 2>/dev/null
  D=$(sha /tmp/d); val a_data "$D"
  devwrite /tmp/d $DEV $((1 << 20)) || fail "O_DIRECT write"
  put 0 "XLA $D"
  ok "a wrote 16 MiB at 1 MiB and its marker"
  B=$(await 1 XLB) || fail "no marker from b after 90 s"
  expect "a reads what b wrote" "$(devsha $DEV $((32 << 20)) 4)" "$B"
else
  A=$(await 0 XLA) || fail "no marker from a after 90 s"
  expect "b reads what a wrote" "$(devsha $DEV $((1 << 20)) 16)" "$A"
  dd if=/dev/urandom of=/tmp/d bs=1M count=4 2>/dev/null
  D=$(sha /tmp/d); val b_data "$D"
  devwrite /tmp/d $DEV $((32 << 20)) || fail "O_DIRECT write"
  put 1 "XLB $D"
  ok "b wrote 4 MiB at 32 MiB and its marker"
fi
EOF
done

T0=$SECONDS
xl_vm_start a --ifname "$BR" --script "$W/a.sh" --mtu 1500 --mac 52:54:00:72:00:0a
APID=$XL_VM_PID
xl_vm_start b --ifname "$BR" --script "$W/b.sh" --mtu 1500 --mac 52:54:00:72:00:0b
BPID=$XL_VM_PID
xl_vm_wait b "$BPID"
xl_vm_wait a "$APID"
xl_target_alive "$TPID" "$W/xblade.log"
xl_stop "$TPID"
xl_expect_eq "shared.img: a's 16 MiB at 1 MiB" "$(xl_file_sha "$W/shared.img" "$MIB" $((16 * MIB)))" "$(xl_vm_val a a_data)"
xl_expect_eq "shared.img: b's 4 MiB at 32 MiB" "$(xl_file_sha "$W/shared.img" $((32 * MIB)) $((4 * MIB)))" "$(xl_vm_val b b_data)"
xl_pass "5 shared storage: two guests at once, each reads back what the other wrote (O_DIRECT)" "$T0"
