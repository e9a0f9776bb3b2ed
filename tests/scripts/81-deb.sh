#!/usr/bin/env bash
# 81-deb.sh: the Debian package (scripts/build-deb.sh, cargo-deb) builds from the
# release binary and installs like a service:
#
#  1. package: fields, dependencies from dpkg-shlibdeps, /etc/xblade/xblade.toml a
#     conffile, the files in place (binary in /usr/sbin, unit, man pages, config),
#     maintainer scripts that enable and start the unit (deb-systemd-helper);
#  2. installed with `dpkg --root` into a scratch root whose /bin/sh is a static busybox,
#     so the maintainer scripts run chrooted there and nothing touches this host: dpkg
#     records the package and its conffile; an edited conffile survives a reinstall and a
#     removal, purge deletes it; deb-systemd-helper (DPKG_ROOT) enables the unit there;
#     `systemd-analyze verify` accepts the unit (Type=notify, WatchdogSec) against it;
#  3. the installed binary with the installed default configuration, as systemd runs it
#     (NOTIFY_SOCKET, WATCHDOG_USEC): starts, logs that no export is configured, sends
#     READY=1 and WATCHDOG=1, answers `xblade status` and `xblade reload` (reloadable
#     while idle), and sends STOPPING=1 on SIGTERM.
#
# cargo-deb is installed if missing (`cargo install cargo-deb --locked`: minutes, once
# per machine); the rest takes a few seconds. Everything lives in one work dir and a
# netns xo81-t; the EXIT trap removes both and stops what this script started.
set -euo pipefail
export LC_ALL=C
for d in /usr/local/sbin /usr/sbin /sbin "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  [[ -d $d && :$PATH: != *:$d:* ]] && PATH=$PATH:$d
done
ROOT=${XBLADE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
NS=xo81-t
T0=$SECONDS
W='' PIDS=()
log() { printf '[81-deb +%ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
  printf '[81-deb +%ds] FAIL: %s\n' "$((SECONDS - T0))" "$*" >&2
  exit 1
}
cleanup() {
  local rc=$? p
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$NS" 2>/dev/null
  [[ -n $W ]] && rm -rf "$W"
  if ((rc == 0)); then echo "[81-deb] all passed in $((SECONDS - T0))s"; else echo "[81-deb] FAILED (exit $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
[[ $EUID -eq 0 ]] || die "must run as root (dpkg --root, network namespace)"
for c in dpkg dpkg-deb dpkg-shlibdeps deb-systemd-helper mknod python3 gzip ip; do
  command -v "$c" >/dev/null || die "missing $c (run scripts/setup.sh)"
done
W=$(mktemp -d /var/tmp/xblade-81-deb.XXXXXX)

# -- 1. build --------------------------------------------------------------------------
t=$SECONDS
if ! command -v cargo-deb >/dev/null; then
  log "cargo-deb missing: cargo install cargo-deb --locked (once per machine)"
  cargo install cargo-deb --locked >"$W/cargo-install.log" 2>&1 || { tail -n 30 "$W/cargo-install.log" >&2; die "cargo install cargo-deb failed"; }
  log "cargo-deb installed in $((SECONDS - t))s"
  t=$SECONDS
fi
(cd "$ROOT" && bash scripts/build-deb.sh --no-build --output "$W") >"$W/build.log" 2>&1 ||
  { cat "$W/build.log" >&2; die "scripts/build-deb.sh failed"; }
DEB=$(ls "$W"/xblade_*.deb)
log "built $(basename "$DEB") ($(du -k "$DEB" | cut -f1) KiB) in $((SECONDS - t))s"

field() { dpkg-deb -f "$DEB" "$1"; }
[[ $(field Package) == xblade ]] || die "Package: $(field Package)"
[[ $(field Architecture) == amd64 ]] || die "Architecture: $(field Architecture)"
[[ $(field Section) == net ]] || die "Section: $(field Section)"
[[ $(field Depends) == *libc6* ]] || die "Depends lacks libc6 (dpkg-shlibdeps): $(field Depends)"
log "ok: Package xblade $(field Version) $(field Architecture), Depends: $(field Depends)"
conffiles=$(dpkg-deb -I "$DEB" conffiles)
[[ $conffiles == /etc/xblade/xblade.toml ]] || die "conffiles: '$conffiles'"
log "ok: conffiles: $conffiles"
dpkg-deb -c "$DEB" | awk '{ print $6 }' | sed 's|^\./|/|' >"$W/files"
for f in /usr/sbin/xblade /etc/xblade/xblade.toml /usr/share/man/man8/xblade.8.gz \
  /usr/share/man/man8/xblade-serve.8.gz /usr/share/man/man8/xblade-reload.8.gz \
  /usr/share/doc/xblade/copyright; do
  grep -qx "$f" "$W/files" || die "$f not in the package: $(tr '\n' ' ' <"$W/files")"
done
UNIT=$(grep -E '^(/usr)?/lib/systemd/system/xblade\.service$' "$W/files") || die "no xblade.service in the package"
dpkg-deb -I "$DEB" postinst >"$W/postinst"
{ grep -q 'deb-systemd-helper' "$W/postinst" && grep -q 'xblade.service' "$W/postinst"; } ||
  die "postinst does not enable xblade.service: $(cat "$W/postinst")"
log "ok: files in place ($UNIT, man pages, /usr/sbin/xblade); postinst enables and starts the unit"

# -- 2. install into a scratch root ------------------------------------------------------
# The maintainer scripts run chrooted into R (dpkg --root): a static busybox is its
# /bin/sh, so they really run, and nothing they do reaches this host. R has no libc6
# package: --force-depends.
R=$W/root
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/bin" "$R/dev" "$R/tmp"
touch "$R/var/lib/dpkg/status"
BB=$(command -v busybox) || die "no busybox (apt-get install busybox-static)"
cp "$BB" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"
mknod -m 666 "$R/dev/null" c 1 3
dpk() { dpkg --root="$R" --force-depends "$@" >>"$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log" >&2; die "dpkg --root $*"; }; }
dpk --install "$DEB"
dpkg --root="$R" -s xblade >"$W/dpkg-s" || die "dpkg --root -s xblade"
grep -q '^Status: install ok installed' "$W/dpkg-s" || die "status: $(cat "$W/dpkg-s")"
grep -Eq '^ /etc/xblade/xblade.toml [0-9a-f]{32}$' "$W/dpkg-s" || die "conffile not registered: $(cat "$W/dpkg-s")"
[[ -x $R/usr/sbin/xblade && -f $R$UNIT && -f $R/etc/xblade/xblade.toml ]] ||
  die "files missing under $R: $(cd "$R" && find . -type f | tr '\n' ' ')"
zcat "$R/usr/share/man/man8/xblade.8.gz" | grep -q '^\.TH xblade 8' || die "xblade.8 is not a section 8 man page"
zcat "$R/usr/share/man/man8/xblade-reload.8.gz" | grep -q 'reload' || die "xblade-reload.8"
"$R/usr/sbin/xblade" --version | grep -q "^xblade $(field Version | cut -d- -f1)" || die "xblade --version"
"$R/usr/sbin/xblade" check-config "$R/etc/xblade/xblade.toml" >"$W/check" 2>&1 || { cat "$W/check" >&2; die "check-config of the default"; }
grep -q 'ok, 0 export(s)' "$W/check" || die "default config: $(cat "$W/check")"
# What the postinst's deb-systemd-helper does on a real system (absent in R): enable.
DPKG_ROOT=$R DPKG_MAINTSCRIPT_PACKAGE=xblade DPKG_MAINTSCRIPT_NAME=postinst \
  deb-systemd-helper enable xblade.service || die "deb-systemd-helper enable (DPKG_ROOT)"
[[ -L $R/etc/systemd/system/multi-user.target.wants/xblade.service ]] || die "unit not enabled"
# Conffile semantics: an edited /etc/xblade/xblade.toml survives a reinstall and a
# removal; purge deletes it.
echo "# edited by the operator" >>"$R/etc/xblade/xblade.toml"
dpk --install "$DEB"
grep -q 'edited by the operator' "$R/etc/xblade/xblade.toml" || die "reinstall replaced the edited conffile"
dpk --remove xblade
[[ ! -e $R/usr/sbin/xblade && -f $R/etc/xblade/xblade.toml ]] || die "remove: binary kept or conffile gone"
dpk --purge xblade
[[ ! -e $R/etc/xblade/xblade.toml ]] || die "purge kept the conffile"
dpk --install "$DEB"
log "ok: dpkg --root installed it (scripts run chrooted), conffile registered and kept across reinstall/remove, purged; unit enabled (deb-systemd-helper, DPKG_ROOT); man pages; the default config serves nothing"
{ grep -q '^Type=notify' "$R$UNIT" && grep -q '^WatchdogSec=' "$R$UNIT"; } || die "unit is not Type=notify with a watchdog"
if command -v systemd-analyze >/dev/null; then
  # Against this host's systemd units, with the binary path pointing into R; any
  # complaint (an unknown key is only a warning) fails.
  mkdir -p "$W/unit"
  sed "s|/usr/sbin/xblade|$R/usr/sbin/xblade|g" "$R$UNIT" >"$W/unit/xblade.service"
  systemd-analyze verify --man=no "$W/unit/xblade.service" >"$W/verify" 2>&1 || { cat "$W/verify" >&2; die "systemd-analyze verify"; }
  [[ ! -s $W/verify ]] || { cat "$W/verify" >&2; die "systemd-analyze verify complains"; }
  log "ok: systemd-analyze verify accepts $UNIT"
else
  log "systemd-analyze not installed: unit not verified"
fi

# -- 3. the installed service, idle --------------------------------------------------------
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
NOTIFY=$W/notify.sock CTL=$W/ctl.sock
python3 - "$NOTIFY" "$W/notify.log" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
with open(sys.argv[2], "w", buffering=1) as out:
    try:
        while True:
            m = s.recv(4096).decode()
            out.write(m.replace("\n", " | ") + "\n")
            if m == "STOPPING=1":
                break
    except socket.timeout:
        out.write("TIMEOUT\n")
EOF
PIDS+=($!)
for ((i = 0; i < 50; i++)); do [[ -S $NOTIFY ]] && break; sleep 0.1; done
[[ -S $NOTIFY ]] || die "notify listener did not start"
ip netns exec "$NS" env NOTIFY_SOCKET="$NOTIFY" WATCHDOG_USEC=1000000 \
  "$R/usr/sbin/xblade" serve --config "$R/etc/xblade/xblade.toml" --control-socket "$CTL" \
  >"$W/xblade.log" 2>&1 </dev/null &
XPID=$!
PIDS+=("$XPID")
for ((i = 0; i < 100; i++)); do grep -q 'WATCHDOG=1' "$W/notify.log" 2>/dev/null && break; sleep 0.05; done
head -n1 "$W/notify.log" | grep -q '^READY=1 | STATUS=serving 0 export' || { cat "$W/xblade.log" "$W/notify.log" >&2; die "no READY=1 first"; }
grep -q '^WATCHDOG=1$' "$W/notify.log" || { cat "$W/notify.log" >&2; die "no WATCHDOG=1"; }
grep -q 'no export configured' "$W/xblade.log" || { cat "$W/xblade.log" >&2; die "no 'no export configured' in the log"; }
"$R/usr/sbin/xblade" status --socket "$CTL" | grep -q 'exports: 0' || die "xblade status"
out=$("$R/usr/sbin/xblade" reload --socket "$CTL") || die "xblade reload while idle: $out"
[[ $out == *"no export configured"* ]] || die "reload answer: $out"
kill -0 "$XPID" || { cat "$W/xblade.log" >&2; die "xblade exited"; }
kill -TERM "$XPID"
wait "$XPID" || { cat "$W/xblade.log" >&2; die "xblade exited non-zero on SIGTERM"; }
for ((i = 0; i < 50; i++)); do grep -q '^STOPPING=1$' "$W/notify.log" && break; sleep 0.1; done
grep -q '^STOPPING=1$' "$W/notify.log" || { cat "$W/notify.log" >&2; die "no STOPPING=1"; }
log "ok: installed xblade idle under the notify protocol: $(tr '\n' ' ' <"$W/notify.log")"
