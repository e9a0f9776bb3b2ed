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

/// Run xblade with `args` and `env`; (exit code, stdout + stderr).
fn xblade_run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(xblade_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run xblade");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("xblade {args:?} died by a signal; output:\n{text}"));
    (code, text)
}

/// A one-export configuration on `lo` backed by `file`, plus `extra` lines.
fn one_export(file: &str, extra: &str) -> String {
    format!(
        "datapath = \"afpacket\"\n[[export]]\nshelf = 4\nslot = 2\nfile = \"{file}\"\ninterfaces = [\"lo\"]\n{extra}\n"
    )
}

/// `check-config` runs what `serve` runs before serving: each bad case of a
/// file refused whole (exit 1) or of an export that cannot be served now
/// (exit 3) is named; a missing interface is a warning unless
/// --strict-interfaces.
#[test]
fn check_config_refuses_what_serve_refuses() {
    let f = sparse_file(1 << 20); // 2048 sectors
    let p = f.to_str().unwrap();
    let cfg = temp_file("xblade-check-config");
    let c = cfg.to_str().unwrap();
    let check = |text: String, flags: &[&str]| {
        std::fs::write(&cfg, text).unwrap();
        let mut args = vec!["check-config"];
        args.extend_from_slice(flags);
        args.push(c);
        xblade_run(&args, &[])
    };
    let (code, out) = check(one_export(p, ""), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok, 1 export(s)") && out.contains(p), "{out}");
    assert!(!out.contains("File(\""), "debug text in {out}");

    // Refused whole: exit 1, naming the value.
    for (text, needle) in [
        // The value's line and column (toml's spans).
        (
            one_export(p, "length = 0"),
            "line 7, column 10: export 1 (4.2): length = 0",
        ),
        (one_export("", ""), "file = \"\""),
        (
            one_export("disk.img", ""),
            "\"disk.img\" is a relative path",
        ),
        (
            one_export(p, "mac_mask = [\"ff:ff:ff:ff:ff:ff\"]"),
            "ff:ff:ff:ff:ff:ff is a broadcast",
        ),
    ] {
        let (code, out) = check(text.clone(), &[]);
        assert_eq!(code, 1, "{text}: {out}");
        assert!(out.contains(needle), "{text}: no {needle:?} in {out}");
        let (code, out) = xblade_run(&["serve", "--config", c], &[]);
        assert_eq!(code, 1, "serve accepted {text}: {out}");
        assert!(out.contains(needle), "serve: no {needle:?} in {out}");
    }

    // Valid, but the export cannot be served now: exit 3.
    let missing = "/var/tmp/xo-check-no-such.img";
    for (text, needle) in [
        (one_export(p, "offset = 999999999"), "offset 999999999"),
        (one_export(p, "length = 4096"), "length 4096"),
        (one_export(missing, ""), missing),
        (
            format!(
                "{}[[export]]\nshelf = 4\nslot = 3\nfile = \"{p}\"\ninterfaces = [\"lo\"]\noffset = 100\n",
                one_export(p, "")
            ),
            "overlapping ranges of the same backing store",
        ),
    ] {
        let (code, out) = check(text.clone(), &[]);
        assert_eq!(code, 3, "{text}: {out}");
        assert!(out.contains(needle), "{text}: no {needle:?} in {out}");
    }
    // --partial-ok: such exports are warnings.
    let (code, out) = check(one_export(missing, ""), &["--partial-ok"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning") && out.contains(missing), "{out}");
    // Disjoint ranges of one file (partitions) are fine.
    let (code, out) = check(
        format!(
            "{}[[export]]\nshelf = 4\nslot = 3\nfile = \"{p}\"\ninterfaces = [\"lo\"]\noffset = 1024\n",
            one_export(p, "length = 1024")
        ),
        &[],
    );
    assert_eq!(code, 0, "{out}");

    // A missing interface: a warning, or with --strict-interfaces exit 3.
    let text = one_export(p, "").replace("\"lo\"", "\"xo-noif0\"");
    let (code, out) = check(text.clone(), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning") && out.contains("xo-noif0"), "{out}");
    let (code, out) = check(text, &["--strict-interfaces"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("xo-noif0"), "{out}");
    // [service] as serve takes it: a core beyond the machine, a socket in
    // a missing directory.
    for (extra, needle) in [
        ("[service]\ncores = [4095]", "core 4095"),
        (
            "[service]\ncontrol_socket = \"/var/tmp/xo-no-dir/x.sock\"",
            "/var/tmp/xo-no-dir",
        ),
    ] {
        let (code, out) = check(one_export(p, extra), &[]);
        assert_eq!(code, 1, "{extra}: {out}");
        assert!(out.contains(needle), "{extra}: {out}");
    }
    // Unreadable file: exit 1.
    let (code, out) = xblade_run(&["check-config", "/var/tmp/xo-no-such.toml"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/var/tmp/xo-no-such.toml"), "{out}");
}

/// Messages for the operator: a near-miss subcommand gets a suggestion,
/// bare `xblade` lists the subcommands, a bad XBLADE_LOG is refused (it
/// would silence every warning), core ids beyond the machine are refused,
/// a control socket in a missing directory creates nothing, a broadcast
/// MAC in a Mac Mask is refused.
#[test]
fn operator_messages() {
    let (code, out) = xblade_run(&["stauts"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did you mean 'status'"), "{out}");
    let (code, out) = xblade_run(&[], &[]);
    assert_eq!(code, 2, "{out}");
    for sub in ["serve", "check-config", "status", "reload", "import-vblade"] {
        assert!(out.contains(sub), "bare xblade does not list {sub}: {out}");
    }
    let f = sparse_file(1 << 20);
    let p = f.to_str().unwrap();
    let (code, out) = xblade_run(&["status"], &[("XBLADE_LOG", "debgu")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("XBLADE_LOG") && out.contains("debgu"), "{out}");
    let (code, out) = xblade_run(
        &[
            "--datapath",
            "afpacket",
            "--cores",
            "4095",
            "1",
            "1",
            "lo",
            p,
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--cores: core 4095"), "{out}");
    let dir = "/var/tmp/xo-no-such-dir";
    assert!(!std::path::Path::new(dir).exists());
    let sock = format!("{dir}/x.sock");
    let (code, out) = xblade_run(
        &[
            "--datapath",
            "afpacket",
            "--control-socket",
            &sock,
            "1",
            "1",
            "lo",
            p,
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(dir), "{out}");
    assert!(!std::path::Path::new(dir).exists(), "{dir} was created");
    for m in ["ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"] {
        let (code, out) = xblade_run(&["-m", m, "1", "1", "lo", p], &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(m), "{out}");
    }
    // The range said is the range taken.
    let (code, out) = xblade_run(&["65535", "1", "lo", p], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("0..=65534"), "{out}");
}

/// `import-vblade` exits 3 when it skipped a file (the rest is written),
/// and `-o` refuses to overwrite without --force.
#[test]
fn import_vblade_is_honest() {
    let dir = temp_file("xblade-import-dir");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let f = sparse_file(1 << 20);
    std::fs::write(
        dir.join("a.conf"),
        format!(
            "shelf=9\nslot=1\nnetif=lo\nfilename={}\n",
            f.to_str().unwrap()
        ),
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let out_file = temp_file("xblade-import-out");
    std::fs::remove_file(&out_file).unwrap();
    let o = out_file.to_str().unwrap();
    let (code, out) = xblade_run(&["import-vblade", "--dir", d, "-o", o], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = xblade_run(&["import-vblade", "--dir", d, "-o", o], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--force"), "{out}");
    std::fs::write(
        dir.join("e.conf"),
        format!(
            "shelf=9\nslot=2\nnetif=lo\nfilename={}\noptions='-x'\n",
            f.to_str().unwrap()
        ),
    )
    .unwrap();
    let (code, out) = xblade_run(&["import-vblade", "--dir", d, "-o", o, "--force"], &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("e.conf") && out.contains("1 persistence file(s) skipped"),
        "{out}"
    );
    assert!(std::fs::read_to_string(&out_file)
        .unwrap()
        .contains("slot = 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A control socket left by a process killed with SIGKILL (no listener, no
/// such process) is removed by the first client that finds it, and said;
/// the message names no Rust debug list.
#[test]
fn stale_control_socket_is_removed() {
    let dir = std::path::Path::new("/run/xblade");
    // As xblade makes it: root only.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .unwrap();
    // Above the largest pid_max (2^22): no process has this pid.
    let path = dir.join("xblade-4194305.sock");
    let _ = std::fs::remove_file(&path);
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    // Other xblades (other tests) may answer: the exit code depends on them.
    let (_, out) = xblade_run(&["status"], &[]);
    assert!(
        out.contains(&format!("removed stale control socket {}", path.display())),
        "{out}"
    );
    assert!(!path.exists(), "stale socket still there");
    assert!(!out.contains("[\""), "debug list in {out}");
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
