//! Fuzz the engine's whole request path: a sequence of frames through one
//! engine (so Mac Mask, reservations and config string carry across
//! frames), checking that no disk action leaves the export, every reply is
//! at least 60 bytes, fits the MTU and carries our real address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xblade::fuzzing::run_frames;

fuzz_target!(|data: &[u8]| {
    run_frames(data);
});
