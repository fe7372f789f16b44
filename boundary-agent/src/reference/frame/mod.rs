//! Frame decoding on etherparse, with the datapath's acceptance rules written out where
//! etherparse's own differ. The order of the checks is the precedence rule of the module
//! documentation (`super`): outermost layer first, and within a header the order listed there.

mod ip;
mod transport;

pub use transport::{echo_types, is_error};

use std::net::IpAddr;

use boundary_common::Reason;
use etherparse::{EtherType, Ethernet2HeaderSlice, SingleVlanHeaderSlice};

/// Stacked VLAN tags the datapath reads (one 802.1ad S-tag and one 802.1Q C-tag).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers the datapath walks.
pub const MAX_EXT_HEADERS: usize = 8;
/// The transport header must start within this many bytes of the frame (the datapath's bound
/// on its extension-header walk).
pub const TRANSPORT_WITHIN: usize = 320;
/// What an ICMP error quotes of the offending packet beyond its IP header (RFC 792, RFC 4443
/// 2.4: at least the first 8 bytes of its payload).
pub(super) const QUOTED_TRANSPORT: usize = 8;
/// Fixed part of an ICMP or ICMPv6 message (type, code, checksum, 4 bytes of the rest).
pub(super) const ICMP_HEADER: usize = 8;

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
    /// The frame's length, what a limit in bytes counts (set by `decide_frame`; 0 unknown).
    pub wire_len: u64,
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
            wire_len: 0,
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

pub(super) type Addrs = Option<(IpAddr, IpAddr)>;

pub(super) fn bad(reason: Reason, addrs: Addrs) -> Parsed {
    Parsed::Malformed { reason, addrs }
}

/// A header cut short: in a first fragment it is a tiny fragment (RFC 7112: the first
/// fragment holds the whole header chain; RFC 1858 for IPv4), elsewhere truncation.
pub(super) fn cut_short(fragment: Fragment, truncated: Reason) -> Reason {
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
        EtherType::IPV4 => ip::ipv4(frame, at),
        EtherType::IPV6 => ip::ipv6(frame, at),
        _ => Parsed::NonIp,
    }
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
