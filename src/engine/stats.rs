//! Counters the engine keeps per worker: plain integers on the hot path,
//! published to the control plane by the datapath.
#![forbid(unsafe_code)]

use serde::Serialize;

/// Why a frame got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the AoE common header.
    Truncated,
    /// Not ethertype 0x88A2.
    NotAoe,
    /// Destination MAC neither ours nor broadcast.
    NotForUs,
    /// R flag set (another target's reply, or a reflection).
    Response,
    /// No export here answers that shelf.slot.
    ForeignAddress,
    /// Source MAC not on a non-empty Mac Mask list.
    MaskDenied,
    /// A state-changing command sent to a wildcard matching several exports.
    AmbiguousWildcard,
    /// Query Config test (exact or prefix) did not match: no reply by spec.
    ConfigTestMismatch,
    /// The reply would not fit in the frame the datapath offered.
    ReplyTooLarge,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 9;
    /// Every reason, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::NotAoe,
        DropReason::NotForUs,
        DropReason::Response,
        DropReason::ForeignAddress,
        DropReason::MaskDenied,
        DropReason::AmbiguousWildcard,
        DropReason::ConfigTestMismatch,
        DropReason::ReplyTooLarge,
    ];

    /// Stable snake_case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NotAoe => "not_aoe",
            DropReason::NotForUs => "not_for_us",
            DropReason::Response => "response_flag",
            DropReason::ForeignAddress => "foreign_address",
            DropReason::MaskDenied => "mask_denied",
            DropReason::AmbiguousWildcard => "ambiguous_wildcard",
            DropReason::ConfigTestMismatch => "config_test_mismatch",
            DropReason::ReplyTooLarge => "reply_too_large",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Per-worker engine counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Frames handed to the engine.
    pub frames_in: u64,
    /// Replies built.
    pub replies: u64,
    /// READ requests executed (sent to the disk).
    pub ata_read: u64,
    /// WRITE requests executed.
    pub ata_write: u64,
    /// IDENTIFY requests.
    pub ata_identify: u64,
    /// FLUSH requests.
    pub ata_flush: u64,
    /// Other ATA requests (check power, aborted opcodes).
    pub ata_other: u64,
    /// ATA replies with ERR status (range, abort, I/O error).
    pub ata_errors: u64,
    /// Query Config requests.
    pub query_config: u64,
    /// Mac Mask requests.
    pub mac_mask: u64,
    /// Reserve/Release requests.
    pub reserve: u64,
    /// Replies carrying an AoE error code.
    pub aoe_errors: u64,
    /// Dropped frames, by reason (index order of [`DropReason::ALL`]).
    pub drops: [u64; DropReason::COUNT],
}

impl EngineStats {
    /// Count one drop.
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    /// Drops for one reason.
    pub fn drops_for(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    /// Add another worker's counters.
    pub fn merge(&mut self, o: &EngineStats) {
        self.frames_in += o.frames_in;
        self.replies += o.replies;
        self.ata_read += o.ata_read;
        self.ata_write += o.ata_write;
        self.ata_identify += o.ata_identify;
        self.ata_flush += o.ata_flush;
        self.ata_other += o.ata_other;
        self.ata_errors += o.ata_errors;
        self.query_config += o.query_config;
        self.mac_mask += o.mac_mask;
        self.reserve += o.reserve;
        self.aoe_errors += o.aoe_errors;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
    }
}
