//! Running programs: `ip` and the like in the current namespace, and
//! commands that run inside a named network namespace.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use crate::{Error, Result};

/// `program args...` as one line, for messages.
pub fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Runs `program args...` (stdin closed) and returns its output, whatever
/// its exit status; Err only when it cannot be started.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Run {
            cmd: describe(program, args),
            source,
        })
}

/// Runs `program args...` and returns its stdout; Err with its stderr
/// unless it exits successfully.
pub fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = run(program, args)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(Error::Failed {
            cmd: describe(program, args),
            status: out.status,
            message: if stderr.is_empty() {
                format!("{}, no message", out.status)
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS` (iproute2); its stdout, or Err with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    run_ok("ip", args)
}

/// `ip -n NS ARGS`: `ip` acting on namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// A `Command` that runs `program` inside network namespace `ns` (`ip
/// netns exec`). `ip netns exec` execs the program without forking, so
/// the child's pid is the program's own pid (what [`crate::Supervised`]
/// signals).
pub fn ns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// [`ns_command`] with the program pinned to CPU `core` (`taskset -c`,
/// which also execs in place). A core the machine lacks makes taskset
/// exit with a message naming it, in the child's output.
pub fn ns_command_on_core(ns: &str, core: usize, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = ns_command(ns, "taskset");
    cmd.args(["-c", &core.to_string()]).arg(program);
    cmd
}
