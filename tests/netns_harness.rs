//! Self-test of the network-namespace harness in `tests/common`.
//!
//! Each test uses its own unique `NetPair` prefix (`xbh`, `xbh2`, `xbh3`,
//! `xbh4`); prefixes must stay unique across *all* integration tests, because
//! namespaces and interface names are global to the machine.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Sends a frame from initiator link `k` (in-process, via `enter_ns`) and checks
/// it arrives unchanged on target link `k`, received on another thread that has
/// entered the target namespace.
fn assert_frame_crosses(pair: &NetPair, k: usize, tag: &str) {
    let (tif, iif) = pair.link(k);
    let (tif, iif) = (tif.to_owned(), iif.to_owned());
    let target_ns = pair.target_ns().to_owned();
    let target_mac = pair.mac_of(pair.target_ns(), &tif);
    let payload = format!("xblade-harness {tag} link {k}");

    let (ready_tx, ready_rx) = mpsc::channel();
    let want = payload.clone();
    let receiver = thread::spawn(move || {
        let outer = current_netns_inode();
        let sock = {
            let _g = enter_ns(&target_ns);
            assert_eq!(current_netns_inode(), netns_inode(&target_ns));
            PacketSocket::open(&tif, ETH_P_EXPERIMENTAL).expect("open target socket")
        };
        assert_eq!(current_netns_inode(), outer, "NsGuard did not restore");
        ready_tx.send(sock.mac()).unwrap();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(n) = sock.recv(&mut buf, left).expect("recv") {
                if buf[..n].windows(want.len()).any(|w| w == want.as_bytes()) {
                    return Some(buf[..n].to_vec());
                }
            }
        }
        None
    });
    let receiver_mac = ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver thread did not get ready");
    assert_eq!(receiver_mac, target_mac, "getsockname MAC != ip link MAC");

    let before = current_netns_inode();
    let sock = {
        let _g = enter_ns(pair.initiator_ns());
        assert_ne!(current_netns_inode(), before);
        PacketSocket::open(&iif, ETH_P_EXPERIMENTAL).expect("open initiator socket")
    };
    assert_eq!(current_netns_inode(), before, "NsGuard did not restore");
    assert_eq!(sock.mac(), pair.mac_of(pair.initiator_ns(), &iif));

    let frame = eth_frame(
        target_mac,
        sock.mac(),
        ETH_P_EXPERIMENTAL,
        payload.as_bytes(),
    );
    assert_eq!(sock.send(&frame).expect("send"), frame.len());

    let got = receiver.join().expect("receiver thread panicked");
    assert_eq!(
        got.as_deref(),
        Some(&frame[..]),
        "frame sent on {iif} did not arrive unchanged on link {k}'s target end"
    );
}

#[test]
fn netpair_lifecycle_and_raw_frame() {
    require_root();
    let pair = NetPair::new("xbh", 1500);
    let (t_ns, i_ns) = (pair.target_ns().to_owned(), pair.initiator_ns().to_owned());
    assert_eq!((t_ns.as_str(), i_ns.as_str()), ("xbh-t", "xbh-i"));
    assert_eq!((pair.target_if(), pair.initiator_if()), ("xbht", "xbhi"));
    assert!(netns_exists(&t_ns) && netns_exists(&i_ns));

    // Each end exists in its own namespace only, never in the root namespace.
    assert!(link_exists(&t_ns, "xbht") && link_exists(&i_ns, "xbhi"));
    assert!(!link_exists(&t_ns, "xbhi") && !link_exists(&i_ns, "xbht"));
    let root = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let root = String::from_utf8_lossy(&root.stdout);
    assert!(!root.contains("xbht") && !root.contains("xbhi"));

    for (ns, ifname) in [(&t_ns, "xbht"), (&i_ns, "xbhi")] {
        assert!(link_is_up(ns, ifname), "{ifname} not up");
        assert!(link_is_up(ns, "lo"), "lo not up in {ns}");
        assert_eq!(mtu_of(ns, ifname), 1500);
        let v6 = run_in_ns(
            ns,
            "sysctl",
            ["-n", &format!("net.ipv6.conf.{ifname}.disable_ipv6")],
        );
        assert_eq!(
            String::from_utf8_lossy(&v6.stdout).trim(),
            "1",
            "IPv6 on in {ns}"
        );
        let addrs = run_in_ns(ns, "ip", ["-o", "addr", "show", "dev", ifname]);
        assert!(
            String::from_utf8_lossy(&addrs.stdout).trim().is_empty(),
            "{ifname} has addresses"
        );
    }
    assert_ne!(pair.target_mac(), pair.initiator_mac());

    assert_frame_crosses(&pair, 0, "lifecycle");

    drop(pair);
    assert!(!netns_exists(&t_ns) && !netns_exists(&i_ns));
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains("xbh-t") && !list.contains("xbh-i"), "{list}");
}

#[test]
fn multipath_links_and_set_mtu() {
    require_root();
    let pair = NetPair::with_links("xbh2", 1500, 2);
    assert_eq!(pair.target_ifs(), ["xbh2t", "xbh2t1"]);
    assert_eq!(pair.initiator_ifs(), ["xbh2i", "xbh2i1"]);
    for k in 0..2 {
        assert_frame_crosses(&pair, k, "multipath");
    }
    pair.set_mtu(9000);
    for k in 0..2 {
        let (t, i) = pair.link(k);
        assert_eq!(mtu_of(pair.target_ns(), t), 9000);
        assert_eq!(mtu_of(pair.initiator_ns(), i), 9000);
    }
    assert_frame_crosses(&pair, 1, "after-mtu");
}

#[test]
fn proc_runs_in_namespace_logs_and_stops() {
    require_root();
    let pair = NetPair::new("xbh3", 1500);

    // run_in_ns sees only that namespace's interfaces.
    let out = run_in_ns(pair.initiator_ns(), "ip", ["-o", "link"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("xbh3i") && !text.contains("xbh3t"), "{text}");

    // A well-behaved process: logs, runs inside the target namespace, exits on SIGTERM.
    let mut p = Proc::spawn_in_ns(
        pair.target_ns(),
        "sh",
        ["-c", "echo hello-from-ns >&2; ip -o link; exec sleep 30"],
    );
    p.wait_for_log("hello-from-ns", Duration::from_secs(5));
    p.wait_for_log("xbh3t", Duration::from_secs(5));
    assert!(wait_for_log(p.log_path(), "hello-from-ns", Duration::ZERO));
    assert!(!wait_for_log(
        p.log_path(),
        "never-printed",
        Duration::from_millis(50)
    ));
    let pid = p.pid();
    // `ip netns exec` execs in place: our pid is the program's, in the target netns.
    assert_eq!(
        netns_inode_of_pid(pid).unwrap(),
        netns_inode(pair.target_ns())
    );
    let log_path = p.log_path().to_owned();
    let t0 = Instant::now();
    drop(p);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "SIGTERM should suffice"
    );
    assert!(
        fs::metadata(format!("/proc/{pid}")).is_err(),
        "pid {pid} still exists"
    );
    assert!(!log_path.exists(), "log not removed");

    // A process ignoring SIGTERM is SIGKILLed after the grace period.
    let mut stubborn = Proc::spawn_in_ns(
        pair.target_ns(),
        "sh",
        [
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    stubborn.wait_for_log("ready", Duration::from_secs(5));
    let t0 = Instant::now();
    let st = stubborn.stop();
    let waited = t0.elapsed();
    assert!(
        waited >= STOP_GRACE && waited < STOP_GRACE + Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(!st.success());

    // A process whose spawning thread ends without dropping it is killed
    // (PR_SET_PDEATHSIG), as happens when a test binary is killed.
    let (pid, log) = thread::spawn({
        let ns = pair.target_ns().to_owned();
        move || {
            let mut orphan = Proc::spawn_in_ns(&ns, "sh", ["-c", "echo up; exec sleep 30"]);
            orphan.wait_for_log("up", Duration::from_secs(5));
            let out = (orphan.pid(), orphan.log_path().to_owned());
            std::mem::forget(orphan); // no Drop: only the thread's end can stop it
            out
        }
    })
    .join()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Killed but never reaped (its Child was forgotten): a zombie, or gone.
        let state = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| rest.chars().next()));
        if matches!(state, None | Some(Some('Z'))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphan {pid} still alive: {state:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let _ = fs::remove_file(log);

    // A process that exits by itself.
    let mut quick = Proc::spawn_in_ns(pair.initiator_ns(), "sh", ["-c", "echo bye; exit 3"]);
    let st = quick.wait_timeout(Duration::from_secs(5)).expect("exits");
    assert_eq!(st.code(), Some(3));
    assert!(quick.log().contains("bye"));
}

#[test]
fn leftovers_removed_and_sparse_files() {
    require_root();
    // Simulate a killed earlier run that left its namespaces behind.
    for ns in ["xbh4-t", "xbh4-i"] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "add", ns])
            .output();
    }
    let pair = NetPair::new("xbh4", 1500);
    assert!(link_exists(pair.target_ns(), pair.target_if()));
    drop(pair);
    assert!(!netns_exists("xbh4-t") && !netns_exists("xbh4-i"));

    let f = sparse_file(64 << 20);
    let path = f.path().to_owned();
    assert!(path.starts_with("/var/tmp"));
    let md = fs::metadata(&path).unwrap();
    assert_eq!(md.len(), 64 << 20);
    assert!(
        md.blocks() * 512 < 1 << 20,
        "not sparse: {} blocks",
        md.blocks()
    );
    drop(f);
    assert!(!path.exists());

    let bin = xblade_bin();
    assert!(bin.is_file(), "{} missing", bin.display());
}
