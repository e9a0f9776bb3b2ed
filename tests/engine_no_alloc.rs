//! The per-request path allocates nothing: a counting global allocator
//! watches the engine over many READ, WRITE and IDENTIFY requests and their
//! completions.

mod alloc_support;

use aoe_wire::request::{self, Addr};
use aoe_wire::{ata::Opcode, MacAddr};
use xblade::engine::Action;

#[test]
fn ata_path_allocates_nothing() {
    let mut t = xblade::fuzzing::engine();
    let a = Addr {
        dst: xblade::fuzzing::TARGET_MAC,
        src: MacAddr([2, 0, 0, 0, 0, 1]),
        major: 1,
        minor: 1,
    };
    let mut frame = vec![0u8; 1514];
    let data = vec![0x11u8; 1024];
    // Build the requests up front (building is the initiator's cost).
    let reqs: Vec<(Vec<u8>, usize)> = [
        (Opcode::ReadExt, 2, &[][..]),
        (Opcode::WriteExt, 2, &data[..]),
        (Opcode::Read, 1, &[][..]),
        (Opcode::Identify, 1, &[][..]),
        (Opcode::ReadExt, 2, &[][..]),
    ]
    .iter()
    .map(|(op, n, d)| {
        let mut f = vec![0u8; 1514];
        let len = request::ata(&mut f, &a, 7, *op, *n, 10, d);
        (f, len)
    })
    .collect();
    let mut run = |count: usize| {
        let mut replies = 0;
        for i in 0..count {
            let (req, len) = &reqs[i % reqs.len()];
            frame.copy_from_slice(req);
            match t.handle(0, &mut frame, *len) {
                Action::Disk(io) => {
                    t.complete(&io, Ok(()), &mut frame);
                    replies += 1;
                }
                Action::Reply { .. } => replies += 1,
                Action::Drop(r) => panic!("dropped: {r:?}"),
            }
        }
        replies
    };
    // Warm-up: arc-swap registers this thread once, on its first load.
    run(reqs.len());
    alloc_support::assert_counting();
    let before = alloc_support::allocations();
    let replies = run(10_000);
    let after = alloc_support::allocations();
    assert_eq!(replies, 10_000);
    assert_eq!(after - before, 0, "allocations on the ATA path");
}
