//! The reference evaluator: what the datapath should do with a frame, written from the
//! policy's specification (DESIGN.md, README "Policy semantics") and the RFCs, not from the
//! kernel code. It shares only the vocabulary with the datapath (`Reason`, the map ABI read
//! through [`Lookup`]): frames are decoded with etherparse (`frame.rs`), protocol numbers and
//! ICMP types come from etherparse, and the decision (`decide.rs`) follows the numbered steps
//! below. `trace` uses it to explain a verdict; the differential test runs it beside the real
//! programs, from the compiled tables ([`Compiled`]) and from the policy model
//! ([`ModelView`], which checks the compiler too).
//!
//! # Which defect wins
//! A frame is decoded from the outside in, and the **first defect in this order decides**; a
//! layer is only read when every layer before it is sound, and headers are only read within
//! the length the IP header gives (bytes past it, such as Ethernet padding, are not the
//! packet's).
//!
//! 1. Ethernet: fewer than 14 bytes: `eth_truncated`.
//! 2. VLAN tags (802.1Q `0x8100`, 802.1ad `0x88a8`; `0x9100` is not a tag): a tag cut short:
//!    `vlan_truncated`; a third tag (seen in the second tag's ethertype): `vlan_too_deep`.
//!    Any ethertype but IPv4 and IPv6 is non-IP, not a defect.
//! 3. IPv4 (RFC 791), in this order: fewer than 20 bytes `ipv4_truncated`; version not 4
//!    `ipv4_bad_version`; IHL below 5 `ipv4_bad_ihl`; header (options) past the frame
//!    `ipv4_options_truncated`; total length below the header or past the frame
//!    `ipv4_bad_total_length`. From `ipv4_bad_ihl` on, the addresses are known and the frame
//!    is counted under its workload.
//! 4. IPv6 (RFC 8200): fewer than 40 bytes `ipv6_truncated`; version not 6
//!    `ipv6_bad_version`; payload length past the frame `ipv6_bad_payload_length`. The
//!    addresses are known from the last one on.
//! 5. Fragments: a non-first fragment (IPv4 offset, or an IPv6 Fragment header with an offset)
//!    is read no further. At offset 1 (8 bytes) with TCP next: `fragment_overlap` (RFC 1858).
//! 6. IPv6 extension headers (hop-by-hop, routing, destination options, fragment, AH; ESP
//!    ends the chain as a transport), header by header in chain order; for each: a ninth
//!    extension header `ipv6_too_many_ext_headers`; hop-by-hop not first
//!    `ipv6_hop_by_hop_not_first` (RFC 8200 4.1); mobility, HIP, shim6, 253, 254
//!    `ipv6_unsupported_ext_header`; the header does not fit the payload
//!    `ipv6_ext_truncated` (`fragment_tiny` after a first-fragment Fragment header); the chain
//!    ends past byte 320 of the frame `ipv6_too_many_ext_headers`.
//! 7. Transport, in what is left of the IP payload: TCP fewer than 20 bytes `tcp_truncated`,
//!    data offset below 5 `tcp_bad_data_offset`, header (options) past the payload
//!    `tcp_truncated` (RFC 9293); UDP fewer than 8 bytes `udp_truncated`, length below 8 or
//!    (unfragmented) past the payload `udp_bad_length` (RFC 768); ICMP in IPv4 / ICMPv6 in
//!    IPv6 fewer than 8 bytes `icmp_truncated` / `icmpv6_truncated`. In a first fragment
//!    every "cut short" here is `fragment_tiny` (RFC 7112, RFC 1858); a bad data offset or
//!    UDP length stays what it is. Other protocols are not read.
//!
//! An ICMP error's quote never makes a frame malformed: a quote that does not read is simply
//! no quote.
//!
//! Where the datapath does not follow these rules yet, the frames are in the ignored test
//! `datapath_follows_the_written_rules_at_the_edges` (tests/tests/differential.rs).
//!
//! # The decision for a well-formed IP packet
//! A packet crosses the host in a direction on an interface (its interface index: where it
//! arrived on ingress, where it leaves on egress).
//! 1. The workload that owns the local address (destination on ingress, source on egress)
//!    on that interface: one with the address among its addresses and the interface among
//!    its `interfaces:` (a workload that lists none is on every interface). On any other
//!    interface its addresses are judged as any other address: another workload's there, or
//!    none. None: `unprotected`. (A policy gives an address at most one owner per interface.)
//!    Malformed frames whose addresses could be read are counted under the same workload.
//! 2. A later fragment takes its first fragment's reason and rule (key: direction, addresses,
//!    identification, and the protocol: IPv4's, or the Fragment header's Next Header, the
//!    same in every fragment, RFC 8200 4.5; not the interface: the host reassembles
//!    fragments whichever interface they came in on); none seen, or seen under a policy (or
//!    flow state) no longer in force: `fragment_unknown` (audited in audit mode). A
//!    remembered reason the datapath does not know: `internal_error`.
//! 3. ICMPv6 neighbour discovery (types 133-137), unfragmented: `neighbor_discovery`. A
//!    fragmented one is judged as any ICMPv6 (RFC 6980: hosts ignore fragmented ND).
//! 4. The policy: the peer's identity (exact binding, else the longest CIDR identity, else
//!    `world`); the deciding rule: a rule about this peer beats one about any peer; within
//!    each, exact port (or ICMP type) beats a port range beats any port; at one place deny
//!    beats allow, then the rule written first; every CIDR rule containing the peer applies.
//!    No rule: the workload's default for the direction.
//! 5. A drop is rescued by the first that applies: `failsafe` (TCP/UDP, local port and peer
//!    in a failsafe entry), `established` (the answer a tracked flow expects: addresses and
//!    ports swapped; for ICMP echo, a reply with the request's identifier), `related` (an
//!    unfragmented ICMP error whose quote is a packet the workload sent, or received from the
//!    host the error goes back to, of a tracked flow in either direction: conntrack expects
//!    the quote's answer, or the quote itself as an answer), `audit` (audit mode). The rule matched stays reported.
//!    5b. A packet the policy allows by a rule with a rate limit pays into the rule's bucket
//!    (per peer: the peer's own, then the rule's ceiling; see `limits.rs`); over the limit:
//!    `failsafe` if an entry covers it, else `audit` in audit mode, else `rate_limited`, and
//!    it opens no flow.
//! 6. A packet passed as `policy_allow`, `default_allow` or `failsafe` opens its flow: its
//!    answer will be `established`, on whichever interface it comes (flows, like the host's
//!    own connection tracking, are not bound to an interface). Every allowed flow is tracked, both ways; the datapath
//!    tracks only where a drop could happen, which cannot be told apart.
//! 7. A first fragment's reason and rule are kept for its datagram.

mod decide;
mod frame;
mod limits;
mod live;
mod view;

pub use decide::{Outcome, State, decide, decide_frame, decide_frame_with, decide_with};
pub use frame::{
    Echo, Fragment, MAX_EXT_HEADERS, MAX_VLAN_TAGS, Packet, Parsed, Quote, TRANSPORT_WITHIN, parse,
};
pub use limits::Limits;
pub use live::Live;
pub use view::{Compiled, Lookup, Match, ModelView, PolicyView, Subject, WorkloadInfo};
