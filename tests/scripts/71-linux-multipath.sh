#!/usr/bin/env bash
# 71-linux-multipath.sh: scenario 4, multipath on the target side, with the Linux
# initiator (aoe.ko in a qemu guest).
#
# One export (71.1) served by `xblade serve --config` on two target interfaces
# (interfaces = ["xl71ta", "xl71tb"]), both on the guest's Ethernet segment:
#
#   netns xl71-t: xl71ta ==veth== xl71a --+
#                 xl71tb ==veth== xl71b --+-- bridge xl71br (root ns) -- guest tap
#
# Checks: the guest sees one device e71.1 with two targets (two target MACs in
# /sys/kernel/debug/aoe/e71.1); 8 MiB of I/O is spread over both (the guest's
# per-target reply counts, and tx_packets of each target veth, each >= 20%); during a
# 32 MiB O_DIRECT copy xl71tb goes down after 8 MiB, the copy completes within the
# per-MiB limit and reads back equal, xblade keeps running, and the backing file holds
# the data.
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init

NS=xl71-t BR=xl71br SHELF=71
W=$XL_WORK
MIB=$((1 << 20))
DP=${XL_DATAPATHS%% *} # the first datapath of the list
xl_dp_args "$DP"

xl_netns "$NS"
xl_bridge "$BR" 1500
for s in a b; do
  xl_veth "xl71$s" "$NS" "xl71t$s" 1500
  ip link set dev "xl71$s" master "$BR"
done
MAC_A=$(xl_mac "$NS" xl71ta) MAC_B=$(xl_mac "$NS" xl71tb)

xl_sparse "$W/mp.img" $((64 * MIB))
cat >"$W/mp.toml" <<EOF
[[export]]
shelf = $SHELF
slot = 1
file = "$W/mp.img"
interfaces = ["xl71ta", "xl71tb"]
EOF
xl_target "$NS" "$W/xblade.log" serve --config "$W/mp.toml" "${XL_DP_ARGS[@]}"
TPID=$XL_TARGET_PID

xl_guest_script "$W/mp.sh" S="$SHELF" MAC_A="${MAC_A//:/}" MAC_B="${MAC_B//:/}" <<'EOF'
DEV=/dev/etherd/e$S.1 DBG=/sys/kernel/debug/aoe/e$S.1
waitdev e$S.1
expect "AoE devices" "$(ls -d /sys/block/etherd!* | wc -l)" 1
# Both targets answer the discovery broadcast; the device may be up after the first.
waittargets e$S.1 "target MAC" $MAC_A $MAC_B
spread_write $DEV $DBG 8 targets $MAC_A $MAC_B
mark spread-done
sleep 1
dd if=/dev/urandom of=/tmp/big bs=1M count=32 2>/dev/null
val big "$(sha /tmp/big)"
mark copy-start
chunked_write /tmp/big $DEV 32 60
ok "32 MiB written"
expect "32 MiB read back" "$(devsha $DEV 0 32)" "$(sha /tmp/big)"
cat $DBG
EOF

T0=$SECONDS
xl_vm_start mp --ifname "$BR" --script "$W/mp.sh" --mtu 1500 --mem 384
VPID=$XL_VM_PID
xl_vm_wait_mark mp "$VPID" spread-done 60
sleep 0.5 # one stats period
ta=$(xl_counter "$NS" xl71ta tx_packets) tb=$(xl_counter "$NS" xl71tb tx_packets)
sa=$(xl_ata_count "$TPID" xl71ta) sb=$(xl_ata_count "$TPID" xl71tb)
xl_log "spread: frames sent by xl71ta/xl71tb: $ta/$tb; ATA commands served (xblade stats): $sa/$sb"
((ta * 5 >= ta + tb && tb * 5 >= ta + tb)) || xl_die "xblade's replies not spread over both interfaces: $ta / $tb"
((sa * 5 >= sa + sb && sb * 5 >= sa + sb)) || xl_die "xblade stats: ATA not spread over both interfaces: $sa / $sb"
xl_vm_wait_mark mp "$VPID" "chunk 7 " 90
ip -n "$NS" link set dev xl71tb down
xl_log "xl71tb down after 8 MiB of the 32 MiB copy"
sleep 2
xl_target_alive "$TPID" "$W/xblade.log" # fail now, not when the guest times out
tb1=$(xl_counter "$NS" xl71tb tx_packets)
xl_vm_wait mp "$VPID"
xl_target_alive "$TPID" "$W/xblade.log"
SLOW=$(xl_vm_val mp slowest_mib_s)
xl_log "slowest MiB of the copy (the failover): ${SLOW}s"
xl_expect_eq "xl71tb sent nothing while down" "$(xl_counter "$NS" xl71tb tx_packets)" "$tb1"
xl_expect_eq "mp.img: the 32 MiB copy" "$(xl_file_sha "$W/mp.img" 0 $((32 * MIB)))" "$(xl_vm_val mp big)"
xl_stop "$TPID"
xl_pass "4 multipath: one device, 2 target MACs, I/O spread ($sa/$sb ATA), a path down mid-copy: copy verifies (slowest MiB ${SLOW}s)" "$T0"
