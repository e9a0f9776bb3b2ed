//! Seeds for the `engine` fuzz target (issue 7), built from byte fixtures:
//! the frames real initiators send (Linux QC broadcast, IDENTIFY, READ/WRITE
//! EXT and LBA28, QC set, Mac Mask edits, Reserve set ...) in the harness's
//! input format (`xblade::fuzzing::run_frames_with`: per frame a 2-byte
//! little-endian length, one mode byte, the frame bytes).
//!
//! The committed seeds live in `fuzz/seeds/`. This test rebuilds them in
//! memory and fails when a committed file differs or is missing, so the
//! seeds stay what this file says they are; regenerate them with
//!
//! ```sh
//! XBLADE_WRITE_SEEDS=1 cargo test --release --test reliability_fuzz_seeds
//! ```
//!
//! It also runs every seed through the harness (no panic, no violation)
//! and checks each reaches the code it is meant to seed (a reply, a disk
//! action), so a change in the engine that makes a seed useless is noticed.

use std::path::{Path, PathBuf};

use aoe_wire::request::{self, Addr};
use aoe_wire::{ata, mask, qc, reserve, MacAddr};
use xblade::fuzzing::{engine, run_frames_with, RunCounts, TARGET_MAC};

/// The initiator of the fixtures, and a second host.
const HOST: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const OTHER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

/// Mode byte: the frame goes in exactly as given (bit 0 set: no rewriting
/// of destination, ethertype or version by the harness).
const RAW: u8 = 1;
/// Mode byte: the harness's disk completes with EIO (bit 4).
const RAW_EIO: u8 = 1 | 16;

fn addr(src: MacAddr, dst: MacAddr, major: u16, minor: u8) -> Addr {
    Addr {
        dst,
        src,
        major,
        minor,
    }
}

fn to_target(src: MacAddr, minor: u8) -> Addr {
    addr(src, TARGET_MAC, 1, minor)
}

fn build(f: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut b = vec![0u8; 1514];
    let n = f(&mut b);
    b.truncate(n);
    b
}

fn qc_frame(a: &Addr, tag: u32, ccmd: qc::ConfigCmd, s: &[u8]) -> Vec<u8> {
    build(|b| request::query_config(b, a, tag, ccmd, s))
}

fn ata_frame(a: &Addr, tag: u32, op: ata::Opcode, scnt: u8, lba: u64, data: &[u8]) -> Vec<u8> {
    build(|b| request::ata(b, a, tag, op, scnt, lba, data))
}

fn mask_frame(a: &Addr, tag: u32, cmd: mask::MaskCmd, dirs: &[(mask::DirCmd, MacAddr)]) -> Vec<u8> {
    build(|b| request::mac_mask(b, a, tag, cmd, dirs))
}

fn reserve_frame(a: &Addr, tag: u32, cmd: reserve::ReserveCmd, macs: &[MacAddr]) -> Vec<u8> {
    build(|b| request::reserve(b, a, tag, cmd, macs))
}

/// Deterministic payload bytes.
fn payload(seed: u8, sectors: usize) -> Vec<u8> {
    (0..sectors * 512)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// One seed: frames with their mode bytes, and what it must reach:
/// at least `min_replies` answers (replies plus completed disk actions)
/// and `min_disk` disk actions.
struct Seed {
    name: &'static str,
    frames: Vec<(u8, Vec<u8>)>,
    min_replies: u64,
    min_disk: u64,
}

fn encode(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (mode, f) in frames {
        assert!(f.len() < 1600, "the harness takes lengths modulo 1600");
        out.extend_from_slice(&(f.len() as u16).to_le_bytes());
        out.push(*mode);
        out.extend_from_slice(f);
    }
    out
}

fn seeds() -> Vec<Seed> {
    use ata::Opcode::*;
    let h1 = to_target(HOST, 1);
    let h2 = to_target(HOST, 2);
    let o1 = to_target(OTHER, 1);
    let bcast = addr(HOST, MacAddr::BROADCAST, 0xffff, 0xff);
    let one = |name, mode, f, replies, disk| Seed {
        name,
        frames: vec![(mode, f)],
        min_replies: replies,
        min_disk: disk,
    };
    vec![
        // The Linux initiator's discovery: a 32-byte QC read to broadcast,
        // wildcard shelf and slot (answered by both exports).
        one(
            "qc-broadcast-linux",
            RAW,
            qc_frame(&bcast, 0x11, qc::ConfigCmd::Read, &[]),
            2,
            0,
        ),
        // IDENTIFY as Linux sends it: 36 bytes, lba3 = 0xa0.
        one(
            "identify",
            RAW,
            ata_frame(&h1, 0x12, Identify, 1, 0, &[]),
            1,
            0,
        ),
        one(
            "read-ext",
            RAW,
            ata_frame(&h1, 0x13, ReadExt, 2, 62, &[]),
            1,
            1,
        ),
        one(
            "read-lba28",
            RAW,
            ata_frame(&h2, 0x14, Read, 1, 7, &[]),
            1,
            1,
        ),
        one(
            "write-ext",
            RAW,
            ata_frame(&h1, 0x15, WriteExt, 2, 10, &payload(1, 2)),
            1,
            1,
        ),
        one(
            "write-lba28-eio",
            RAW_EIO,
            ata_frame(&h2, 0x16, Write, 1, 3, &payload(2, 1)),
            1,
            1,
        ),
        // Out of range, too many sectors, short payload: refused.
        Seed {
            name: "ata-refused",
            frames: vec![
                (RAW, ata_frame(&h1, 0x17, ReadExt, 2, 63, &[])),
                (RAW, ata_frame(&h1, 0x18, ReadExt, 3, 0, &[])),
                (RAW, ata_frame(&h1, 0x19, WriteExt, 2, 0, &payload(3, 1))),
                (RAW, ata_frame(&h2, 0x1a, Flush, 0, 0, &[])),
                (RAW, ata_frame(&h2, 0x1b, CheckPower, 0xff, 0, &[])),
            ],
            min_replies: 5,
            min_disk: 1,
        },
        // QC set if empty, then a conflicting set (error 4), force set,
        // exact and prefix tests.
        Seed {
            name: "qc-set",
            frames: vec![
                (
                    RAW,
                    qc_frame(&h1, 0x21, qc::ConfigCmd::SetIfEmpty, b"rack7"),
                ),
                (
                    RAW,
                    qc_frame(&h1, 0x22, qc::ConfigCmd::SetIfEmpty, b"other"),
                ),
                (
                    RAW,
                    qc_frame(&h1, 0x23, qc::ConfigCmd::ForceSet, b"rack8 row2"),
                ),
                (
                    RAW,
                    qc_frame(&h1, 0x24, qc::ConfigCmd::TestExact, b"rack8 row2"),
                ),
                (
                    RAW,
                    qc_frame(&h1, 0x25, qc::ConfigCmd::TestPrefix, b"rack8"),
                ),
                (
                    RAW,
                    qc_frame(&bcast, 0x26, qc::ConfigCmd::TestPrefix, b"rack"),
                ),
            ],
            min_replies: 6,
            min_disk: 0,
        },
        // Mac Mask: add us and another host, read, then the other host is
        // shut out of ATA once removed, and we delete ourselves.
        Seed {
            name: "mac-mask-edit",
            frames: vec![
                (
                    RAW,
                    mask_frame(
                        &h1,
                        0x31,
                        mask::MaskCmd::Edit,
                        &[(mask::DirCmd::Add, HOST), (mask::DirCmd::Add, OTHER)],
                    ),
                ),
                (RAW, mask_frame(&h1, 0x32, mask::MaskCmd::Read, &[])),
                (
                    RAW,
                    mask_frame(
                        &h1,
                        0x33,
                        mask::MaskCmd::Edit,
                        &[(mask::DirCmd::Delete, OTHER)],
                    ),
                ),
                (RAW, ata_frame(&o1, 0x34, ReadExt, 1, 0, &[])),
                (RAW, ata_frame(&h1, 0x35, ReadExt, 1, 0, &[])),
                (
                    RAW,
                    mask_frame(
                        &h1,
                        0x36,
                        mask::MaskCmd::Edit,
                        &[(mask::DirCmd::Delete, HOST)],
                    ),
                ),
            ],
            min_replies: 4,
            min_disk: 1,
        },
        // Reserve: set to us, the other host's write is refused (error 6)
        // and its set too; a force set takes it over; we release.
        Seed {
            name: "reserve-set",
            frames: vec![
                (
                    RAW,
                    reserve_frame(&h1, 0x41, reserve::ReserveCmd::Set, &[HOST]),
                ),
                (
                    RAW,
                    reserve_frame(&h1, 0x42, reserve::ReserveCmd::Read, &[]),
                ),
                (RAW, ata_frame(&o1, 0x43, WriteExt, 1, 5, &payload(4, 1))),
                (
                    RAW,
                    reserve_frame(&o1, 0x44, reserve::ReserveCmd::Set, &[OTHER]),
                ),
                (
                    RAW,
                    reserve_frame(&o1, 0x45, reserve::ReserveCmd::ForceSet, &[OTHER]),
                ),
                (RAW, reserve_frame(&o1, 0x46, reserve::ReserveCmd::Set, &[])),
            ],
            min_replies: 6,
            min_disk: 0,
        },
        // Protocol errors: version 2, unknown command, response flag, a
        // foreign slot, a state change sent to the wildcard.
        Seed {
            name: "protocol-errors",
            frames: vec![
                (RAW, {
                    let mut f = qc_frame(&h1, 0x51, qc::ConfigCmd::Read, &[]);
                    f[14] = 0x20;
                    f
                }),
                (RAW, {
                    let mut f = qc_frame(&h1, 0x52, qc::ConfigCmd::Read, &[]);
                    f[19] = 0x42;
                    f
                }),
                (RAW, {
                    let mut f = ata_frame(&h1, 0x53, ReadExt, 1, 0, &[]);
                    f[14] |= 0x08;
                    f
                }),
                (
                    RAW,
                    ata_frame(&to_target(HOST, 9), 0x54, ReadExt, 1, 0, &[]),
                ),
                (
                    RAW,
                    qc_frame(
                        &addr(HOST, TARGET_MAC, 0xffff, 0xff),
                        0x55,
                        qc::ConfigCmd::ForceSet,
                        b"all",
                    ),
                ),
            ],
            min_replies: 2,
            min_disk: 0,
        },
        // A Linux session: discover, identify, write, read it back, flush.
        Seed {
            name: "linux-session",
            frames: vec![
                (RAW, qc_frame(&bcast, 0x61, qc::ConfigCmd::Read, &[])),
                (RAW, ata_frame(&h1, 0x62, Identify, 1, 0, &[])),
                (RAW, ata_frame(&h1, 0x63, WriteExt, 2, 20, &payload(5, 2))),
                (RAW, ata_frame(&h1, 0x64, ReadExt, 2, 20, &[])),
                (RAW, ata_frame(&h1, 0x65, FlushExt, 0, 0, &[])),
            ],
            min_replies: 6,
            min_disk: 3,
        },
    ]
}

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

#[test]
fn seeds_reach_their_code_and_hold_the_invariants() {
    for s in seeds() {
        let mut t = engine();
        let mut c = RunCounts::default();
        run_frames_with(&mut t, &encode(&s.frames), &mut c);
        assert_eq!(c.frames, s.frames.len() as u64, "{}: frames", s.name);
        // Disk actions are answered by `complete`, not counted in `replies`.
        assert!(
            c.replies + c.disk >= s.min_replies && c.disk >= s.min_disk,
            "{}: {c:?}, expected at least {} answers and {} disk actions",
            s.name,
            s.min_replies,
            s.min_disk
        );
    }
}

#[test]
fn committed_seeds_match_the_fixtures() {
    let dir = seed_dir();
    let write = std::env::var_os("XBLADE_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).expect("create fuzz/seeds");
    }
    let mut stale = Vec::new();
    let all = seeds();
    for s in &all {
        let path = dir.join(format!("{}.bin", s.name));
        let bytes = encode(&s.frames);
        if write {
            std::fs::write(&path, &bytes).expect("write seed");
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(path.display().to_string());
        }
    }
    // No leftover seed of a fixture that no longer exists.
    let names: Vec<String> = all.iter().map(|s| format!("{}.bin", s.name)).collect();
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !names.contains(&n) {
                stale.push(format!("{} (no fixture)", e.path().display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds out of date: {stale:?}; regenerate with \
         XBLADE_WRITE_SEEDS=1 cargo test --release --test reliability_fuzz_seeds"
    );
}
