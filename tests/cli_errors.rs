//! Operator errors: the binary refuses bad command lines and configuration
//! files before serving anything, exits non-zero, and its message names the
//! bad value. No namespace is needed: every case fails before a socket is
//! opened (a process still running after the time limit is killed by pid
//! and fails the test).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sparse_file, temp_file, xblade_bin};

/// Run xblade with `args`; return (exit code, stderr).
fn xblade_fails(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(xblade_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xblade");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            // Our own child, not yet reaped: its pid is still ours.
            let _ = child.kill();
            let _ = child.wait();
            panic!("xblade {args:?} was still running after 10 s (it should refuse to start)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut err)
        .expect("read stderr");
    let code = status
        .code()
        .unwrap_or_else(|| panic!("xblade {args:?} died by a signal ({status}); stderr:\n{err}"));
    assert_ne!(code, 0, "xblade {args:?} succeeded; stderr:\n{err}");
    (code, err)
}

fn assert_names(args: &[&str], needles: &[&str]) {
    let (code, err) = xblade_fails(args);
    for n in needles {
        assert!(
            err.contains(n),
            "xblade {args:?} (exit {code}): stderr does not mention {n:?}:\n{err}"
        );
    }
}

#[test]
fn missing_backing_file() {
    let path = "/var/tmp/xblade-no-such-file.img";
    assert!(!std::path::Path::new(path).exists());
    assert_names(&["--datapath", "afpacket", "1", "1", "lo", path], &[path]);
}

#[test]
fn broadcast_shelf_and_slot_are_refused() {
    let f = sparse_file(1 << 20);
    let p = f.to_str().unwrap();
    assert_names(&["65535", "1", "lo", p], &["65535"]);
    assert_names(&["1", "255", "lo", p], &["255"]);
    // Out of the field's range altogether.
    assert_names(&["65536", "1", "lo", p], &["65536"]);
    assert_names(&["1", "256", "lo", p], &["256"]);
}

#[test]
fn unknown_interface() {
    let f = sparse_file(1 << 20);
    let p = f.to_str().unwrap();
    let ifname = "xbnosuchif0";
    assert!(!std::path::Path::new("/sys/class/net").join(ifname).exists());
    assert_names(&["--datapath", "afpacket", "1", "1", ifname, p], &[ifname]);
}

#[test]
fn bad_mac_in_mask_option() {
    let f = sparse_file(1 << 20);
    let p = f.to_str().unwrap();
    assert_names(
        &["-m", "02:00:zz:00:00:01", "1", "1", "lo", p],
        &["02:00:zz:00:00:01"],
    );
    assert_names(
        &["-m", "02:00:00:00:00:01,02:00:00:00:01", "1", "1", "lo", p],
        &["02:00:00:00:01"],
    );
}

#[test]
fn duplicate_shelf_slot_in_config() {
    let f = sparse_file(1 << 20);
    let p = f.to_str().unwrap();
    let cfg = temp_file("xblade-dup-config");
    std::fs::write(
        &cfg,
        format!(
            "datapath = \"afpacket\"\n\
             [[export]]\nshelf = 3\nslot = 7\nfile = \"{p}\"\ninterfaces = [\"lo\"]\n\
             [[export]]\nshelf = 3\nslot = 7\nfile = \"{p}\"\ninterfaces = [\"lo\"]\n"
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    assert_names(&["serve", "--config", c], &["duplicate", "3.7"]);
    assert_names(&["check-config", c], &["duplicate", "3.7"]);
}

/// Two writers on one file lose acknowledged data when one of them stalls
/// (docs/fencing.md): an export of a range another process holds writable
/// is refused, naming that process; a disjoint range is not in the way.
#[test]
fn second_writer_on_one_file_is_refused() {
    let f = sparse_file(1 << 20);
    let p = f.to_str().unwrap();
    // This test process plays the first xblade: it holds the lock an
    // export takes (the whole file, as an export without a length).
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.path())
        .expect("open");
    xblade::bdev::lock::lock_range(&held, f.path(), 0, u64::MAX).expect("lock");
    let me = std::process::id().to_string();
    assert_names(
        &["--datapath", "afpacket", "1", "1", "lo", p],
        &[p, "already exported writable by process", &me, "read-only"],
    );
    drop(held);
}
