#!/usr/bin/env bash
# 50-fuzz.sh: a short run of the engine fuzz target (issue 7), seeded from
# the committed byte fixtures in fuzz/seeds/ (see tests/reliability_fuzz_seeds.rs).
#
# - installs cargo-fuzz if it is missing (`cargo install cargo-fuzz --locked`);
# - builds the target on the stable toolchain without a sanitizer (-s none);
# - fuzzes for what is left of a ~3 minute budget after the build
#   (at least 30 s, at most 60 s; XBLADE_FUZZ_SECONDS overrides);
# - fails on any crash (panic or violated invariant: the harness in
#   src/fuzzing.rs asserts no disk action outside the export, no reply under
#   60 bytes or with a wildcard address) and prints the number of inputs run.
#
# The corpus grows in a temporary directory (fuzz/seeds is only read), so
# every CI run starts from the same seeds. Long run (see README, Fuzzing):
#   cd fuzz && cargo fuzz run -s none engine corpus/engine seeds -- -max_total_time=3600
set -euo pipefail
ROOT=${XBLADE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$ROOT"
for d in "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  if [[ -d $d && :$PATH: != *:$d:* ]]; then PATH=$PATH:$d; fi
done
export PATH

BUDGET=${XBLADE_FUZZ_BUDGET:-170}
START=$SECONDS

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "50-fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked --quiet
fi
echo "50-fuzz: $(cargo fuzz --version)"

CORPUS=$(mktemp -d /tmp/xblade-fuzz-corpus.XXXXXX)
LOG=$(mktemp /tmp/xblade-fuzz.XXXXXX.log)
ARTIFACTS=$(mktemp -d /tmp/xblade-fuzz-artifacts.XXXXXX)
cleanup() { rm -rf "$CORPUS" "$LOG" "$ARTIFACTS"; }
trap cleanup EXIT

# The fuzz crate has its own target directory (fuzz/target): the
# instrumented build must not share the main one.
unset CARGO_TARGET_DIR
# Build first (its time counts against the budget), then fuzz.
cargo fuzz build -s none engine
BUILT=$((SECONDS - START))

if [[ -n ${XBLADE_FUZZ_SECONDS:-} ]]; then
  SECS=$XBLADE_FUZZ_SECONDS
else
  SECS=$((BUDGET - BUILT - 10))
  ((SECS > 60)) && SECS=60
  ((SECS < 30)) && SECS=30
fi
echo "50-fuzz: build took ${BUILT}s; fuzzing for ${SECS}s from $(ls fuzz/seeds | wc -l) seeds"

rc=0
cargo fuzz run -s none engine "$CORPUS" fuzz/seeds -- \
  -max_total_time="$SECS" -artifact_prefix="$ARTIFACTS/" -print_final_stats=1 \
  >"$LOG" 2>&1 || rc=$?

runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$LOG" | tail -n1)
crashes=$(find "$ARTIFACTS" -type f | wc -l)
if [[ $rc -ne 0 || -z $runs || $crashes -ne 0 ]]; then
  tail -n 60 "$LOG" >&2
  echo "50-fuzz: FAILED (exit $rc, ${crashes} artifact(s))" >&2
  for f in "$ARTIFACTS"/*; do
    [[ -f $f ]] || continue
    mkdir -p fuzz/artifacts/engine
    cp "$f" fuzz/artifacts/engine/
    echo "50-fuzz: crashing input kept at fuzz/artifacts/engine/$(basename "$f");" \
      "reproduce: cargo fuzz run -s none engine fuzz/artifacts/engine/$(basename "$f")" >&2
  done
  exit 1
fi
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$LOG" || true
cov=$(grep -o 'cov: [0-9]*' "$LOG" | tail -n1 || true)
echo "50-fuzz: ok: ${runs} inputs in ${SECS}s (~$((runs / SECS))/s), ${cov:-cov: ?}, corpus $(ls "$CORPUS" | wc -l) new units, 0 crashes, total $((SECONDS - START))s"
