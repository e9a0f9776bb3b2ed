//! xblade: an ATA-over-Ethernet (AoE r11) target.
//!
//! Layers, from the wire up:
//! - `wire`: the protocol crate `aoe-wire` (crates/aoe): zero-copy views
//!   over frames (no I/O).
//! - [`engine`]: the sans-IO engine: a request and an export's state in, a
//!   reply and a disk action out.
//! - [`bdev`]: block devices under the exports (file or block device,
//!   synchronous or through io_uring; Ceph RBD; null).
//! - `worker`: the one worker loop of both datapaths: frames in, engine,
//!   store, replies out.
//! - [`net`]: the datapaths (AF_XDP, AF_PACKET): they only move frames
//!   between the NIC and the worker loop.
//! - `config`, [`cli`]: what the operator asked for.
//! - `server`, `service`, [`control`], `sdnotify`: running, changing
//!   (reload, resize) and watching a target; systemd integration.
//!
//! Everything is crate-private unless named below with the reason it is
//! public: the integration tests, the tools crate (tools/) and the benches
//! link this library, nothing else does. The initiator, `xblade bench` and
//! the man pages live in tools/ (xblade-bench, xblade-man).

// The daemon's internals are `pub(crate)`: its documentation is read with
// `cargo doc --document-private-items` (02-workspace.sh builds it with no
// warning), where these links resolve.
#![allow(rustdoc::private_intra_doc_links)]

// The protocol crate, under the name the daemon's modules use.
pub(crate) use aoe_wire as wire;

// pub: tests drive the stores directly (tests/bdev_no_alloc.rs, the
// test-store switches, the byte-range locks), the tools parse sizes.
pub mod bdev;
pub(crate) mod check_config;
// pub: src/main.rs runs it, the tools generate the man pages from `Cli`.
pub mod cli;
pub(crate) mod config;
// pub: the tests query running targets (`query`, `Status`) and check
// the Prometheus text.
pub mod control;
// pub: the fuzz target, tests/engine_no_alloc.rs and benches/engine.rs
// drive the engine without a datapath.
pub mod engine;
// pub: the fuzz target and the tests' engine harness.
pub mod fuzzing;
pub(crate) mod import_vblade;
pub(crate) mod logging;
// pub: the tools' initiator sends through `net::socket` and looks up
// interfaces with `net::iface`; tests use `net::xdp::steer::queue_mac`.
pub mod net;
pub(crate) mod sdnotify;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod slab;
// pub: tests/control_plane.rs builds synthetic counters.
pub mod stats;
pub(crate) mod worker;
