//! Pipelined I/O of the [`Client`]: a list of READ/WRITE requests kept in
//! flight up to a window, on the tools' window engine ([`super::window`]).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::client::{bad_reply, next_tag, sector_count, Client, ClientError, Target};
use super::window::{self, Completion, Outcome, Route, Window, WindowError, WindowSpec, Workload};
use crate::wire::{ethernet, ATA_DATA_OFFSET, SECTOR_SIZE};

/// One request of a pipelined run ([`Client::run_window`]).
#[derive(Debug, Clone, Copy)]
pub struct IoRequest<'a> {
    /// First sector.
    pub lba: u64,
    /// Sector count (at most what the target and the link allow).
    pub sectors: u8,
    /// Write payload (`sectors * 512` bytes), or `None` for a read.
    pub write: Option<&'a [u8]>,
}

/// What a pipelined run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStats {
    /// Requests completed.
    pub completed: usize,
    /// Retransmissions after a timeout.
    pub retransmits: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Client {
    /// Run `reqs` against `t` keeping up to `window` of them in flight (cap
    /// it at the target's bufcnt to avoid drops), on the tools' window
    /// engine ([`super::window`]). Each completion calls `done(index,
    /// read_data)` (empty data for writes), in completion order. A request
    /// without reply is retransmitted with a new tag after the timeout, up
    /// to the retry count; the first failure (timeout, AoE error, failing
    /// ATA status, short read or another LBA echoed) ends the run with
    /// that error.
    pub fn run_window(
        &mut self,
        t: &Target,
        reqs: &[IoRequest<'_>],
        window: usize,
        done: impl FnMut(usize, &[u8]),
    ) -> Result<WindowStats, ClientError> {
        let started = Instant::now();
        let max = self.sectors_per_request(t);
        for (i, r) in reqs.iter().enumerate() {
            if r.sectors > max {
                return Err(ClientError::InvalidRequest(format!(
                    "request {i}: {} sectors, the path allows {max}",
                    r.sectors
                )));
            }
            if let Some(d) = r.write {
                if d.len() != r.sectors as usize * SECTOR_SIZE {
                    return Err(ClientError::InvalidRequest(format!(
                        "request {i}: {} bytes for {} sectors",
                        d.len(),
                        r.sectors
                    )));
                }
            }
            self.check_range(r.lba, u64::from(r.sectors))?;
        }
        if reqs.is_empty() {
            return Ok(WindowStats::default());
        }
        let spec = WindowSpec {
            queue: window_queue(),
            route: Route {
                src: self.src,
                dst: t.mac,
                paths: Vec::new(),
                major: t.major,
                minor: t.minor,
                lba48: self.lba48,
            },
            window: window.clamp(1, window::MAX_WINDOW).min(reqs.len()),
            max_sectors: max,
            // Any frame the link carries, so read data is never cut.
            rx_room: (self.iface.mtu as usize + ethernet::HEADER_LEN)
                .max(ATA_DATA_OFFSET + usize::from(max) * SECTOR_SIZE)
                + 64,
            want_data: true,
            timeout: self.timeout,
            max_tries: self.retries + 1,
            seed: u64::from(next_tag()),
        };
        // One window per client, reused while it fits: no allocation per run.
        let mut win = match self.window.take() {
            Some(mut w) if w.fits(&spec) => {
                w.reset(spec);
                w
            }
            _ => Window::new(spec),
        };
        let mut list = ListWorkload {
            reqs,
            next: 0,
            completed: 0,
            done,
            capture: self.capture.as_mut(),
        };
        let r = win.run(&self.sock, false, &mut list);
        let stats = WindowStats {
            completed: list.completed,
            retransmits: win.retransmits,
            elapsed: started.elapsed(),
        };
        self.window = Some(win);
        r.map(|()| stats)
    }

    /// Read `sectors` sectors from `lba` with up to `window` requests in
    /// flight.
    pub fn read_window(
        &mut self,
        t: &Target,
        lba: u64,
        sectors: u64,
        window: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let step = u64::from(self.sectors_per_request(t));
        let mut reqs = Vec::with_capacity(sectors.div_ceil(step) as usize);
        let mut at = lba;
        while at < lba + sectors {
            let n = step.min(lba + sectors - at);
            reqs.push(IoRequest {
                lba: at,
                sectors: n as u8,
                write: None,
            });
            at += n;
        }
        let mut out = vec![0u8; sectors as usize * SECTOR_SIZE];
        self.run_window(t, &reqs, window, |i, data| {
            let off = (reqs[i].lba - lba) as usize * SECTOR_SIZE;
            out[off..off + data.len()].copy_from_slice(data);
        })?;
        Ok(out)
    }

    /// Write `data` (a multiple of 512 bytes) from `lba` with up to `window`
    /// requests in flight.
    pub fn write_window(
        &mut self,
        t: &Target,
        lba: u64,
        data: &[u8],
        window: usize,
    ) -> Result<WindowStats, ClientError> {
        sector_count(data)?;
        let step = self.sectors_per_request(t) as usize * SECTOR_SIZE;
        let reqs: Vec<IoRequest<'_>> = data
            .chunks(step)
            .enumerate()
            .map(|(i, chunk)| IoRequest {
                lba: lba + (i * step / SECTOR_SIZE) as u64,
                sectors: (chunk.len() / SECTOR_SIZE) as u8,
                write: Some(chunk),
            })
            .collect();
        self.run_window(t, &reqs, window, |_, _| {})
    }
}

/// The queue number of a client's window tags: windows of one process
/// (clients sharing a MAC) take turns over the queue numbers, so their
/// tags differ; the generation, seeded per run, keeps apart the rest.
fn window_queue() -> usize {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) as usize % window::MAX_QUEUES
}

/// [`Client::run_window`]'s requests: a list, the first error ends the run.
struct ListWorkload<'r, 'a, 'c, F> {
    reqs: &'r [IoRequest<'a>],
    next: usize,
    completed: usize,
    done: F,
    capture: Option<&'c mut Vec<Vec<u8>>>,
}

impl<F: FnMut(usize, &[u8])> Workload for ListWorkload<'_, '_, '_, F> {
    type Error = ClientError;

    fn next(&mut self, _now: Instant) -> Option<window::Request> {
        let r = self.reqs.get(self.next)?;
        self.next += 1;
        Some(window::Request {
            write: r.write.is_some(),
            lba: r.lba,
            sectors: r.sectors,
            id: (self.next - 1) as u64,
            version: 0,
        })
    }

    fn fill(&mut self, req: &window::Request, payload: &mut [u8]) {
        if let Some(d) = self.reqs[req.id as usize].write {
            payload.copy_from_slice(d);
        }
    }

    fn complete(&mut self, c: Completion<'_>) -> Result<(), ClientError> {
        match c.outcome {
            Outcome::Ok => {}
            Outcome::AoeError(code) => return Err(ClientError::AoeError { code }),
            Outcome::AtaError { status, error } => {
                return Err(ClientError::AtaError { status, error })
            }
            Outcome::Bad => {
                return Err(bad_reply(
                    c.req.op(),
                    &format!(
                        "short, or for another LBA than {} ({} sectors, request {})",
                        c.req.lba, c.req.sectors, c.req.id
                    ),
                ))
            }
        }
        (self.done)(c.req.id as usize, c.data);
        self.completed += 1;
        Ok(())
    }

    fn finished(&self, _now: Instant) -> bool {
        self.completed == self.reqs.len()
    }

    fn seen(&mut self, frame: &[u8]) {
        if let Some(c) = self.capture.as_mut() {
            c.push(frame.to_vec());
        }
    }
}

impl From<WindowError> for ClientError {
    fn from(e: WindowError) -> ClientError {
        match e {
            WindowError::Timeout {
                req,
                tries,
                timeout,
            } => ClientError::Timeout {
                what: format!(
                    "{} of {} sectors at LBA {} (request {})",
                    req.op(),
                    req.sectors,
                    req.lba,
                    req.id
                ),
                tries,
                timeout,
            },
            WindowError::Io(e) => ClientError::Io(e),
        }
    }
}
