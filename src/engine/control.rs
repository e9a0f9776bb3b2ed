//! Commands 1-3 (Query Config, Mac Mask List, Reserve/Release) and AoE-level
//! errors (bad version, unknown command). These build a fresh reply into an
//! output buffer from a copy of the request, because one wildcard request
//! may be answered by several exports.
#![forbid(unsafe_code)]

use super::export::{Export, ExportState, MAX_MASK_ENTRIES, MAX_RESERVE_ENTRIES};
use super::{emit_reply_header, DropReason, EngineStats, Port, FIRMWARE_VERSION};
use crate::wire::{
    aoe, ethernet, mask, pad_to_min, qc, reserve, MacAddr, WireError, AOE_OFFSET, ARG_OFFSET,
};

type Reply = Result<usize, DropReason>;

/// Build the reply of a control request (`req` is the whole frame), sent
/// from `from` (one of the port's MACs).
pub(super) fn handle(
    stats: &mut EngineStats,
    req: &[u8],
    port: &Port,
    from: MacAddr,
    export: &Export,
    ambiguous: bool,
    out: &mut [u8],
) -> Reply {
    let eth = ethernet::Frame::new_unchecked(req);
    let src = eth.src();
    let hdr = aoe::Packet::new_unchecked(&req[AOE_OFFSET..]);
    let tag = hdr.tag();
    let command = hdr.command();
    let arg = &req[ARG_OFFSET..];
    let room = out.len().min(port.max_frame());
    let mut r = Replier {
        stats,
        port,
        from,
        export,
        src,
        tag,
        command,
        out,
        room,
    };
    if hdr.version() != aoe::VERSION {
        return r.error(aoe::ErrorCode::BadVersion, arg);
    }
    let state = export.state();
    if !state.mask_allows(src) {
        // Only discovery (QC read and tests) is answered for a MAC that the
        // Mac Mask shuts out: it can see the export but neither use nor
        // change it.
        let discovery = command == aoe::Command::QueryConfig
            && arg.len() >= qc::HEADER_LEN
            && matches!(
                qc::Packet::new_unchecked(arg).ccmd(),
                qc::ConfigCmd::Read | qc::ConfigCmd::TestExact | qc::ConfigCmd::TestPrefix
            );
        if !discovery {
            return Err(DropReason::MaskDenied);
        }
    }
    match command {
        aoe::Command::QueryConfig => {
            r.stats.query_config += 1;
            query_config(&mut r, &state, arg, ambiguous)
        }
        aoe::Command::MacMask => {
            r.stats.mac_mask += 1;
            mac_mask(&mut r, &state, arg, ambiguous)
        }
        aoe::Command::Reserve => {
            r.stats.reserve += 1;
            reserve_release(&mut r, &state, arg, ambiguous)
        }
        // ATA never reaches here with version 1.
        aoe::Command::Ata | aoe::Command::Unknown(_) => {
            r.error(aoe::ErrorCode::UnknownCommand, arg)
        }
    }
}

/// Everything a reply needs, so the handlers stay short.
struct Replier<'a> {
    stats: &'a mut EngineStats,
    port: &'a Port,
    /// Source address of the reply.
    from: MacAddr,
    export: &'a Export,
    src: MacAddr,
    tag: [u8; 4],
    command: aoe::Command,
    out: &'a mut [u8],
    /// Bytes the reply may use: the buffer and the port's MTU.
    room: usize,
}

impl Replier<'_> {
    /// Header, then `arg_len` bytes the caller writes with `fill`, padded.
    fn reply(
        &mut self,
        error: Option<aoe::ErrorCode>,
        arg_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Reply {
        let len = ARG_OFFSET + arg_len;
        if len > self.room || self.out.len() < crate::wire::MIN_FRAME_LEN {
            return Err(DropReason::ReplyTooLarge);
        }
        if error.is_some() {
            self.stats.aoe_errors += 1;
        }
        emit_reply_header(
            self.out,
            self.from,
            self.src,
            &self.export.info,
            self.command,
            self.tag,
            error,
        );
        fill(&mut self.out[ARG_OFFSET..len]);
        Ok(pad_to_min(self.out, len))
    }

    /// An AoE error echoing as much of the request's argument as fits.
    fn error(&mut self, code: aoe::ErrorCode, arg: &[u8]) -> Reply {
        let n = arg.len().min(self.room.saturating_sub(ARG_OFFSET));
        self.reply(Some(code), n, |o| o.copy_from_slice(&arg[..n]))
    }

    fn query_config(
        &mut self,
        error: Option<aoe::ErrorCode>,
        ccmd: qc::ConfigCmd,
        s: &[u8],
    ) -> Reply {
        let repr = qc::Repr {
            bufcnt: self.export.info.bufcnt,
            fwver: FIRMWARE_VERSION,
            sector_count: self.port.max_sectors,
            aoe_version: aoe::VERSION,
            ccmd,
            string: s,
        };
        self.reply(error, repr.buffer_len(), |o| {
            repr.emit(&mut qc::Packet::new_unchecked(o))
        })
    }

    fn mask_list(&mut self, mcmd: mask::MaskCmd, list: &[MacAddr]) -> Reply {
        self.reply(None, mask::buffer_len(list.len()), |o| {
            let mut p = mask::Packet::new_unchecked(o);
            p.set_mcmd(mcmd);
            p.set_merror(mask::MaskError::None as u8);
            p.set_dir_count(list.len() as u8);
            for (i, m) in list.iter().enumerate() {
                p.set_directive(i, mask::DirCmd::None, *m);
            }
        })
    }

    fn reserve_list(
        &mut self,
        error: Option<aoe::ErrorCode>,
        rcmd: reserve::ReserveCmd,
        list: &[MacAddr],
    ) -> Reply {
        self.reply(error, reserve::buffer_len(list.len()), |o| {
            let mut p = reserve::Packet::new_unchecked(o);
            p.set_rcmd(rcmd);
            p.set_macs(list);
        })
    }
}

fn query_config(r: &mut Replier<'_>, state: &ExportState, arg: &[u8], ambiguous: bool) -> Reply {
    let Ok(p) = qc::Packet::new_checked(arg) else {
        return r.error(aoe::ErrorCode::BadArg, arg);
    };
    let ccmd = p.ccmd();
    let string_ok = p.check_string();
    match ccmd {
        qc::ConfigCmd::Read => r.query_config(None, ccmd, &state.config),
        qc::ConfigCmd::TestExact | qc::ConfigCmd::TestPrefix => {
            if string_ok.is_err() {
                return r.query_config(Some(aoe::ErrorCode::BadArg), ccmd, &state.config);
            }
            let s = p.string();
            let hit = if ccmd == qc::ConfigCmd::TestExact {
                s == state.config.as_slice()
            } else {
                state.config.starts_with(s)
            };
            if hit {
                r.query_config(None, ccmd, &state.config)
            } else {
                Err(DropReason::ConfigTestMismatch)
            }
        }
        qc::ConfigCmd::SetIfEmpty | qc::ConfigCmd::ForceSet => {
            if string_ok.is_err() {
                return r.query_config(Some(aoe::ErrorCode::BadArg), ccmd, &state.config);
            }
            if ambiguous {
                return Err(DropReason::AmbiguousWildcard);
            }
            let s = p.string();
            let force = ccmd == qc::ConfigCmd::ForceSet;
            let (accepted, now) = r.export.update(|cur| {
                if force || cur.config.is_empty() || cur.config == s {
                    let next = ExportState {
                        config: s.to_vec(),
                        ..cur.clone()
                    };
                    (Some(next), (true, s.to_vec()))
                } else {
                    (None, (false, cur.config.clone()))
                }
            });
            let error = (!accepted).then_some(aoe::ErrorCode::ConfigPresent);
            r.query_config(error, ccmd, &now)
        }
        qc::ConfigCmd::Unknown(_) => {
            r.query_config(Some(aoe::ErrorCode::BadArg), ccmd, &state.config)
        }
    }
}

/// Apply edit directives to a list; returns the new list and, on failure,
/// (index of the failing directive, MError).
fn apply_mask_edit(
    list: &[MacAddr],
    p: &mask::Packet<&[u8]>,
) -> (Vec<MacAddr>, Option<(u8, mask::MaskError)>) {
    let mut next = list.to_vec();
    for i in 0..p.dir_count() as usize {
        let (cmd, mac) = p.directive(i);
        match cmd {
            mask::DirCmd::None => {}
            mask::DirCmd::Add => {
                if !next.contains(&mac) {
                    if next.len() >= MAX_MASK_ENTRIES {
                        return (next, Some((i as u8, mask::MaskError::ListFull)));
                    }
                    next.push(mac);
                }
            }
            mask::DirCmd::Delete => next.retain(|m| *m != mac),
            mask::DirCmd::Unknown(_) => {
                return (next, Some((i as u8, mask::MaskError::BadDirective)))
            }
        }
    }
    (next, None)
}

fn mac_mask(r: &mut Replier<'_>, state: &ExportState, arg: &[u8], ambiguous: bool) -> Reply {
    let p = match mask::Packet::new_checked(arg) {
        Ok(p) => p,
        Err(WireError::Truncated) | Err(WireError::BadArg) => {
            return r.error(
                aoe::ErrorCode::BadArg,
                &arg[..arg.len().min(mask::HEADER_LEN)],
            )
        }
    };
    match p.mcmd() {
        mask::MaskCmd::Read => r.mask_list(mask::MaskCmd::Read, &state.mask),
        mask::MaskCmd::Edit => {
            if ambiguous {
                return Err(DropReason::AmbiguousWildcard);
            }
            let (list, failure) = r.export.update(|cur| {
                let (next, failure) = apply_mask_edit(&cur.mask, &p);
                let changed = next != cur.mask;
                let new_state = changed.then(|| ExportState {
                    mask: next.clone(),
                    ..cur.clone()
                });
                (new_state, (next, failure))
            });
            match failure {
                None => r.mask_list(mask::MaskCmd::Edit, &list),
                Some((at, merror)) => r.reply(None, mask::HEADER_LEN, |o| {
                    let mut q = mask::Packet::new_unchecked(o);
                    q.set_mcmd(mask::MaskCmd::Edit);
                    q.set_merror(merror as u8);
                    q.set_dir_count(at);
                }),
            }
        }
        mask::MaskCmd::Unknown(_) => r.error(aoe::ErrorCode::BadArg, &arg[..mask::HEADER_LEN]),
    }
}

fn reserve_release(r: &mut Replier<'_>, state: &ExportState, arg: &[u8], ambiguous: bool) -> Reply {
    let Ok(p) = reserve::Packet::new_checked(arg) else {
        let rcmd = arg.first().copied().unwrap_or(0).into();
        return r.reserve_list(Some(aoe::ErrorCode::BadArg), rcmd, &state.reserve);
    };
    let rcmd = p.rcmd();
    match rcmd {
        reserve::ReserveCmd::Read => r.reserve_list(None, rcmd, &state.reserve),
        reserve::ReserveCmd::Set | reserve::ReserveCmd::ForceSet => {
            if p.nmacs() as usize > MAX_RESERVE_ENTRIES {
                return r.reserve_list(Some(aoe::ErrorCode::BadArg), rcmd, &state.reserve);
            }
            if ambiguous {
                return Err(DropReason::AmbiguousWildcard);
            }
            let src = r.src;
            let force = rcmd == reserve::ReserveCmd::ForceSet;
            let wanted: Vec<MacAddr> = (0..p.nmacs() as usize).map(|i| p.mac(i)).collect();
            let (ok, list) = r.export.update(|cur| {
                if force || cur.reserve.is_empty() || cur.reserve.contains(&src) {
                    let next = ExportState {
                        reserve: wanted.clone(),
                        ..cur.clone()
                    };
                    (Some(next), (true, wanted.clone()))
                } else {
                    (None, (false, cur.reserve.clone()))
                }
            });
            let error = (!ok).then_some(aoe::ErrorCode::Reserved);
            r.reserve_list(error, rcmd, &list)
        }
        reserve::ReserveCmd::Unknown(_) => {
            r.reserve_list(Some(aoe::ErrorCode::BadArg), rcmd, &state.reserve)
        }
    }
}

/// Build an unsolicited Query Config reply announcing `export` to `dst`
/// (broadcast at start-up or after a resize, as vblade does), tag 0.
pub fn announce(port: &Port, export: &Export, dst: MacAddr, out: &mut [u8]) -> Option<usize> {
    let state = export.state();
    let mut stats = EngineStats::default();
    let mut r = Replier {
        stats: &mut stats,
        port,
        from: port.mac,
        export,
        src: dst,
        tag: [0; 4],
        command: aoe::Command::QueryConfig,
        room: out.len().min(port.max_frame()),
        out,
    };
    r.query_config(None, qc::ConfigCmd::Read, &state.config)
        .ok()
}
