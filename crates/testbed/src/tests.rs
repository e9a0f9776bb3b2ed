//! The test bed's own checks. The namespace one needs root and fails
//! (never skips) without it, as every network test of the project.

use std::process::Command;
use std::time::Duration;

use super::*;

/// `sh -c script` supervised, its log in `log`.
fn sh(script: &str, name: &str, log: &TempPath, session: Session) -> Supervised {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    Supervised::spawn(cmd, name, log, session).unwrap()
}

fn log_file() -> TempPath {
    TempPath::create_new(&std::env::temp_dir(), "xtb-unit", ".log")
        .expect("temp file")
        .0
}

#[test]
fn temp_path_is_removed_unless_kept() {
    let (t, _) = TempPath::create_new(&std::env::temp_dir(), "xtb-unit", ".tmp").unwrap();
    let p = t.path().to_path_buf();
    assert!(p.is_file());
    drop(t);
    assert!(!p.exists());
    let (t, _) = TempPath::create_new(&std::env::temp_dir(), "xtb-unit", ".tmp").unwrap();
    let kept = t.keep();
    assert!(kept.is_file());
    drop(TempPath::adopt(&kept));
    assert!(!kept.exists());
}

#[test]
fn failing_command_names_itself_and_says_why() {
    let e = run_ok("sh", &["-c", "echo nope >&2; exit 3"]).unwrap_err();
    assert_eq!(e.to_string(), "sh -c echo nope >&2; exit 3 failed: nope");
    let e = run_ok("xtb-no-such-program", &["x"]).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("cannot run `xtb-no-such-program x`"));
}

#[test]
fn supervised_logs_and_stops_by_sigterm() {
    let log = log_file();
    let mut p = sh("echo ready; exec sleep 30", "sleeper", &log, Session::Own);
    p.wait_for_log("ready", Duration::from_secs(5)).unwrap();
    assert!(p.is_running());
    let s = p.stop().unwrap();
    assert!(!s.killed);
    assert!(!s.status.success());
    assert!(!p.is_running());
}

#[test]
fn supervised_reports_exit_before_log_and_sigkills_stubborn() {
    let log = log_file();
    let mut p = sh("echo bye; exit 2", "quitter", &log, Session::Inherit);
    match p.wait_for_log("never", Duration::from_secs(5)) {
        Err(LogWait::Exited(st)) => assert_eq!(st.code(), Some(2)),
        other => panic!("expected an exit, got {other:?}"),
    }
    assert_eq!(p.log(), "bye\n");

    let script = "trap '' TERM; echo on; while :; do sleep 0.1; done";
    let mut p = sh(script, "stubborn", &log, Session::Inherit);
    p.wait_for_log("on", Duration::from_secs(5)).unwrap();
    assert_eq!(
        p.wait_for_log("never", Duration::from_millis(50)),
        Err(LogWait::TimedOut)
    );
    assert!(p.stop().unwrap().killed);
}

#[test]
fn ns_pair_is_created_and_removed() {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test creates network namespaces: run it as root"
    );
    let p = std::env::var("XBLADE_TEST_NETNS_PREFIX").unwrap_or_default();
    let (tns, ins) = (format!("{p}xtb-t"), format!("{p}xtb-i"));
    let links = vec![
        (format!("{p}xtbt"), format!("{p}xtbi")),
        (format!("{p}xtbt1"), format!("{p}xtbi1")),
    ];
    let pair = NsPair::create(&tns, &ins, links.clone(), 1500).unwrap();
    // A second one with the same names replaces the first's leftovers.
    std::mem::forget(pair);
    let pair = NsPair::create(&tns, &ins, links, 1500).unwrap();
    pair.set_mtu(9000).unwrap();
    for (t, i) in pair.links() {
        assert!(netns::link_line(&tns, t).unwrap().contains("mtu 9000"));
        assert!(netns::link_is_up(&ins, i));
    }
    let mut cmd = ns_command_on_core(&ins, 0, "ip");
    cmd.args(["-o", "link", "show"]);
    let log = log_file();
    let mut p = Supervised::spawn(cmd, "ip link", &log, Session::Inherit).unwrap();
    assert!(p
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap()
        .success());
    assert!(p.log().contains(&pair.links()[1].1));
    drop(pair);
    assert!(!netns_exists(&tns) && !netns_exists(&ins));
}
