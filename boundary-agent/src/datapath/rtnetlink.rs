//! The network namespace's link table over rtnetlink (`NETLINK_ROUTE`): a dump of every link
//! (`RTM_GETLINK`), and a subscription to link changes (`RTMGRP_LINK`: `RTM_NEWLINK`,
//! `RTM_DELLINK`) that says *that* something changed, so the agent reconciles from a fresh
//! dump.
//!
//! A small reader over libc rather than netlink-packet-route: the agent needs four fields of
//! one message type (index, type, flags, `IFLA_IFNAME`), already speaks to the kernel through
//! libc (`netdev.rs`, `syscall.rs`), and the route crates change their API from release to
//! release. Message layouts: `linux/netlink.h`, `linux/rtnetlink.h`, `linux/if_link.h`.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

const NETLINK_ROUTE: libc::c_int = 0;
const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// The dump changed while it was read (`linux/netlink.h`): read it again.
const NLM_F_DUMP_INTR: u16 = 0x10;
const IFLA_IFNAME: u16 = 3;
const IFF_UP: u32 = 0x1;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
/// Large enough for any one datagram the kernel sends a dump in (it fills up to 32 KiB).
const RECV_BUF: usize = 64 * 1024;
/// The subscription's receive buffer: room for a burst of link events (a node starting a
/// hundred pods) before the kernel drops some and says `ENOBUFS`.
const SUBSCRIPTION_RCVBUF: libc::c_int = 1 << 20;

/// One link as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `ARPHRD_*` (1: Ethernet).
    pub link_type: u16,
    /// `IFF_UP`: administratively up.
    pub up: bool,
}

/// Every link in this process's network namespace.
pub fn links() -> io::Result<Vec<Link>> {
    // A dump interrupted by a change is read again; links change rarely enough that a few
    // tries suffice, and the last one is used whatever it says (the next event reconciles).
    let mut last = Vec::new();
    for _ in 0..4 {
        let (links, interrupted) = dump_once()?;
        last = links;
        if !interrupted {
            break;
        }
    }
    Ok(last)
}

fn dump_once() -> io::Result<(Vec<Link>, bool)> {
    let sock = open(false, 0)?;
    let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    let len = u32::try_from(req.len()).expect("a small request");
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, everything else zero.
    send(&sock, &req)?;
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::new();
    let mut interrupted = false;
    loop {
        let n = recv(&sock, &mut buf)?;
        for msg in messages(&buf[..n]) {
            interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
            match msg.kind {
                NLMSG_DONE => return Ok((out, interrupted)),
                NLMSG_ERROR => {
                    let errno = msg
                        .payload
                        .get(0..4)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                RTM_NEWLINK => out.extend(parse_link(msg.payload)),
                _ => {}
            }
        }
    }
}

/// A socket subscribed to this namespace's link changes. Non-blocking: read it when it is
/// readable (the agent's loop waits on it through tokio).
#[derive(Debug)]
pub struct LinkSubscription {
    sock: OwnedFd,
    buf: Vec<u8>,
}

/// What a read of the subscription found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// `RTM_NEWLINK` or `RTM_DELLINK` messages read.
    pub events: usize,
    /// The kernel dropped messages (`ENOBUFS`): what changed is unknown, reconcile fully.
    pub overflowed: bool,
}

impl LinkSubscription {
    pub fn new() -> io::Result<Self> {
        let sock = open(true, RTMGRP_LINK)?;
        // A larger buffer makes overflow rarer; refusal (a capped rmem_max) is not an error,
        // since an overflow is handled anyway.
        let size: libc::c_int = SUBSCRIPTION_RCVBUF;
        #[expect(unsafe_code, reason = "setsockopt(2) has no safe wrapper in std")]
        // SAFETY: an int option read from a live int of the size passed.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                u32::try_from(size_of::<libc::c_int>()).expect("small"),
            );
        }
        Ok(Self {
            sock,
            buf: vec![0u8; RECV_BUF],
        })
    }

    /// Reads every message waiting, without blocking.
    pub fn drain(&mut self) -> io::Result<Changes> {
        let mut changes = Changes::default();
        loop {
            match recv(&self.sock, &mut self.buf) {
                Ok(n) => {
                    changes.events += messages(&self.buf[..n])
                        .filter(|m| matches!(m.kind, RTM_NEWLINK | RTM_DELLINK))
                        .count();
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changes.overflowed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(changes),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for LinkSubscription {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

#[expect(
    unsafe_code,
    reason = "socket(2) and bind(2) have no safe wrapper for netlink"
)]
fn open(nonblocking: bool, groups: u32) -> io::Result<OwnedFd> {
    let flags =
        libc::SOCK_RAW | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, flags, NETLINK_ROUTE) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just made and owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = u16::try_from(libc::AF_NETLINK).expect("small");
    addr.nl_groups = groups;
    // SAFETY: a live sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const addr).cast(),
            u32::try_from(size_of::<libc::sockaddr_nl>()).expect("small"),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

#[expect(unsafe_code, reason = "send(2) on a raw descriptor")]
fn send(sock: &OwnedFd, req: &[u8]) -> io::Result<()> {
    // SAFETY: the buffer is live for the call and its length is passed. Unbound destination:
    // a netlink socket's default peer is the kernel.
    let n = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[expect(unsafe_code, reason = "recv(2) on a raw descriptor")]
fn recv(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is live and writable for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One netlink message: its type, flags and what follows the header.
struct Message<'a> {
    kind: u16,
    flags: u16,
    payload: &'a [u8],
}

/// The messages in one datagram; a truncated tail is ignored.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = Message {
            kind: u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes")),
            flags: u16::from_ne_bytes(buf[6..8].try_into().expect("2 bytes")),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align4(len).min(buf.len())..];
        Some(msg)
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An `RTM_NEWLINK` payload: `struct ifinfomsg` then attributes, of which the name is read.
fn parse_link(payload: &[u8]) -> Option<Link> {
    let info = payload.get(..IFINFOMSG_LEN)?;
    let link_type = u16::from_ne_bytes(info[2..4].try_into().ok()?);
    let index = u32::try_from(i32::from_ne_bytes(info[4..8].try_into().ok()?)).ok()?;
    let flags = u32::from_ne_bytes(info[8..12].try_into().ok()?);
    let mut attrs = &payload[IFINFOMSG_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes(attrs[0..2].try_into().ok()?));
        let kind = u16::from_ne_bytes(attrs[2..4].try_into().ok()?);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == IFLA_IFNAME {
            let value = &attrs[4..len];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return Some(Link {
                index,
                name: String::from_utf8_lossy(&value[..end]).into_owned(),
                link_type,
                up: flags & IFF_UP != 0,
            });
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `RTM_NEWLINK` message as the kernel writes one (other attributes around the name).
    fn newlink(index: i32, link_type: u16, flags: u32, name: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // IFLA_MTU (4) before the name.
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&4u16.to_ne_bytes());
        attrs.extend_from_slice(&1500u32.to_ne_bytes());
        let value = [name.as_bytes(), &[0]].concat();
        let len = u16::try_from(4 + value.len()).expect("small");
        attrs.extend_from_slice(&len.to_ne_bytes());
        attrs.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attrs.extend_from_slice(&value);
        attrs.resize(align4(attrs.len()), 0);
        let mut msg = vec![0u8; NLMSG_HDRLEN];
        msg.extend_from_slice(&[0, 0]);
        msg.extend_from_slice(&link_type.to_ne_bytes());
        msg.extend_from_slice(&index.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&attrs);
        let total = u32::try_from(msg.len()).expect("small");
        msg[0..4].copy_from_slice(&total.to_ne_bytes());
        msg[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg
    }

    #[test]
    fn link_messages_parse() {
        let mut buf = newlink(7, 1, IFF_UP | 0x40, "veth1x");
        buf.extend(newlink(9, 65534, 0, "tun0"));
        let links: Vec<Link> = messages(&buf)
            .filter_map(|m| parse_link(m.payload))
            .collect();
        assert_eq!(
            links,
            [
                Link {
                    index: 7,
                    name: "veth1x".into(),
                    link_type: 1,
                    up: true
                },
                Link {
                    index: 9,
                    name: "tun0".into(),
                    link_type: 65534,
                    up: false
                },
            ]
        );
        // A message cut short is not read past its end.
        let cut = &buf[..buf.len() - 3];
        assert_eq!(messages(cut).count(), 1);
    }

    #[test]
    fn the_dump_lists_loopback() {
        // Any namespace has `lo` at index 1; the unit tests run in the host's.
        let links = links().expect("RTM_GETLINK dump");
        let lo = links.iter().find(|l| l.index == 1).expect("index 1");
        assert_eq!((lo.name.as_str(), lo.link_type), ("lo", 772));
    }
}
