#!/usr/bin/env bash
# test.sh: xblade's whole test suite; CI runs exactly this (via .ci/run).
#
# Steps: setup.sh, cargo fmt --check, cargo clippy -D warnings, release build of
# all targets, cargo test (serial: network tests create namespaces), bench smoke run, doc tests,
# then every tests/scripts/*.sh in order (each must exit 0).
#
# Every build and test here has the test-only store (`fake-async:`, cargo feature
# xblade/test-stores; the shipped daemon lacks it): one feature set throughout, so
# nothing is compiled twice. Clippy also runs without it (check mode, the shipped
# code), and tests/scripts/81-deb.sh packages a daemon built without it.
#
# Must run as root: the tests create network namespaces and veth pairs.
#
# Environment:
#   XBLADE_TEST_FAST=1   skip fmt and clippy (local iteration only; ignored when CI is set)
#   XBLADE_TEST_TIMEOUT   seconds allowed for `cargo test` (default 2700)
#   XBLADE_SCRIPT_TIMEOUT seconds allowed for each tests/scripts/*.sh (default 900)
#   (both limits apply only when stdin is not a terminal, e.g. in CI)
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: ERROR: must run as root (the tests create network namespaces and veth pairs)." >&2
  echo "test.sh:        try: sudo bash scripts/test.sh" >&2
  exit 1
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export LC_ALL=C # stable glob order for tests/scripts/*.sh

for d in /usr/local/sbin /usr/sbin /sbin "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  if [[ -d $d && :$PATH: != *:$d:* ]]; then PATH=$PATH:$d; fi
done
export PATH

FAST=${XBLADE_TEST_FAST:-0}
if [[ $FAST == 1 && -n ${CI:-} ]]; then
  echo "test.sh: WARNING: XBLADE_TEST_FAST=1 ignored because CI is set" >&2
  FAST=0
fi

# The async-store tests need it and fail (not skip) without it.
FEATURES=(--features xblade/test-stores)

START=$SECONDS
CURRENT=""
PASSED=0 FAILED=0 IGNORED=0

TEST_LOG=$(mktemp /tmp/xblade-test.XXXXXX.log)
on_exit() {
  local rc=$?
  rm -f "$TEST_LOG"
  if [[ $rc -ne 0 ]]; then
    {
      echo
      echo "######################################################################"
      echo "### TEST SUITE FAILED (exit $rc) in step: ${CURRENT:-<startup>}"
      echo "### after $((SECONDS - START))s total"
      echo "######################################################################"
    } >&2
  fi
}
trap on_exit EXIT

header() {
  CURRENT=$1
  echo
  echo "==== [+$((SECONDS - START))s] $1"
}

# step NAME CMD...: run CMD under a header; on failure stop the suite (via set -e).
step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  header "$name"
  "$@" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "==== FAILED: $name (exit $rc after $((SECONDS - t0))s)" >&2
    return "$rc"
  fi
  echo "==== ok: $name ($((SECONDS - t0))s)"
}

skip() {
  header "$1"
  echo "==== skipped: $1 (XBLADE_TEST_FAST=1)"
}

# Namespaces present before the tests, to detect ones the tests leaked.
netns_names() { ip netns list 2>/dev/null | awk '{print $1}' | sort; }
NETNS_BEFORE=$(netns_names)

# Time limits apply only without a terminal (CI has no stdin): `timeout` moves the
# command into its own process group, which would make Ctrl-C ineffective.
limit() {
  local secs=$1
  shift
  if [[ -t 0 ]]; then
    "$@"
  else
    timeout --kill-after=30 "$secs" "$@"
  fi
}

# Run cargo test, keep its output (to add up the per-binary result lines).
cargo_test() {
  local rc=0
  limit "${XBLADE_TEST_TIMEOUT:-2700}" "$@" 2>&1 | tee -a "$TEST_LOG" || rc=$?
  if [[ $rc -eq 124 ]]; then
    echo "test.sh: cargo test timed out after ${XBLADE_TEST_TIMEOUT:-2700}s" >&2
  fi
  return "$rc"
}

step "setup (scripts/setup.sh)" bash scripts/setup.sh

if [[ $FAST == 1 ]]; then
  skip "cargo fmt --check"
  skip "cargo clippy"
  skip "cargo clippy, shipped features"
else
  step "cargo fmt --check" cargo fmt --all -- --check
  step "cargo clippy (-D warnings)" cargo clippy --all-targets "${FEATURES[@]}" -- -D warnings
  step "cargo clippy, shipped features (-D warnings)" cargo clippy --all-targets -- -D warnings
fi

step "cargo build --release --all-targets" cargo build --release --all-targets "${FEATURES[@]}"
step "cargo test --release (lib, bins, tests; serial)" \
  cargo_test cargo test --release "${FEATURES[@]}" --lib --bins --tests -- --test-threads=1
# Criterion benches in test mode: each benchmark runs once (its harness
# takes no libtest flags).
step "cargo test --release --benches (smoke)" cargo_test cargo test --release "${FEATURES[@]}" --benches
step "cargo test --release --doc" cargo_test cargo test --release "${FEATURES[@]}" --doc

# "test result: ok. 3 passed; 0 failed; 1 ignored; ..." -> totals
read -r p f i < <(awk '/^test result:/ {
    for (k = 1; k <= NF; k++) {
      if ($k ~ /^passed/) p += $(k-1); if ($k ~ /^failed/) f += $(k-1); if ($k ~ /^ignored/) i += $(k-1)
    }
  } END { print p+0, f+0, i+0 }' "$TEST_LOG")
PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) IGNORED=$((IGNORED + i))

shopt -s nullglob
scripts=(tests/scripts/*.sh)
shopt -u nullglob
export XBLADE_ROOT=$ROOT XBLADE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/xblade
for s in "${scripts[@]}"; do
  step "script $s" limit "${XBLADE_SCRIPT_TIMEOUT:-900}" bash "$s"
  PASSED=$((PASSED + 1))
done
if ((${#scripts[@]} == 0)); then
  header "tests/scripts"
  echo "==== (no tests/scripts/*.sh)"
fi

header "leftover network namespaces"
# Tests must delete every namespace they create (NetPair's Drop, script traps).
# Nothing is deleted here: on a shared dev machine a new namespace may be someone
# else's, so this fails only under CI (a machine of its own) and warns otherwise.
leaked=$(comm -13 <(echo "$NETNS_BEFORE") <(netns_names) | sed '/^$/d')
if [[ -n $leaked ]]; then
  echo "test.sh: network namespaces created during the run and still present:" >&2
  while read -r ns; do echo "  $ns" >&2; done <<<"$leaked"
  if [[ -n ${CI:-} ]]; then
    echo "test.sh: ERROR: the tests leaked network namespaces" >&2
    exit 1
  fi
  echo "test.sh: WARNING: not failing outside CI (they may belong to another user of this machine)" >&2
else
  echo "==== ok: none leaked"
fi

CURRENT=""
echo
echo "==== all steps passed in $((SECONDS - START))s"
echo "summary: ${PASSED} passed, ${FAILED} failed, ${IGNORED} skipped"
