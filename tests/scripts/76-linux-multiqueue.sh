#!/usr/bin/env bash
# 76-linux-multiqueue.sh: one target MAC per queue (--steer external) with the Linux
# initiator (aoe.ko in a qemu guest).
#
# xblade serves 76.1 on a veth with 2 rx queues, one AF_XDP worker per queue, each
# answering from its own MAC. The NIC's ntuple rules ("flow-type ether dst MAC_q action
# q") are emulated on the sending side: a tc BPF program on the root-namespace end's
# egress (tests/bpf/steer_dst_mac.bpf.c, compiled here with the MACs xblade reports)
# puts frames for MAC_q on tx queue q, which the veth delivers to rx queue q:
#
#   netns xl76-t: xl76t (2 queues) ==veth== xl76h (2 queues, tc steering)
#                                            +-- bridge xl76br (root ns) -- guest tap
#
# Checks: `xblade status --json` lists one worker per queue with distinct `mac`s; the
# guest sees one device e76.1 with one target per queue MAC (debugfs
# /sys/kernel/debug/aoe/e76.1); 32 MiB written with O_DIRECT reads back identical (in
# the guest and in the backing file); each queue's worker served at least 30% of the
# ATA requests (per-worker counters); after a clean exit the queue MAC is off the
# unicast filter. (Mac Mask and reservations through one MAC holding on the other:
# tests/xdp_queues.rs.)
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init
xl_require clang tc bridge

NS=xl76-t BR=xl76br SHELF=76
W=$XL_WORK
MIB=$((1 << 20))
SRC=$XL_ROOT/tests/bpf/steer_dst_mac.bpf.c
[[ -r $SRC ]] || xl_die "no steering program at $SRC"

xl_netns "$NS"
xl_bridge "$BR" 1500
ip link del xl76h 2>/dev/null || true
ip link add xl76h numtxqueues 2 numrxqueues 2 type veth peer name xl76t netns "$NS" numtxqueues 2 numrxqueues 2
XL_LINKS+=(xl76h)
xl_hostlink_prep xl76h 1500
ip -n "$NS" link set dev xl76t up
ip link set dev xl76h master "$BR"

xl_sparse "$W/mq.img" $((64 * MIB))
SOCK=$W/xblade.sock
xl_target "$NS" "$W/xblade.log" --datapath xdp --xdp-mode native --steer external \
  --control-socket "$SOCK" "$SHELF" 1 xl76t "$W/mq.img"
TPID=$XL_TARGET_PID
grep -q 'steer="external"' "$W/xblade.log" || { cat "$W/xblade.log" >&2; xl_die "no steering line in the log"; }

# The workers' MACs, in queue order, from the status.
status_json() { "$XL_BIN" status --socket "$SOCK" --json; }
sleep 0.5 # one stats period
mapfile -t MACS < <(status_json | python3 -c 'import json, sys
w = sorted(json.load(sys.stdin)["workers"], key=lambda w: w["queue"])
assert [x["queue"] for x in w] == [0, 1], w
for x in w:
    assert x["xdp"]["steer"] == "external", x
    print(x["mac"])')
((${#MACS[@]} == 2)) && [[ ${MACS[0]} != "${MACS[1]}" ]] || xl_die "want 2 distinct worker MACs, got: ${MACS[*]}"
xl_expect_eq "queue 0 answers from the port MAC" "${MACS[0]}" "$(xl_mac "$NS" xl76t)"
ip netns exec "$NS" bridge fdb show dev xl76t | grep -q "^${MACS[1]} self permanent" ||
  xl_die "queue 1's MAC ${MACS[1]} is not on xl76t's unicast filter"
xl_log "worker MACs: ${MACS[*]}"

# Emulated ntuple rules on the sending side.
hex() { echo "0x${1//:/}ULL"; }
clang -O2 -g -target bpf -Wall -I/usr/include/x86_64-linux-gnu -DSTEER_N=2 \
  -DSTEER_MAC_0="$(hex "${MACS[0]}")" -DSTEER_MAC_1="$(hex "${MACS[1]}")" \
  -c "$SRC" -o "$W/steer.o" || xl_die "clang could not build $SRC"
tc qdisc add dev xl76h clsact
tc filter add dev xl76h egress bpf da obj "$W/steer.o" sec tc || xl_die "tc could not attach the steering program"

ata_counts() { # "reads+writes of queue 0" "of queue 1"
  status_json | python3 -c 'import json, sys
w = sorted(json.load(sys.stdin)["workers"], key=lambda w: w["queue"])
print(" ".join(str(x["engine"]["ata_read"] + x["engine"]["ata_write"]) for x in w))'
}

xl_guest_script "$W/mq.sh" S="$SHELF" MAC0="${MACS[0]//:/}" MAC1="${MACS[1]//:/}" <<'EOF'
DEV=/dev/etherd/e$S.1 DBG=/sys/kernel/debug/aoe/e$S.1
waitdev e$S.1
expect "AoE devices" "$(ls -d /sys/block/etherd!* | wc -l)" 1
# One discovery broadcast reaches one queue; that worker answers from both MACs.
waittargets e$S.1 "queue MAC" $MAC0 $MAC1
mark both-targets
dd if=/dev/urandom of=/tmp/big bs=1M count=32 2>/dev/null
val big "$(sha /tmp/big)"
devwrite /tmp/big $DEV 0 || fail "O_DIRECT write of 32 MiB"
expect "32 MiB read back" "$(devsha $DEV 0 32)" "$(sha /tmp/big)"
rm /tmp/big
cat $DBG
EOF

T0=$SECONDS
xl_vm_start mq --ifname "$BR" --script "$W/mq.sh" --mtu 1500 --mem 384
VPID=$XL_VM_PID
xl_vm_wait_mark mq "$VPID" both-targets 90
read -r c0 c1 < <(ata_counts)
xl_vm_wait mq "$VPID"
xl_target_alive "$TPID" "$W/xblade.log"
sleep 0.5 # one stats period
read -r a0 a1 < <(ata_counts)
q0=$((a0 - c0)) q1=$((a1 - c1))
xl_log "ATA requests served during the 32 MiB copy: queue 0 $q0, queue 1 $q1"
((q0 + q1 > 0)) || xl_die "no ATA request counted"
((q0 * 10 >= (q0 + q1) * 3 && q1 * 10 >= (q0 + q1) * 3)) ||
  xl_die "queues not both serving at least 30%: queue 0 $q0, queue 1 $q1"
xl_expect_eq "mq.img: the 32 MiB copy" "$(xl_file_sha "$W/mq.img" 0 $((32 * MIB)))" "$(xl_vm_val mq big)"
xl_stop "$TPID"
if ip netns exec "$NS" bridge fdb show dev xl76t | grep -q "^${MACS[1]} "; then
  xl_die "queue 1's MAC ${MACS[1]} still on the unicast filter after exit"
fi
xl_pass "multi-queue: one device, 2 queue MACs, 32 MiB O_DIRECT verified, ATA per queue $q0/$q1" "$T0"
