//! Helpers for the XDP datapath tests (`tests/xdp_*.rs`), on top of
//! `tests/common` and `tests/aoe_support`: start the real binary with
//! `--datapath xdp`, read its counters over the control socket, check
//! whether an XDP program is attached, and run data round trips checked
//! against the backing file.
//!
//! Use with `mod common; mod aoe_support; mod xdp_support;`.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aoe_wire::SECTOR_SIZE;
use xblade::control::Status;
use xblade_tools::initiator::client::{Client, Target};

use crate::aoe_support::{file_sectors, rand_bytes, START_TIMEOUT};
use crate::common::{xblade_bin, NetPair, Proc};

pub const READ_EXT: u8 = 0x24;
pub const WRITE_EXT: u8 = 0x34;
pub const READ28: u8 = 0x20;
pub const WRITE28: u8 = 0x30;

/// A running xblade and its control socket.
pub struct Xblade {
    pub proc: Proc,
    pub socket: PathBuf,
}

impl Drop for Xblade {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Start `xblade --datapath DATAPATH --control-socket S ARGS...` in the
/// pair's target namespace and wait until it serves.
pub fn start_with(pair: &NetPair, datapath: &str, args: &[&str]) -> Xblade {
    let socket = std::env::temp_dir().join(format!(
        "xblade-{}-{}-{}.sock",
        pair.prefix(),
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let mut all = vec![
        "--datapath",
        datapath,
        "--control-socket",
        socket.to_str().expect("utf-8 temp dir"),
    ];
    all.extend_from_slice(args);
    let mut proc = Proc::spawn_in_ns(pair.target_ns(), xblade_bin(), &all);
    proc.wait_for_log("xblade serving", START_TIMEOUT);
    Xblade { proc, socket }
}

/// Start on the XDP datapath in attach mode `mode` ("native", "skb").
pub fn start_xdp(pair: &NetPair, mode: &str, args: &[&str]) -> Xblade {
    let mut all = vec!["--xdp-mode", mode];
    all.extend_from_slice(args);
    let mut x = start_with(pair, "xdp", &all);
    // The worker thread logs this itself, possibly just after the main
    // thread's "xblade serving".
    x.proc.wait_for_log("AF_XDP worker serving", START_TIMEOUT);
    x
}

impl Xblade {
    /// The status (counters are published every 250 ms: wait that long
    /// after traffic before asserting on them).
    pub fn status(&self) -> Status {
        xblade::control::query(&self.socket)
            .unwrap_or_else(|e| panic!("query {}: {e}\n{}", self.socket.display(), self.proc.log()))
    }

    /// Worker 0's counters after the next publication.
    pub fn worker0(&self) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(400));
        self.status().workers[0].clone()
    }
}

/// A counter of a worker's `xdp` section.
pub fn xdp_counter(w: &serde_json::Value, name: &str) -> u64 {
    w["xdp"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no xdp counter {name} in {w}"))
}

/// Sum of the engine's drop counters.
pub fn engine_drops(w: &serde_json::Value) -> u64 {
    w["engine"]["drops"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

/// `ip -d link show` of `ifname` in `ns`.
pub fn link_details(ns: &str, ifname: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", ifname])
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip -d link show {ifname} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether any XDP program (native or generic) is attached to the link.
pub fn xdp_attached(ns: &str, ifname: &str) -> bool {
    let d = link_details(ns, ifname);
    d.contains("prog/xdp") || d.contains(" xdp ") || d.contains(" xdpgeneric ")
}

/// Wait up to 2 s for the program to go away (a killed process's link fd
/// is closed as the process is torn down).
pub fn wait_detached(ns: &str, ifname: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !xdp_attached(ns, ifname) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Write random data with `n`-sector requests at a few LBAs (both ends of
/// the export among them), check each write on the backing file and read
/// it back through the target; also read host-written data. `op` chooses
/// LBA48 or LBA28 opcodes.
pub fn round_trips(
    c: &mut Client,
    t: &Target,
    file: &Path,
    sectors: u64,
    sizes: &[u8],
    seed: u64,
    lba48: bool,
) {
    let (rd, wr) = if lba48 {
        (READ_EXT, WRITE_EXT)
    } else {
        (READ28, WRITE28)
    };
    for (k, &n) in sizes.iter().enumerate() {
        let nn = u64::from(n);
        for (j, lba) in [0, 1, 63, sectors / 2 + 3, sectors - nn]
            .into_iter()
            .enumerate()
        {
            // Host-written content first: the read path alone.
            let host = file_sectors(file, lba, nn);
            let r = c.ata(t, rd, n, lba, &[]).expect("read");
            r.check().unwrap_or_else(|e| panic!("read {n}@{lba}: {e}"));
            assert_eq!(
                r.len,
                36 + n as usize * SECTOR_SIZE,
                "read reply length {n}@{lba}"
            );
            assert!(
                r.data == host,
                "read {n} sectors at {lba}: data differs from the file"
            );
            // Then a write and its read-back.
            let data = rand_bytes(seed * 1000 + (k * 10 + j) as u64, n as usize * SECTOR_SIZE);
            c.ata(t, wr, n, lba, &data)
                .expect("write")
                .check()
                .unwrap_or_else(|e| panic!("write {n}@{lba}: {e}"));
            assert!(
                file_sectors(file, lba, nn) == data,
                "write of {n} sectors at {lba}: the file does not hold the data"
            );
            let r = c.ata(t, rd, n, lba, &[]).expect("read back");
            r.check()
                .unwrap_or_else(|e| panic!("read back {n}@{lba}: {e}"));
            assert!(
                r.data == data,
                "read back {n} sectors at {lba}: data differs"
            );
        }
    }
}
