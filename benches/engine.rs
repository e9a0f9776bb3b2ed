//! Micro-benchmarks of the sans-IO engine: nanoseconds to parse a request
//! and build its reply (READ: header in place, data left to the disk; WRITE:
//! request checked, then the 60-byte reply; IDENTIFY: the 512-byte page; QC:
//! a broadcast discovery). These are the user-space costs per request that
//! decide how many requests one core can carry on a zero-copy NIC.

use aoe_wire::request::{self, Addr};
use aoe_wire::{ata::Opcode, qc::ConfigCmd, MacAddr};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use xblade::engine::Action;

fn addr() -> Addr {
    Addr {
        dst: xblade::fuzzing::TARGET_MAC,
        src: MacAddr([2, 0, 0, 0, 0, 1]),
        major: 1,
        minor: 1,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    let cases: Vec<(&str, Vec<u8>, usize)> = {
        let mut v = Vec::new();
        let mut f = vec![0u8; 1514];
        let n = request::ata(&mut f, &addr(), 7, Opcode::ReadExt, 2, 10, &[]);
        v.push(("read_1k", f.clone(), n));
        let n = request::ata(&mut f, &addr(), 7, Opcode::WriteExt, 2, 10, &[0x5a; 1024]);
        v.push(("write_1k", f.clone(), n));
        let n = request::ata(&mut f, &addr(), 7, Opcode::Identify, 1, 0, &[]);
        v.push(("identify", f.clone(), n));
        let mut b = addr();
        b.dst = MacAddr::BROADCAST;
        b.major = 0xffff;
        b.minor = 0xff;
        let n = request::query_config(&mut f, &b, 7, ConfigCmd::Read, b"");
        v.push(("qc_broadcast", f.clone(), n));
        v
    };
    for (name, req, len) in cases {
        let mut t = xblade::fuzzing::engine();
        let mut frame = vec![0u8; 1514];
        let mut extra = vec![0u8; 1514];
        g.bench_function(name, |b| {
            b.iter(|| {
                // Only the header and argument are restored per iteration:
                // the engine never reads the data area of a read request.
                frame[..60].copy_from_slice(&req[..60]);
                match t.handle(0, black_box(&mut frame), len) {
                    Action::Disk(io) => black_box(t.complete(&io, Ok(()), &mut frame)),
                    Action::Reply { len, more } => {
                        if more {
                            while let Some((_, m)) = t.next_reply(&mut extra) {
                                if !m {
                                    break;
                                }
                            }
                        }
                        len
                    }
                    Action::Drop(_) => 0,
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
