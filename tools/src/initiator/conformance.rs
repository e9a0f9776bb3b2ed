//! An AoE r11 conformance check list against any target on the link
//! (hidden subcommand `xblade conformance IFACE SHELF SLOT`), for targets
//! the integration tests cannot start themselves: xblade in a qemu guest
//! (tests/scripts/75-xdp-zerocopy.sh), or another implementation.
//!
//! It writes to the export (sectors 0-63 and the last one) and leaves its
//! config string, Mac Mask list and reservation as it found them (empty),
//! and needs a link that delivers frames sent to another MAC (a bridge or
//! veth: the "second host" is a second source MAC on this interface).
//! Each check prints one line; the result is the number of failures.

use std::fmt::Write as _;
use std::time::Duration;

use crate::initiator::client::{AtaReply, Client, ClientError, QcReply, ReplyHeader, Target};
use crate::wire::mask::{DirCmd, MaskCmd};
use crate::wire::qc::ConfigCmd;
use crate::wire::reserve::ReserveCmd;
use crate::wire::{MacAddr, SECTOR_SIZE};

/// The second host's source MAC (locally administered).
const OTHER: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0xc0, 0x0f, 0x01]);
/// How long silence must last to count as "no reply".
const SILENCE: Duration = Duration::from_millis(600);
/// The 12-byte ATA argument of an IDENTIFY as Linux sends it.
const IDENTIFY_ARG: [u8; 12] = [0, 0, 1, 0xec, 0, 0, 0, 0xa0, 0, 0, 0, 0];

type Check = Result<String, String>;

use super::request::raw_frame as frame;

fn tagged(tag: u32) -> impl Fn(&[u8]) -> bool {
    move |f| ReplyHeader::parse(f).is_some_and(|h| h.tag() == tag && h.is_response())
}

/// Send a raw frame, return the reply header (or None on silence).
fn raw(c: &mut Client, f: &[u8]) -> Result<Option<ReplyHeader>, String> {
    let tag = ReplyHeader::parse(f).map(|h| h.tag()).unwrap_or(0);
    let r = c.request_raw(f, tagged(tag)).map_err(|e| e.to_string())?;
    Ok(r.and_then(|r| ReplyHeader::parse(&r)))
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn err(e: ClientError) -> String {
    e.to_string()
}

fn pattern(lba: u64, sectors: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(sectors as usize * SECTOR_SIZE);
    for s in lba..lba + sectors {
        for i in 0..SECTOR_SIZE as u64 {
            v.push((s.wrapping_mul(131) ^ i.wrapping_mul(7) ^ 0x5a) as u8);
        }
    }
    v
}

/// The target under test and the two "hosts" talking to it.
struct Bed {
    /// The first host (our interface's MAC), capturing every frame.
    c: Client,
    /// The second host ([`OTHER`]).
    b: Client,
    t: Target,
    shelf: u16,
    slot: u8,
    /// Our MAC.
    me: MacAddr,
    /// Capacity (from IDENTIFY).
    sectors: u64,
}

/// The report: one line per check, and the failures.
#[derive(Default)]
struct Report {
    out: String,
    failed: usize,
}

impl Report {
    fn note(&mut self, name: &str, r: Check) {
        match r {
            Ok(detail) => writeln!(self.out, "ok: {name}{}", sep(&detail)),
            Err(why) => {
                self.failed += 1;
                writeln!(self.out, "FAIL: {name}: {why}")
            }
        }
        .ok();
    }
}

/// A check of the list.
type CheckFn = fn(&mut Bed) -> Check;

/// Checks that need no capacity.
const QC_CHECKS: &[(&str, CheckFn)] = &[
    ("Query Config read", qc_read),
    (
        "Query Config set, set-when-set (error 4), tests, force set",
        qc_set,
    ),
    ("Query Config test mismatch: silence", qc_mismatch),
];

/// Checks after IDENTIFY.
const CHECKS: &[(&str, CheckFn)] = &[
    ("WRITE then READ, 1 to max sectors per request", write_read),
    (
        "READ/WRITE through the client (64 sectors, split per request)",
        client_io,
    ),
    ("READ past the end: ATA abort (IDNF)", read_past_end),
    (
        "READ of more sectors than advertised: ATA abort",
        read_too_many,
    ),
    (
        "CHECK POWER, FLUSH, FLUSH EXT, unsupported opcode",
        other_ata,
    ),
    ("unknown AoE commands: error 1", unknown_commands),
    ("version 2: error 5, answered as version 1", version_2),
    (
        "tag and reserved flag bits: tag verbatim, flags clean",
        tag_and_flags,
    ),
    ("argument too short: error 2", short_argument),
    (
        "silence: response flag, other shelf, other MAC, runt",
        silence,
    ),
    (
        "Mac Mask: a listed other host, we are refused, then cleared",
        mac_mask,
    ),
    (
        "Reserve/Release: others refused with error 6, then released",
        reserve,
    ),
    ("every reply at least 60 bytes", padded),
];

/// Run the check list against `shelf.slot` through `iface`; `expect_scnt`:
/// the sectors per request the target must advertise. Returns the report
/// (one line per check) and the number of failures.
pub fn run(iface: &str, shelf: u16, slot: u8, expect_scnt: Option<u8>) -> (String, usize) {
    let mut rep = Report::default();
    let Some(mut bed) = discover(&mut rep, iface, shelf, slot, expect_scnt) else {
        return (rep.out, rep.failed);
    };
    for (name, check) in QC_CHECKS {
        rep.note(name, check(&mut bed));
    }
    match bed.c.identify(&bed.t) {
        Ok(id) => {
            let s = id.sectors;
            rep.note(
                "IDENTIFY",
                if s > 64 && id.lba48 {
                    Ok(format!("{s} sectors, model {:?}", id.model))
                } else {
                    Err(format!("{s} sectors, lba48 {}", id.lba48))
                },
            );
            bed.sectors = s;
        }
        Err(e) => {
            rep.note("IDENTIFY", Err(e.to_string()));
            return (rep.out, rep.failed);
        }
    }
    for (name, check) in CHECKS {
        rep.note(name, check(&mut bed));
    }
    (rep.out, rep.failed)
}

/// Open both hosts and find the target; `None` (noted) when that fails.
fn discover(
    rep: &mut Report,
    iface: &str,
    shelf: u16,
    slot: u8,
    expect_scnt: Option<u8>,
) -> Option<Bed> {
    let (mut c, mut b) = match (Client::open(iface), Client::open(iface)) {
        (Ok(c), Ok(b)) => (c, b),
        (Err(e), _) | (_, Err(e)) => {
            rep.note("open the interface", Err(e.to_string()));
            return None;
        }
    };
    b.set_source_mac(OTHER);
    for x in [&mut c, &mut b] {
        x.set_timeout(Duration::from_secs(1));
        x.set_retries(2);
    }
    c.set_capture(true);
    let t = match c.find(shelf, slot) {
        Ok(t) => t,
        Err(e) => {
            rep.note("discovery (broadcast Query Config)", Err(e.to_string()));
            return None;
        }
    };
    rep.note(
        "discovery (broadcast Query Config)",
        Ok(format!(
            "{shelf}.{slot} at {}, {} sectors/request, bufcnt {}",
            t.mac, t.max_sectors, t.bufcnt
        )),
    );
    rep.note(
        "sectors per request advertised",
        match expect_scnt {
            Some(n) => expect("QC sector count", t.max_sectors, n).map(|_| n.to_string()),
            None if t.max_sectors > 0 => Ok(t.max_sectors.to_string()),
            None => Err("0".into()),
        },
    );
    Some(Bed {
        me: c.mac(),
        c,
        b,
        t,
        shelf,
        slot,
        sectors: 0,
    })
}

impl Bed {
    fn qc(&mut self, cmd: ConfigCmd, s: &[u8]) -> Result<Option<QcReply>, String> {
        let (tm, shelf, slot) = (self.t.mac, self.shelf, self.slot);
        self.c.query_config(tm, shelf, slot, cmd, s).map_err(err)
    }

    /// A hand-made request from us to the target: `ver_flags`, `command`,
    /// `tag`, argument `arg`.
    fn frame(&self, ver_flags: u8, shelf: u16, command: u8, tag: u32, arg: &[u8]) -> Vec<u8> {
        let (tm, me, slot) = (self.t.mac, self.me, self.slot);
        frame(tm, me, ver_flags, shelf, slot, command, tag, arg)
    }

    /// Our waits for a reply that must not come, and back.
    fn expect_silence(&mut self, on: bool) {
        let (timeout, retries) = if on {
            (SILENCE, 0)
        } else {
            (Duration::from_secs(1), 2)
        };
        self.c.set_timeout(timeout);
        self.c.set_retries(retries);
    }
}

fn qc_read(x: &mut Bed) -> Check {
    let r = x.qc(ConfigCmd::Read, b"")?.ok_or("no reply")?;
    expect(
        "error, ccmd, version",
        (r.aoe_error, u8::from(r.arg().ccmd), r.arg().aoe_version),
        (None, 0, 1),
    )?;
    expect("config string", r.config(), b"".as_slice())?;
    if r.len < 60 {
        return Err(format!("{}-byte reply (unpadded)", r.len));
    }
    Ok(String::new())
}

fn qc_set(x: &mut Bed) -> Check {
    let r = x
        .qc(ConfigCmd::SetIfEmpty, b"xblade-conf")?
        .ok_or("no reply to set")?;
    expect(
        "set",
        (r.aoe_error, r.config()),
        (None, &b"xblade-conf"[..]),
    )?;
    let r = x
        .qc(ConfigCmd::SetIfEmpty, b"other")?
        .ok_or("no reply to set when set")?;
    expect("set when set", r.aoe_error, Some(4))?;
    let r = x.qc(ConfigCmd::TestExact, b"xblade-conf")?;
    expect("exact test match", r.map(|r| r.aoe_error), Some(None))?;
    let r = x.qc(ConfigCmd::TestPrefix, b"xblade")?;
    expect("prefix test match", r.map(|r| r.aoe_error), Some(None))?;
    let r = x
        .qc(ConfigCmd::ForceSet, b"")?
        .ok_or("no reply to force set")?;
    expect(
        "force set to empty",
        (r.aoe_error, r.config().len()),
        (None, 0),
    )?;
    Ok(String::new())
}

fn qc_mismatch(x: &mut Bed) -> Check {
    x.c.set_retries(0);
    let r = x.qc(ConfigCmd::TestExact, b"nope");
    x.c.set_retries(2);
    match r? {
        None => Ok(String::new()),
        Some(r) => Err(format!("answered: {r:?}")),
    }
}

fn write_read(x: &mut Bed) -> Check {
    let (c, t) = (&mut x.c, &x.t);
    let scnt = u64::from(t.max_sectors.max(1));
    let mut lba = 0;
    for n in 1..=scnt {
        let data = pattern(lba, n);
        let r = c.ata(t, 0x34, n as u8, lba, &data).map_err(err)?;
        r.check().map_err(err)?;
        let r = c.ata(t, 0x24, n as u8, lba, &[]).map_err(err)?;
        r.check().map_err(err)?;
        if r.data != data {
            return Err(format!("{n} sectors at LBA {lba}: data differs"));
        }
        lba += n;
    }
    Ok(format!("{lba} sectors"))
}

fn client_io(x: &mut Bed) -> Check {
    let (c, t, sectors) = (&mut x.c, &x.t, x.sectors);
    let data = pattern(1000, 64);
    c.write(t, 0, &data).map_err(err)?;
    expect("read back", c.read(t, 0, 64).map_err(err)? == data, true)?;
    let last = pattern(sectors - 1, 1);
    c.write(t, sectors - 1, &last).map_err(err)?;
    expect(
        "last sector",
        c.read(t, sectors - 1, 1).map_err(err)? == last,
        true,
    )?;
    Ok(String::new())
}

/// Status, error and AoE error of an ATA reply.
fn ata_status(r: Result<AtaReply, ClientError>) -> Result<(u8, u8, Option<u8>), String> {
    r.map(|r| (r.status(), r.error(), r.aoe_error)).map_err(err)
}

fn read_past_end(x: &mut Bed) -> Check {
    let s = ata_status(x.c.ata(&x.t, 0x24, 1, x.sectors, &[]))?;
    expect("status, error, aoe error", s, (0x41, 0x10, None))?;
    Ok(String::new())
}

fn read_too_many(x: &mut Bed) -> Check {
    if x.t.max_sectors == 255 {
        return Ok("255 advertised: nothing above".into());
    }
    let s = ata_status(x.c.ata(&x.t, 0x24, x.t.max_sectors + 1, 0, &[]))?;
    expect("status, error", (s.0, s.1), (0x41, 0x04))?;
    Ok(String::new())
}

fn other_ata(x: &mut Bed) -> Check {
    let (c, t) = (&mut x.c, &x.t);
    expect("power", c.check_power(t).map_err(err)?, 0xff)?;
    c.flush(t).map_err(err)?;
    let r = c.ata(t, 0xea, 0, 0, &[]).map_err(err)?;
    expect("flush ext", (r.status(), r.error()), (0x40, 0))?;
    let r = c.ata(t, 0xef, 1, 0, &[]).map_err(err)?;
    expect(
        "SET FEATURES",
        (r.status(), r.error(), r.aoe_error),
        (0x41, 0x04, None),
    )?;
    Ok(String::new())
}

fn unknown_commands(x: &mut Bed) -> Check {
    for cmd in [4u8, 7, 0xf0] {
        let f = x.frame(0x10, x.shelf, cmd, x.c.next_tag(), &[0; 8]);
        let h = raw(&mut x.c, &f)?.ok_or(format!("no reply to command {cmd:#x}"))?;
        expect("flags, error", (h.aoe.flags, h.aoe.error), (0x0c, 1))?;
    }
    Ok(String::new())
}

fn version_2(x: &mut Bed) -> Check {
    let f = x.frame(0x20, x.shelf, 0, x.c.next_tag(), &IDENTIFY_ARG);
    let h = raw(&mut x.c, &f)?.ok_or("no reply")?;
    expect(
        "version, flags, error",
        (h.aoe.version, h.aoe.flags, h.aoe.error),
        (1, 0x0c, 5),
    )?;
    Ok(String::new())
}

fn tag_and_flags(x: &mut Bed) -> Check {
    let f = x.frame(0x13, x.shelf, 1, 0xdead_beef, &[0, 0, 0, 0, 0, 0x10, 0, 0]);
    let h = raw(&mut x.c, &f)?.ok_or("no reply")?;
    expect(
        "flags, error, tag",
        (h.aoe.flags, h.aoe.error, h.tag()),
        (0x08, 0, 0xdead_beef),
    )?;
    Ok(String::new())
}

fn short_argument(x: &mut Bed) -> Check {
    let f = x.frame(0x10, x.shelf, 0, x.c.next_tag(), &IDENTIFY_ARG[..6]);
    let h = raw(&mut x.c, &f)?.ok_or("no reply")?;
    expect("error", (h.aoe.flags, h.aoe.error), (0x0c, 2))?;
    Ok(String::new())
}

fn silence(x: &mut Bed) -> Check {
    x.expect_silence(true);
    let r = silence_cases(x);
    x.expect_silence(false);
    r
}

fn silence_cases(x: &mut Bed) -> Check {
    // Another shelf (never the broadcast one): the target may serve other
    // slots of this shelf.
    let other_shelf = x.shelf.wrapping_add(1) % 0xffff;
    let (tm, me, shelf, slot) = (x.t.mac, x.me, x.shelf, x.slot);
    let cases = [
        (
            "response flag",
            x.frame(0x18, shelf, 0, x.c.next_tag(), &IDENTIFY_ARG),
        ),
        (
            "other shelf",
            x.frame(0x10, other_shelf, 0, x.c.next_tag(), &IDENTIFY_ARG),
        ),
        (
            "other MAC",
            frame(
                OTHER,
                me,
                0x10,
                shelf,
                slot,
                0,
                x.c.next_tag(),
                &IDENTIFY_ARG,
            ),
        ),
    ];
    for (why, f) in cases {
        if let Some(h) = raw(&mut x.c, &f)? {
            return Err(format!("{why}: answered {h:?}"));
        }
    }
    let f = frame(tm, me, 0x10, shelf, slot, 1, x.c.next_tag(), &[]);
    if let Some(h) = raw(&mut x.c, &f[..20])? {
        return Err(format!("20-byte frame answered {h:?}"));
    }
    Ok(String::new())
}

fn mac_mask(x: &mut Bed) -> Check {
    let t = x.t.clone();
    let r =
        x.c.mac_mask(&t, MaskCmd::Read, &[])
            .map_err(err)?
            .ok_or("no reply to read")?;
    expect("empty list", r.list.len(), 0)?;
    let r =
        x.c.mac_mask(&t, MaskCmd::Edit, &[(DirCmd::Add, OTHER)])
            .map_err(err)?
            .ok_or("no reply to edit")?;
    expect("list", r.list.as_slice(), &[OTHER][..])?;
    x.b.identify(&t).map_err(|e| format!("listed host: {e}"))?;
    x.expect_silence(true);
    let refused = x.c.identify(&t);
    x.expect_silence(false);
    if refused.is_ok() {
        return Err("a host off the list got an IDENTIFY reply".into());
    }
    let r =
        x.b.mac_mask(&t, MaskCmd::Edit, &[(DirCmd::Delete, OTHER)])
            .map_err(err)?
            .ok_or("no reply to delete")?;
    expect("list after delete", r.list.len(), 0)?;
    x.c.identify(&t)
        .map_err(|e| format!("after clearing: {e}"))?;
    Ok(String::new())
}

fn reserve(x: &mut Bed) -> Check {
    let (c, b, t, me) = (&mut x.c, &mut x.b, &x.t, x.me);
    let r = c
        .reserve(t, ReserveCmd::Set, &[me])
        .map_err(err)?
        .ok_or("no reply to set")?;
    expect("set", (r.aoe_error, r.list.as_slice()), (None, &[me][..]))?;
    let r = b.ata(t, 0x24, 1, 0, &[]).map_err(err)?;
    expect("READ by another host", r.aoe_error, Some(6))?;
    let r = b
        .reserve(t, ReserveCmd::Set, &[OTHER])
        .map_err(err)?
        .ok_or("no reply")?;
    expect("set by another host", r.aoe_error, Some(6))?;
    c.read(t, 0, 1).map_err(|e| format!("holder: {e}"))?;
    let r = c
        .reserve(t, ReserveCmd::Set, &[])
        .map_err(err)?
        .ok_or("no reply to release")?;
    expect("release", (r.aoe_error, r.list.len()), (None, 0))?;
    b.read(t, 0, 1).map_err(|e| format!("after release: {e}"))?;
    Ok(String::new())
}

fn padded(x: &mut Bed) -> Check {
    let short: Vec<usize> =
        x.c.take_captured()
            .iter()
            .filter(|f| ReplyHeader::parse(f).is_some_and(|h| h.is_response()))
            .map(Vec::len)
            .filter(|&n| n < 60)
            .collect();
    if short.is_empty() {
        Ok(String::new())
    } else {
        Err(format!("reply lengths {short:?}"))
    }
}

fn sep(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

/// `xblade conformance IFACE SHELF.SLOT` (hidden).
#[derive(Debug, clap::Args)]
pub struct ConformanceArgs {
    /// Interface facing the target.
    iface: String,
    /// The export: SHELF.SLOT (or eSHELF.SLOT).
    #[arg(value_name = "SHELF.SLOT", value_parser = |s: &str| crate::wire::target::parse_target(s, crate::wire::target::Broadcast::Refuse).map_err(|e| e.to_string()))]
    target: (u16, u8),
    /// Sectors per request the target must advertise.
    #[arg(long)]
    expect_scnt: Option<u8>,
}

/// Run the check list, print the report; an error when a check failed.
pub fn main(a: &ConformanceArgs) -> anyhow::Result<()> {
    let (iface, (shelf, slot)) = (&a.iface, a.target);
    let (report, failed) = run(iface, shelf, slot, a.expect_scnt);
    print!("{report}");
    if failed > 0 {
        anyhow::bail!("{failed} conformance check(s) failed against {shelf}.{slot} on {iface}");
    }
    println!("conformance: all checks passed against {shelf}.{slot} on {iface}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_patterns() {
        let f = frame(
            MacAddr::BROADCAST,
            OTHER,
            0x10,
            0x1234,
            5,
            1,
            0xdead_beef,
            &[9],
        );
        assert_eq!(f.len(), 25);
        assert_eq!(&f[12..14], &[0x88, 0xa2]);
        assert_eq!(
            &f[14..24],
            &[0x10, 0, 0x12, 0x34, 5, 1, 0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(pattern(3, 2).len(), 1024);
        assert_ne!(pattern(3, 1), pattern(4, 1));
    }
}
