//! xblade: an ATA-over-Ethernet (AoE r11) target.
//!
//! Layers, from the wire up:
//! - [`wire`]: zero-copy views over frames (no I/O).
//! - [`engine`]: the sans-IO engine: a request and an export's state in, a
//!   reply and a disk action out.
//! - [`bdev`]: block devices under the exports (file or block device,
//!   synchronous or through io_uring; Ceph RBD; null).
//! - [`worker`]: the one worker loop of both datapaths: frames in, engine,
//!   store, replies out.
//! - [`net`]: the datapaths (AF_XDP, AF_PACKET): they only move frames
//!   between the NIC and the worker loop.
//! - [`config`], [`cli`]: what the operator asked for.
//! - [`server`], [`service`], [`control`], [`sdnotify`]: running, changing
//!   (reload, resize) and watching a target; systemd integration.

pub mod bdev;
pub mod bench;
pub mod check_config;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
pub mod fuzzing;
pub mod import_vblade;
pub mod initiator;
pub mod logging;
pub mod net;
pub mod sdnotify;
pub mod server;
pub mod service;
pub mod slab;
pub mod stats;
pub mod wire;
pub mod worker;
