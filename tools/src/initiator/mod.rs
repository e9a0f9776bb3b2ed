//! The initiator side: building AoE requests and reading replies. Used by the
//! integration tests' test initiator and by `xblade bench`.
#![forbid(unsafe_code)]

pub mod client;
pub mod conformance;
mod pipelined;
pub mod reply;
// The request builders moved to the protocol crate; the name these
// modules use for them.
pub(crate) use aoe_wire::request;
pub mod window;
