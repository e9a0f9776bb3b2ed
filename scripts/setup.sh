#!/usr/bin/env bash
# setup.sh: install and verify everything xblade needs to build, test and demo.
#
# Target: a fresh Debian 12 machine, run as root, with a Rust toolchain (rustup)
# already present. Idempotent: apt-get runs only when a package is missing, and
# `apt-get update` only then. Quiet on success (one summary line); on failure it
# exits non-zero naming what is missing.
set -euo pipefail

# Non-login root shells (CI) may lack sbin or cargo in PATH.
for d in /usr/local/sbin /usr/sbin /sbin "${CARGO_HOME:-$HOME/.cargo}/bin"; do
  if [[ -d $d && :$PATH: != *:$d:* ]]; then PATH=$PATH:$d; fi
done
export PATH

PKGS=(
  clang libclang-dev llvm m4 make libelf-dev zlib1g-dev pkg-config # BPF object + libbpf-sys build
  libbpf-dev                                                        # <bpf/bpf_helpers.h> for bpf/xblade.bpf.c
  iproute2 ethtool procps                                           # ip/veth/netns, sysctl (test harness)
  vblade aoetools tshark                                            # reference target, AoE tools, capture
  qemu-system-x86 busybox-static e2fsprogs                          # shared/tools/aoe-client-vm.sh
  kmod xz-utils                                                     # shared/tools/xdp-guest-vm.sh (modinfo, xz -d modules)
  linux-perf python3 strace                                         # strace: ack-ordering test
  python3-prometheus-client                                         # Prometheus text parser (tests/control_plane.rs)
  dpkg-dev init-system-helpers                                      # dpkg-shlibdeps, deb-systemd-helper (81-deb.sh)
  binutils lintian util-linux systemd                               # build-deb.sh strip; 81-deb.sh: lintian, setpriv, systemd-analyze
  ceph-mon ceph-osd ceph-common librbd1                             # rbd: exports (dlopen librbd.so.1) and tests/rbd.rs (shared/tools/ceph-one-node.sh)
  tgt libiscsi-bin nbdkit fio qemu-utils qemu-block-extra           # benches/protocols.sh: iSCSI and NBD targets and initiators
)
# Commands that must resolve after installation (package -> command checks).
CMDS=(clang llvm-strip ip tc bridge ethtool sysctl strace vblade aoeping aoecfg tshark qemu-system-x86_64 busybox modinfo xz mkfs.ext4 perf python3 dpkg-shlibdeps deb-systemd-helper strip lintian setpriv systemd-analyze cargo rustc
  ceph-mon ceph-osd ceph rbd rados ceph-authtool monmaptool
  tgtd tgtadm iscsi-perf nbdkit fio qemu-img qemu-nbd)

die() {
  echo "setup.sh: ERROR: $*" >&2
  exit 1
}

is_installed() {
  dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
}

log=$(mktemp /tmp/xblade-setup.XXXXXX.log)
trap 'rm -f "$log"' EXIT

# Run a command with its output captured; on failure show the tail and die.
quiet() {
  if ! "$@" >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "command failed: $*"
  fi
}

# --- 1. Debian packages -------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
  is_installed "$p" || missing+=("$p")
done

installed_now="none"
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages: ${missing[*]} (run this script as root to install them)"
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-y -q -o DPkg::Lock::Timeout=120)
  quiet apt-get "${apt_opts[@]}" update
  quiet apt-get "${apt_opts[@]}" install "${missing[@]}"
  still=()
  for p in "${missing[@]}"; do
    is_installed "$p" || still+=("$p")
  done
  ((${#still[@]} == 0)) || die "apt-get could not install: ${still[*]}"
  installed_now="${missing[*]}"
fi

# --- 2. Rust components -----------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  command -v rustup >/dev/null 2>&1 || die "rustfmt/clippy missing and rustup not found to add them"
  quiet rustup component add rustfmt clippy
fi

# --- 3. Verify every needed command -----------------------------------------------
absent=()
for c in "${CMDS[@]}"; do
  command -v "$c" >/dev/null 2>&1 || absent+=("$c")
done
[[ -f /usr/include/bpf/bpf_helpers.h ]] || absent+=("/usr/include/bpf/bpf_helpers.h (libbpf-dev)")
# qemu-img's iSCSI driver is a module (benches/protocols.sh: iSCSI writes).
[[ -f /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ]] || absent+=("qemu block-iscsi.so (qemu-block-extra)")
# Debian's python, not a pyenv/venv python3 earlier in PATH (the test calls it by path).
/usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1 ||
  absent+=("/usr/bin/python3 module prometheus_client (python3-prometheus-client)")
# xblade dlopens these by soname (src/bdev/rbd/ffi.rs).
for so in librados.so.2 librbd.so.1; do
  # (not grep -q: ldconfig would die of SIGPIPE and fail the pipeline)
  grep -qF "$so" <<<"$(ldconfig -p)" || absent+=("$so (librbd1)")
done
cargo fmt --version >/dev/null 2>&1 || absent+=("rustfmt (cargo fmt)")
cargo clippy --version >/dev/null 2>&1 || absent+=("clippy (cargo clippy)")
((${#absent[@]} == 0)) || die "missing commands after setup: ${absent[*]}"

echo "setup.sh: ok: ${#PKGS[@]} packages present (installed now: ${installed_now}), $(cargo --version | cut -d' ' -f1-2), rustfmt, clippy"
