//! A frame parser with the datapath's rules and reasons (see boundary-ebpf/src/parse.rs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use boundary_common::Reason;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const MAX_EXT_HEADERS: usize = 8;
const MAX_L4_OFFSET: usize = 320;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    None,
    First,
    Later,
}

/// What the datapath reads of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_id: u16,
    pub fragment: Fragment,
    pub frag_id: u32,
}

impl Packet {
    /// A packet with no transport details, to fill in.
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            sport: 0,
            dport: 0,
            icmp_type: 0,
            icmp_id: 0,
            fragment: Fragment::None,
            frag_id: 0,
        }
    }
}

/// The parser's result. Malformed packets keep their addresses when they were readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    NonIp,
    Ip(Packet),
    Malformed {
        reason: Reason,
        addrs: Option<(IpAddr, IpAddr)>,
    },
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn is_vlan(t: u16) -> bool {
    t == ETH_P_8021Q || t == ETH_P_8021AD
}

/// Parses a frame exactly as the datapath does.
pub fn parse(f: &[u8]) -> Parsed {
    let bad = |reason| Parsed::Malformed {
        reason,
        addrs: None,
    };
    if f.len() < 14 {
        return bad(Reason::EthTruncated);
    }
    let mut proto = be16(f, 12);
    let mut off = 14;
    for depth in 0..3 {
        if !is_vlan(proto) {
            break;
        }
        if depth == 2 {
            return bad(Reason::VlanTooDeep);
        }
        if f.len() < off + 4 {
            return bad(Reason::VlanTruncated);
        }
        proto = be16(f, off + 2);
        off += 4;
    }
    match proto {
        ETH_P_IP => ipv4(f, off),
        ETH_P_IPV6 => ipv6(f, off),
        _ => Parsed::NonIp,
    }
}

fn ipv4(f: &[u8], off: usize) -> Parsed {
    if f.len() < off + 20 {
        return Parsed::Malformed {
            reason: Reason::Ipv4Truncated,
            addrs: None,
        };
    }
    let h = &f[off..];
    if h[0] >> 4 != 4 {
        return Parsed::Malformed {
            reason: Reason::Ipv4BadVersion,
            addrs: None,
        };
    }
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    let bad = |reason| Parsed::Malformed {
        reason,
        addrs: Some((src, dst)),
    };
    let hlen = usize::from(h[0] & 0x0f) * 4;
    if hlen < 20 {
        return bad(Reason::Ipv4BadIhl);
    }
    if off + hlen > f.len() {
        return bad(Reason::Ipv4OptionsTruncated);
    }
    let total = usize::from(be16(h, 2));
    if total < hlen || off + total > f.len() {
        return bad(Reason::Ipv4BadTotalLength);
    }
    let mut pkt = Packet::new(src, dst, h[9]);
    pkt.frag_id = u32::from(be16(h, 4));
    let frags = be16(h, 6);
    let frag_offset = frags & 0x1fff;
    if frag_offset != 0 {
        pkt.fragment = Fragment::Later;
        if pkt.proto == 6 && frag_offset == 1 {
            return bad(Reason::FragmentOverlap);
        }
        return Parsed::Ip(pkt);
    }
    if frags & 0x2000 != 0 {
        pkt.fragment = Fragment::First;
    }
    l4(f, off + hlen, total - hlen, pkt, 4)
}

fn ipv6(f: &[u8], off: usize) -> Parsed {
    if f.len() < off + 40 {
        return Parsed::Malformed {
            reason: Reason::Ipv6Truncated,
            addrs: None,
        };
    }
    let h = &f[off..];
    if h[0] >> 4 != 6 {
        return Parsed::Malformed {
            reason: Reason::Ipv6BadVersion,
            addrs: None,
        };
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[8..24]);
    let src = IpAddr::V6(Ipv6Addr::from(a));
    a.copy_from_slice(&h[24..40]);
    let dst = IpAddr::V6(Ipv6Addr::from(a));
    let bad = |reason| Parsed::Malformed {
        reason,
        addrs: Some((src, dst)),
    };
    let payload = usize::from(be16(h, 4));
    let mut off = off + 40;
    if off + payload > f.len() {
        return bad(Reason::Ipv6BadPayloadLength);
    }
    let ip_end = off + payload;
    let mut pkt = Packet::new(src, dst, 0);
    let mut next = h[6];
    let tiny = |pkt: &Packet, r| {
        if pkt.fragment == Fragment::First {
            Reason::FragmentTiny
        } else {
            r
        }
    };
    let mut walked = 0;
    while walked < MAX_EXT_HEADERS {
        let len = match next {
            0 | 43 | 60 | 51 => {
                if next == 0 && walked != 0 {
                    return bad(Reason::Ipv6HopByHopNotFirst);
                }
                if f.len() < off + 2 {
                    return bad(Reason::Ipv6ExtTruncated);
                }
                let this = next;
                next = f[off];
                if this == 51 {
                    (usize::from(f[off + 1]) + 2) * 4
                } else {
                    (usize::from(f[off + 1]) + 1) * 8
                }
            }
            44 => {
                if f.len() < off + 8 {
                    return bad(Reason::Ipv6ExtTruncated);
                }
                next = f[off];
                pkt.frag_id = u32::from_be_bytes([f[off + 4], f[off + 5], f[off + 6], f[off + 7]]);
                let field = be16(f, off + 2);
                let frag_offset = field >> 3;
                if frag_offset != 0 {
                    pkt.fragment = Fragment::Later;
                    pkt.proto = next;
                    if next == 6 && frag_offset == 1 {
                        return bad(Reason::FragmentOverlap);
                    }
                    return Parsed::Ip(pkt);
                }
                if field & 1 != 0 {
                    pkt.fragment = Fragment::First;
                }
                8
            }
            135 | 139 | 140 | 253 | 254 => return bad(Reason::Ipv6UnsupportedExtHeader),
            _ => break,
        };
        off += len;
        if off > ip_end {
            return bad(tiny(&pkt, Reason::Ipv6ExtTruncated));
        }
        if off > MAX_L4_OFFSET {
            return bad(Reason::Ipv6TooManyExtHeaders);
        }
        walked += 1;
    }
    if matches!(next, 0 | 43 | 60 | 51 | 44) {
        return bad(Reason::Ipv6TooManyExtHeaders);
    }
    pkt.proto = next;
    l4(f, off, ip_end - off, pkt, 6)
}

fn l4(f: &[u8], off: usize, avail: usize, mut pkt: Packet, family: u8) -> Parsed {
    let addrs = Some((pkt.src, pkt.dst));
    let bad = |reason| Parsed::Malformed { reason, addrs };
    let tiny = |r| {
        if pkt.fragment == Fragment::First {
            Reason::FragmentTiny
        } else {
            r
        }
    };
    if off > MAX_L4_OFFSET {
        return bad(Reason::Ipv6TooManyExtHeaders);
    }
    let have = |n: usize| avail >= n && f.len() >= off + n;
    match pkt.proto {
        6 => {
            if !have(20) {
                return bad(tiny(Reason::TcpTruncated));
            }
            let hlen = usize::from(f[off + 12] >> 4) * 4;
            if hlen < 20 {
                return bad(Reason::TcpBadDataOffset);
            }
            if hlen > avail {
                return bad(tiny(Reason::TcpTruncated));
            }
            pkt.sport = be16(f, off);
            pkt.dport = be16(f, off + 2);
        }
        17 => {
            if !have(8) {
                return bad(tiny(Reason::UdpTruncated));
            }
            let len = usize::from(be16(f, off + 4));
            if len < 8 || (pkt.fragment == Fragment::None && len > avail) {
                return bad(Reason::UdpBadLength);
            }
            pkt.sport = be16(f, off);
            pkt.dport = be16(f, off + 2);
        }
        1 if family == 4 => {
            if !have(8) {
                return bad(tiny(Reason::IcmpTruncated));
            }
            pkt.icmp_type = f[off];
            pkt.icmp_id = be16(f, off + 4);
        }
        58 if family == 6 => {
            if !have(8) {
                return bad(tiny(Reason::Icmpv6Truncated));
            }
            pkt.icmp_type = f[off];
            pkt.icmp_id = be16(f, off + 4);
        }
        _ => {}
    }
    Parsed::Ip(pkt)
}
