#!/usr/bin/env bash
# 02-workspace.sh: the shape of the cargo workspace (issue 25), checked:
#   - the daemon (`xblade`) links none of the tools' crates: `cargo tree -p xblade
#     -e normal` lists no plotters, indicatif, hdrhistogram or clap_mangen;
#   - the protocol crate (`aoe-wire`, crates/aoe) depends on no socket, ring or
#     file crate (libc, io-uring, xsk-rs, libbpf-rs) and not on xblade; its docs
#     build warning-free (`cargo doc --no-deps`, every public item documented)
#     and its example builds and parses a Query Config;
#   - the daemon's docs, private items included, build warning-free;
#   - `xblade bench` runs xblade-bench found beside the daemon (its help lists
#     the bench's options), and without it says which binary and package are
#     missing instead of failing obscurely.
# About a minute after the release build (cargo tree reads Cargo.lock; cargo doc
# documents one small crate, then the daemon). Files under a mktemp dir only; no network.
set -euo pipefail
export LC_ALL=C
ROOT=${XBLADE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BIN=${XBLADE_BIN:-$ROOT/target/release/xblade}
cd "$ROOT"
die() { echo "02-workspace: FAILED: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found"
[[ -x $BIN ]] || die "$BIN missing: build first (cargo build --release)"
TOOLS=$(dirname "$BIN")/xblade-bench
[[ -x $TOOLS ]] || die "$TOOLS missing: cargo build --release builds the whole workspace"
W=$(mktemp -d /tmp/xw-02.XXXXXX)
trap 'rm -rf "$W"' EXIT

# tree PKG: the names of PKG's normal (non-dev, non-build) dependencies, one a line.
tree() {
  cargo tree --locked -q -p "$1" -e normal --prefix none --format '{p}' >"$W/tree" ||
    die "cargo tree -p $1 failed"
  awk '{ print $1 }' "$W/tree" | sort -u
}

tree xblade >"$W/daemon"
grep -qx xblade "$W/daemon" || die "cargo tree -p xblade listed no xblade: $(head -3 "$W/tree")"
bad=$(grep -xE 'plotters|indicatif|hdrhistogram|clap_mangen|xblade-tools' "$W/daemon" || true)
[[ -z $bad ]] || die "the daemon links tools' crates: $(echo $bad)"
echo "02-workspace: ok: xblade links none of plotters, indicatif, hdrhistogram, clap_mangen ($(wc -l <"$W/daemon") crates)"

tree aoe-wire >"$W/aoe"
grep -qx aoe-wire "$W/aoe" || die "cargo tree -p aoe-wire listed no aoe-wire"
bad=$(grep -xE 'libc|io-uring|xsk-rs|libbpf-rs|libbpf-sys|xblade|xblade-tools' "$W/aoe" || true)
[[ -z $bad ]] || die "aoe-wire depends on I/O or daemon crates: $(echo $bad)"
echo "02-workspace: ok: aoe-wire depends on $(grep -vx aoe-wire "$W/aoe" | tr '\n' ' ')only"

RUSTDOCFLAGS="-D warnings" cargo doc --locked -q -p aoe-wire --no-deps >"$W/doc" 2>&1 ||
  { cat "$W/doc" >&2; die "cargo doc -p aoe-wire --no-deps has warnings or errors"; }
echo "02-workspace: ok: cargo doc -p aoe-wire --no-deps, no warning"
# The daemon's internals are pub(crate): its documentation, read with private
# items, has no broken or ambiguous link either (about a minute: rustdoc needs
# the dependencies' metadata in the dev profile).
RUSTDOCFLAGS="-D warnings" cargo doc --locked -q -p xblade --no-deps --document-private-items \
  >"$W/xdoc" 2>&1 ||
  { cat "$W/xdoc" >&2; die "cargo doc -p xblade --no-deps --document-private-items has warnings or errors"; }
echo "02-workspace: ok: cargo doc -p xblade --document-private-items, no warning"
cargo run --locked -q --release -p aoe-wire --example query_config >"$W/example" 2>&1 ||
  { cat "$W/example" >&2; die "the aoe-wire example query_config failed"; }
grep -q '^reply: e1.2 bufcnt 64' "$W/example" || { cat "$W/example" >&2; die "query_config printed no reply line"; }
echo "02-workspace: ok: aoe-wire example: $(tail -n1 "$W/example")"

"$BIN" bench --help >"$W/help" 2>&1 || { cat "$W/help" >&2; die "xblade bench --help failed"; }
grep -q -- '--iface' "$W/help" && grep -q 'Usage: xblade bench' "$W/help" ||
  { cat "$W/help" >&2; die "xblade bench --help is not xblade-bench's help under the name xblade bench"; }
# The daemon alone, with a PATH that has no xblade-bench.
cp "$BIN" "$W/xblade"
rc=0
PATH=/usr/bin:/bin "$W/xblade" bench --iface lo --target 1.1 >"$W/alone" 2>&1 || rc=$?
((rc == 1)) || { cat "$W/alone" >&2; die "xblade bench without xblade-bench exited $rc, expected 1"; }
grep -q 'xblade-bench not found' "$W/alone" && grep -q 'xblade-tools' "$W/alone" ||
  { cat "$W/alone" >&2; die "xblade bench without xblade-bench: the error names neither the binary nor its package"; }
echo "02-workspace: ok: xblade bench runs xblade-bench beside it; without it: $(head -n1 "$W/alone")"
