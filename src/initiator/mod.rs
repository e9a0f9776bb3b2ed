//! The initiator side: building AoE requests and reading replies. Used by the
//! integration tests' test initiator and by `xblade bench`.
#![forbid(unsafe_code)]

pub mod client;
pub mod conformance;
mod pipelined;
pub mod reply;
pub mod request;
pub mod window;
