//! xblade: an ATA-over-Ethernet (AoE r11) target.
//!
//! Layers, from the wire up:
//! - [`wire`]: zero-copy views over frames (no I/O).
//! - [`target`]: the sans-IO engine: a request and an export's state in, a
//!   reply and a disk action out.
//! - [`disk`]: backing stores (file, block device, null).
//! - [`datapath`]: AF_PACKET (and AF_XDP) loops that move frames between the
//!   NIC, the engine and the disk.
//! - [`config`], [`cli`]: what the operator asked for.
//! - [`server`], [`service`], [`control`], [`sdnotify`]: running, changing
//!   (reload, resize) and watching a target; systemd integration.

pub mod bench;
pub mod cli;
pub mod config;
pub mod control;
pub mod datapath;
pub mod disk;
pub mod fuzzing;
pub mod import_vblade;
pub mod initiator;
pub mod sdnotify;
pub mod server;
pub mod service;
pub mod stats;
pub mod target;
pub mod wire;
