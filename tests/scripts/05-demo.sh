#!/usr/bin/env bash
# 05-demo.sh: the README's first command, scripts/demo.sh, as a user runs it (on
# the release binary the suite has just built): it must pass, name the datapath
# xblade served on, and print the side-by-side with vblade. On this kernel veth
# takes the XDP program, so the datapath must be AF_XDP (a fallback to
# AF_PACKET here would mean the demo no longer shows the product).
set -euo pipefail
cd "${XBLADE_ROOT:?run through scripts/test.sh}"
out=$(mktemp /tmp/xblade-05-demo.XXXXXX.log)
trap 'rm -f "$out"' EXIT

rc=0
# XBLADE_BIN is the suite's variable for the binary; to the demo it means "a
# different target binary", which this test does not want.
env -u XBLADE_BIN XBLADE_DEMO_NO_BUILD=1 XBLADE_DEMO_BENCH_SECS=2 bash scripts/demo.sh >"$out" 2>&1 || rc=$?
cat "$out"
fail() {
  echo "05-demo.sh: FAIL: $*" >&2
  exit 1
}
((rc == 0)) || fail "scripts/demo.sh exited $rc"
grep -q '^demo: all checks passed' "$out" || fail "no 'all checks passed' line"
grep -q 'serving on the AF_XDP datapath (XDP native mode)' "$out" || fail "the demo did not serve on the AF_XDP datapath"
grep -qE '^    \| xblade \(xdp native\) +[0-9,]+ ' "$out" || fail "no xblade row in the side-by-side"
grep -qE '^    \| vblade +[0-9,]+ ' "$out" || fail "no vblade row in the side-by-side"
grep -qE '^    \| xblade / vblade +[0-9.]+x' "$out" || fail "no ratio row in the side-by-side"
grep -q 'sudo bash benches/compare.sh' "$out" || fail "the demo does not point to the full comparison"
for ns in xbdemo-t xbdemo-i; do
  [[ ! -e /run/netns/$ns ]] || fail "namespace $ns left behind"
done
echo "05-demo.sh: ok"
