//! Build a Query Config request as an initiator sends it, parse it as a
//! target does, then build the target's reply and parse it back.
//!
//! `cargo run -p aoe-wire --example query_config`

use aoe_wire::{aoe, ethernet, qc, request, MacAddr, WireError, AOE_OFFSET, ARG_OFFSET};

fn main() -> Result<(), WireError> {
    let initiator = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    let target = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

    // The request: broadcast to shelf 1, slot 2, asking for the config string.
    let mut frame = [0u8; 128];
    let addr = request::Addr {
        dst: MacAddr::BROADCAST,
        src: initiator,
        major: 1,
        minor: 2,
    };
    let len = request::query_config(&mut frame, &addr, 0x1234, qc::ConfigCmd::Read, b"");
    let len = aoe_wire::pad_to_min(&mut frame, len);

    // The target's side: Ethernet, AoE header, Query Config argument.
    let eth = ethernet::Repr::parse(&ethernet::Frame::new_checked(&frame[..len])?)?;
    let hdr = aoe::Repr::parse(&aoe::Packet::new_checked(&frame[AOE_OFFSET..len])?)?;
    let arg = qc::Packet::new_checked(&frame[ARG_OFFSET..len])?;
    let req = qc::Repr::parse(&arg)?;
    println!(
        "request from {} to {}: e{}.{} {:?} tag {:02x?} ccmd {:?}",
        eth.src, eth.dst, hdr.major, hdr.minor, hdr.command, hdr.tag, req.ccmd
    );

    // The reply, written into the same buffer: addresses swapped, the
    // response flag set, the target's buffer count and sectors per request.
    let mut reply = [0u8; 128];
    ethernet::Repr {
        dst: eth.src,
        src: target,
        ethertype: eth.ethertype,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut reply[..]));
    aoe::Repr {
        flags: aoe::FLAG_RESPONSE,
        ..hdr
    }
    .emit(&mut aoe::Packet::new_unchecked(&mut reply[AOE_OFFSET..]));
    let answer = qc::Repr {
        bufcnt: 64,
        fwver: 1,
        sector_count: aoe_wire::max_sectors_for_mtu(1500),
        aoe_version: aoe::VERSION,
        ccmd: req.ccmd,
        string: b"rack 3",
    };
    answer.emit(&mut qc::Packet::new_unchecked(&mut reply[ARG_OFFSET..]));
    let rlen = aoe_wire::pad_to_min(&mut reply, ARG_OFFSET + answer.buffer_len());

    // The initiator reads it back.
    let rhdr = aoe::Packet::new_checked(&reply[AOE_OFFSET..rlen])?;
    let rarg = qc::Packet::new_checked(&reply[ARG_OFFSET..rlen])?;
    rarg.check_string()?;
    let got = qc::Repr::parse(&rarg)?;
    assert!(rhdr.is_response() && !rhdr.is_error());
    assert_eq!(got, answer);
    println!(
        "reply: e{}.{} bufcnt {} sectors/request {} config {:?}",
        rhdr.major(),
        rhdr.minor(),
        got.bufcnt,
        got.sector_count,
        String::from_utf8_lossy(got.string)
    );
    Ok(())
}
