//! The harness shared by the cargo-fuzz target, the stable-toolchain fuzz
//! driver and the property tests: split fuzzer bytes into frames, run them
//! through one engine, and assert the engine's safety invariants.
#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::engine::{Action, DiskOp, Export, ExportInfo, ExportState, Port, Target};
use crate::wire::{aoe, MacAddr};

/// The target MAC the harness serves on.
pub const TARGET_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);

/// Build the engine the harness uses: two exports (1.1 of 64 sectors and
/// 1.2 of 8) on one MTU-1500 port.
pub fn engine() -> Target {
    let mk = |slot: u8, sectors: u64| {
        Arc::new(Export::new(
            ExportInfo {
                shelf: 1,
                slot,
                bufcnt: 16,
                serial: "fuzz".into(),
                model: "fuzz".into(),
                firmware: "0".into(),
            },
            ExportState {
                sectors,
                ..Default::default()
            },
        ))
    };
    Target::new(
        vec![Port::new(TARGET_MAC, 1500, vec![0, 1])],
        vec![mk(1, 64), mk(2, 8)],
    )
}

/// Counts from a run, for reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunCounts {
    /// Frames handled.
    pub frames: u64,
    /// Replies checked.
    pub replies: u64,
    /// Disk actions checked.
    pub disk: u64,
}

fn check_reply(f: &[u8], len: usize) {
    assert!(len >= 60, "runt reply of {len} bytes");
    assert!(len <= 1514, "reply of {len} bytes beyond the MTU");
    let h = aoe::Packet::new_unchecked(&f[14..]);
    assert!(h.is_response(), "reply without R flag");
    assert_ne!(h.major(), aoe::MAJOR_ANY, "wildcard shelf in reply");
    assert_ne!(h.minor(), aoe::MINOR_ANY, "wildcard slot in reply");
}

/// Split `data` into frames: each starts with a 2-byte length; frames are
/// given the AoE ethertype and our MAC or broadcast as destination on
/// most inputs so the fuzzer reaches the command handlers quickly.
pub fn run_frames_with(t: &mut Target, data: &[u8], counts: &mut RunCounts) {
    let mut rest = data;
    let mut frame = vec![0u8; 1514];
    let mut extra = vec![0u8; 1514];
    while rest.len() >= 3 {
        let want = u16::from_le_bytes([rest[0], rest[1]]) as usize % 1600;
        let mode = rest[2];
        rest = &rest[3..];
        let n = want.min(rest.len());
        let body = &rest[..n];
        rest = &rest[n..];
        frame.fill(0xa5);
        let copy = n.min(frame.len());
        frame[..copy].copy_from_slice(&body[..copy]);
        if mode & 1 == 0 && copy >= 14 {
            let dst = if mode & 2 == 0 {
                TARGET_MAC
            } else {
                MacAddr::BROADCAST
            };
            frame[..6].copy_from_slice(&dst.0);
            frame[12..14].copy_from_slice(&[0x88, 0xa2]);
            if mode & 4 == 0 && copy >= 15 {
                frame[14] = (frame[14] & 0x07) | 0x10;
            }
        }
        // A received length larger than the buffer models a multi-buffer
        // or truncated receive.
        let rx_len = if mode & 8 != 0 { n } else { copy };
        counts.frames += 1;
        match t.handle(0, &mut frame, rx_len) {
            Action::Reply { len, more } => {
                counts.replies += 1;
                check_reply(&frame, len);
                let mut more = more;
                while more {
                    match t.next_reply(&mut extra) {
                        Some((len, m)) => {
                            counts.replies += 1;
                            check_reply(&extra, len);
                            more = m;
                        }
                        None => more = false,
                    }
                }
            }
            Action::Disk(io) => {
                counts.disk += 1;
                let sectors = t.exports()[io.export].state().sectors;
                assert!(
                    io.offset % 512 == 0 && io.len % 512 == 0,
                    "unaligned {io:?}"
                );
                let end = io.offset.checked_add(io.len as u64).expect("overflow");
                assert!(
                    end <= sectors * 512,
                    "disk action outside the export: {io:?}"
                );
                if io.op == DiskOp::Write {
                    assert!(rx_len >= 36 + io.len as usize, "write beyond the payload");
                    assert!(io.len > 0);
                }
                let ok = if mode & 16 == 0 {
                    Ok(())
                } else {
                    Err(libc::EIO)
                };
                let len = t.complete(&io, ok, &mut frame);
                check_reply(&frame, len);
                if io.op == DiskOp::Read && ok.is_ok() {
                    assert_eq!(len, 36 + io.len as usize, "bytes after read data");
                }
            }
            Action::Drop(_) => {}
        }
    }
}

/// One fuzz input through a fresh engine.
pub fn run_frames(data: &[u8]) {
    let mut t = engine();
    run_frames_with(&mut t, data, &mut RunCounts::default());
}
