//! Frames for tests and the demo, built with etherparse. Malformed shapes start from a
//! well-formed frame and break exactly one thing, at a named offset.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpAuthHeader, IpFragOffset, IpHeaders,
    IpNumber, Ipv6FragmentHeader, Ipv6RawExtHeader, PacketBuilder, PacketBuilderStep,
    SingleVlanHeader, VlanId,
};

pub const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;

/// The transport part of a frame.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Udp { sport: u16, dport: u16 },
    Tcp { sport: u16, dport: u16 },
    IcmpEcho,
}

/// IPv4 frame with `vlans` tags (0, 1 or 2; etherparse builds no more).
pub fn v4_tagged(vlans: &[u16], src: Ipv4Addr, dst: Ipv4Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_SERVER);
    let vid = |v: u16| VlanId::try_new(v).expect("vlan id < 4096");
    let ip = match vlans {
        [] => eth.ipv4(src.octets(), dst.octets(), 64),
        [a] => eth
            .single_vlan(vid(*a))
            .ipv4(src.octets(), dst.octets(), 64),
        [a, b] => eth
            .double_vlan(vid(*a), vid(*b))
            .ipv4(src.octets(), dst.octets(), 64),
        _ => panic!("use push_vlan for more than two tags"),
    };
    finish(ip, l4, payload, false)
}

pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    v4_tagged(&[], src, dst, l4, payload)
}

pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(MAC_CLIENT, MAC_SERVER).ipv6(src.octets(), dst.octets(), 64);
    finish(ip, l4, payload, true)
}

/// Writes the transport part (echo request of the right ICMP flavour) and the payload.
fn finish(ip: PacketBuilderStep<IpHeaders>, l4: L4, payload: &[u8], v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    match l4 {
        L4::Udp { sport, dport } => ip.udp(sport, dport).write(&mut out, payload),
        L4::Tcp { sport, dport } => ip
            .tcp(sport, dport, 1, 65_535)
            .syn()
            .write(&mut out, payload),
        L4::IcmpEcho if v6 => ip.icmpv6_echo_request(7, 1).write(&mut out, payload),
        L4::IcmpEcho => ip.icmpv4_echo_request(7, 1).write(&mut out, payload),
    }
    .expect("build frame");
    out
}

/// Inserts one more 802.1Q tag right after the MAC addresses.
pub fn push_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let outer_type = EtherType(u16::from_be_bytes([frame[12], frame[13]]));
    let tag = SingleVlanHeader {
        pcp: etherparse::VlanPcp::ZERO,
        drop_eligible_indicator: false,
        vlan_id: VlanId::try_new(vid).expect("vlan id"),
        ether_type: outer_type,
    };
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&EtherType::VLAN_TAGGED_FRAME.0.to_be_bytes());
    out.extend_from_slice(&tag.to_bytes());
    out.extend_from_slice(&frame[14..]);
    out
}

/// An ARP request (a non-IP frame).
pub fn arp(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_CLIENT,
        &sender.octets(),
        &[0; 6],
        &target.octets(),
    )
    .expect("arp packet");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .expect("build arp");
    out
}

/// An IPv6 extension header to splice in front of the transport header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    Auth,
    /// Fragment header: offset in 8-byte units, more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// A header the datapath cannot walk (its protocol number), 8 bytes long.
    Other(u8),
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Ext::HopByHop => 0,
            Ext::Routing => 43,
            Ext::Fragment { .. } => 44,
            Ext::Auth => 51,
            Ext::DestOpts => 60,
            Ext::Other(n) => n,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        let next = IpNumber(next);
        match self {
            // Routing type 0 style payload; contents do not matter to the walk, length does.
            Ext::HopByHop | Ext::Routing | Ext::DestOpts | Ext::Other(_) => {
                Ipv6RawExtHeader::new_raw(next, &[0u8; 14])
                    .expect("ext header")
                    .to_bytes()
                    .to_vec()
            }
            Ext::Auth => IpAuthHeader::new(next, 0x1234, 1, &[0u8; 12])
                .expect("auth header")
                .to_bytes()
                .to_vec(),
            Ext::Fragment { offset, more } => Ipv6FragmentHeader::new(
                next,
                IpFragOffset::try_new(offset).expect("fragment offset"),
                more,
                0xbeef,
            )
            .to_bytes()
            .to_vec(),
        }
    }
}

/// The IPv6 frame `frame` (no VLAN tags) with `exts` between the IPv6 header and its payload.
pub fn with_ipv6_exts(frame: &[u8], exts: &[Ext]) -> Vec<u8> {
    let ip = ETH_LEN;
    let first_payload = ip + IPV6_LEN;
    let transport = frame[ip + 6];
    let mut chain = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(transport, |n| n.number());
        chain.extend(e.bytes(next));
    }
    let mut out = frame[..first_payload].to_vec();
    if let Some(first) = exts.first() {
        out[ip + 6] = first.number();
    }
    out.extend_from_slice(&chain);
    out.extend_from_slice(&frame[first_payload..]);
    let payload_len = u16::try_from(out.len() - first_payload).expect("payload fits");
    out[ip + 4..ip + 6].copy_from_slice(&payload_len.to_be_bytes());
    out
}

/// Sets the IPv4 fragment fields (offset in 8-byte units) and fixes the header checksum.
pub fn set_ipv4_fragment(frame: &mut [u8], offset: u16, more: bool) {
    let ip = ETH_LEN;
    let field = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
    frame[ip + 6..ip + 8].copy_from_slice(&field.to_be_bytes());
    fix_ipv4_checksum(frame);
}

/// Recomputes the IPv4 header checksum (RFC 1071) of an untagged frame.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ip = ETH_LEN;
    let hlen = usize::from(frame[ip] & 0x0f) * 4;
    frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for chunk in frame[ip..(ip + hlen).min(frame.len())].chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[expect(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let check = !(sum as u16);
    frame[ip + 10..ip + 12].copy_from_slice(&check.to_be_bytes());
}

/// Adds IPv4 options (`words` 4-byte NOP words) to an untagged IPv4 frame, fixing IHL, total
/// length and the checksum.
pub fn with_ipv4_options(frame: &[u8], words: u8) -> Vec<u8> {
    let ip = ETH_LEN;
    let mut out = frame[..ip + IPV4_LEN].to_vec();
    out.extend(std::iter::repeat_n(1u8, usize::from(words) * 4));
    out.extend_from_slice(&frame[ip + IPV4_LEN..]);
    out[ip] = 0x40 | (5 + words);
    let total = u16::try_from(out.len() - ip).expect("fits");
    out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut out);
    out
}

/// Cuts an untagged IPv4 frame to `ip_len` bytes of IP packet, fixing total length and checksum.
pub fn cut_v4(mut f: Vec<u8>, ip_len: usize) -> Vec<u8> {
    f.truncate(ETH_LEN + ip_len);
    let total = u16::try_from(ip_len).expect("fits");
    f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut f);
    f
}

/// Cuts an untagged IPv6 frame to `payload` bytes after the fixed header, fixing payload length.
pub fn cut_v6(mut f: Vec<u8>, payload: usize) -> Vec<u8> {
    f.truncate(ETH_LEN + IPV6_LEN + payload);
    let len = u16::try_from(payload).expect("fits");
    f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&len.to_be_bytes());
    f
}

/// What an ICMP error quotes of `frame` (an untagged frame): its IP header and the first 8
/// bytes after it, as RFC 792 asks (`ICMPv6` may quote more; this quotes the same).
fn quote(frame: &[u8], ip_header_len: usize) -> &[u8] {
    &frame[ETH_LEN..ETH_LEN + ip_header_len + 8]
}

/// An `ICMPv4` "fragmentation needed" (destination unreachable, code 4) from `from` to `to`,
/// quoting `about` (an untagged IPv4 frame without options, as it was sent).
pub fn icmp4_frag_needed(from: Ipv4Addr, to: Ipv4Addr, mtu: u16, about: &[u8]) -> Vec<u8> {
    icmp4_error(
        from,
        to,
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ),
        about,
    )
}

/// An `ICMPv4` "port unreachable" from `from` to `to`, quoting `about`.
pub fn icmp4_port_unreachable(from: Ipv4Addr, to: Ipv4Addr, about: &[u8]) -> Vec<u8> {
    icmp4_error(
        from,
        to,
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ),
        about,
    )
}

fn icmp4_error(
    from: Ipv4Addr,
    to: Ipv4Addr,
    icmp: etherparse::Icmpv4Type,
    about: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_SERVER)
        .ipv4(from.octets(), to.octets(), 64)
        .icmpv4(icmp)
        .write(&mut out, quote(about, IPV4_LEN))
        .expect("build icmp error");
    out
}

/// An `ICMPv6` "packet too big" from `from` to `to`, quoting `about` (an untagged IPv6 frame).
pub fn icmp6_too_big(from: Ipv6Addr, to: Ipv6Addr, mtu: u32, about: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_SERVER)
        .ipv6(from.octets(), to.octets(), 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu })
        .write(&mut out, quote(about, IPV6_LEN))
        .expect("build icmpv6 error");
    out
}

/// The later fragment (at `offset` 8-byte units, the last one) of the datagram whose first
/// fragment is `first`, an IPv6 frame whose first extension header is the Fragment header
/// (as `with_ipv6_exts` builds it): the same Fragment header fields (next header,
/// identification), 16 bytes of payload.
pub fn ipv6_later_fragment(first: &[u8], offset: u16) -> Vec<u8> {
    let frag = ETH_LEN + IPV6_LEN;
    assert_eq!(
        first[ETH_LEN + 6],
        44,
        "the first header must be the Fragment header"
    );
    let mut out = first[..frag + 8].to_vec();
    out[frag + 2..frag + 4].copy_from_slice(&(offset << 3).to_be_bytes());
    out.extend_from_slice(&[0x5a; 16]);
    let payload_len = u16::try_from(out.len() - frag).expect("payload fits");
    out[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&payload_len.to_be_bytes());
    out
}
