//! Frame decoding on etherparse, with the datapath's acceptance rules written out where
//! etherparse's own differ. The order of the checks is the precedence rule of the module
//! documentation (`super`): outermost layer first, and within a header the order listed there.

use std::net::{IpAddr, Ipv4Addr};

use boundary_common::Reason;
use etherparse::{
    EtherType, Ethernet2HeaderSlice, Icmpv4Slice, Icmpv6Slice, IpAuthHeaderSlice, IpNumber,
    Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice, Ipv6RawExtHeaderSlice,
    SingleVlanHeaderSlice, TcpHeaderSlice, UdpHeaderSlice, err, icmpv4, icmpv6,
};

/// Stacked VLAN tags the datapath reads (one 802.1ad S-tag and one 802.1Q C-tag).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers the datapath walks.
pub const MAX_EXT_HEADERS: usize = 8;
/// The transport header must start within this many bytes of the frame (the datapath's bound
/// on its extension-header walk).
pub const TRANSPORT_WITHIN: usize = 320;
/// What an ICMP error quotes of the offending packet beyond its IP header (RFC 792, RFC 4443
/// 2.4: at least the first 8 bytes of its payload).
const QUOTED_TRANSPORT: usize = 8;
/// Fixed part of an ICMP or ICMPv6 message (type, code, checksum, 4 bytes of the rest).
const ICMP_HEADER: usize = 8;

/// Where a packet stands in IP fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    None,
    /// Offset 0 with more to come: it carries the transport header.
    First,
    /// Offset above 0: no transport header.
    Later,
}

/// Which ICMP echo message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    Request,
    Reply,
}

/// The packet an ICMP error quotes, as far as it names a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Ports, or the echo identifier in both for ICMP echo.
    pub sport: u16,
    pub dport: u16,
    /// For an ICMP echo quote, which one.
    pub echo: Option<Echo>,
}

/// What the decision reads of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// ICMP type in its own family (ICMP in IPv4, ICMPv6 in IPv6); `None` otherwise.
    pub icmp_type: Option<u8>,
    /// Bytes 4-5 of the ICMP header: the echo identifier.
    pub icmp_id: u16,
    pub fragment: Fragment,
    /// IPv4 identification or the IPv6 Fragment header's identification.
    pub frag_id: u32,
    /// The protocol a datagram's fragments share: the IPv4 protocol, or the Next Header field
    /// of the IPv6 Fragment header (the same in every fragment, RFC 8200 4.5).
    pub frag_proto: u8,
    /// For an ICMP error, the packet it quotes, when the quote reads as one.
    pub quote: Option<Quote>,
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
            icmp_type: None,
            icmp_id: 0,
            fragment: Fragment::None,
            frag_id: 0,
            frag_proto: proto,
            quote: None,
        }
    }
}

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    NonIp,
    Ip(Packet),
    /// Dropped for its shape. `addrs` once the IP header's addresses could be read, so the
    /// frame is counted under its workload.
    Malformed {
        reason: Reason,
        addrs: Option<(IpAddr, IpAddr)>,
    },
}

type Addrs = Option<(IpAddr, IpAddr)>;

fn bad(reason: Reason, addrs: Addrs) -> Parsed {
    Parsed::Malformed { reason, addrs }
}

/// A header cut short: in a first fragment it is a tiny fragment (RFC 7112: the first
/// fragment holds the whole header chain; RFC 1858 for IPv4), elsewhere truncation.
fn cut_short(fragment: Fragment, truncated: Reason) -> Reason {
    if fragment == Fragment::First {
        Reason::FragmentTiny
    } else {
        truncated
    }
}

/// 802.1Q C-tags and 802.1ad S-tags. etherparse also counts `0x9100` (pre-standard `QinQ`) as a
/// VLAN tag; the datapath treats it as a non-IP ethertype.
fn is_vlan_tag(t: EtherType) -> bool {
    t == EtherType::VLAN_TAGGED_FRAME || t == EtherType::PROVIDER_BRIDGING
}

/// Decodes a frame.
pub fn parse(frame: &[u8]) -> Parsed {
    let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else {
        return bad(Reason::EthTruncated, None);
    };
    let mut ether_type = eth.ether_type();
    let mut at = eth.slice().len();
    let mut tags = 0;
    while is_vlan_tag(ether_type) {
        if tags == MAX_VLAN_TAGS {
            return bad(Reason::VlanTooDeep, None);
        }
        let Ok(tag) = SingleVlanHeaderSlice::from_slice(&frame[at..]) else {
            return bad(Reason::VlanTruncated, None);
        };
        ether_type = tag.ether_type();
        at += tag.slice().len();
        tags += 1;
    }
    match ether_type {
        EtherType::IPV4 => ipv4(frame, at),
        EtherType::IPV6 => ipv6(frame, at),
        _ => Parsed::NonIp,
    }
}

fn v4_addrs(b: &[u8]) -> (IpAddr, IpAddr) {
    let a = |at: usize| IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]));
    (a(12), a(16))
}

/// IPv4 (RFC 791).
fn ipv4(frame: &[u8], at: usize) -> Parsed {
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
fn later_fragment(pkt: Packet, offset: u16, next: IpNumber, addrs: Addrs) -> Parsed {
    if next == IpNumber::TCP && offset == 1 {
        return bad(Reason::FragmentOverlap, addrs);
    }
    Parsed::Ip(pkt)
}

/// IPv6 (RFC 8200) and its extension-header chain.
fn ipv6(frame: &[u8], at: usize) -> Parsed {
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
fn auth_header(rest: &[u8]) -> Option<(IpNumber, usize)> {
    match IpAuthHeaderSlice::from_slice(rest) {
        Ok(h) => Some((h.next_header(), h.slice().len())),
        Err(_) if rest.len() >= 8 && rest[1] == 0 => Some((IpNumber(rest[0]), 8)),
        Err(_) => None,
    }
}

/// An ICMP or ICMPv6 header: (type, bytes 4-7, the message body).
fn icmp_header(v6: bool, bytes: &[u8]) -> Option<(u8, [u8; 4], &[u8])> {
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
fn transport(mut pkt: Packet, bytes: &[u8], at: usize) -> Parsed {
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

fn icmp(mut pkt: Packet, bytes: &[u8], addrs: Addrs, truncated: Reason) -> Parsed {
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
fn quote(v6: bool, body: &[u8]) -> Option<Quote> {
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

#[cfg(test)]
mod tests {
    //! The precedence rule on frames with more than one defect.
    use etherparse::PacketBuilder;

    use super::*;

    const ETH: usize = 14;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 1, 2, 7], [10, 9, 0, 1], 64)
            .udp(40_000, 53)
            .write(&mut out, payload)
            .expect("build");
        out
    }

    /// IPv6 with raw bytes after the fixed header; `next` is the first Next Header.
    fn v6_raw(next: u8, after: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(1, 2)
            .write(&mut out, &[])
            .expect("build");
        out.truncate(ETH + 40);
        out[ETH + 6] = next;
        out.extend_from_slice(after);
        let len = u16::try_from(after.len()).expect("fits");
        out[ETH + 4..ETH + 6].copy_from_slice(&len.to_be_bytes());
        out
    }

    fn reason(f: &[u8]) -> Option<Reason> {
        match parse(f) {
            Parsed::Malformed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn the_outer_defect_wins() {
        // IHL 4 and a total length past the frame: the header length is judged first.
        let mut f = udp4(b"");
        f[ETH] = 0x44;
        f[ETH + 2..ETH + 4].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(reason(&f), Some(Reason::Ipv4BadIhl));
        // Too short for an IPv4 header and the wrong version: truncation first.
        let mut f = udp4(b"");
        f[ETH] = 0x65;
        f.truncate(ETH + 19);
        assert_eq!(reason(&f), Some(Reason::Ipv4Truncated));
        // A payload length past the frame hides a misplaced hop-by-hop header.
        let mut f = v6_raw(60, &[0, 0, 0, 0, 0, 0, 0, 0]);
        f[ETH + 4..ETH + 6].copy_from_slice(&[0, 9]);
        assert_eq!(reason(&f), Some(Reason::Ipv6BadPayloadLength));
        // UDP length past the payload, and the frame carries padding: the payload decides.
        let mut f = udp4(b"abcd");
        f[ETH + 20 + 4..ETH + 20 + 6].copy_from_slice(&[0, 13]);
        f.extend_from_slice(&[0; 10]);
        assert_eq!(reason(&f), Some(Reason::UdpBadLength));
    }

    #[test]
    fn cut_short_in_a_first_fragment_is_tiny_but_a_bad_field_is_not() {
        // Fragment (offset 0, more) then 10 bytes of TCP.
        let frag = [6, 0, 0, 1, 0, 0, 0, 9];
        let mut after = frag.to_vec();
        after.extend_from_slice(&[0; 10]);
        assert_eq!(reason(&v6_raw(44, &after)), Some(Reason::FragmentTiny));
        // A whole TCP header with data offset 4.
        let mut after = frag.to_vec();
        let mut tcp = [0u8; 20];
        tcp[12] = 0x40;
        after.extend_from_slice(&tcp);
        assert_eq!(reason(&v6_raw(44, &after)), Some(Reason::TcpBadDataOffset));
    }

    #[test]
    fn the_chain_is_judged_in_order() {
        // Hop-by-hop second, then a mobility header: the first defect in the chain.
        let dest = [0, 0, 0, 0, 0, 0, 0, 0];
        let mut after = dest.to_vec();
        after[0] = 0; // next: hop-by-hop
        after.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            reason(&v6_raw(60, &after)),
            Some(Reason::Ipv6HopByHopNotFirst)
        );
        // Nine destination options: the ninth header is one too many.
        let mut after = Vec::new();
        for i in 0..9 {
            after.extend_from_slice(&[if i == 8 { 17 } else { 60 }, 0, 0, 0, 0, 0, 0, 0]);
        }
        after.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert_eq!(
            reason(&v6_raw(60, &after)),
            Some(Reason::Ipv6TooManyExtHeaders)
        );
        // An AH with Payload Len 0 (below RFC 4302's minimum) is stepped over as 8 bytes.
        let mut after = vec![17, 0, 0, 0, 0, 0, 0, 1];
        after.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert!(matches!(parse(&v6_raw(51, &after)), Parsed::Ip(p) if p.dport == 2));
    }

    #[test]
    fn a_garbled_quote_is_no_quote_not_a_defect() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([192, 0, 2, 1], [10, 9, 0, 1], 64)
            .icmpv4_raw(3, 3, [0; 4])
            .write(&mut out, &[0x45, 0, 0, 40, 0, 0])
            .expect("build");
        match parse(&out) {
            Parsed::Ip(p) => {
                assert_eq!(p.icmp_type, Some(3));
                assert_eq!(p.quote, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
