//! What packets look like on the wire: the Ethertypes, IP protocol numbers, header lengths and
//! ICMP types the datapath parses by, written once for the kernel, the agent and the bench.
//!
//! Values are the IANA and IEEE registries' and the RFCs'; names follow Linux's uapi headers
//! (`if_ether.h`, `in.h`, `in6.h`) where they have one. Lengths are in bytes, as `usize`
//! because they are offsets into a frame.
//!
//! Not for the reference evaluator (`boundary-agent/src/reference`): it is the oracle the
//! datapath is checked against, and spells its own numbers from the RFCs so that a wrong one
//! here cannot make both agree.

// --- Ethernet ------------------------------------------------------------------------------------

/// Ethernet header: destination and source MAC, then the Ethertype (IEEE 802.3, RFC 894).
pub const ETH_HLEN: usize = 14;
/// An 802.1Q (or 802.1ad) tag: the tag control information, then the next Ethertype.
pub const VLAN_HLEN: usize = 4;

/// Ethertype of IPv4 (RFC 894).
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of IPv6 (RFC 2464).
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Ethertype of an 802.1Q VLAN tag (the customer tag, the inner one when two are stacked).
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethertype of an 802.1ad tag (the service tag of Q-in-Q, the outer one).
pub const ETH_P_8021AD: u16 = 0x88a8;

// --- IP protocol numbers (IANA "Assigned Internet Protocol Numbers") -----------------------------

/// IPv6 Hop-by-Hop Options header (RFC 8200 4.3); only ever directly after the IPv6 header.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// ICMP for IPv4 (RFC 792).
pub const IPPROTO_ICMP: u8 = 1;
/// TCP (RFC 9293).
pub const IPPROTO_TCP: u8 = 6;
/// UDP (RFC 768).
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 Routing header (RFC 8200 4.4).
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 Fragment header (RFC 8200 4.5).
pub const IPPROTO_FRAGMENT: u8 = 44;
/// Encapsulating Security Payload (RFC 4303). An extension header for RFC 8200, but what
/// follows it is encrypted: a parser stops at it and sees it as the transport protocol.
pub const IPPROTO_ESP: u8 = 50;
/// Authentication Header (RFC 4302); its length is counted unlike the others' (see [`ah_len`]).
pub const IPPROTO_AH: u8 = 51;
/// ICMP for IPv6 (RFC 4443).
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 No Next Header (RFC 8200 4.7): nothing follows.
pub const IPPROTO_NONE: u8 = 59;
/// IPv6 Destination Options header (RFC 8200 4.6).
pub const IPPROTO_DSTOPTS: u8 = 60;
/// SCTP (RFC 9260): ports at the same offsets as TCP and UDP.
pub const IPPROTO_SCTP: u8 = 132;
/// Mobility header (RFC 6275): an IPv6 extension header.
pub const IPPROTO_MH: u8 = 135;
/// Host Identity Protocol (RFC 7401): an IPv6 extension header.
pub const IPPROTO_HIP: u8 = 139;
/// Shim6 (RFC 5533): an IPv6 extension header.
pub const IPPROTO_SHIM6: u8 = 140;
/// Reserved for experimentation and testing (RFC 3692, RFC 4727); IPv6 extension headers.
pub const IPPROTO_EXPERIMENT1: u8 = 253;
/// See [`IPPROTO_EXPERIMENT1`].
pub const IPPROTO_EXPERIMENT2: u8 = 254;

// --- IPv4 (RFC 791) ------------------------------------------------------------------------------

/// The version field (the high nibble of the first byte) of an IPv4 header.
pub const IPV4_VERSION: u8 = 4;
/// An IPv4 header without options (IHL 5).
pub const IPV4_MIN_HLEN: usize = 20;
/// An IPv4 header with the most options IHL can say (IHL 15).
pub const IPV4_MAX_HLEN: usize = 60;
/// The More Fragments flag in the flags/fragment offset field.
pub const IPV4_MF: u16 = 0x2000;
/// The fragment offset (in 8-byte units) in the flags/fragment offset field.
pub const IPV4_FRAG_OFFSET: u16 = 0x1fff;

/// The length of an IPv4 header from its first byte (version and IHL, in 32-bit words).
#[inline]
pub const fn ipv4_hlen(version_ihl: u8) -> usize {
    (version_ihl & 0x0f) as usize * 4
}

// --- IPv6 (RFC 8200) -----------------------------------------------------------------------------

/// The version field (the high nibble of the first byte) of an IPv6 header.
pub const IPV6_VERSION: u8 = 6;
/// The fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
/// The Fragment header (RFC 8200 4.5): next header, reserved, offset and flags,
/// identification.
pub const IPV6_FRAG_HLEN: usize = 8;
/// Shifts the Fragment header's offset/flags field down to the fragment offset (its top 13
/// bits, in 8-byte units).
pub const IPV6_FRAG_OFFSET_SHIFT: u32 = 3;
/// The M (more fragments) flag in the Fragment header's offset/flags field.
pub const IPV6_FRAG_MF: u16 = 0x0001;

/// The length of an extension header from its Hdr Ext Len field: 8-byte units, not counting
/// the first 8 bytes (RFC 8200 4.3-4.6). Not for AH (see [`ah_len`]).
#[inline]
pub const fn ipv6_ext_len(hdr_ext_len: u8) -> usize {
    (hdr_ext_len as usize + 1) * 8
}

/// The length of an Authentication Header from its Payload Len field: 4-byte units, minus 2
/// (RFC 4302 2.2).
#[inline]
pub const fn ah_len(payload_len: u8) -> usize {
    (payload_len as usize + 2) * 4
}

/// Option type of the Jumbo Payload option, in a hop-by-hop header (RFC 2675 2).
pub const IPV6_TLV_JUMBO: u8 = 0xc2;
/// The Jumbo Payload option's Opt Data Len: a 32-bit payload length.
pub const IPV6_JUMBO_OPT_LEN: u8 = 4;
/// The hop-by-hop header Linux adds to an IPv6 BIG TCP super-packet to carry the Jumbo
/// Payload option (`struct hop_jumbo_hdr`, Hdr Ext Len 0), and removes when it segments it.
pub const IPV6_JUMBO_HBH_LEN: u8 = 8;

// --- Transport headers ---------------------------------------------------------------------------

/// A TCP header without options (data offset 5; RFC 9293 3.1).
pub const TCP_MIN_HLEN: usize = 20;
/// A TCP header with the most options the data offset can say (15).
pub const TCP_MAX_HLEN: usize = 60;
/// The byte of the TCP header whose high nibble is the data offset (in 32-bit words).
pub const TCP_DOFF_BYTE: usize = 12;

/// The length of a TCP header from its byte [`TCP_DOFF_BYTE`].
#[inline]
pub const fn tcp_hlen(doff_byte: u8) -> usize {
    (doff_byte >> 4) as usize * 4
}

/// The UDP header (RFC 768); also the least its length field may say.
pub const UDP_HLEN: usize = 8;

// --- ICMP (RFC 792) ------------------------------------------------------------------------------

/// The ICMP header as the datapath reads it: type, code, checksum, and the 4 bytes every
/// message it reads has next (echo identifier and sequence number, or the unused or pointer
/// word before an error's quote).
pub const ICMP_HLEN: usize = 8;
/// The transport bytes an ICMP error quotes after the offending packet's IP header: "the
/// first 64 bits of the original datagram's data" (RFC 792), enough for its ports.
pub const ICMP_QUOTE_L4_LEN: usize = 8;

/// Echo reply (RFC 792).
pub const ICMP_ECHO_REPLY: u8 = 0;
/// Destination unreachable (RFC 792; codes in RFC 1122 and RFC 1812).
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Redirect (RFC 792).
pub const ICMP_REDIRECT: u8 = 5;
/// Echo request (RFC 792).
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// Time exceeded (RFC 792).
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Parameter problem (RFC 792).
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// The ICMP errors about a flow, whose quote the datapath reads: destination unreachable,
/// time exceeded, parameter problem. (Source quench is deprecated, RFC 6633; a redirect is
/// advice about a route, not an error about the packet.)
#[inline]
pub const fn icmp_error_quotes_flow(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}

// --- ICMPv6 (RFC 4443) ---------------------------------------------------------------------------

/// The ICMPv6 header as the datapath reads it: as [`ICMP_HLEN`] (RFC 4443 2.1, 3, 4).
pub const ICMPV6_HLEN: usize = 8;

/// Destination unreachable (RFC 4443 3.1).
pub const ICMPV6_DEST_UNREACH: u8 = 1;
/// Packet too big (RFC 4443 3.2): path MTU discovery (RFC 8201) depends on it.
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// Time exceeded (RFC 4443 3.3).
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
/// Parameter problem (RFC 4443 3.4).
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
/// Echo request (RFC 4443 4.1).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// Echo reply (RFC 4443 4.2).
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// The ICMPv6 errors about a flow, whose quote the datapath reads: the four RFC 4443
/// defines, destination unreachable through parameter problem.
#[inline]
pub const fn icmpv6_error_quotes_flow(icmp_type: u8) -> bool {
    matches!(icmp_type, ICMPV6_DEST_UNREACH..=ICMPV6_PARAMETER_PROBLEM)
}

/// Router solicitation (RFC 4861 4.1). The `ND_*` names are RFC 3542's.
pub const ND_ROUTER_SOLICIT: u8 = 133;
/// Router advertisement (RFC 4861 4.2).
pub const ND_ROUTER_ADVERT: u8 = 134;
/// Neighbor solicitation (RFC 4861 4.3).
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor advertisement (RFC 4861 4.4).
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
/// Redirect (RFC 4861 4.5).
pub const ND_REDIRECT: u8 = 137;

/// Whether an ICMPv6 type is one of Neighbor Discovery's five (RFC 4861 4), without which
/// IPv6 stops working: router and neighbor solicitation and advertisement, redirect.
#[inline]
pub const fn is_neighbor_discovery(icmpv6_type: u8) -> bool {
    matches!(icmpv6_type, ND_ROUTER_SOLICIT..=ND_REDIRECT)
}

const _: () = {
    assert!(ipv4_hlen(0x45) == IPV4_MIN_HLEN && ipv4_hlen(0x4f) == IPV4_MAX_HLEN);
    assert!(tcp_hlen(0x50) == TCP_MIN_HLEN && tcp_hlen(0xf0) == TCP_MAX_HLEN);
    assert!(IPV4_FRAG_OFFSET & IPV4_MF == 0);
    assert!(ipv6_ext_len(0) == IPV6_FRAG_HLEN);
    assert!(ipv6_ext_len(0) == IPV6_JUMBO_HBH_LEN as usize);
};
