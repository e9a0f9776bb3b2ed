//! Datapaths: move frames between a NIC, the [`crate::target`] engine and
//! the [`crate::disk`] backends. They hold no request logic of their own.
//!
//! - [`afpacket`]: portable fallback, one worker per interface, batched
//!   `recvmmsg`/`sendmmsg`.
//! - [`socket`]: the raw AF_PACKET socket shared by the datapath and the
//!   initiator tools.

pub mod afpacket;
pub mod iface;
pub mod socket;
