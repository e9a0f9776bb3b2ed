//! CPU time of the bench itself (`getrusage`) and of the target process
//! (`/proc/PID/stat`, which sums every thread, live or exited), so a reader
//! can see which side saturated.

use std::io;
use std::time::Duration;

/// User and system CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// User time.
    pub user: Duration,
    /// System time (kernel work on the process's behalf, including
    /// softirq work that ran in its context).
    pub sys: Duration,
}

impl CpuTimes {
    /// `self - earlier`, in seconds: (user, system).
    pub fn since(&self, earlier: &CpuTimes) -> (f64, f64) {
        (
            self.user.saturating_sub(earlier.user).as_secs_f64(),
            self.sys.saturating_sub(earlier.sys).as_secs_f64(),
        )
    }
}

/// CPU time of this whole process (every thread).
pub fn self_cpu() -> CpuTimes {
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the call.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if r != 0 {
        return CpuTimes::default();
    }
    CpuTimes {
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
    }
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime and stime of process `pid` (all its threads), from
/// `/proc/PID/stat`. Resolution is one clock tick (usually 10 ms).
pub fn proc_cpu(pid: u32) -> io::Result<CpuTimes> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&s).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

fn parse_stat(s: &str) -> Option<CpuTimes> {
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses,
    // so fields are counted from after the last ')'. utime and stime are
    // fields 14 and 15, i.e. the 12th and 13th after the comm.
    let rest = &s[s.rfind(')')? + 1..];
    let mut it = rest.split_whitespace().skip(11);
    let utime: u64 = it.next()?.parse().ok()?;
    let stime: u64 = it.next()?.parse().ok()?;
    let hz = clock_ticks();
    let d =
        |t: u64| Duration::from_secs(t / hz) + Duration::from_nanos((t % hz) * 1_000_000_000 / hz);
    Some(CpuTimes {
        user: d(utime),
        sys: d(stime),
    })
}

/// Name of process `pid` (`/proc/PID/comm`), for the report.
pub fn proc_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let hz = clock_ticks();
        let line = format!(
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 {} {} 0 0 20 0 3 0",
            3 * hz,
            hz / 2
        );
        assert_eq!(
            parse_stat(&line),
            Some(CpuTimes {
                user: Duration::from_secs(3),
                sys: Duration::from_millis(500)
            })
        );
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(proc_cpu(pid).is_ok());
        assert!(proc_name(pid).is_some());
        let _ = self_cpu();
    }
}
