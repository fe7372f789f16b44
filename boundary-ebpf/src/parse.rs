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
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;
const IPPROTO_HIP: u8 = 139;
const IPPROTO_SHIM6: u8 = 140;
const IPPROTO_EXPERIMENT1: u8 = 253;
const IPPROTO_EXPERIMENT2: u8 = 254;

/// How many IPv6 extension headers the walk follows before giving up (with a drop).
pub const MAX_EXT_HEADERS: usize = 8;
/// The transport header must start within this many bytes of the frame. It bounds the IPv6
/// extension-header chain, and it gives the verifier a bound on the packet offset.
pub const MAX_L4_OFFSET: usize = 320;

/// Where a packet stands in IP fragmentation.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fragment {
    /// Not a fragment.
    None = 0,
    /// Offset 0 with more fragments to come: carries the transport header.
    First,
    /// A later fragment: no transport header, ports unknown.
    Later,
}

/// What the parser learned of an IP packet.
///
/// The addresses come first in an 8-aligned struct, so the verdict cache reads them as
/// aligned words instead of byte by byte.
#[repr(C, align(8))]
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// `FAMILY_IPV4` / `FAMILY_IPV6` once the addresses are known, 0 before.
    pub family: u8,
    /// Transport protocol (after the IPv6 extension headers).
    pub proto: u8,
    pub fragment: Fragment,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// ICMP/ICMPv6 echo identifier (bytes 4-5 of the header).
    pub icmp_id: u16,
    /// IPv4 identification or IPv6 fragment identification; meaningful for fragments.
    pub frag_id: u32,
    /// Ports in host order; 0 when the protocol has none or the packet is a later fragment.
    pub sport: u16,
    pub dport: u16,
}

const PACKET_WORDS: usize = size_of::<Packet>() / 8;
const _: () = assert!(size_of::<Packet>() == PACKET_WORDS * 8);

/// This CPU's scratch packet, reset. `None` cannot happen (entry 0 of a one-entry array) but
/// the verifier wants it handled.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Packet> {
    let p = crate::maps::SCRATCH.get_ptr_mut(0)?;
    // Reset word by word, with volatile stores: LLVM turns a struct assignment or a plain array
    // write into a call to `memset`, a byte loop (five instructions a byte) on BPF.
    // SAFETY: this CPU's entry of a per-CPU array; one program runs on a CPU at a time (XDP in
    // softirq, TC egress with bottom halves off) and each takes it once. `Packet` is 8-aligned
    // and a whole number of words, and all-zero bytes are an empty packet (family 0,
    // `Fragment::None`).
    unsafe {
        let words = p.cast::<u64>();
        for i in 0..PACKET_WORDS {
            words.add(i).write_volatile(0);
        }
        Some(&mut *p)
    }
}

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

impl Packet {
    /// Stores both addresses, each as the two native-endian words of its 16 bytes (an IPv4
    /// address in the low 4 bytes of the first word, the rest zero).
    #[inline(always)]
    fn set_addrs(&mut self, src: [u64; 2], dst: [u64; 2]) {
        // SAFETY: `src` and `dst` are the first 32 bytes of an 8-aligned struct.
        unsafe {
            let words = (self as *mut Self).cast::<[u64; 4]>();
            *words = [src[0], src[1], dst[0], dst[1]];
        }
    }
}

/// The frame's network layer.
pub enum L3 {
    NonIp,
    Ip,
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
fn ethertype(data: usize, end: usize, off: usize, short: Reason) -> Result<u16, Reason> {
    let p = ptr_at::<[u8; 2]>(data, end, off).ok_or(short)?;
    // SAFETY: bounds checked by ptr_at; [u8; 2] has alignment 1.
    Ok(be16(unsafe { *p }))
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Parses the frame in `[data, end)`, filling `pkt` as far as it gets.
#[inline(always)]
pub fn parse(data: usize, end: usize, pkt: &mut Packet) -> Result<L3, Reason> {
    if ptr_at::<EthHdr>(data, end, 0).is_none() {
        return Err(Reason::EthTruncated);
    }
    let mut proto = ethertype(data, end, EthHdr::LEN - 2, Reason::EthTruncated)?;
    let mut off = EthHdr::LEN;
    // Two tags at most (802.1ad outer + 802.1Q inner); a third is refused, not skipped.
    if is_vlan(proto) {
        proto = ethertype(data, end, off + VlanHdr::LEN - 2, Reason::VlanTruncated)?;
        off += VlanHdr::LEN;
        if is_vlan(proto) {
            proto = ethertype(data, end, off + VlanHdr::LEN - 2, Reason::VlanTruncated)?;
            off += VlanHdr::LEN;
            if is_vlan(proto) {
                return Err(Reason::VlanTooDeep);
            }
        }
    }
    match proto {
        ETH_P_IP => parse_ipv4(data, end, off, pkt).map(|()| L3::Ip),
        ETH_P_IPV6 => parse_ipv6(data, end, off, pkt).map(|()| L3::Ip),
        _ => Ok(L3::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4(data: usize, end: usize, off: usize, pkt: &mut Packet) -> Result<(), Reason> {
    let ip = ptr_at::<Ipv4Hdr>(data, end, off).ok_or(Reason::Ipv4Truncated)?;
    // SAFETY: the whole fixed header is in bounds (ptr_at); all fields are byte arrays or u8.
    let ip = unsafe { &*ip };
    if ip.vihl >> 4 != 4 {
        return Err(Reason::Ipv4BadVersion);
    }
    // Addresses first, so that a malformed packet is still counted under its workload.
    pkt.family = FAMILY_IPV4;
    pkt.proto = ip.proto;
    // SAFETY: both addresses lie in the fixed header, bounds-checked above.
    let (src, dst) = unsafe {
        (
            load_u32(ip.src_addr.as_ptr()),
            load_u32(ip.dst_addr.as_ptr()),
        )
    };
    pkt.set_addrs([u64::from(src), 0], [u64::from(dst), 0]);
    let hlen = usize::from(ip.vihl & 0x0f) * 4;
    if hlen < Ipv4Hdr::LEN {
        return Err(Reason::Ipv4BadIhl);
    }
    if data + off + hlen > end {
        return Err(Reason::Ipv4OptionsTruncated);
    }
    let total = usize::from(be16(ip.tot_len));
    if total < hlen || data + off + total > end {
        return Err(Reason::Ipv4BadTotalLength);
    }
    pkt.frag_id = u32::from(be16(ip.id));
    let frags = be16(ip.frags);
    let frag_offset = frags & 0x1fff;
    let more_fragments = frags & 0x2000 != 0;
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
    parse_l4(data, end, off + hlen, total - hlen, pkt)
}

#[inline(always)]
fn parse_ipv6(data: usize, end: usize, off: usize, pkt: &mut Packet) -> Result<(), Reason> {
    let ip = ptr_at::<Ipv6Hdr>(data, end, off).ok_or(Reason::Ipv6Truncated)?;
    // SAFETY: the fixed header is in bounds (ptr_at); all fields are byte arrays or u8.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
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
    let payload = usize::from(be16(ip.payload_len));
    let mut off = off + Ipv6Hdr::LEN;
    if data + off + payload > end {
        return Err(Reason::Ipv6BadPayloadLength);
    }
    let ip_end = off + payload;

    let mut next = ip.next_hdr;
    let mut walked = 0;
    // A bounded loop (kernel >= 5.3 verifies it without unrolling).
    while walked < MAX_EXT_HEADERS {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                if next == IPPROTO_HOPOPTS && walked != 0 {
                    return Err(Reason::Ipv6HopByHopNotFirst);
                }
                let h = ptr_at::<[u8; 2]>(data, end, off).ok_or(Reason::Ipv6ExtTruncated)?;
                // SAFETY: two bytes in bounds.
                let h = unsafe { *h };
                let this = next;
                next = h[0];
                if this == IPPROTO_AH {
                    // AH counts its length in 4-byte units, minus 2 (RFC 4302 2.2).
                    (usize::from(h[1]) + 2) * 4
                } else {
                    (usize::from(h[1]) + 1) * 8
                }
            }
            IPPROTO_FRAGMENT => {
                let h = ptr_at::<[u8; 8]>(data, end, off).ok_or(Reason::Ipv6ExtTruncated)?;
                // SAFETY: eight bytes in bounds.
                let h = unsafe { *h };
                next = h[0];
                pkt.frag_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let field = be16([h[2], h[3]]);
                let frag_offset = field >> 3;
                if frag_offset != 0 {
                    pkt.fragment = Fragment::Later;
                    pkt.proto = next;
                    if next == IPPROTO_TCP && frag_offset == 1 {
                        return Err(Reason::FragmentOverlap);
                    }
                    return Ok(());
                }
                if field & 1 != 0 {
                    pkt.fragment = Fragment::First;
                }
                8
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
    parse_l4(data, end, off, ip_end - off, pkt)
}

#[inline(always)]
fn is_ext_header(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
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
fn parse_l4(
    data: usize,
    end: usize,
    off: usize,
    avail: usize,
    pkt: &mut Packet,
) -> Result<(), Reason> {
    if off > MAX_L4_OFFSET {
        return Err(Reason::Ipv6TooManyExtHeaders);
    }
    match pkt.proto {
        IPPROTO_TCP => {
            if avail < TcpHdr::LEN {
                return Err(truncated(pkt, Reason::TcpTruncated));
            }
            // Copied out whole through the one checked pointer: a second pointer to byte 12
            // (data offset) would be a new register the verifier has no bounds for.
            let tcp = ptr_at::<[u8; TcpHdr::LEN]>(data, end, off)
                .ok_or(truncated(pkt, Reason::TcpTruncated))?;
            // SAFETY: the fixed TCP header is in bounds.
            let tcp = unsafe { *tcp };
            let hlen = usize::from(tcp[12] >> 4) * 4;
            if hlen < TcpHdr::LEN {
                return Err(Reason::TcpBadDataOffset);
            }
            if hlen > avail {
                return Err(truncated(pkt, Reason::TcpTruncated));
            }
            pkt.sport = be16([tcp[0], tcp[1]]);
            pkt.dport = be16([tcp[2], tcp[3]]);
        }
        IPPROTO_UDP => {
            if avail < UdpHdr::LEN {
                return Err(truncated(pkt, Reason::UdpTruncated));
            }
            let udp =
                ptr_at::<UdpHdr>(data, end, off).ok_or(truncated(pkt, Reason::UdpTruncated))?;
            // SAFETY: the UDP header is in bounds.
            let udp = unsafe { &*udp };
            let len = usize::from(be16(udp.len));
            // A first fragment carries only part of the datagram the length describes.
            if len < UdpHdr::LEN || (pkt.fragment == Fragment::None && len > avail) {
                return Err(Reason::UdpBadLength);
            }
            pkt.sport = be16(udp.src);
            pkt.dport = be16(udp.dst);
        }
        IPPROTO_ICMP if pkt.family == FAMILY_IPV4 => {
            let h = ptr_at::<[u8; 8]>(data, end, off);
            let Some(h) = h.filter(|_| avail >= 8) else {
                return Err(truncated(pkt, Reason::IcmpTruncated));
            };
            // SAFETY: eight bytes in bounds.
            let h = unsafe { *h };
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            pkt.icmp_id = be16([h[4], h[5]]);
        }
        IPPROTO_ICMPV6 if pkt.family == FAMILY_IPV6 => {
            let h = ptr_at::<[u8; 8]>(data, end, off);
            let Some(h) = h.filter(|_| avail >= 8) else {
                return Err(truncated(pkt, Reason::Icmpv6Truncated));
            };
            // SAFETY: eight bytes in bounds.
            let h = unsafe { *h };
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            pkt.icmp_id = be16([h[4], h[5]]);
        }
        // Other protocols (GRE, ESP, SCTP, ...) have no ports the datapath reads; the policy
        // decides on the protocol alone.
        _ => {}
    }
    Ok(())
}
