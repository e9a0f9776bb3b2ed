#!/usr/bin/env bash
# build-deb.sh: the Debian package, OUTPUT/xblade_VERSION-1_ARCH.deb (default
# OUTPUT target/debian), with dpkg-deb alone: no cargo-deb, nothing beyond
# Debian 12's dpkg-dev and binutils.
#
#   bash scripts/build-deb.sh [--no-build] [--output DIR]
#
# Steps: the release binaries built (unless --no-build: the existing
# target/release/xblade, xblade-bench and xblade-man are used; an xblade with
# the test-only stores, as scripts/test.sh builds it, is refused), xblade and
# xblade-bench (what `xblade bench` runs) stripped into the package, the man
# pages generated from the clap definitions (xblade-man) and gzipped, the
# tree laid out (dist/xblade.service, dist/xblade.example.toml as the conffile
# /etc/xblade/xblade.toml, dist/debian/* for control, copyright, changelog and
# maintainer scripts), Depends from dpkg-shlibdeps, md5sums, then
# `dpkg-deb --root-owner-group --build`. Reproducible: file times are the last
# commit's (SOURCE_DATE_EPOCH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=1 out=target/debian
while (($#)); do
  case $1 in
    --no-build) build=0 ;;
    --output) out=$2; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: build-deb.sh [--no-build] [--output DIR]" >&2; exit 2 ;;
  esac
  shift
done
for c in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$c" >/dev/null || { echo "build-deb.sh: missing $c (apt-get install dpkg-dev binutils; scripts/setup.sh)" >&2; exit 1; }
done
target=${CARGO_TARGET_DIR:-target}
((build == 0)) || cargo build --release
bin=$target/release/xblade tools=$target/release/xblade-bench man=$target/release/xblade-man
for b in "$bin" "$tools" "$man"; do
  [[ -x $b ]] || { echo "build-deb.sh: no $b (cargo build --release builds it, or drop --no-build)" >&2; exit 1; }
done

upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
version=$upstream-1
arch=$(dpkg --print-architecture)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/xblade-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The shipped daemon lacks the test-only store (cargo feature test-stores) and
# says so when a configuration names one; a test build would take it.
printf '[[export]]\nshelf = 1\nslot = 1\ninterfaces = ["lo"]\nfile = "fake-async:1M"\n' >"$work/probe.toml"
probe=$("$bin" check-config "$work/probe.toml" 2>&1) || true
if [[ $probe != *"fake-async:1M: test store not built into this xblade"* ]]; then
  echo "build-deb.sh: $bin has the test-only stores (--features xblade/test-stores, as scripts/test.sh builds it)" >&2
  echo "build-deb.sh: rebuild it without (cargo build --release --bin xblade) or drop --no-build; check-config said: $probe" >&2
  exit 1
fi
P=$work/pkg
install -d -m 755 "$P/DEBIAN" "$P/usr/sbin" "$P/lib/systemd/system" "$P/etc/xblade" \
  "$P/usr/share/man/man8" "$P/usr/share/doc/xblade"
install -d -m 755 "$P/var/lib/xblade"
strip --strip-unneeded --remove-section=.comment -o "$P/usr/sbin/xblade" "$bin"
strip --strip-unneeded --remove-section=.comment -o "$P/usr/sbin/xblade-bench" "$tools"
chmod 755 "$P/usr/sbin/xblade" "$P/usr/sbin/xblade-bench"
install -m 644 dist/xblade.service "$P/lib/systemd/system/xblade.service"
install -m 644 dist/xblade.example.toml "$P/etc/xblade/xblade.toml"
"$man" "$work/man" 2>/dev/null
for m in "$work"/man/*.8; do
  gzip -9n <"$m" >"$P/usr/share/man/man8/$(basename "$m").gz"
done
install -m 644 dist/debian/copyright "$P/usr/share/doc/xblade/copyright"
gzip -9n <README.md >"$P/usr/share/doc/xblade/README.md.gz"
sed -e "s/@VERSION@/$version/" -e "s/@COMMIT@/$commit/" \
  -e "s/@DATE@/$(date -R -u -d "@$SOURCE_DATE_EPOCH")/" dist/debian/changelog |
  gzip -9n >"$P/usr/share/doc/xblade/changelog.Debian.gz"
chmod 644 "$P"/usr/share/doc/xblade/*.gz "$P"/usr/share/man/man8/*.gz
for s in postinst prerm postrm; do install -m 755 "dist/debian/$s" "$P/DEBIAN/$s"; done
echo /etc/xblade/xblade.toml >"$P/DEBIAN/conffiles"

# Depends: what the binaries link (librbd is dlopen'd: Suggests).
mkdir -p "$work/src/debian"
printf 'Source: xblade\n\nPackage: xblade\nArchitecture: any\n' >"$work/src/debian/control"
depends=$(cd "$work/src" && dpkg-shlibdeps -O "$P/usr/sbin/xblade" "$P/usr/sbin/xblade-bench" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[[ -n $depends ]] || { echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$P" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  -e "s/@DEPENDS@/$depends/" dist/debian/control.in >"$P/DEBIAN/control"
(cd "$P" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\n' | LC_ALL=C sort |
  xargs md5sum >DEBIAN/md5sums)
chmod 644 "$P/DEBIAN/control" "$P/DEBIAN/conffiles" "$P/DEBIAN/md5sums"
find "$P" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb=$out/xblade_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$P" "$deb" >/dev/null
echo "build-deb.sh: wrote $deb"
