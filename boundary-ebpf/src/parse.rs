//! Bounds-checked header parsing: Ethernet, up to two VLAN tags, IPv4 (options), IPv6 (a
//! bounded extension-header walk), TCP, UDP, ICMP, ICMPv6.
//!
//! Every access goes through [`ptr_at`], which compares against `data_end` right before the
//! pointer is handed out: that comparison is what the verifier needs to accept the load. Every
//! malformed or unsupported shape returns its own [`Reason`]; nothing is passed because parsing
//! gave up.

use core::mem::size_of;

use boundary_common::{
    Reason,
    maps::{FAMILY_IPV4, FAMILY_IPV6},
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ICMP_ECHO_REPLY,
        ICMP_ECHO_REQUEST, ICMP_HLEN, ICMP_QUOTE_L4_LEN, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
        ICMPV6_HLEN, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_EXPERIMENT1, IPPROTO_EXPERIMENT2,
        IPPROTO_FRAGMENT, IPPROTO_HIP, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_MH,
        IPPROTO_ROUTING, IPPROTO_SHIM6, IPPROTO_TCP, IPPROTO_UDP, IPV4_FRAG_OFFSET, IPV4_MF,
        IPV4_MIN_HLEN, IPV4_VERSION, IPV6_FRAG_HLEN, IPV6_FRAG_MF, IPV6_FRAG_OFFSET_SHIFT,
        IPV6_HLEN, IPV6_JUMBO_HBH_LEN, IPV6_JUMBO_OPT_LEN, IPV6_TLV_JUMBO, IPV6_VERSION,
        TCP_DOFF_BYTE, TCP_MIN_HLEN, UDP_HLEN, VLAN_HLEN, ah_len, icmp_error_quotes_flow,
        icmpv6_error_quotes_flow, ipv4_hlen, ipv6_ext_len, tcp_hlen,
    },
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
};

use crate::packet::{Fragment, Packet, QUOTE_ECHO_REPLY, QUOTE_ECHO_REQUEST, QUOTE_PORTS};

// network-types' structs are read in place: they must be the headers `wire` measures.
const _: () = assert!(
    size_of::<EthHdr>() == ETH_HLEN
        && size_of::<Ipv4Hdr>() == IPV4_MIN_HLEN
        && size_of::<Ipv6Hdr>() == IPV6_HLEN
        && size_of::<UdpHdr>() == UDP_HLEN
);

/// How many IPv6 extension headers the walk follows before giving up (with a drop).
pub const MAX_EXT_HEADERS: usize = 8;
/// The transport header must start within this many bytes of the frame. It bounds the IPv6
/// extension-header chain, and it gives the verifier a bound on the packet offset.
pub const MAX_L4_OFFSET: usize = 320;

/// One 4-byte load from packet memory at any alignment. LLVM only emits loads of the type's
/// alignment for BPF (byte by byte for a `[u8; 4]`); the JIT and the verifier allow unaligned
/// packet loads where the architecture does (x86-64, arm64), so say it in assembly.
///
/// # Safety
/// `p..p + 4` must have been bounds-checked against the packet end.
#[inline(always)]
unsafe fn load_u32(p: *const u8) -> u32 {
    let v: u32;
    // SAFETY: the caller checked the bounds; the load has no other effect.
    unsafe {
        core::arch::asm!(
            "{v} = *(u32 *)({p} + 0)",
            p = in(reg) p,
            v = lateout(reg) v,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    v
}

/// [`load_u32`] for 8 bytes.
///
/// # Safety
/// As for `load_u32`.
#[inline(always)]
unsafe fn load_u64(p: *const u8) -> u64 {
    let v: u64;
    // SAFETY: as in `load_u32`.
    unsafe {
        core::arch::asm!(
            "{v} = *(u64 *)({p} + 0)",
            p = in(reg) p,
            v = lateout(reg) v,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    v
}

/// The frame's network layer.
pub enum L3 {
    NonIp,
    Ip,
}

/// The frame being parsed: what the program can read directly (`data..end`) and, on TC, how
/// long the packet really is.
///
/// On TC, `data_end` is the end of the skb's linear part; TCP data (page frags, GSO
/// super-packets up to 64 KiB and beyond) lies past it, so lengths are judged against
/// `skb->len`. On XDP with multi-buffer frames (MTU above a page) the first buffer is all the
/// program reads directly. Either way the parser only records where the IP header says the
/// packet ends (`Packet::ip_end`); [`check_length`] compares that with the real length, which
/// XDP asks of the kernel only when the first buffer is too short (single-buffer frames pay
/// nothing). The parser keeps no state of its own on the stack: what it learns goes to the
/// scratch packet, where the verifier does not track it, so the parser's outcomes converge.
pub struct Frame {
    pub data: usize,
    /// End of what can be read directly.
    pub end: usize,
    /// `skb->len` on TC; the first buffer's length on XDP.
    pub len: usize,
}

impl Frame {
    #[inline(always)]
    fn at<T>(&self, off: usize) -> Option<*const T> {
        ptr_at::<T>(self.data, self.end, off)
    }
}

/// The parse result once the packet's real length is known: a packet shorter than its IP
/// header says is malformed, and that outranks whatever the parser found after the length
/// field (`ip_end` is only set once the checks before it passed).
#[inline(always)]
pub fn check_length(parsed: Result<L3, Reason>, pkt: &Packet, len: usize) -> Result<L3, Reason> {
    if pkt.ip_end as usize <= len {
        return parsed;
    }
    Err(if pkt.family == FAMILY_IPV4 {
        Reason::Ipv4BadTotalLength
    } else {
        Reason::Ipv6BadPayloadLength
    })
}

/// The parse's outcome passed through the scratch entry: the verifier follows each constant
/// reason the parser can return as a state of its own, and the TC programs, which may parse
/// twice, would carry both sets through the decision. Read back from memory it is one
/// unknown value, and the paths converge.
#[inline(always)]
pub fn settle(parsed: Result<L3, Reason>, pkt: &mut Packet) -> Result<L3, Reason> {
    const IP: u8 = 0;
    const NON_IP: u8 = 0xff;
    pkt.outcome = match parsed {
        Ok(L3::Ip) => IP,
        Ok(L3::NonIp) => NON_IP,
        Err(r) => r as u8,
    };
    // SAFETY: a field of this CPU's scratch entry, just written.
    match unsafe { core::ptr::read_volatile(&raw const pkt.outcome) } {
        IP => Ok(L3::Ip),
        NON_IP => Ok(L3::NonIp),
        // SAFETY: the byte was written from a `Reason` just above (no reason has code 0 or
        // 0xff), and `Reason` is `repr(u8)`.
        code => Err(unsafe { core::mem::transmute::<u8, Reason>(code) }),
    }
}

/// Whether a parse of the linear part may have stopped short only because the rest of the
/// skb is not linear: a truncation, or an ICMP error whose quote ran past the readable part. The TC
/// programs then pull the headers in and parse again.
#[inline(always)]
pub fn wants_more(parsed: &Result<L3, Reason>, pkt: &Packet) -> bool {
    match parsed {
        Err(r) => matches!(
            r,
            Reason::EthTruncated
                | Reason::VlanTruncated
                | Reason::Ipv4Truncated
                | Reason::Ipv4OptionsTruncated
                | Reason::Ipv6Truncated
                | Reason::Ipv6ExtTruncated
                | Reason::TcpTruncated
                | Reason::UdpTruncated
                | Reason::IcmpTruncated
                | Reason::Icmpv6Truncated
                | Reason::FragmentTiny
        ),
        Ok(_) => pkt.quote_cut,
    }
}

/// A pointer to a `T` at `off` bytes into the packet, if the whole `T` lies before `end`.
#[inline(always)]
fn ptr_at<T>(data: usize, end: usize, off: usize) -> Option<*const T> {
    // Read `end` through a volatile load so LLVM cannot prove this check redundant from an
    // earlier length comparison (say, IPv4 total length against the frame) and drop it: the
    // verifier only accepts a load through the very register that was compared with data_end.
    // SAFETY: reading a local.
    let end = unsafe { core::ptr::read_volatile(&raw const end) };
    let start = data + off;
    if start + size_of::<T>() > end {
        return None;
    }
    Some(start as *const T)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// The ethertype at `off` (the last two bytes of an Ethernet header or VLAN tag).
#[inline(always)]
fn ethertype(f: &Frame, off: usize, short: Reason) -> Result<u16, Reason> {
    let p = f.at::<[u8; 2]>(off).ok_or(short)?;
    // SAFETY: bounds checked by ptr_at; [u8; 2] has alignment 1.
    Ok(be16(unsafe { *p }))
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Parses `f`, filling `pkt` as far as it gets.
#[inline(always)]
pub fn parse(f: &Frame, pkt: &mut Packet) -> Result<L3, Reason> {
    if f.at::<EthHdr>(0).is_none() {
        return Err(Reason::EthTruncated);
    }
    let mut proto = ethertype(f, ETH_HLEN - 2, Reason::EthTruncated)?;
    let mut off = ETH_HLEN;
    // Two tags at most (802.1ad outer + 802.1Q inner); a third is refused, not skipped. A tag
    // the stack took out of the data (`vlan_offloaded`) is the first of the two.
    if is_vlan(proto) {
        proto = ethertype(f, off + VLAN_HLEN - 2, Reason::VlanTruncated)?;
        off += VLAN_HLEN;
        // SAFETY: a field of this CPU's scratch entry.
        if is_vlan(proto) && unsafe { core::ptr::read_volatile(&raw const pkt.vlan_offloaded) } != 0
        {
            return Err(Reason::VlanTooDeep);
        }
        if is_vlan(proto) {
            proto = ethertype(f, off + VLAN_HLEN - 2, Reason::VlanTruncated)?;
            off += VLAN_HLEN;
            if is_vlan(proto) {
                return Err(Reason::VlanTooDeep);
            }
        }
    }
    match proto {
        ETH_P_IP => parse_ipv4(f, off, pkt).map(|()| L3::Ip),
        ETH_P_IPV6 => parse_ipv6(f, off, pkt).map(|()| L3::Ip),
        _ => Ok(L3::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4(f: &Frame, off: usize, pkt: &mut Packet) -> Result<(), Reason> {
    let ip = f.at::<Ipv4Hdr>(off).ok_or(Reason::Ipv4Truncated)?;
    // SAFETY: the whole fixed header is in bounds (ptr_at); all fields are byte arrays or u8.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != IPV4_VERSION {
        return Err(Reason::Ipv4BadVersion);
    }
    // Addresses first, so that a malformed packet is still counted under its workload.
    pkt.family = FAMILY_IPV4;
    pkt.proto = ip.proto;
    pkt.frag_proto = ip.proto;
    // SAFETY: both addresses lie in the fixed header, bounds-checked above.
    let (src, dst) = unsafe {
        (
            load_u32(ip.src_addr.as_ptr()),
            load_u32(ip.dst_addr.as_ptr()),
        )
    };
    pkt.set_addrs([u64::from(src), 0], [u64::from(dst), 0]);
    let hlen = ipv4_hlen(ip.vihl);
    if hlen < IPV4_MIN_HLEN {
        return Err(Reason::Ipv4BadIhl);
    }
    if f.data + off + hlen > f.end {
        return Err(Reason::Ipv4OptionsTruncated);
    }
    let mut total = usize::from(be16(ip.tot_len));
    if total == 0 && pkt.gso() {
        // BIG TCP: a GSO packet over 64 KiB says 0 and means "the rest of the skb".
        total = f.len.saturating_sub(off);
    }
    if total < hlen {
        return Err(Reason::Ipv4BadTotalLength);
    }
    let avail = pkt.set_ip_end(off + total) - (off + hlen);
    pkt.frag_id = u32::from(be16(ip.id));
    let frags = be16(ip.frags);
    let frag_offset = frags & IPV4_FRAG_OFFSET;
    let more_fragments = frags & IPV4_MF != 0;
    if frag_offset != 0 {
        pkt.fragment = Fragment::Later;
        // Offset 1 (8 bytes) lets a TCP fragment rewrite the flags of the first one.
        if ip.proto == IPPROTO_TCP && frag_offset == 1 {
            return Err(Reason::FragmentOverlap);
        }
        return Ok(());
    }
    if more_fragments {
        pkt.fragment = Fragment::First;
    }
    parse_l4(f, off + hlen, avail, pkt)
}

#[inline(always)]
fn parse_ipv6(f: &Frame, off: usize, pkt: &mut Packet) -> Result<(), Reason> {
    let ip = f.at::<Ipv6Hdr>(off).ok_or(Reason::Ipv6Truncated)?;
    // SAFETY: the fixed header is in bounds (ptr_at); all fields are byte arrays or u8.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != IPV6_VERSION {
        return Err(Reason::Ipv6BadVersion);
    }
    pkt.family = FAMILY_IPV6;
    // SAFETY: both addresses lie in the fixed header, bounds-checked above.
    unsafe {
        let (s, d) = (ip.src_addr.as_ptr(), ip.dst_addr.as_ptr());
        pkt.set_addrs(
            [load_u64(s), load_u64(s.add(8))],
            [load_u64(d), load_u64(d.add(8))],
        );
    }
    let mut payload = usize::from(be16(ip.payload_len));
    let mut off = off + IPV6_HLEN;
    if payload == 0 && pkt.gso() {
        // BIG TCP: a GSO packet over 64 KiB has no payload length (RFC 2675's jumbogram). The
        // stack marks it with a jumbo payload option in an 8-byte hop-by-hop header, which it
        // removes again when it cuts the packet into segments (`ipv6_hopopt_jumbo_remove`).
        payload = f.len.saturating_sub(off);
        if ip.next_hdr == IPPROTO_HOPOPTS
            && let Some(h) = f.at::<[u8; 4]>(off)
        {
            // SAFETY: four bytes in bounds.
            let h = unsafe { *h };
            // Hdr Ext Len 0 (8 bytes), then the Jumbo Payload option.
            if h[1] == 0 && h[2] == IPV6_TLV_JUMBO && h[3] == IPV6_JUMBO_OPT_LEN {
                pkt.jumbo_hbh = IPV6_JUMBO_HBH_LEN;
            }
        }
    }
    let ip_end = pkt.set_ip_end(off + payload);

    let mut next = ip.next_hdr;
    let mut walked = 0;
    // A bounded loop (kernel >= 5.3 verifies it without unrolling).
    while walked < MAX_EXT_HEADERS {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                if next == IPPROTO_HOPOPTS && walked != 0 {
                    return Err(Reason::Ipv6HopByHopNotFirst);
                }
                // Within the IP packet, not merely the frame: bytes past the payload length
                // (padding, or junk) are not the packet's.
                let h = f
                    .at::<[u8; 2]>(off)
                    .filter(|_| off + 2 <= ip_end)
                    .ok_or(truncated(pkt, Reason::Ipv6ExtTruncated))?;
                // SAFETY: two bytes in bounds.
                let h = unsafe { *h };
                let this = next;
                next = h[0];
                if this == IPPROTO_AH {
                    ah_len(h[1])
                } else {
                    ipv6_ext_len(h[1])
                }
            }
            IPPROTO_FRAGMENT => {
                let h = f
                    .at::<[u8; IPV6_FRAG_HLEN]>(off)
                    .filter(|_| off + IPV6_FRAG_HLEN <= ip_end)
                    .ok_or(truncated(pkt, Reason::Ipv6ExtTruncated))?;
                // SAFETY: the whole Fragment header in bounds.
                let h = unsafe { *h };
                next = h[0];
                pkt.frag_proto = next;
                pkt.frag_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let field = be16([h[2], h[3]]);
                let frag_offset = field >> IPV6_FRAG_OFFSET_SHIFT;
                if frag_offset != 0 {
                    pkt.fragment = Fragment::Later;
                    pkt.proto = next;
                    if next == IPPROTO_TCP && frag_offset == 1 {
                        return Err(Reason::FragmentOverlap);
                    }
                    return Ok(());
                }
                if field & IPV6_FRAG_MF != 0 {
                    pkt.fragment = Fragment::First;
                }
                IPV6_FRAG_HLEN
            }
            IPPROTO_MH | IPPROTO_HIP | IPPROTO_SHIM6 | IPPROTO_EXPERIMENT1
            | IPPROTO_EXPERIMENT2 => return Err(Reason::Ipv6UnsupportedExtHeader),
            _ => break,
        };
        off += len;
        if off > ip_end {
            return Err(truncated(pkt, Reason::Ipv6ExtTruncated));
        }
        if off > MAX_L4_OFFSET {
            return Err(Reason::Ipv6TooManyExtHeaders);
        }
        walked += 1;
    }
    if is_ext_header(next) {
        return Err(Reason::Ipv6TooManyExtHeaders);
    }
    pkt.proto = next;
    parse_l4(f, off, ip_end - off, pkt)
}

/// Whether `next` names an extension header (walkable or not): one in ninth place is one too
/// many, whatever it is.
#[inline(always)]
fn is_ext_header(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_DSTOPTS
            | IPPROTO_AH
            | IPPROTO_FRAGMENT
            | IPPROTO_MH
            | IPPROTO_HIP
            | IPPROTO_SHIM6
            | IPPROTO_EXPERIMENT1
            | IPPROTO_EXPERIMENT2
    )
}

/// A transport header cut short in a first fragment is a tiny fragment (RFC 1858, RFC 7112:
/// the first fragment must hold the whole header chain); elsewhere it is plain truncation.
#[inline(always)]
fn truncated(pkt: &Packet, reason: Reason) -> Reason {
    if pkt.fragment == Fragment::First {
        Reason::FragmentTiny
    } else {
        reason
    }
}

/// Parses the transport header at `off`; `avail` is what the IP header says is left.
#[inline(always)]
fn parse_l4(f: &Frame, off: usize, avail: usize, pkt: &mut Packet) -> Result<(), Reason> {
    if off > MAX_L4_OFFSET {
        return Err(Reason::Ipv6TooManyExtHeaders);
    }
    match pkt.proto {
        IPPROTO_TCP => {
            if avail < TCP_MIN_HLEN {
                return Err(truncated(pkt, Reason::TcpTruncated));
            }
            // Copied out whole through the one checked pointer: a second pointer to byte 12
            // (data offset) would be a new register the verifier has no bounds for.
            let tcp = f
                .at::<[u8; TCP_MIN_HLEN]>(off)
                .ok_or(truncated(pkt, Reason::TcpTruncated))?;
            // SAFETY: the fixed TCP header is in bounds.
            let tcp = unsafe { *tcp };
            let hlen = tcp_hlen(tcp[TCP_DOFF_BYTE]);
            if hlen < TCP_MIN_HLEN {
                return Err(Reason::TcpBadDataOffset);
            }
            if hlen > avail {
                return Err(truncated(pkt, Reason::TcpTruncated));
            }
            pkt.sport = be16([tcp[0], tcp[1]]);
            pkt.dport = be16([tcp[2], tcp[3]]);
            #[expect(
                clippy::cast_possible_truncation,
                reason = "at most MAX_L4_OFFSET + 60"
            )]
            let headers = (off + hlen) as u16;
            pkt.headers_len = headers;
        }
        IPPROTO_UDP => {
            if avail < UDP_HLEN {
                return Err(truncated(pkt, Reason::UdpTruncated));
            }
            let udp = f
                .at::<UdpHdr>(off)
                .ok_or(truncated(pkt, Reason::UdpTruncated))?;
            // SAFETY: the UDP header is in bounds.
            let udp = unsafe { &*udp };
            let len = usize::from(be16(udp.len));
            // A first fragment carries only part of the datagram the length describes; a GSO
            // super-packet's length field is rewritten per segment when it is split.
            if len < UDP_HLEN || (pkt.fragment == Fragment::None && !pkt.gso() && len > avail) {
                return Err(Reason::UdpBadLength);
            }
            pkt.sport = be16(udp.src);
            pkt.dport = be16(udp.dst);
            #[expect(clippy::cast_possible_truncation, reason = "at most MAX_L4_OFFSET + 8")]
            let headers = (off + UDP_HLEN) as u16;
            pkt.headers_len = headers;
        }
        IPPROTO_ICMP if pkt.family == FAMILY_IPV4 => {
            let h = f.at::<[u8; ICMP_HLEN]>(off);
            let Some(h) = h.filter(|_| avail >= ICMP_HLEN) else {
                return Err(truncated(pkt, Reason::IcmpTruncated));
            };
            // SAFETY: the ICMP header in bounds.
            let h = unsafe { *h };
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            pkt.icmp_id = be16([h[4], h[5]]);
            if icmp_error_quotes_flow(h[0]) && pkt.fragment == Fragment::None {
                quote_v4(f, off + ICMP_HLEN, avail - ICMP_HLEN, pkt);
            }
        }
        IPPROTO_ICMPV6 if pkt.family == FAMILY_IPV6 => {
            let h = f.at::<[u8; ICMPV6_HLEN]>(off);
            let Some(h) = h.filter(|_| avail >= ICMPV6_HLEN) else {
                return Err(truncated(pkt, Reason::Icmpv6Truncated));
            };
            // SAFETY: the ICMPv6 header in bounds.
            let h = unsafe { *h };
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            pkt.icmp_id = be16([h[4], h[5]]);
            if icmpv6_error_quotes_flow(h[0]) && pkt.fragment == Fragment::None {
                quote_v6(f, off + ICMPV6_HLEN, avail - ICMPV6_HLEN, pkt);
            }
        }
        // Other protocols (GRE, ESP, SCTP, ...) have no ports the datapath reads; the policy
        // decides on the protocol alone.
        _ => {}
    }
    Ok(())
}

/// Reads the IPv4 packet an ICMP error quotes at `off` (its header and first 8 transport
/// bytes, which RFC 792 guarantees), within the `avail` bytes the error's IP packet has left.
/// A quote that is cut short, garbled, a later fragment or of another protocol is simply not
/// kept: the error is then judged like any ICMP packet.
#[inline(always)]
fn quote_v4(f: &Frame, off: usize, avail: usize, pkt: &mut Packet) {
    let Some(ip) = f.at::<Ipv4Hdr>(off) else {
        pkt.quote_cut = true;
        return;
    };
    // SAFETY: the fixed header is in bounds; all fields are byte arrays or u8.
    let ip = unsafe { &*ip };
    let hlen = ipv4_hlen(ip.vihl);
    if ip.vihl >> 4 != IPV4_VERSION
        || hlen < IPV4_MIN_HLEN
        || hlen + ICMP_QUOTE_L4_LEN > avail
        || be16(ip.frags) & IPV4_FRAG_OFFSET != 0
    {
        return;
    }
    let Some(l4) = f.at::<[u8; ICMP_QUOTE_L4_LEN]>(off + hlen) else {
        pkt.quote_cut = true;
        return;
    };
    // SAFETY: the quoted transport bytes in bounds.
    let l4 = unsafe { *l4 };
    let (mut src, mut dst) = ([0; 16], [0; 16]);
    src[..4].copy_from_slice(&ip.src_addr);
    dst[..4].copy_from_slice(&ip.dst_addr);
    keep_quote(pkt, src, dst, ip.proto, &l4, ICMP_ECHO);
}

/// [`quote_v4`] for ICMPv6 (RFC 4443: as much of the packet as fits). The quoted packet's own
/// extension headers are not walked: a quote whose next header is not TCP, UDP or ICMPv6 is
/// not kept.
#[inline(always)]
fn quote_v6(f: &Frame, off: usize, avail: usize, pkt: &mut Packet) {
    let Some(ip) = f.at::<Ipv6Hdr>(off) else {
        pkt.quote_cut = true;
        return;
    };
    // SAFETY: the fixed header is in bounds; all fields are byte arrays or u8.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != IPV6_VERSION || IPV6_HLEN + ICMP_QUOTE_L4_LEN > avail {
        return;
    }
    let Some(l4) = f.at::<[u8; ICMP_QUOTE_L4_LEN]>(off + IPV6_HLEN) else {
        pkt.quote_cut = true;
        return;
    };
    // SAFETY: the quoted transport bytes in bounds.
    let l4 = unsafe { *l4 };
    keep_quote(pkt, ip.src_addr, ip.dst_addr, ip.next_hdr, &l4, ICMPV6_ECHO);
}

/// A family's ICMP: (protocol number, echo request type, echo reply type).
type Echo = (u8, u8, u8);
const ICMP_ECHO: Echo = (IPPROTO_ICMP, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY);
const ICMPV6_ECHO: Echo = (IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY);

/// Keeps a quoted packet by what conntrack knows it by: its ports for TCP and UDP, the echo
/// identifier twice for an echo request or reply of the family's ICMP (`echo`); anything else
/// is not kept.
#[inline(always)]
fn keep_quote(
    pkt: &mut Packet,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    l4: &[u8; ICMP_QUOTE_L4_LEN],
    echo: Echo,
) {
    let (icmp, echo_request, echo_reply) = echo;
    let (kind, sport, dport) = if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        (QUOTE_PORTS, be16([l4[0], l4[1]]), be16([l4[2], l4[3]]))
    } else if proto == icmp && (l4[0] == echo_request || l4[0] == echo_reply) {
        let id = be16([l4[4], l4[5]]);
        let kind = if l4[0] == echo_request {
            QUOTE_ECHO_REQUEST
        } else {
            QUOTE_ECHO_REPLY
        };
        (kind, id, id)
    } else {
        return;
    };
    let q = &mut pkt.quote;
    q.src = src;
    q.dst = dst;
    q.sport = sport;
    q.dport = dport;
    q.proto = proto;
    q.kind = kind;
    pkt.quoted = true;
}
