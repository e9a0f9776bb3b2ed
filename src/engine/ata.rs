//! Command 0, Issue ATA Command: READ/WRITE (LBA28 and LBA48), IDENTIFY,
//! CHECK POWER MODE, FLUSH CACHE (EXT). Everything is answered in place in
//! the request's own buffer, so read data can land straight in the reply.
//!
//! Failures of the block operation itself are reported in the ATA status and
//! error registers (0x41 with ABRT, IDNF or UNC), never with the AoE error
//! flag, which the Linux initiator ignores (it retries for minutes).
#![forbid(unsafe_code)]

use super::{emit_reply_header, Action, DiskIo, DiskOp, Target};
use crate::wire::{
    aoe, ata, identify, pad_to_min, MacAddr, ARG_OFFSET, ATA_DATA_OFFSET, SECTOR_SIZE,
};

/// Outcome of the ATA registers for a reply.
#[derive(Debug, Clone, Copy)]
struct Regs {
    status: u8,
    error: u8,
    /// New sector count, or `None` to leave the request's.
    sector_count: Option<u8>,
}

const OK: Regs = Regs {
    status: ata::STATUS_DRDY,
    error: 0,
    sector_count: Some(0),
};

const fn fail(error: u8) -> Regs {
    Regs {
        status: ata::STATUS_DRDY | ata::STATUS_ERR,
        error,
        sector_count: None,
    }
}

fn set_regs(frame: &mut [u8], r: Regs) {
    let mut a = ata::Packet::new_unchecked(&mut frame[ARG_OFFSET..ATA_DATA_OFFSET]);
    a.set_err_feature(r.error);
    a.set_cmd_status(r.status);
    if let Some(n) = r.sector_count {
        a.set_sector_count(n);
    }
    a.clear_reserved();
}

/// Finish an ATA reply that carries no data: registers, zero padding.
fn reply_nodata(t: &mut Target, frame: &mut [u8], r: Regs) -> Action {
    if r.status & ata::STATUS_ERR != 0 {
        t.stats.ata_errors += 1;
    }
    set_regs(frame, r);
    t.stats.replies += 1;
    Action::Reply {
        len: pad_to_min(frame, ATA_DATA_OFFSET),
        more: false,
    }
}

/// An ATA reply carrying AoE error `code`: the request's argument is echoed,
/// zero-padded to 60 bytes.
fn aoe_error_reply(
    t: &mut Target,
    from: MacAddr,
    e: usize,
    src: MacAddr,
    tag: [u8; 4],
    code: aoe::ErrorCode,
    frame: &mut [u8],
) -> Action {
    let info = &t.exports[e].info;
    emit_reply_header(frame, from, src, info, aoe::Command::Ata, tag, Some(code));
    t.stats.aoe_errors += 1;
    t.stats.replies += 1;
    Action::Reply {
        len: pad_to_min(frame, ATA_DATA_OFFSET),
        more: false,
    }
}

/// Handle an ATA request for export `e` received on `port` from `src`; the
/// reply leaves from `from`.
pub(super) fn handle(
    t: &mut Target,
    port: usize,
    e: usize,
    from: MacAddr,
    src: MacAddr,
    frame: &mut [u8],
    frame_len: usize,
) -> Action {
    let avail = frame_len.min(frame.len());
    let p = &t.ports[port];
    let tag = aoe::Packet::new_unchecked(&frame[crate::wire::AOE_OFFSET..]).tag();
    let (mask_ok, reserve_ok, sectors, read_only) = {
        let s = t.states[e].load();
        (
            s.mask_allows(src),
            s.reserve_allows(src),
            s.sectors,
            s.read_only,
        )
    };
    let export = &t.exports[e];
    if !mask_ok {
        return t.drop(super::DropReason::MaskDenied);
    }
    if avail < ATA_DATA_OFFSET {
        // No room for the 12-byte argument: a malformed request, answered
        // with AoE error 2 and whatever part of the argument arrived.
        frame[avail..ATA_DATA_OFFSET].fill(0);
        return aoe_error_reply(t, from, e, src, tag, aoe::ErrorCode::BadArg, frame);
    }
    let req = ata::Packet::new_unchecked(&frame[ARG_OFFSET..avail]);
    let op = ata::Opcode::from(req.cmd_status());
    let scnt = req.sector_count();
    let lba = req.lba(op);
    if !reserve_ok && op != ata::Opcode::Identify {
        return aoe_error_reply(t, from, e, src, tag, aoe::ErrorCode::Reserved, frame);
    }
    emit_reply_header(frame, from, src, &export.info, aoe::Command::Ata, tag, None);
    let max_sectors = p.max_sectors;
    let in_range = lba
        .checked_add(scnt as u64)
        .is_some_and(|end| end <= sectors);
    match op {
        ata::Opcode::Read | ata::Opcode::ReadExt => {
            if scnt > max_sectors {
                return reply_nodata(t, frame, fail(ata::ERROR_ABRT));
            }
            if !in_range {
                return reply_nodata(t, frame, fail(ata::ERROR_IDNF));
            }
            if scnt == 0 {
                return reply_nodata(t, frame, OK);
            }
            t.stats.ata_read += 1;
            Action::Disk(DiskIo {
                export: e,
                op: DiskOp::Read,
                offset: lba * SECTOR_SIZE as u64,
                len: scnt as u32 * SECTOR_SIZE as u32,
            })
        }
        ata::Opcode::Write | ata::Opcode::WriteExt => {
            let len = scnt as usize * SECTOR_SIZE;
            if scnt > max_sectors || frame_len < ATA_DATA_OFFSET + len {
                // Too many sectors for a frame, or a payload shorter than
                // the count: refused, disk untouched.
                return reply_nodata(t, frame, fail(ata::ERROR_ABRT));
            }
            if !in_range {
                return reply_nodata(t, frame, fail(ata::ERROR_IDNF));
            }
            if read_only {
                return reply_nodata(t, frame, fail(ata::ERROR_ABRT));
            }
            if scnt == 0 {
                return reply_nodata(t, frame, OK);
            }
            t.stats.ata_write += 1;
            Action::Disk(DiskIo {
                export: e,
                op: DiskOp::Write,
                offset: lba * SECTOR_SIZE as u64,
                len: len as u32,
            })
        }
        ata::Opcode::Flush | ata::Opcode::FlushExt => {
            t.stats.ata_flush += 1;
            Action::Disk(DiskIo {
                export: e,
                op: DiskOp::Flush,
                offset: 0,
                len: 0,
            })
        }
        ata::Opcode::Identify => {
            t.stats.ata_identify += 1;
            let end = ATA_DATA_OFFSET + identify::PAGE_LEN;
            if frame.len() < end {
                return t.drop(super::DropReason::ReplyTooLarge);
            }
            identify::emit(
                &identify::Identity {
                    sectors,
                    serial: &export.info.serial,
                    firmware: &export.info.firmware,
                    model: &export.info.model,
                },
                &mut frame[ATA_DATA_OFFSET..end],
            );
            set_regs(frame, OK);
            t.stats.replies += 1;
            Action::Reply {
                len: end,
                more: false,
            }
        }
        ata::Opcode::CheckPower => {
            t.stats.ata_other += 1;
            reply_nodata(
                t,
                frame,
                Regs {
                    sector_count: Some(0xff), // active or idle
                    ..OK
                },
            )
        }
        ata::Opcode::Unknown(_) => {
            t.stats.ata_other += 1;
            reply_nodata(t, frame, fail(ata::ERROR_ABRT))
        }
    }
}

impl Target {
    /// Finish the reply of a [`DiskIo`] once the disk is done; `result` is
    /// `Err(errno)` on failure. Returns the reply length: `36 + len` for a
    /// successful read (never any byte after the data), else 60.
    pub fn complete(&mut self, io: &DiskIo, result: Result<(), i32>, frame: &mut [u8]) -> usize {
        self.stats.replies += 1;
        match (io.op, result) {
            (DiskOp::Read, Ok(())) => {
                set_regs(frame, OK);
                ATA_DATA_OFFSET + io.len as usize
            }
            (_, Ok(())) => {
                set_regs(frame, OK);
                pad_to_min(frame, ATA_DATA_OFFSET)
            }
            (_, Err(errno)) => {
                self.stats.ata_errors += 1;
                let error = if errno == libc::EIO {
                    ata::ERROR_UNC
                } else {
                    ata::ERROR_ABRT
                };
                set_regs(frame, fail(error));
                pad_to_min(frame, ATA_DATA_OFFSET)
            }
        }
    }
}
