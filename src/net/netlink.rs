//! A minimal rtnetlink client for one job: adding and removing unicast
//! addresses in an interface's receive filter, the equivalent of
//! `bridge fdb add|del MAC dev IF self` (RTM_NEWNEIGH/RTM_DELNEIGH,
//! family AF_BRIDGE, NTF_SELF, NDA_LLADDR).
//!
//! On a device that is not a bridge port, the kernel's default handler
//! (`ndo_dflt_fdb_add`) puts the address on the device's unicast list: the
//! NIC then accepts frames for it without going promiscuous (or goes
//! promiscuous where it has no unicast filter). Written against libc: the
//! message is three fixed headers, not worth a netlink crate.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use crate::wire::MacAddr;

const NLMSG_HDRLEN: usize = 16;
const NDMSG_LEN: usize = 12;
/// NDA_LLADDR attribute: 4-byte header, 6-byte address, padded to 4.
const LLADDR_ATTR_LEN: usize = 4 + 6;
const MSG_LEN: usize = NLMSG_HDRLEN + NDMSG_LEN + LLADDR_ATTR_LEN.div_ceil(4) * 4;

/// A NETLINK_ROUTE socket.
fn route_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An rtnetlink socket.
#[derive(Debug)]
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    /// Open a NETLINK_ROUTE socket.
    pub fn open() -> io::Result<Rtnl> {
        Ok(Rtnl {
            fd: route_socket()?,
            seq: 1,
        })
    }

    /// `bridge fdb add MAC dev IFINDEX self` (permanent). An address
    /// already on the list is not an error.
    pub fn fdb_add(&mut self, ifindex: u32, mac: MacAddr) -> io::Result<()> {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_EXCL;
        match self.fdb(libc::RTM_NEWNEIGH, flags, ifindex, mac) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// `bridge fdb del MAC dev IFINDEX self`. Ok(false) when the address
    /// was not on the list.
    pub fn fdb_del(&mut self, ifindex: u32, mac: MacAddr) -> io::Result<bool> {
        match self.fdb(libc::RTM_DELNEIGH, 0, ifindex, mac) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn fdb(&mut self, kind: u16, flags: libc::c_int, ifindex: u32, mac: MacAddr) -> io::Result<()> {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface index {ifindex} out of range"),
            )
        })?;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut m = [0u8; MSG_LEN];
        // struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
        m[0..4].copy_from_slice(&(MSG_LEN as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        let f = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16;
        m[6..8].copy_from_slice(&f.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        // struct ndmsg { u8 family; u8 pad1; u16 pad2; i32 ifindex; u16
        // state; u8 flags; u8 type; }
        let nd = NLMSG_HDRLEN;
        m[nd] = libc::AF_BRIDGE as u8;
        m[nd + 4..nd + 8].copy_from_slice(&ifindex.to_ne_bytes());
        m[nd + 8..nd + 10].copy_from_slice(&libc::NUD_PERMANENT.to_ne_bytes());
        m[nd + 10] = libc::NTF_SELF;
        // struct rtattr { u16 len; u16 type; } + the address.
        let a = nd + NDMSG_LEN;
        m[a..a + 2].copy_from_slice(&(LLADDR_ATTR_LEN as u16).to_ne_bytes());
        m[a + 2..a + 4].copy_from_slice(&libc::NDA_LLADDR.to_ne_bytes());
        m[a + 4..a + 10].copy_from_slice(&mac.0);
        // SAFETY: sends `m`, which lives on this frame for the call, to the
        // kernel (a zeroed sockaddr_nl is the default destination).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.ack(seq)
    }

    /// Wait for the kernel's answer to `seq`: an NLMSG_ERROR whose code is 0
    /// (acknowledged) or -errno.
    fn ack(&mut self, seq: u32) -> io::Result<()> {
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: receives into `buf`, which lives on this frame and
            // whose length is passed.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mseq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap_or([0; 4]));
                if len < NLMSG_HDRLEN || at + len > n {
                    break;
                }
                if mseq == seq && kind == libc::NLMSG_ERROR as u16 && len >= NLMSG_HDRLEN + 4 {
                    let p = at + NLMSG_HDRLEN;
                    let code = i32::from_ne_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                at += len.div_ceil(4) * 4;
            }
        }
    }
}

/// Link events: a NETLINK_ROUTE socket in the RTMGRP_LINK group (every
/// RTM_NEWLINK/RTM_DELLINK of this network namespace: an interface
/// created, deleted, renamed, up or down). Only "something changed" is
/// reported: the server then looks up every interface it names, which is
/// never wrong where decoding each message would be after an overflow.
#[derive(Debug)]
pub struct LinkEvents {
    fd: OwnedFd,
}

impl LinkEvents {
    /// Join the link group.
    pub fn open() -> io::Result<LinkEvents> {
        let fd = route_socket()?;
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: `sa` is a valid sockaddr_nl and the length matches it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkEvents { fd })
    }

    /// Wait up to `timeout` for link events; true when some arrived (all
    /// queued ones are read). A receive overflow (ENOBUFS: events were
    /// lost) counts as an event.
    pub fn wait(&self, timeout: std::time::Duration) -> io::Result<bool> {
        if !super::poll_readable(self.fd.as_fd(), timeout)? {
            return Ok(false);
        }
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: receives into `buf`, which lives on this frame and
            // whose length is passed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                any = true;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) => any = true,
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => return Ok(any),
                _ => return Err(e),
            }
        }
    }
}
