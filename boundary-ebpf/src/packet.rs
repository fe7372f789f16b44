//! The packet being decided: what the parser learned of it, kept in a per-CPU scratch entry
//! (the map and its only user live here together).

use aya_ebpf::{macros::map, maps::PerCpuArray};

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
    /// The protocol fragments of one datagram are keyed by: the IPv4 protocol, or the Next
    /// Header of the IPv6 Fragment header (the same in every fragment of a datagram, RFC 8200
    /// 4.5, whatever extension headers follow it in the first one).
    pub frag_proto: u8,
    /// Whether `quote` holds the packet an ICMP error quotes (see [`Quote`]).
    pub quoted: bool,
    /// An ICMP error's quote ran past what the program could read (on TC: maybe only the
    /// linear part, see `parse::wants_more`).
    pub quote_cut: bool,
    /// A GSO super-packet (TC only; set by the entry point): an IPv4 total length or IPv6
    /// payload length of 0 then means "larger than the field can say" (BIG TCP), not "empty".
    /// Kept here rather than on the stack so the verifier does not carry what it learnt of
    /// it from branch to branch.
    pub gso_skb: u8,
    /// The parse's outcome, as [`settle`] stores it.
    pub outcome: u8,
    /// The skb carries a VLAN tag outside its data (`skb->vlan_present`: the stack moves the
    /// outer tag of a received frame there before TC ingress runs, and a VLAN device leaves
    /// it there for TC egress). It counts as the first of the two tags the parser allows.
    pub vlan_offloaded: u8,
    /// Bytes of a jumbo hop-by-hop header (RFC 2675) the stack put on an IPv6 BIG TCP
    /// super-packet: its segments do not carry it on the wire. 0 or 8.
    pub jumbo_hbh: u8,
    /// Bytes from the frame's start to the end of the TCP or UDP header (0 otherwise): what
    /// every segment of a GSO super-packet repeats on the wire.
    pub headers_len: u16,
    /// Where the IP header says the packet ends, from the frame's start (0 until the IP
    /// length was read): checked against the real length by [`check_length`].
    pub ip_end: u32,
    // --- not reset: valid only while `quoted` -----------------------------------------------
    pub quote: Quote,
    // --- not reset: written by the entry point before anything reads it ---------------------
    /// The interface the packet crosses: `ingress_ifindex` at XDP, `skb->ifindex` at TC (the
    /// output device on egress).
    pub ifindex: u32,
}

/// The packet an ICMP error quotes: its addresses and its ports (or its echo identifier in
/// both), as it travelled. Only TCP, UDP and ICMP echo quotes are kept: those are the flows
/// conntrack knows.
#[repr(C, align(8))]
pub struct Quote {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// `QUOTE_PORTS`, `QUOTE_ECHO_REQUEST` or `QUOTE_ECHO_REPLY`.
    pub kind: u8,
    pub pad: u16,
}

/// [`Quote::kind`]: a TCP or UDP packet.
pub const QUOTE_PORTS: u8 = 0;
/// ... an ICMP or ICMPv6 echo request (its replies are what conntrack expects).
pub const QUOTE_ECHO_REQUEST: u8 = 1;
/// ... an echo reply.
pub const QUOTE_ECHO_REPLY: u8 = 2;

/// The words [`scratch`] resets: everything before `quote`.
const PACKET_WORDS: usize = core::mem::offset_of!(Packet, quote) / 8;
const _: () = assert!(core::mem::offset_of!(Packet, quote) == PACKET_WORDS * 8);

/// This CPU's scratch packet, reset. `None` cannot happen (entry 0 of a one-entry array) but
/// the verifier wants it handled.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Packet> {
    let p = SCRATCH.get_ptr_mut(0)?;
    // Reset word by word, with volatile stores: LLVM turns a struct assignment or a plain array
    // write into a call to `memset`, a byte loop (five instructions a byte) on BPF.
    // SAFETY: this CPU's entry of a per-CPU array; one program runs on a CPU at a time (XDP in
    // softirq, TC egress with bottom halves off) and each takes it once. `Packet` is 8-aligned
    // and `quote` starts on a word boundary; all-zero bytes are an empty packet (family 0,
    // `Fragment::None`, not quoted). `quote` is written whole whenever `quoted` is set.
    unsafe {
        let words = p.cast::<u64>();
        for i in 0..PACKET_WORDS {
            words.add(i).write_volatile(0);
        }
        Some(&mut *p)
    }
}

/// Scratch space for the packet being decided: kept out of the 512-byte stack, and read back
/// by the verifier as unknown values, so the parser's many outcomes converge into few states
/// instead of multiplying with everything after them. Private to this file, its only user.
#[map(name = "BND_SCRATCH")]
static SCRATCH: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

impl Packet {
    /// Whether this is a GSO super-packet (see `gso_skb`).
    #[inline(always)]
    pub(crate) fn gso(&self) -> bool {
        // SAFETY: a field of this CPU's scratch entry.
        unsafe { core::ptr::read_volatile(&raw const self.gso_skb) != 0 }
    }

    /// Records where the IP header says the packet ends (see [`check_length`]) and returns it
    /// as read back from the scratch entry: the verifier then knows nothing of its value, so
    /// the BIG TCP branch (a length from `skb->len`) and the plain one (a 16-bit field)
    /// continue as one state instead of doubling everything after them.
    #[inline(always)]
    pub(crate) fn set_ip_end(&mut self, end: usize) -> usize {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "an offset below 320 plus a length below 2^32"
        )]
        let end = end as u32;
        self.ip_end = end;
        // SAFETY: a field of this CPU's scratch entry, just written.
        unsafe { core::ptr::read_volatile(&raw const self.ip_end) as usize }
    }

    /// Stores both addresses, each as the two native-endian words of its 16 bytes (an IPv4
    /// address in the low 4 bytes of the first word, the rest zero).
    #[inline(always)]
    pub(crate) fn set_addrs(&mut self, src: [u64; 2], dst: [u64; 2]) {
        // SAFETY: `src` and `dst` are the first 32 bytes of an 8-aligned struct.
        unsafe {
            let words = (self as *mut Self).cast::<[u64; 4]>();
            *words = [src[0], src[1], dst[0], dst[1]];
        }
    }
}
