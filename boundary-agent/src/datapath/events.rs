//! Drop events from the datapath's ring buffer, decoded.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aya::maps::{Map, MapData, RingBuf};
use boundary_common::{
    Direction, Reason, Verdict,
    maps::{DropEvent, EVENTS_MAP, FAMILY_IPV4, FAMILY_IPV6},
    wire,
};
use serde::Serialize;

use super::{
    maps::{Maps, MapsError},
    pins::PinLayout,
};

/// An event as users see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch (from the kernel's monotonic clock, converted).
    pub time: f64,
    pub workload: String,
    pub direction: &'static str,
    pub verdict: &'static str,
    pub reason: String,
    pub proto: u8,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: Option<u8>,
    pub identity: Option<u32>,
    pub rule: Option<u32>,
    pub len: u32,
}

fn addr(family: u8, raw: [u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(raw))),
        _ => None,
    }
}

fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    #[expect(unsafe_code, reason = "clock_gettime(2) has no safe wrapper in std")]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts);
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Reads events from the pinned ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
    names: std::collections::BTreeMap<u16, String>,
}

impl EventReader {
    pub fn open(layout: &PinLayout, maps: &Maps) -> Result<Self, MapsError> {
        let err = |source| MapsError::Map {
            name: EVENTS_MAP,
            source,
        };
        let data = MapData::from_pin(layout.map(EVENTS_MAP)).map_err(err)?;
        let ring = RingBuf::try_from(Map::from_map_data(data).map_err(err)?).map_err(err)?;
        Ok(Self {
            ring,
            names: maps.names()?,
        })
    }

    /// Refreshes workload names (they change with the policy).
    pub fn set_names(&mut self, names: std::collections::BTreeMap<u16, String>) {
        self.names = names;
    }

    /// Waits up to `timeout` for events and returns those available.
    pub fn poll(&mut self, timeout: Duration) -> Vec<Event> {
        let mut out = self.drain();
        if out.is_empty() {
            let mut pfd = libc::pollfd {
                fd: self.ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            #[expect(unsafe_code, reason = "poll(2) on the ring buffer's fd")]
            unsafe {
                libc::poll(&raw mut pfd, 1, ms);
            }
            out = self.drain();
        }
        out
    }

    fn drain(&mut self) -> Vec<Event> {
        let now_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now_mono = monotonic_now();
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() < size_of::<DropEvent>() {
                continue;
            }
            // SAFETY: the ring holds DropEvents written by the datapath; read unaligned.
            #[expect(unsafe_code, reason = "decoding a kernel-written struct")]
            let e: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let age = now_mono.saturating_sub(Duration::from_nanos(e.timestamp_ns));
            let reason = Reason::from_code(e.reason);
            let has_ports = matches!(
                e.proto,
                wire::IPPROTO_TCP | wire::IPPROTO_UDP | wire::IPPROTO_SCTP
            );
            out.push(Event {
                time: now_wall.saturating_sub(age).as_secs_f64(),
                workload: self
                    .names
                    .get(&e.slot)
                    .cloned()
                    .unwrap_or_else(|| boundary_common::maps::UNPROTECTED_NAME.to_owned()),
                direction: if e.direction == Direction::Egress as u8 {
                    "egress"
                } else {
                    "ingress"
                },
                verdict: match reason.map(Reason::verdict) {
                    Some(Verdict::Pass) => "pass",
                    _ => "drop",
                },
                reason: reason
                    .map_or_else(|| format!("unknown_{}", e.reason), |r| r.label().to_owned()),
                proto: e.proto,
                src: addr(e.family, e.src),
                dst: addr(e.family, e.dst),
                sport: if has_ports { e.sport } else { 0 },
                dport: if has_ports { e.dport } else { 0 },
                icmp_type: matches!(e.proto, wire::IPPROTO_ICMP | wire::IPPROTO_ICMPV6)
                    .then_some(e.icmp_type),
                identity: (e.identity != 0).then_some(e.identity),
                rule: (e.rule != u32::MAX).then_some(e.rule),
                len: e.len,
            });
        }
        out
    }
}
