//! IPv4 and IPv6 headers, fragments and the IPv6 extension-header chain.

use std::net::{IpAddr, Ipv4Addr};

use boundary_common::Reason;
use etherparse::{
    IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice, err,
};

use super::{
    Addrs, Fragment, MAX_EXT_HEADERS, Packet, Parsed, TRANSPORT_WITHIN, bad, cut_short,
    transport::transport,
};

pub(super) fn v4_addrs(b: &[u8]) -> (IpAddr, IpAddr) {
    let a = |at: usize| IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]));
    (a(12), a(16))
}

/// IPv4 (RFC 791).
pub(super) fn ipv4(frame: &[u8], at: usize) -> Parsed {
    let bytes = &frame[at..];
    let header = match Ipv4HeaderSlice::from_slice(bytes) {
        Ok(h) => h,
        Err(err::ipv4::HeaderSliceError::Len(e)) if e.required_len <= 20 => {
            return bad(Reason::Ipv4Truncated, None);
        }
        Err(err::ipv4::HeaderSliceError::Content(err::ipv4::HeaderError::UnexpectedVersion {
            ..
        })) => return bad(Reason::Ipv4BadVersion, None),
        // From here on the fixed header is there: its addresses say whose packet it is.
        Err(err::ipv4::HeaderSliceError::Content(
            err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { .. },
        )) => return bad(Reason::Ipv4BadIhl, Some(v4_addrs(bytes))),
        Err(err::ipv4::HeaderSliceError::Len(_)) => {
            return bad(Reason::Ipv4OptionsTruncated, Some(v4_addrs(bytes)));
        }
    };
    let (src, dst) = (
        IpAddr::V4(header.source_addr()),
        IpAddr::V4(header.destination_addr()),
    );
    let addrs = Some((src, dst));
    let header_len = header.slice().len();
    // Total length covers the header and lies within the frame; bytes after it (Ethernet
    // padding) are not the packet's.
    let total = usize::from(header.total_len());
    if total < header_len || total > bytes.len() {
        return bad(Reason::Ipv4BadTotalLength, addrs);
    }
    let proto = header.protocol();
    let mut pkt = Packet::new(src, dst, proto.0);
    pkt.frag_id = u32::from(header.identification());
    let offset = header.fragments_offset().value();
    if offset != 0 {
        pkt.fragment = Fragment::Later;
        return later_fragment(pkt, offset, proto, addrs);
    }
    if header.more_fragments() {
        pkt.fragment = Fragment::First;
    }
    transport(pkt, &bytes[header_len..total], at + header_len)
}

/// A non-first fragment: nothing after its IP headers is read. One at offset 8 bytes that
/// would carry TCP bytes 8-15 (flags included) is refused (RFC 1858 "overlapping fragment").
pub(super) fn later_fragment(pkt: Packet, offset: u16, next: IpNumber, addrs: Addrs) -> Parsed {
    if next == IpNumber::TCP && offset == 1 {
        return bad(Reason::FragmentOverlap, addrs);
    }
    Parsed::Ip(pkt)
}

/// IPv6 (RFC 8200) and its extension-header chain.
pub(super) fn ipv6(frame: &[u8], at: usize) -> Parsed {
    let bytes = &frame[at..];
    let header = match Ipv6HeaderSlice::from_slice(bytes) {
        Ok(h) => h,
        Err(err::ipv6::HeaderSliceError::Len(_)) => return bad(Reason::Ipv6Truncated, None),
        Err(err::ipv6::HeaderSliceError::Content(_)) => {
            return bad(Reason::Ipv6BadVersion, None);
        }
    };
    let (src, dst) = (
        IpAddr::V6(header.source_addr()),
        IpAddr::V6(header.destination_addr()),
    );
    let addrs = Some((src, dst));
    let fixed = header.slice().len();
    let end = fixed + usize::from(header.payload_length());
    // A payload length of 0 with a Jumbo Payload option (RFC 2675) cannot describe a frame the
    // datapath sees (at most a page): it is taken at face value, like any other.
    if end > bytes.len() {
        return bad(Reason::Ipv6BadPayloadLength, addrs);
    }
    let mut pkt = Packet::new(src, dst, 0);
    let mut next = header.next_header();
    let mut rest = &bytes[fixed..end];
    let mut walked = 0;
    // RFC 8200 4.1: extension headers in any order and number, hop-by-hop only first.
    // etherparse's `Ipv6Extensions` stops at a header out of the recommended order or seen
    // twice, so the chain is walked here one header at a time.
    while next.is_ipv6_ext_header_value() && next != IpNumber::ENCAPSULATING_SECURITY_PAYLOAD {
        if walked == MAX_EXT_HEADERS {
            return bad(Reason::Ipv6TooManyExtHeaders, addrs);
        }
        let len = match next {
            IpNumber::IPV6_HEADER_HOP_BY_HOP if walked > 0 => {
                return bad(Reason::Ipv6HopByHopNotFirst, addrs);
            }
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => match Ipv6RawExtHeaderSlice::from_slice(rest) {
                Ok(h) => {
                    next = h.next_header();
                    h.slice().len()
                }
                Err(_) => return bad(cut_short(pkt.fragment, Reason::Ipv6ExtTruncated), addrs),
            },
            IpNumber::AUTHENTICATION_HEADER => match auth_header(rest) {
                Some((n, len)) => {
                    next = n;
                    len
                }
                None => return bad(cut_short(pkt.fragment, Reason::Ipv6ExtTruncated), addrs),
            },
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                let Ok(h) = Ipv6FragmentHeaderSlice::from_slice(rest) else {
                    return bad(cut_short(pkt.fragment, Reason::Ipv6ExtTruncated), addrs);
                };
                next = h.next_header();
                pkt.frag_id = h.identification();
                pkt.frag_proto = next.0;
                let offset = h.fragment_offset().value();
                if offset != 0 {
                    pkt.fragment = Fragment::Later;
                    pkt.proto = next.0;
                    return later_fragment(pkt, offset, next, addrs);
                }
                if h.more_fragments() {
                    pkt.fragment = Fragment::First;
                }
                h.slice().len()
            }
            // Mobility (RFC 6275), HIP (RFC 7401), shim6 (RFC 5533), experimental (RFC 3692):
            // RFC 6564's uniform format would let etherparse step over the first three, but
            // the datapath does not walk them.
            _ => return bad(Reason::Ipv6UnsupportedExtHeader, addrs),
        };
        rest = &rest[len..];
        walked += 1;
        if end - rest.len() + at > TRANSPORT_WITHIN {
            return bad(Reason::Ipv6TooManyExtHeaders, addrs);
        }
    }
    pkt.proto = next.0;
    if pkt.fragment != Fragment::First {
        pkt.frag_proto = pkt.proto;
    }
    transport(pkt, rest, at + end - rest.len())
}

/// An Authentication Header: (next header, length). RFC 4302 2.2 counts its length in 4-byte
/// words minus 2 and makes it at least 3 words, so etherparse refuses a Payload Len of 0
/// (`ZeroPayloadLen`). The datapath, like Linux's `ipv6_skip_exthdr`, steps over such a
/// header as 8 bytes, and so does the reference: the host stack behind it sees the same chain.
pub(super) fn auth_header(rest: &[u8]) -> Option<(IpNumber, usize)> {
    match IpAuthHeaderSlice::from_slice(rest) {
        Ok(h) => Some((h.next_header(), h.slice().len())),
        Err(_) if rest.len() >= 8 && rest[1] == 0 => Some((IpNumber(rest[0]), 8)),
        Err(_) => None,
    }
}
