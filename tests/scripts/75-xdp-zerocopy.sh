#!/usr/bin/env bash
# 75-xdp-zerocopy.sh: AF_XDP zero-copy on a NIC that takes one buffer per frame
# (virtio_net, xdp_zc_max_segs 1), in a qemu guest (../shared/tools/xdp-guest-vm.sh:
# Debian 6.18 kernel, 2-queue virtio-net with iommu_platform=on, TCG).
#
# Run 1, MTU 1500: xblade --zero-copy on --queues 2 (O_DIRECT on a virtio-blk disk) must bind
#   zero-copy without XDP_USE_SG on both queues. From the host: `xblade conformance` (the AoE
#   r11 check list), `xblade bench --verify` (mixed reads and writes, every byte checked), and
#   aoetools (aoeping -v/-I, aoecfg). xblade runs with --steer external: queue 1 answers from
#   its own MAC, and the tap steers that MAC to queue 1 as a NIC's ntuple rule would
#   (--steer-dst-mac); the bench rotates its requests over both MACs, so each queue must serve
#   at least 10% of the ATA requests (status --json).
# Run 2, MTU 9000: --zero-copy on must refuse to start, naming virtio_net's limit and the MTU
#   that fits; --zero-copy auto must pick copy mode and say why (its log line), and the
#   conformance list and bench --verify pass with jumbo (17-sector) requests.
# No timing is taken: TCG figures mean nothing.
#
#   netns xl75-i: xl75i ==veth== xl75h :netns xl75-h, bridged (by the tool) to the guest's tap
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init
XL_GUEST_TOOL=${XDP_GUEST_VM:-$XL_ROOT/../shared/tools/xdp-guest-vm.sh}
[[ -x $XL_GUEST_TOOL ]] ||
  xl_die "no guest tool at $XL_GUEST_TOOL (shared/tools/xdp-guest-vm.sh beside the repo, or set XDP_GUEST_VM)"
xl_require aoeping aoecfg qemu-system-x86_64 busybox modinfo xz
XL_BIN=$(readlink -f "$XL_BIN") # the guest tool copies it; the host command runs it

INS=xl75-i HNS=xl75-h IIF=xl75i HIF=xl75h SHELF=75
GMAC=52:54:00:75:00:01
Q1MAC=56:54:00:75:00:01 # queue 1's MAC: steer::queue_mac(GMAC, 1)
W=$XL_WORK
XL_GUEST_TIMEOUT=${XL_GUEST_TIMEOUT:-420}

xl_netns "$INS"
xl_netns "$HNS"
ip link add "$IIF" netns "$INS" type veth peer name "$HIF" netns "$HNS"
ip -n "$INS" link set "$IIF" up
ip -n "$HNS" link set "$HIF" up
xl_sparse "$W/guest.img" $((64 << 20))

# guest_script FILE ZC MTU: the guest's part. It starts xblade on eth0 (2 queues): at MTU
# 1500 through `serve` with two exports, 75.1 on /dev/vda with O_DIRECT and 75.2 on the null
# store (READ replies from its zero pool); at MTU 9000 in the vblade form with 75.1 only,
# after checking that --zero-copy on refuses to start. It prints xblade's status JSON once
# serving and again after the host's checks (host-now), and its log, between markers.
guest_script() {
  cat >"$1" <<EOF
#!/bin/sh
if [ "$3" -le 3602 ]; then
  printf '%s\n' 'datapath = "xdp"' '[xdp]' 'queues = 2' 'mode = "native"' 'zero_copy = "$2"' 'steer = "external"' \
    '[[export]]' 'shelf = $SHELF' 'slot = 1' 'file = "/dev/vda"' 'interfaces = ["eth0"]' \
    'direct = true' '[[export]]' 'shelf = $SHELF' 'slot = 2' 'file = "null:64M"' \
    'interfaces = ["eth0"]' >/tmp/xb.toml
  xblade serve -c /tmp/xb.toml >/tmp/xb.log 2>&1 &
else
  XB_ARGS="--datapath xdp --xdp-mode native --queues 2 --steer external -d $SHELF 1 eth0 /dev/vda"
  timeout 60 xblade --zero-copy on \$XB_ARGS >/tmp/on.log 2>&1
  echo "XBZC-ON-EXIT=\$?"
  echo XBZC-ON-BEGIN; grep 'xblade: error' /tmp/on.log; echo XBZC-ON-END
  xblade --zero-copy $2 \$XB_ARGS >/tmp/xb.log 2>&1 &
fi
XB=\$!
i=0
until grep -q 'xblade serving' /tmp/xb.log; do
  if ! kill -0 \$XB 2>/dev/null || [ \$i -ge 900 ]; then
    echo XBZC-LOG-BEGIN; cat /tmp/xb.log; echo XBZC-LOG-END
    echo "xblade did not start serving"
    exit 1
  fi
  i=\$((i + 1)); sleep 0.1
done
sleep 0.5   # counters are published every 250 ms
xblade status --json >/tmp/st0.json 2>&1
host-now $((XL_GUEST_TIMEOUT - 120)); hrc=\$?
sleep 0.5
xblade status --json >/tmp/st.json 2>&1
kill \$XB; wait \$XB
echo XBZC-STATUS0-BEGIN; cat /tmp/st0.json; echo; echo XBZC-STATUS0-END
echo XBZC-STATUS-BEGIN; cat /tmp/st.json; echo; echo XBZC-STATUS-END
echo XBZC-LOG-BEGIN; cat /tmp/xb.log; echo XBZC-LOG-END
exit \$hrc
EOF
}

# host_script FILE SCNT: the host's part, in the initiator namespace: conformance (the
# target must advertise SCNT sectors per request), bench --verify, aoetools.
host_script() {
  cat >"$1" <<EOF
set -euo pipefail
x() { timeout 180 ip netns exec $INS "\$@"; }
# Wait for the first Query Config answer (up to 20 s): one run in five or so, right after
# xblade starts with per-queue MACs, the guest answered nothing for a few seconds (frames
# counted as sent in the guest, none seen on the host: qemu's tap while virtio_net applies
# the new unicast filter?). The checks below then run against a target that answers.
for i in \$(seq 10); do
  if x aoeping -s 2 $SHELF 1 $IIF >/dev/null 2>&1; then echo "target answers (try \$i)"; break; fi
  ((i < 10)) || { echo "no Query Config answer from e$SHELF.1 in 20 s"; exit 1; }
done
echo "== xblade conformance"
x "$XL_BIN" conformance $IIF $SHELF.1 --expect-scnt $2
echo "== xblade bench --verify (mixed, window 16)"
x "$XL_BIN" bench --iface $IIF --target $SHELF.1 --op mix:50 --verify --lba-range 2M \\
  --duration 4s --warmup 200ms --window 16 --timeout 3000 --retries 8 -q
echo "== aoetools"
out=\$(x aoeping -v -s 10 $SHELF 1 $IIF)
grep -qE "found e$SHELF.1 with mac (${GMAC//:/}|${Q1MAC//:/})" <<<"\$out" || { echo "aoeping -v: \$out"; exit 1; }
out=\$(x aoeping -I -s 10 $SHELF 1 $IIF)
grep -q '^model: xblade AoE target' <<<"\$out" || { echo "aoeping -I: \$out"; exit 1; }
got=\$(x aoecfg -t 3 -c set -s zc$2 $SHELF 1 $IIF)
[[ \$got == zc$2 ]] || { echo "aoecfg set: '\$got'"; exit 1; }
got=\$(x aoecfg -t 3 $SHELF 1 $IIF)
[[ \$got == zc$2 ]] || { echo "aoecfg read: '\$got'"; exit 1; }
echo "aoetools: aoeping -v, aoeping -I, aoecfg set and read: ok"
if (($2 <= 7)); then
  echo "== xblade bench on the null store (1 KiB reads from the zero pool)"
  x "$XL_BIN" bench --iface $IIF --target $SHELF.2 --op read --duration 2s --warmup 200ms \\
    --window 16 --timeout 3000 --retries 8 -q
fi
EOF
}

# zc_replies_vanished NAME: true when run NAME failed the one known way that lies below
# xblade: the host got no Query Config answer in 20 s, while the guest's xblade, bound
# zero-copy, took Query Configs and sent a reply to each (status: replies, TX frames), which
# the guest's virtio_net completed. Measured on this bed (tests/scripts/78-kernel-matrix.sh and a reduced
# loop, about 1 guest boot in 12): the tap on the host received none of them.
zc_replies_vanished() {
  grep -aq '^host: no Query Config answer' "$W/$1.out" || return 1
  sed -n '/^XBZC-STATUS-BEGIN/,/^XBZC-STATUS-END/{/^XBZC-/d;p}' "$W/$1.out" | tr -d '\r' |
    grep -a '^{' | tail -n 1 | python3 -c '
import json, sys
try:
    st = json.loads(sys.stdin.read())
except ValueError:
    sys.exit(1)
ws = st["workers"]
sent = all((w.get("xdp") or {}).get("zero_copy") for w in ws)
replies = sum(w["engine"]["replies"] for w in ws)
sys.exit(0 if sent and replies > 0 and sum(w["tx_frames"] for w in ws) >= replies else 1)
'
}

# guest_run NAME ZC MTU SCNT: one guest run; its console output in $W/NAME.out.
guest_run() {
  local name=$1 zc=$2 mtu=$3 scnt=$4 pid rc=0
  ip -n "$INS" link set "$IIF" mtu "$mtu"
  ip -n "$HNS" link set "$HIF" mtu "$mtu"
  guest_script "$W/$name.guest.sh" "$zc" "$mtu"
  host_script "$W/$name.host.sh" "$scnt"
  xl_log "$name: guest run (TCG, about a minute): xblade --zero-copy $zc --queues 2 at MTU $mtu"
  local try
  for try in 1 2; do
    rc=0
    "$XL_GUEST_TOOL" --netns "$HNS" --ifname "$HIF" --script "$W/$name.guest.sh" --smp 2 --queues 2 \
      --mtu "$mtu" --mac "$GMAC" --timeout "$XL_GUEST_TIMEOUT" --bin "$XL_BIN" --disk "$W/guest.img" \
      --steer-dst-mac "$Q1MAC=1" --host-cmd "bash $W/$name.host.sh" >"$W/$name.out" 2>"$W/$name.err" &
    pid=$!
    XL_PIDS+=("$pid")
    wait "$pid" || rc=$?
    xl_forget "$pid"
    ((rc != 0 && try == 1)) && zc_replies_vanished "$name" || break
    # A fault below xblade, not a flake of ours (see zc_replies_vanished): said, then the
    # guest run once more; a second failure fails the script.
    xl_log "$name: RETRY: the zero-copy guest counted its replies as sent, yet none reached the host in 20 s (qemu virtio-net, docs/platform.md §5.4); running the guest once more"
    cp "$W/$name.out" "$W/$name.first.out"
  done
  if ((rc != 0)); then
    tail -n 80 "$W/$name.out" >&2
    tail -n 20 "$W/$name.err" >&2
    xl_die "$name: the guest run exited $rc (output above; XL_KEEP=1 keeps $W)"
  fi
  grep -a '^host: ' "$W/$name.out" | sed 's/^/  /'
}

# section NAME MARK: the lines between XBZC-MARK-BEGIN and XBZC-MARK-END of run NAME.
section() {
  sed -n "/^XBZC-$2-BEGIN/,/^XBZC-$2-END/{/^XBZC-/d;p}" "$W/$1.out" | tr -d '\r'
}

# check_status NAME ZERO_COPY: both queues' workers report zero_copy == ZERO_COPY (true or
# false), each served at least 10% of the ATA requests, no invalid descriptor either way, and
# between the two snapshots (the host's checks) no frame met an empty fill ring or was dropped
# at the socket. With zero-copy, the null export's READs went out from the zero pool.
check_status() {
  section "$1" STATUS0 >"$W/$1.status0.json"
  section "$1" STATUS >"$W/$1.status.json"
  python3 - "$W/$1.status0.json" "$W/$1.status.json" "$2" <<'PY' || xl_die "$1: status check failed (status JSON in $W/$1.status*.json)"
import json, sys
def workers(path):
    return sorted(json.load(open(path))["workers"], key=lambda w: w["queue"])
w0, ws = workers(sys.argv[1]), workers(sys.argv[2])
want = sys.argv[3] == "true"
assert [w["queue"] for w in ws] == [0, 1], f"workers on queues {[w['queue'] for w in ws]}"
ata = [w["engine"]["ata_read"] + w["engine"]["ata_write"] for w in ws]
total = sum(ata)
out = []
for a, b, n in zip(w0, ws, ata):
    q, x0, x = b["queue"], a["xdp"], b["xdp"]
    assert x["zero_copy"] == want, f"queue {q}: zero_copy {x['zero_copy']}, want {want}"
    assert n >= 0.1 * total, f"queue {q} served {n} of {total} ATA requests"
    for k in ("rx_invalid_descs", "tx_invalid_descs", "rx_bad_desc", "rx_oversize"):
        assert x[k] == 0, f"queue {q}: {k} = {x[k]}"
    for k in ("rx_fill_ring_empty", "rx_dropped"):
        assert x[k] == x0[k], f"queue {q}: {k} {x0[k]} -> {x[k]} during the host's checks"
    out.append(f"q{q}: zero_copy={x['zero_copy']} ata={n} ({100 * n // total}%) fill_depth={x['fill_depth']}"
               f" zero_pool_replies={x['zero_pool_replies']} rx_fill_ring_empty={x['rx_fill_ring_empty']} (at start)")
if want:
    z = sum(w["xdp"]["zero_pool_replies"] for w in ws)
    assert z > 0, "no READ reply went out from the zero pool"
print("; ".join(out))
PY
}

# --- run 1: MTU 1500, --zero-copy on ---------------------------------------------------
T0=$SECONDS
guest_run zc1500 on 1500 2
section zc1500 LOG >"$W/zc1500.log"
line=$(grep 'AF_XDP bind mode' "$W/zc1500.log") || xl_die "zc1500: no bind mode line in the xblade log"
grep -q 'bind="zero-copy"' <<<"$line" && grep -q 'driver=virtio_net' <<<"$line" ||
  xl_die "zc1500: unexpected bind choice: $line"
n=$(grep -c 'AF_XDP socket ready (zero-copy mode)' "$W/zc1500.log" || true)
xl_expect_eq "zc1500: queues bound in zero-copy mode (log)" "$n" 2
summary=$(check_status zc1500 true) || xl_die "zc1500: status check failed"
xl_log "zc1500: $summary"
xl_pass "zero-copy without SG at MTU 1500 on 2 queues: conformance, bench --verify (O_DIRECT), aoetools, null-store reads; $summary" "$T0"

# --- run 2: MTU 9000, --zero-copy on refused, auto picks copy mode ----------------------
T0=$SECONDS
guest_run zc9000 auto 9000 17
grep -aq '^XBZC-ON-EXIT=[1-9]' "$W/zc9000.out" || xl_die "zc9000: --zero-copy on started at MTU 9000"
err=$(section zc9000 ON)
want="eth0: virtio_net takes 1 buffer per frame in zero-copy mode, MTU 9000 needs 3 (frames of MTU + 18 bytes, 3620 per buffer): lower the MTU to 3602 or use --zero-copy auto"
grep -qF "$want" <<<"$err" || xl_die "zc9000: --zero-copy on error: '$err', want it to contain '$want'"
xl_log "zc9000: --zero-copy on refused: ${err#*error: }"
section zc9000 LOG >"$W/zc9000.log"
line=$(grep 'AF_XDP bind mode' "$W/zc9000.log") || xl_die "zc9000: no bind mode line in the xblade log"
xl_expect_eq "zc9000: bind mode lines (one per interface)" "$(grep -c 'AF_XDP bind mode' "$W/zc9000.log")" 1
grep -q 'bind="copy"' <<<"$line" &&
  grep -qF 'virtio_net takes 1 buffer per frame in zero-copy mode, MTU 9000 needs 3: copy mode' <<<"$line" ||
  xl_die "zc9000: unexpected auto choice: $line"
xl_log "zc9000: auto: ${line#*AF_XDP bind mode: }"
summary=$(check_status zc9000 false) || xl_die "zc9000: status check failed"
xl_log "zc9000: $summary"
xl_pass "MTU 9000: --zero-copy on refused with the driver's limit, auto copy mode with its reason, conformance and bench --verify (17 sectors)" "$T0"
