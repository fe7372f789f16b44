//! Why a packet was passed or dropped: one numbered list shared by the datapath, the agent, the
//! metrics and the CLI.
//!
//! Codes are stable and never reused: a retired reason keeps its number, commented out. Every
//! code is below [`REASON_SLOTS`] because counters are stored as one row of `REASON_SLOTS`
//! entries per (workload, direction), indexed by the code.

/// Number of counter slots per (workload, direction) row; every reason code is below it.
pub const REASON_SLOTS: usize = 64;

/// The verdict a reason implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    Drop,
}

macro_rules! reasons {
    ($( $(#[doc = $doc:literal])* $name:ident = $code:literal, $label:literal, $verdict:ident; )*) => {
        /// A reason code. The numeric values are part of the ABI (counter rows are indexed by
        /// them) and of the metrics (`reason` label): never renumber or reuse one.
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Reason {
            $( $(#[doc = $doc])* $name = $code, )*
        }

        impl Reason {
            /// Every reason, in code order.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];

            /// The reason with this code, if there is one.
            pub const fn from_code(code: u8) -> Option<Reason> {
                match code {
                    $( $code => Some(Reason::$name), )*
                    _ => None,
                }
            }

            /// Stable `snake_case` label used in metrics, JSON and tables.
            pub const fn label(self) -> &'static str {
                match self { $( Reason::$name => $label, )* }
            }

            /// Whether a packet with this reason is passed or dropped.
            pub const fn verdict(self) -> Verdict {
                match self { $( Reason::$name => Verdict::$verdict, )* }
            }
        }
    };
}

reasons! {
    // --- passed -------------------------------------------------------------------------------
    /// Well-formed IP traffic for an address no workload claims: not Boundary's to judge.
    Unprotected = 1, "unprotected", Pass;
    /// No rule matched and the workload's default for this direction is allow.
    DefaultAllow = 2, "default_allow", Pass;
    /// A non-IP frame (ARP, LLDP, ...) and the configured non-IP default is pass.
    NonIpPass = 3, "non_ip", Pass;
    /// A policy rule allowed the packet.
    PolicyAllow = 4, "policy_allow", Pass;
    /// A reply to a flow recorded by connection tracking.
    Established = 5, "established", Pass;
    /// A failsafe entry allowed the packet, whatever the policy says.
    Failsafe = 6, "failsafe", Pass;
    /// The workload is in audit mode: the packet would have been dropped and was passed.
    Audit = 7, "audit", Pass;
    /// ICMPv6 neighbour discovery (router/neighbour solicitation and advertisement, redirect):
    /// IPv6 stops working without it, so no policy can drop it.
    NeighborDiscovery = 8, "neighbor_discovery", Pass;
    /// An ICMP error (destination unreachable, packet too big, time exceeded, parameter
    /// problem) that quotes a packet of a tracked flow: path MTU discovery and error reporting
    /// work through a protected host whatever the policy says about ICMP.
    Related = 9, "related", Pass;

    // --- dropped by policy --------------------------------------------------------------------
    /// No rule matched and the workload's default for this direction is deny.
    DefaultDeny = 16, "default_deny", Drop;
    /// A non-IP frame and the configured non-IP default is drop.
    NonIpDrop = 17, "non_ip_denied", Drop;
    /// A deny rule matched.
    PolicyDeny = 18, "policy_deny", Drop;
    /// A rate limit's bucket was empty.
    RateLimited = 19, "rate_limited", Drop;
    /// A non-first fragment whose first fragment was never seen, or was seen under a policy
    /// (or a flow state) no longer in force.
    FragmentUnknown = 20, "fragment_unknown", Drop;
    /// A state the datapath cannot be in: a cached or remembered reason code it does not know,
    /// its per-CPU scratch memory missing. Dropped and counted, so a bug shows up as drops in
    /// the metrics rather than as an open door.
    Internal = 21, "internal_error", Drop;

    // --- dropped as malformed or unsupported --------------------------------------------------
    /// Shorter than an Ethernet header.
    EthTruncated = 32, "eth_truncated", Drop;
    /// A VLAN tag cut short by the end of the frame.
    VlanTruncated = 33, "vlan_truncated", Drop;
    /// More than two stacked VLAN tags (802.1Q / 802.1ad).
    VlanTooDeep = 34, "vlan_too_deep", Drop;
    /// Shorter than a minimal IPv4 header.
    Ipv4Truncated = 35, "ipv4_truncated", Drop;
    /// Ethertype IPv4 but the version field is not 4.
    Ipv4BadVersion = 36, "ipv4_bad_version", Drop;
    /// IHL below 5 (a header shorter than 20 bytes).
    Ipv4BadIhl = 37, "ipv4_bad_ihl", Drop;
    /// The header length (IHL, options included) runs past the end of the packet.
    Ipv4OptionsTruncated = 38, "ipv4_options_truncated", Drop;
    /// Total length smaller than the header or larger than the packet.
    Ipv4BadTotalLength = 39, "ipv4_bad_total_length", Drop;
    /// Shorter than an IPv6 header.
    Ipv6Truncated = 40, "ipv6_truncated", Drop;
    /// Ethertype IPv6 but the version field is not 6.
    Ipv6BadVersion = 41, "ipv6_bad_version", Drop;
    /// Payload length larger than the packet.
    Ipv6BadPayloadLength = 42, "ipv6_bad_payload_length", Drop;
    /// An extension header cut short by the end of the packet.
    Ipv6ExtTruncated = 43, "ipv6_ext_truncated", Drop;
    /// More extension headers than the datapath walks.
    Ipv6TooManyExtHeaders = 44, "ipv6_too_many_ext_headers", Drop;
    /// A hop-by-hop options header that does not follow the IPv6 header directly (RFC 8200 4.1).
    Ipv6HopByHopNotFirst = 45, "ipv6_hop_by_hop_not_first", Drop;
    /// An extension header the datapath cannot walk past (mobility, HIP, shim6, experimental).
    Ipv6UnsupportedExtHeader = 46, "ipv6_unsupported_ext_header", Drop;
    /// A TCP header cut short by the end of the packet (options included).
    TcpTruncated = 47, "tcp_truncated", Drop;
    /// TCP data offset below 5.
    TcpBadDataOffset = 48, "tcp_bad_data_offset", Drop;
    /// A UDP header cut short by the end of the packet.
    UdpTruncated = 49, "udp_truncated", Drop;
    /// UDP length field below 8 or beyond the packet.
    UdpBadLength = 50, "udp_bad_length", Drop;
    /// An ICMP header cut short by the end of the packet.
    IcmpTruncated = 51, "icmp_truncated", Drop;
    /// An ICMPv6 header cut short by the end of the packet.
    Icmpv6Truncated = 52, "icmpv6_truncated", Drop;
    /// A first fragment too small to hold the transport header (RFC 1858, RFC 7112).
    FragmentTiny = 53, "fragment_tiny", Drop;
    /// A TCP fragment at offset 8 bytes, which can overwrite the header's flags (RFC 1858).
    FragmentOverlap = 54, "fragment_overlap", Drop;
}

impl Reason {
    /// Reasons at or above this code are malformed or unsupported packet shapes.
    pub const FIRST_MALFORMED: u8 = 32;

    pub const fn code(self) -> u8 {
        self as u8
    }

    pub const fn is_malformed(self) -> bool {
        self as u8 >= Self::FIRST_MALFORMED
    }
}

const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!((Reason::ALL[i] as usize) < REASON_SLOTS);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn codes_and_labels_are_unique_and_round_trip() {
        let mut codes = HashSet::new();
        let mut labels = HashSet::new();
        for &r in Reason::ALL {
            assert!(codes.insert(r.code()), "duplicate code {}", r.code());
            assert!(labels.insert(r.label()), "duplicate label {}", r.label());
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        assert_eq!(Reason::from_code(0), None);
    }

    #[test]
    fn malformed_reasons_all_drop() {
        for &r in Reason::ALL.iter().filter(|r| r.is_malformed()) {
            assert_eq!(r.verdict(), Verdict::Drop, "{r:?}");
        }
    }
}
