//! Builds the XDP steering program (bpf/xblade.bpf.c) with clang through
//! libbpf-cargo into `$OUT_DIR/xblade.bpf.o`. The datapath embeds the object
//! (`include_bytes!`) and loads it with `libbpf_rs::ObjectBuilder`: an owned
//! `Object` can live in a per-interface struct, whereas a generated skeleton
//! borrows its `OpenObject` storage for its whole life.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/xblade.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR must be set by cargo"));
    SkeletonBuilder::new()
        .source(SRC)
        .obj(out.join("xblade.bpf.o"))
        // libbpf-cargo already passes -g -O2 -target bpf -D__TARGET_ARCH_x86.
        // Debian's multiarch layout keeps <asm/types.h> under
        // /usr/include/x86_64-linux-gnu, which clang -target bpf does not
        // search. <bpf/bpf_helpers.h> comes from Debian's libbpf-dev
        // (scripts/setup.sh installs it).
        .clang_args(["-I/usr/include/x86_64-linux-gnu", "-Wall"])
        .build()
        .expect("building the BPF program failed (are clang and libbpf-dev installed? see scripts/setup.sh)");
    println!("cargo:rerun-if-changed={SRC}");
}
