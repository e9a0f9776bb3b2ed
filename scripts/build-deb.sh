#!/usr/bin/env bash
# build-deb.sh: the Debian package, target/debian/xblade_VERSION-1_ARCH.deb (cargo-deb,
# metadata in Cargo.toml [package.metadata.deb]).
#
#   bash scripts/build-deb.sh [--no-build] [--output DIR]
#
# Steps: cargo-deb installed if missing (cargo install cargo-deb --locked, once), the
# release binary built (unless --no-build: an existing target/release/xblade is used),
# the man pages generated from the clap definitions (`xblade man`, hidden) into
# target/man and gzipped, then `cargo deb --no-build`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=1 out=()
while (($#)); do
  case $1 in
    --no-build) build=0 ;;
    --output) out=(--output "$2"); shift ;;
    *) echo "usage: build-deb.sh [--no-build] [--output DIR]" >&2; exit 2 ;;
  esac
  shift
done
for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /usr/local/bin; do
  [[ -d $d && :$PATH: != *:$d:* ]] && PATH=$PATH:$d
done
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "build-deb.sh: installing cargo-deb (once; a few minutes)" >&2
  cargo install cargo-deb --locked
fi
target=${CARGO_TARGET_DIR:-target}
((build == 0)) || cargo build --release
[[ -x $target/release/xblade ]] || { echo "build-deb.sh: no $target/release/xblade (build it, or drop --no-build)" >&2; exit 1; }
rm -rf target/man
"$target/release/xblade" man --dir target/man 2>/dev/null
gzip -9n target/man/*.8
# Stripped, as Debian ships binaries (the release profile keeps debug info).
cargo deb --no-build --strip "${out[@]}"
