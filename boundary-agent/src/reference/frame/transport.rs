//! TCP, UDP and ICMP headers, and the quote an ICMP error carries.

use std::net::IpAddr;

use boundary_common::Reason;
use etherparse::{
    Icmpv4Slice, Icmpv6Slice, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice, TcpHeaderSlice,
    UdpHeaderSlice, err, icmpv4, icmpv6,
};

use super::{
    Addrs, Echo, Fragment, ICMP_HEADER, Packet, Parsed, QUOTED_TRANSPORT, Quote, TRANSPORT_WITHIN,
    bad, cut_short,
};

/// An ICMP or ICMPv6 header: (type, bytes 4-7, the message body).
pub(super) fn icmp_header(v6: bool, bytes: &[u8]) -> Option<(u8, [u8; 4], &[u8])> {
    if v6 {
        let m = Icmpv6Slice::from_slice(bytes).ok()?;
        return Some((m.type_u8(), m.bytes5to8(), m.payload()));
    }
    match Icmpv4Slice::from_slice(bytes) {
        Ok(m) => Some((m.type_u8(), m.bytes5to8(), m.payload())),
        // etherparse wants a timestamp message (type 13/14, code 0) to be exactly 20 bytes
        // (RFC 792); the datapath judges ICMP by its 8-byte header and leaves the body to the
        // host.
        Err(_) if bytes.len() >= ICMP_HEADER => Some((
            bytes[0],
            [bytes[4], bytes[5], bytes[6], bytes[7]],
            &bytes[ICMP_HEADER..],
        )),
        Err(_) => None,
    }
}

/// The transport header, in the bytes the IP header says the packet holds (not the frame's).
/// `at` is where it starts in the frame.
pub(super) fn transport(mut pkt: Packet, bytes: &[u8], at: usize) -> Parsed {
    let addrs = Some((pkt.src, pkt.dst));
    if at > TRANSPORT_WITHIN {
        return bad(Reason::Ipv6TooManyExtHeaders, addrs);
    }
    let v6 = pkt.src.is_ipv6();
    match IpNumber(pkt.proto) {
        IpNumber::TCP => match TcpHeaderSlice::from_slice(bytes) {
            Ok(h) => {
                pkt.sport = h.source_port();
                pkt.dport = h.destination_port();
            }
            Err(err::tcp::HeaderSliceError::Content(_)) => {
                return bad(Reason::TcpBadDataOffset, addrs);
            }
            Err(err::tcp::HeaderSliceError::Len(_)) => {
                return bad(cut_short(pkt.fragment, Reason::TcpTruncated), addrs);
            }
        },
        IpNumber::UDP => {
            let Ok(h) = UdpHeaderSlice::from_slice(bytes) else {
                return bad(cut_short(pkt.fragment, Reason::UdpTruncated), addrs);
            };
            // RFC 768: the length covers header and data. A first fragment holds only part of
            // the datagram the length describes, so only its lower bound is checked there. A
            // length shorter than the IP payload is accepted (the rest is padding).
            let len = usize::from(h.length());
            if len < h.slice().len() || (pkt.fragment == Fragment::None && len > bytes.len()) {
                return bad(Reason::UdpBadLength, addrs);
            }
            pkt.sport = h.source_port();
            pkt.dport = h.destination_port();
        }
        // ICMP belongs to IPv4 and ICMPv6 to IPv6; in the other family they are judged on the
        // protocol number alone.
        IpNumber::ICMP if !v6 => return icmp(pkt, bytes, addrs, Reason::IcmpTruncated),
        IpNumber::IPV6_ICMP if v6 => return icmp(pkt, bytes, addrs, Reason::Icmpv6Truncated),
        // GRE, ESP, SCTP, ...: no ports are read; the policy decides on the protocol.
        _ => {}
    }
    Parsed::Ip(pkt)
}

pub(super) fn icmp(mut pkt: Packet, bytes: &[u8], addrs: Addrs, truncated: Reason) -> Parsed {
    let v6 = pkt.src.is_ipv6();
    let Some((icmp_type, rest_of_header, body)) = icmp_header(v6, bytes) else {
        return bad(cut_short(pkt.fragment, truncated), addrs);
    };
    pkt.icmp_type = Some(icmp_type);
    pkt.icmp_id = u16::from_be_bytes([rest_of_header[0], rest_of_header[1]]);
    // A fragmented error is not read for a quote: errors are kept within the minimum MTU
    // (RFC 1812 4.3.2.3, RFC 4443 2.4) and are never fragmented on their way.
    if is_error(v6, icmp_type) && pkt.fragment == Fragment::None {
        pkt.quote = quote(v6, body);
    }
    Parsed::Ip(pkt)
}

/// ICMP errors, which quote the packet they are about: destination unreachable (fragmentation
/// needed included), time exceeded, parameter problem (RFC 792); ICMPv6 adds packet too big
/// (RFC 4443).
pub fn is_error(v6: bool, icmp_type: u8) -> bool {
    if v6 {
        matches!(
            icmp_type,
            icmpv6::TYPE_DST_UNREACH
                | icmpv6::TYPE_PACKET_TOO_BIG
                | icmpv6::TYPE_TIME_EXCEEDED
                | icmpv6::TYPE_PARAMETER_PROBLEM
        )
    } else {
        matches!(
            icmp_type,
            icmpv4::TYPE_DEST_UNREACH | icmpv4::TYPE_TIME_EXCEEDED | icmpv4::TYPE_PARAMETER_PROBLEM
        )
    }
}

/// Echo request and reply types of a family.
pub fn echo_types(v6: bool) -> (u8, u8) {
    if v6 {
        (icmpv6::TYPE_ECHO_REQUEST, icmpv6::TYPE_ECHO_REPLY)
    } else {
        (icmpv4::TYPE_ECHO_REQUEST, icmpv4::TYPE_ECHO_REPLY)
    }
}

/// The quoted packet of an ICMP error: an IP header of the error's own family (IPv4: version
/// 4, IHL at least 5, the whole header present, not a later fragment; IPv6: version 6, its
/// Next Header taken as the transport, no extension headers walked) and the first 8 bytes
/// after it, within the error's IP packet, which must name a flow: TCP or UDP ports, or an
/// ICMP echo identifier. Anything else, or anything cut short, is no quote (never a malformed
/// packet: the error itself is well formed).
pub(super) fn quote(v6: bool, body: &[u8]) -> Option<Quote> {
    let (src, dst, proto, inner) = if v6 {
        let h = Ipv6HeaderSlice::from_slice(body).ok()?;
        (
            IpAddr::V6(h.source_addr()),
            IpAddr::V6(h.destination_addr()),
            h.next_header(),
            &body[h.slice().len()..],
        )
    } else {
        let h = Ipv4HeaderSlice::from_slice(body).ok()?;
        if h.fragments_offset().value() != 0 {
            return None;
        }
        (
            IpAddr::V4(h.source_addr()),
            IpAddr::V4(h.destination_addr()),
            h.protocol(),
            &body[h.slice().len()..],
        )
    };
    let t = inner.get(..QUOTED_TRANSPORT)?;
    let own_icmp = if v6 {
        IpNumber::IPV6_ICMP
    } else {
        IpNumber::ICMP
    };
    let (sport, dport, echo) = if proto == IpNumber::TCP || proto == IpNumber::UDP {
        (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
            None,
        )
    } else if proto == own_icmp {
        let (request, reply) = echo_types(v6);
        let echo = match t[0] {
            x if x == request => Echo::Request,
            x if x == reply => Echo::Reply,
            _ => return None,
        };
        let id = u16::from_be_bytes([t[4], t[5]]);
        (id, id, Some(echo))
    } else {
        return None;
    };
    Some(Quote {
        src,
        dst,
        proto: proto.0,
        sport,
        dport,
        echo,
    })
}
