//! Shared harness for xblade's integration tests: network namespaces joined by
//! veth pairs, processes run inside a namespace, in-process `setns(2)`, raw
//! AF_PACKET sockets and sparse backing files. The namespaces, veth pairs,
//! supervised processes and temp files are the test bed's (crates/testbed,
//! shared with `xblade bench compare`); this module gives them the tests'
//! names and turns their errors into panics.
//!
//! Use it from an integration test with `mod common;`.
//!
//! Rules every test must follow:
//!
//! * **Each test uses its own unique [`NetPair`] prefix** (for example `xbh`,
//!   `xbh2`, `xbqc`, ...). Namespaces and interface names are global to the
//!   machine, and tests may run in parallel when someone runs `cargo test`
//!   without `--test-threads=1`; a prefix reused while still alive in the same
//!   process panics. Prefixes are at most 13 characters (`[a-z0-9]`, first a
//!   letter) so that interface names stay within IFNAMSIZ (15 characters).
//! * Traffic only ever flows between namespaces the test created itself; no
//!   test touches the root namespace's interfaces or any outside address.
//! * Declare the [`NetPair`] *before* the [`Proc`]s running in it, so the
//!   processes are stopped (dropped first) before the namespaces are deleted.
//! * Tests needing root call [`require_root`] (the constructors here do): they
//!   panic when not root and never skip silently.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use xblade_testbed::{LogWait, Session, Supervised};

/// AoE ethertype.
/// AoE ethertype.
pub const ETH_P_AOE: u16 = 0x88A2;
/// IEEE "local experimental ethertype 1": for harness frames that must not look like AoE.
pub const ETH_P_EXPERIMENTAL: u16 = 0x88B5;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest accepted [`NetPair`] prefix: leaves room for `t`/`i` plus a link digit.
pub const MAX_PREFIX_LEN: usize = 13;

// ---------------------------------------------------------------------------
// Basics: root check, binaries, running commands
// ---------------------------------------------------------------------------

/// Panics with a clear message unless running as root (euid 0).
///
/// CI runs as root; a network test must fail, never silently skip.
pub fn require_root() {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test must run as root (euid is {euid}): it creates network namespaces, veth pairs \
         and raw sockets. Run `sudo bash scripts/test.sh` (or `sudo -E cargo test`). \
         Tests never skip silently."
    );
}

/// Path of the `xblade` binary built by cargo for this test run.
pub fn xblade_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xblade"))
}

/// `xblade-bench` beside it, which `xblade bench` and `xblade conformance`
/// run. Cargo builds it with the workspace (`cargo build --release`, as
/// scripts/test.sh does), not for one test target alone: a missing one
/// fails here, by name, rather than in the bench's log.
pub fn require_tools_bin() -> PathBuf {
    let p = xblade_bin().with_file_name("xblade-bench");
    assert!(
        p.is_file(),
        "{} is missing: `xblade bench` runs it. Build the workspace first: cargo build --release",
        p.display()
    );
    p
}

/// The test bed's result, or a panic with its error and that error's cause.
fn or_panic<T>(r: xblade_testbed::Result<T>) -> T {
    r.unwrap_or_else(|e| match std::error::Error::source(&e) {
        Some(cause) => panic!("{e}: {cause}"),
        None => panic!("{e}"),
    })
}

/// A `Command` that runs `program` inside network namespace `ns` (`ip netns exec`).
///
/// `ip netns exec` execs the program without forking, so the child's pid is the
/// program's own pid.
pub use xblade_testbed::ns_command;

/// `program args...` in namespace `ns`, stdin closed.
fn ns_command_args(
    ns: &str,
    program: &OsStr,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Command {
    let mut cmd = ns_command(ns, program);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Runs `program args...` inside namespace `ns` and returns its output (status not checked).
pub fn run_in_ns(
    ns: &str,
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Output {
    let program = program.as_ref();
    ns_command_args(ns, program, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program:?} in netns {ns}: {e}"))
}

/// Spawns `program args...` inside namespace `ns` with stdin closed and
/// stdout/stderr inherited. The caller owns the raw `Child`; prefer [`Proc`],
/// which stops the process on drop and captures its output.
pub fn spawn_in_ns(
    ns: &str,
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
) -> Child {
    let program = program.as_ref();
    ns_command_args(ns, program, args)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {program:?} in netns {ns}: {e}"))
}

// ---------------------------------------------------------------------------
// Temporary files
// ---------------------------------------------------------------------------

/// A file path deleted (if it exists) when dropped.
pub use xblade_testbed::TempPath;

/// A sparse file of `size` bytes in /var/tmp, deleted on drop.
///
/// /var/tmp is on a real disk (ext4), unlike a tmpfs /tmp would be, so O_DIRECT works.
pub fn sparse_file(size: u64) -> TempPath {
    let var_tmp = Path::new("/var/tmp");
    let (tp, f) = or_panic(TempPath::create_new(var_tmp, "xblade-test", ".img"));
    f.set_len(size)
        .unwrap_or_else(|e| panic!("cannot size {} to {size}: {e}", tp.display()));
    tp
}

/// An empty file in the temp dir for logs and the like, deleted on drop.
pub fn temp_file(stem: &str) -> TempPath {
    or_panic(TempPath::create_new(&std::env::temp_dir(), stem, ".log")).0
}

// ---------------------------------------------------------------------------
// Namespaces and veth pairs
// ---------------------------------------------------------------------------

/// Whether a named network namespace (`/run/netns/NAME`) exists; whether
/// interface `ifname` in `ns` is up with carrier.
#[allow(unused_imports)] // as dead_code above: not every test binary uses them
pub use xblade_testbed::netns::{link_is_up, netns_exists};
use xblade_testbed::netns::{link_line, NsPair};

/// Whether interface `ifname` exists in namespace `ns`.
pub fn link_exists(ns: &str, ifname: &str) -> bool {
    link_line(ns, ifname).is_some()
}

fn link_line_ok(ns: &str, ifname: &str) -> String {
    link_line(ns, ifname).unwrap_or_else(|| panic!("no interface {ifname} in netns {ns}"))
}

fn token_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut it = line.split_whitespace();
    while let Some(tok) = it.next() {
        if tok == key {
            return it.next();
        }
    }
    None
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// MAC address of interface `ifname` in namespace `ns`.
pub fn mac_of(ns: &str, ifname: &str) -> [u8; 6] {
    let line = link_line_ok(ns, ifname);
    token_after(&line, "link/ether")
        .and_then(parse_mac)
        .unwrap_or_else(|| panic!("no Ethernet address for {ifname} in netns {ns}: {line}"))
}

/// MTU of interface `ifname` in namespace `ns`.
pub fn mtu_of(ns: &str, ifname: &str) -> u32 {
    let line = link_line_ok(ns, ifname);
    token_after(&line, "mtu")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MTU for {ifname} in netns {ns}: {line}"))
}

static LIVE_PREFIXES: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// A [`NetPair`] prefix claimed in this process; released on drop.
#[derive(Debug)]
struct PrefixClaim(String);

impl PrefixClaim {
    fn new(prefix: &str) -> PrefixClaim {
        let mut guard = LIVE_PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
        let set = guard.get_or_insert_with(HashSet::new);
        assert!(
            set.insert(prefix.to_owned()),
            "NetPair prefix {prefix:?} is already in use by another live NetPair in this \
             process: every test must use its own unique prefix"
        );
        PrefixClaim(prefix.to_owned())
    }
}

impl Drop for PrefixClaim {
    fn drop(&mut self) {
        let mut guard = LIVE_PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = guard.as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Two network namespaces, `{prefix}-t` (target) and `{prefix}-i` (initiator),
/// joined by one or more veth pairs: link 0 is `{prefix}t` <-> `{prefix}i`,
/// link k > 0 is `{prefix}t{k}` <-> `{prefix}i{k}`. Each `*t*` end lives in the
/// target namespace, each `*i*` end in the initiator namespace. All links are up,
/// carry no IP address, and IPv6 is disabled in both namespaces (no stray
/// router/neighbour solicitations); `lo` is up in both. (The test bed's
/// [`NsPair`] with the tests' naming.)
///
/// Dropping it deletes both namespaces (and with them the veth pairs).
///
/// **Every test must use a unique prefix** (see the module docs).
#[derive(Debug)]
pub struct NetPair {
    // Field order is drop order: the namespaces go before the prefix is
    // free for another NetPair.
    net: NsPair,
    claim: PrefixClaim,
}

impl NetPair {
    /// One veth pair with MTU `mtu` between `{prefix}-t` and `{prefix}-i`.
    pub fn new(prefix: &str, mtu: u32) -> NetPair {
        NetPair::with_links(prefix, mtu, 1)
    }

    /// `n_links` (1..=10) parallel veth pairs between the same two namespaces,
    /// for multipath tests.
    ///
    /// `XBLADE_TEST_NETNS_PREFIX`, when set, is put in front of `prefix`, so
    /// that runs of the same test from several checkouts on one machine use
    /// names of their own.
    pub fn with_links(prefix: &str, mtu: u32, n_links: usize) -> NetPair {
        require_root();
        let prefix = &format!(
            "{}{prefix}",
            std::env::var("XBLADE_TEST_NETNS_PREFIX").unwrap_or_default()
        );
        assert!(
            !prefix.is_empty()
                && prefix.len() <= MAX_PREFIX_LEN
                && prefix.starts_with(|c: char| c.is_ascii_lowercase())
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "bad NetPair prefix {prefix:?}: use 1..={MAX_PREFIX_LEN} characters of [a-z0-9], \
             starting with a letter"
        );
        assert!(
            (1..=10).contains(&n_links),
            "n_links must be 1..=10, got {n_links}"
        );
        assert!((68..=65535).contains(&mtu), "bad MTU {mtu}");

        let links: Vec<(String, String)> = (0..n_links)
            .map(|k| {
                let n = if k == 0 { String::new() } else { k.to_string() };
                (format!("{prefix}t{n}"), format!("{prefix}i{n}"))
            })
            .collect();
        for (t, i) in &links {
            for name in [t, i] {
                assert!(
                    name.len() <= MAX_IFNAME_LEN,
                    "interface name {name:?} is longer than {MAX_IFNAME_LEN} characters"
                );
            }
        }
        let claim = PrefixClaim::new(prefix);
        // Removes the leftovers of a killed earlier run first; on error,
        // removes whatever it created.
        let (tns, ins) = (format!("{prefix}-t"), format!("{prefix}-i"));
        let net = or_panic(NsPair::create(&tns, &ins, links, mtu));
        NetPair { net, claim }
    }

    pub fn prefix(&self) -> &str {
        &self.claim.0
    }
    /// Target namespace name, `{prefix}-t`.
    pub fn target_ns(&self) -> &str {
        self.net.target_ns()
    }
    /// Initiator namespace name, `{prefix}-i`.
    pub fn initiator_ns(&self) -> &str {
        self.net.initiator_ns()
    }
    /// Target end of link 0, `{prefix}t` (in the target namespace).
    pub fn target_if(&self) -> &str {
        self.link(0).0
    }
    /// Initiator end of link 0, `{prefix}i` (in the initiator namespace).
    pub fn initiator_if(&self) -> &str {
        self.link(0).1
    }
    pub fn n_links(&self) -> usize {
        self.net.links().len()
    }
    /// (target end, initiator end) of link `k`.
    pub fn link(&self, k: usize) -> (&str, &str) {
        let (t, i) = &self.net.links()[k];
        (t, i)
    }
    /// Target ends of all links, in link order.
    pub fn target_ifs(&self) -> Vec<&str> {
        self.net.links().iter().map(|(t, _)| t.as_str()).collect()
    }
    /// Initiator ends of all links, in link order.
    pub fn initiator_ifs(&self) -> Vec<&str> {
        self.net.links().iter().map(|(_, i)| i.as_str()).collect()
    }

    /// MAC address of `ifname` in namespace `ns`.
    pub fn mac_of(&self, ns: &str, ifname: &str) -> [u8; 6] {
        mac_of(ns, ifname)
    }
    /// MAC of the target end of link 0.
    pub fn target_mac(&self) -> [u8; 6] {
        mac_of(self.target_ns(), self.target_if())
    }
    /// MAC of the initiator end of link 0.
    pub fn initiator_mac(&self) -> [u8; 6] {
        mac_of(self.initiator_ns(), self.initiator_if())
    }

    /// Sets the MTU of both ends of every link.
    pub fn set_mtu(&self, mtu: u32) {
        or_panic(self.net.set_mtu(mtu));
    }
}

// ---------------------------------------------------------------------------
// setns(2) for the current thread
// ---------------------------------------------------------------------------

/// While alive, the *current thread* is in another network namespace; dropping
/// it moves the thread back. Sockets opened meanwhile stay in the namespace they
/// were opened in, so the usual pattern is: enter, open the socket, drop the guard.
/// Not `Send`: it must be dropped on the thread that created it.
#[derive(Debug)]
pub struct NsGuard {
    original: File,
    ns: String,
    _not_send: PhantomData<*const ()>,
}

/// Moves the current thread into named network namespace `ns` (`/run/netns/NAME`).
pub fn enter_ns(ns: &str) -> NsGuard {
    let original = File::open("/proc/thread-self/ns/net")
        .unwrap_or_else(|e| panic!("cannot open /proc/thread-self/ns/net: {e}"));
    let path = Path::new("/run/netns").join(ns);
    let target =
        File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    // SAFETY: `target` is an open descriptor of a network namespace file that lives
    // until after the call; setns(2) only changes the calling thread's namespace.
    let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    assert!(
        rc == 0,
        "setns into netns {ns} failed: {}",
        io::Error::last_os_error()
    );
    NsGuard {
        original,
        ns: ns.to_owned(),
        _not_send: PhantomData,
    }
}

impl NsGuard {
    pub fn ns(&self) -> &str {
        &self.ns
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // SAFETY: `self.original` is the open descriptor of the namespace this thread
        // was in before `enter_ns`; setns(2) only changes the calling thread.
        let rc = unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            // A thread stuck in a test namespace would run later tests in the wrong
            // place; there is no way to recover, so stop the whole test binary.
            eprintln!(
                "NsGuard: cannot return from netns {} to the original namespace: {}",
                self.ns,
                io::Error::last_os_error()
            );
            std::process::abort();
        }
    }
}

/// Runs `f` with the current thread in namespace `ns`.
pub fn in_ns<R>(ns: &str, f: impl FnOnce() -> R) -> R {
    let _guard = enter_ns(ns);
    f()
}

/// Inode of the current thread's network namespace (to compare namespaces).
pub fn current_netns_inode() -> u64 {
    fs::metadata("/proc/thread-self/ns/net")
        .expect("stat /proc/thread-self/ns/net")
        .ino()
}

/// Inode of named namespace `ns`.
pub fn netns_inode(ns: &str) -> u64 {
    fs::metadata(Path::new("/run/netns").join(ns))
        .unwrap_or_else(|e| panic!("stat /run/netns/{ns}: {e}"))
        .ino()
}

/// Inode of the network namespace of process `pid`.
pub fn netns_inode_of_pid(pid: u32) -> io::Result<u64> {
    Ok(fs::metadata(format!("/proc/{pid}/ns/net"))?.ino())
}

// ---------------------------------------------------------------------------
// Raw AF_PACKET socket
// ---------------------------------------------------------------------------

/// A raw AF_PACKET socket bound to one interface and one ethertype. Frames
/// include the 14-byte Ethernet header (no FCS). Frames this host *sends* on
/// the interface are not returned by [`PacketSocket::recv`].
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    ethertype: u16,
    mac: [u8; 6],
}

impl PacketSocket {
    /// Opens a socket on `ifname` in the current thread's network namespace.
    pub fn open(ifname: &str, ethertype: u16) -> io::Result<PacketSocket> {
        let cname = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in ifname"))?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "ifindex out of range"))?;
        // Protocol 0 at creation: nothing is queued until bind() picks the ethertype
        // and the interface, so no frame from another interface can slip in.
        // SAFETY: plain socket(2) call with constant arguments; no memory is passed.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::sa_family_t;
        sll.sll_protocol = ethertype.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a properly initialised sockaddr_ll and the length passed is
        // its exact size; `fd` is an open AF_PACKET socket.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sll).cast::<libc::sockaddr>(),
                sockaddr_ll_len(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // getsockname on a bound packet socket reports the interface's hardware address.
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut name: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = sockaddr_ll_len();
        // SAFETY: `name` is writable for `len` bytes, and `len` is a valid in/out length.
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                std::ptr::addr_of_mut!(name).cast::<libc::sockaddr>(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&name.sll_addr[..6]);
        Ok(PacketSocket {
            fd,
            ifindex,
            ethertype,
            mac,
        })
    }

    /// Opens a socket on `ifname` inside namespace `ns` (the thread returns to its
    /// own namespace before this returns; the socket stays in `ns`).
    pub fn open_in(ns: &str, ifname: &str, ethertype: u16) -> io::Result<PacketSocket> {
        in_ns(ns, || PacketSocket::open(ifname, ethertype))
    }

    /// Hardware address of the bound interface.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// Sends one complete Ethernet frame (header included) out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is a valid readable buffer of `frame.len()` bytes for the call.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast::<libc::c_void>(),
                frame.len(),
                0,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Receives one incoming frame into `buf`, waiting at most `timeout`.
    /// Returns `Ok(None)` on timeout. Frames longer than `buf` are truncated.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `pfd` is one valid pollfd and nfds is 1.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc > 0 {
                // SAFETY: all-zero is a valid sockaddr_ll.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = sockaddr_ll_len();
                // SAFETY: `buf` is writable for `buf.len()` bytes and `from` for `len`
                // bytes; both outlive the call.
                let n = unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr().cast::<libc::c_void>(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        std::ptr::addr_of_mut!(from).cast::<libc::sockaddr>(),
                        &mut len,
                    )
                };
                match usize::try_from(n) {
                    // PACKET_OUTGOING: this host's own transmission, not a received frame.
                    Ok(n) if from.sll_pkttype != libc::PACKET_OUTGOING => {
                        return Ok(Some(n.min(buf.len())))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let e = io::Error::last_os_error();
                        if !matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) {
                            return Err(e);
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

fn sockaddr_ll_len() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
        .expect("sockaddr_ll size fits socklen_t")
}

/// Builds an Ethernet frame `dst | src | ethertype | payload`, zero-padded to 60 bytes.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Waits until the file at `path` contains `needle` (true) or `timeout` passes (false).
pub fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).contains(needle))
            .unwrap_or(false)
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// How long [`Proc::stop`] waits after SIGTERM before sending SIGKILL.
pub use xblade_testbed::STOP_GRACE;

/// A child process whose stdout and stderr go to a temp log file. Dropping it
/// stops *this one pid* (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and reaps it.
/// If the thread is panicking (failed test), the log is printed to stderr and kept.
///
/// The child also gets SIGKILL if the thread that spawned it ends
/// (`PR_SET_PDEATHSIG`), so a test binary killed by a timeout leaves no
/// process behind holding a namespace; hence a `Proc` must not outlive the
/// test (thread) that created it, e.g. in a `static` shared by several tests.
/// (The test bed's [`Supervised`] that panics instead of returning errors.)
#[derive(Debug)]
pub struct Proc {
    // Field order is drop order: the process is stopped before its log goes.
    child: Supervised,
    log: Option<TempPath>,
}

impl Proc {
    /// Spawns a prepared command (stdin closed; stdout+stderr to the log file).
    pub fn spawn(cmd: Command, name: &str) -> Proc {
        let stem: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(32)
            .collect();
        let log = temp_file(&format!("xblade-proc-{stem}"));
        let child = or_panic(Supervised::spawn(cmd, name, &log, Session::Inherit));
        Proc {
            child,
            log: Some(log),
        }
    }

    /// Spawns `program args...` inside namespace `ns` (via `ip netns exec`, which
    /// execs in place, so [`Proc::pid`] is the program's pid).
    pub fn spawn_in_ns<I, S>(ns: &str, program: impl AsRef<OsStr>, args: I) -> Proc
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let base = Path::new(program)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.to_string_lossy().into_owned());
        let mut cmd = ns_command(ns, program);
        cmd.args(args);
        Proc::spawn(cmd, &format!("{base}@{ns}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn name(&self) -> &str {
        self.child.name()
    }

    /// Path of the combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        self.child.log_path()
    }

    /// Everything the process wrote so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// Exit status if the process has exited (reaps it), None while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        or_panic(self.child.try_wait())
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits until the log contains `needle`. Panics, showing the log, when the
    /// process exits first or `timeout` passes.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let why = match self.child.wait_for_log(needle, timeout) {
            Ok(()) => return,
            Err(LogWait::Exited(st)) => format!("exited ({st}) before logging {needle:?}"),
            Err(LogWait::TimedOut) => format!("did not log {needle:?} within {timeout:?}"),
        };
        panic!(
            "{} (pid {}) {why}; its log:\n{}",
            self.name(),
            self.pid(),
            self.log()
        );
    }

    /// Waits up to `timeout` for the process to exit by itself; None if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        or_panic(self.child.wait_timeout(timeout))
    }

    /// Sends SIGTERM (for example to test graceful shutdown) without waiting.
    pub fn terminate(&mut self) {
        self.child.signal(libc::SIGTERM);
    }

    /// Stops the process: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL.
    /// Returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let stopped = or_panic(self.child.stop());
        if stopped.killed {
            eprintln!(
                "{} (pid {}) ignored SIGTERM for {STOP_GRACE:?}: killed by SIGKILL",
                self.name(),
                self.pid()
            );
        }
        stopped.status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let st = self.stop();
        if thread::panicking() {
            if let Some(log) = self.log.take() {
                let text = self.log();
                let path = log.keep();
                eprintln!(
                    "---- {} (pid {}, {st}) log, kept at {} ----\n{text}\n---- end of log ----",
                    self.name(),
                    self.pid(),
                    path.display()
                );
            }
        }
    }
}
