#!/usr/bin/env bash
# 74-aoetools.sh: scenario 7, the aoetools (Debian package aoetools) against xblade from
# a host namespace: aoeping (Query Config, IDENTIFY dumped with -i and decoded with -I)
# and aoecfg (read, set, set when set, exact test, prefix test, force set, wildcard
# read). The tools skip every reply shorter than 60 bytes, so this also checks xblade's
# padding on a virtual link. As a contrast (informational, never a failure), vblade on
# the same veth: its unpadded replies are invisible to the tools.
#
#   netns xl74-t: xl74t ==veth== xl74i :netns xl74-i (aoetools)
. "$(dirname "${BASH_SOURCE[0]}")/lib/linux-initiator.bash"
xl_init
xl_require aoeping aoecfg

TNS=xl74-t INS=xl74-i SHELF=74
W=$XL_WORK
DP=${XL_DATAPATHS%% *}
xl_dp_args "$DP"

xl_netns "$TNS"
xl_netns "$INS"
ip link add xl74t netns "$TNS" type veth peer name xl74i netns "$INS"
ip -n "$TNS" link set xl74t up
ip -n "$INS" link set xl74i up
TMAC=$(xl_mac "$TNS" xl74t)
xl_sparse "$W/tools.img" $((8 << 20)) # 16384 sectors
xl_target "$TNS" "$W/xblade.log" "${XL_DP_ARGS[@]}" "$SHELF" 1 xl74t "$W/tools.img"
TPID=$XL_TARGET_PID

# tool CMD...: run an aoetool in the initiator namespace with a hard time limit.
tool() { timeout 10 ip netns exec "$INS" "$@"; }

T0=$SECONDS
out=$(tool aoeping -v -s 3 "$SHELF" 1 xl74i) || xl_die "aoeping -v: exit $? (no reply seen)"
grep -q "found e$SHELF.1 with mac ${TMAC//:/}" <<<"$out" || xl_die "aoeping -v: unexpected output: $out"
xl_log "ok: aoeping finds e$SHELF.1 at ${TMAC//:/}"

tool aoeping -i -s 3 "$SHELF" 1 xl74i >"$W/ident.txt" || xl_die "aoeping -i: exit $?"
words=$(python3 - "$W/ident.txt" <<'EOF'
import sys
b = bytes(int(x, 16) for line in open(sys.argv[1]) for x in line.split()
          if len(x) == 2 and all(c in "0123456789abcdef" for c in x))
assert len(b) == 512, f"IDENTIFY dump has {len(b)} bytes, not 512"
w = [b[2 * i] | b[2 * i + 1] << 8 for i in range(256)]
lba28 = w[60] | w[61] << 16
lba48 = w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48
print(lba28, lba48, (w[83] >> 10) & 1)
EOF
) || xl_die "aoeping -i: cannot decode its dump: $(cat "$W/ident.txt")"
xl_expect_eq "aoeping -i: IDENTIFY words 60-61, 100-103, word 83 bit 10 (LBA48)" "$words" "16384 16384 1"

out=$(tool aoeping -I -s 3 "$SHELF" 1 xl74i) || xl_die "aoeping -I: exit $?"
grep -q '^model: xblade AoE target' <<<"$out" || xl_die "aoeping -I: no xblade model line in: $out"
grep -q "^serial_number: $SHELF.1" <<<"$out" || xl_die "aoeping -I: unexpected serial in: $out"
xl_log "ok: aoeping -I: $(grep -E '^(model|serial_number|firmware_rev):' <<<"$out" | tr -s ' ' | paste -sd';')"
xl_pass "7 aoeping: QC, IDENTIFY (-i dump: 16384 sectors, LBA48; -I: model, serial)" "$T0"

T0=$SECONDS
# cfg REPLY ARGS...: aoecfg ARGS (on xl74i) prints the line REPLY (a reply was seen,
# possibly with an empty string); cfg - ARGS...: it prints nothing (no reply).
cfg() {
  local want=$1 got
  shift
  got=$(tool aoecfg -t 1 "$@" xl74i && echo .) || xl_die "aoecfg $*: exit $?"
  got=${got%.}
  [[ $want == - ]] && want='' || want=$want$'\n'
  [[ $got == "$want" ]] || xl_die "aoecfg $*: printed '$got', want '$want'"
  xl_log "ok: aoecfg $* -> ${got:+reply }'${got%$'\n'}'"
}
cfg "" "$SHELF" 1                         # read: a reply with the empty string (32 bytes, padded)
cfg "$SHELF.1"$'\t' # wildcard read: shelf.slot<TAB>string
cfg "hello" -c set -s hello "$SHELF" 1    # set while empty
cfg "*badcfg*" -c set -s other "$SHELF" 1 # set while set to another string: error 4
cfg "hello" "$SHELF" 1                    # unchanged
cfg "hello" -c test -s hello "$SHELF" 1   # exact test: match
cfg - -c test -s hell "$SHELF" 1          # exact test: no reply at all
cfg "hello" -c prefix -s hel "$SHELF" 1   # prefix test: match
cfg - -c prefix -s help "$SHELF" 1        # prefix test: no reply
cfg "forced" -c fset -s forced "$SHELF" 1 # force set
cfg "forced" "$SHELF" 1                   # read
cfg "$SHELF.1"$'\tforced'                # wildcard read
xl_target_alive "$TPID" "$W/xblade.log"
xl_pass "7 aoecfg: read, set, set-when-set (*badcfg*), test, prefix, fset, wildcard read" "$T0"

# Contrast: vblade's unpadded replies (32-byte QC) are skipped by the tools.
if command -v vblade >/dev/null 2>&1; then
  xl_sparse "$W/vblade.img" $((8 << 20))
  ip netns exec "$TNS" vblade "$SHELF" 2 xl74t "$W/vblade.img" >"$W/vblade.log" 2>&1 </dev/null &
  VPID=$!
  XL_PIDS+=("$VPID")
  sleep 0.5
  rc=0
  tool aoeping -s 2 "$SHELF" 2 xl74i >/dev/null 2>&1 || rc=$?
  vcfg=$(tool aoecfg -t 1 "$SHELF" 2 xl74i 2>&1 || true)
  xl_stop "$VPID"
  if ((rc != 0)) && [[ -z $vcfg ]]; then
    XL_RESULTS+=("info: contrast: vblade on the same veth is invisible to aoetools (aoeping exit $rc, aoecfg silent)")
  else
    XL_RESULTS+=("info: contrast: vblade answered aoetools this time (aoeping exit $rc, aoecfg '$vcfg')")
  fi
  xl_log "${XL_RESULTS[-1]#info: }"
fi
xl_stop "$TPID"
