#!/usr/bin/env bash
# 73-linux-restart.sh: scenario 6, the target restarts under a Linux initiator's copy.
#
# A qemu guest (aoe.ko) copies 32 MiB with O_DIRECT, MiB by MiB, to xblade's export.
# After 8 MiB the host kills xblade with SIGKILL (by pid: a crash) and starts it again;
# after 20 MiB it stops it with SIGTERM (a clean stop) and starts it again. The guest's
# I/O must resume by itself (retransmissions), every MiB within the per-MiB limit, the
# copy must read back equal, and the backing file must hold it.
#
#   netns xl73-t: xl73t ==veth== xl73v (root ns; the VM tool bridges it to the guest)
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init

NS=xl73-t SHELF=73
W=$XL_WORK
MIB=$((1 << 20))
DP=${XL_DATAPATHS%% *}
xl_dp_args "$DP"

xl_netns "$NS"
xl_veth xl73v "$NS" xl73t 1500
xl_sparse "$W/restart.img" $((64 * MIB))
TARGS=("${XL_DP_ARGS[@]}" "$SHELF" 1 xl73t "$W/restart.img")
xl_target "$NS" "$W/xblade-1.log" "${TARGS[@]}"
TPID=$XL_TARGET_PID

xl_guest_script "$W/rs.sh" S="$SHELF" <<'EOF'
DEV=/dev/etherd/e$S.1
waitdev e$S.1
dd if=/dev/urandom of=/tmp/big bs=1M count=32 2>/dev/null
val big "$(sha /tmp/big)"
chunked_write /tmp/big $DEV 32 45
ok "32 MiB written across two target restarts"
expect "32 MiB read back" "$(devsha $DEV 0 32)" "$(sha /tmp/big)"
EOF

T0=$SECONDS
xl_vm_start rs --ifname xl73v --script "$W/rs.sh" --mtu 1500 --mem 320
VPID=$XL_VM_PID
n=1
for plan in "7:KILL" "19:TERM"; do
  chunk=${plan%%:*} sig=${plan#*:}
  xl_vm_wait_mark rs "$VPID" "chunk $chunk " 120
  xl_target_alive "$TPID" "$W/xblade-$n.log"
  xl_stop "$TPID" "$sig"
  xl_log "xblade (pid $TPID) stopped with SIG$sig after $((chunk + 1)) MiB; starting it again"
  sleep 1
  n=$((n + 1))
  xl_target "$NS" "$W/xblade-$n.log" "${TARGS[@]}"
  TPID=$XL_TARGET_PID
done
xl_vm_wait rs "$VPID"
xl_target_alive "$TPID" "$W/xblade-$n.log"
xl_stop "$TPID"
xl_log "slowest MiB of the copy (includes each restart): $(xl_vm_val rs slowest_mib_s)s"
xl_expect_eq "restart.img: the 32 MiB copy" "$(xl_file_sha "$W/restart.img" 0 $((32 * MIB)))" "$(xl_vm_val rs big)"
xl_pass "6 target restarts (SIGKILL, SIGTERM) during a 32 MiB copy: I/O resumes, copy verifies (slowest MiB $(xl_vm_val rs slowest_mib_s)s)" "$T0"
