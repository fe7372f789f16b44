//! Tier 2: the real XDP and TC programs run through `BPF_PROG_TEST_RUN` on crafted frames, one
//! test per parser case, malformed ones included. Each asserts the verdict, the reason and the
//! workload the packet was counted under.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};

use boundary_common::{Reason, maps::Action};
use boundary_tests::{
    netns::addr::{CLIENT, CLIENT6, SERVER, SERVER_B, SERVER_OTHER, SERVER6},
    packets::{self, ETH_LEN, Ext, IPV4_LEN, L4},
    require_root,
};
use support::{
    AUDITED, Kernel, LOCKED, Outcome, TC_NEXT, TC_SHOT, UNPROTECTED, WEB, XDP_DROP, XDP_PASS,
};

const AUDITED_ADDR: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 5);
const UDP: L4 = L4::Udp {
    sport: 40_000,
    dport: 53,
};
const TCP: L4 = L4::Tcp {
    sport: 40_000,
    dport: 443,
};

fn udp4() -> Vec<u8> {
    packets::v4(CLIENT, SERVER, UDP, b"hello")
}
fn tcp4() -> Vec<u8> {
    packets::v4(CLIENT, SERVER, TCP, b"")
}
fn udp6() -> Vec<u8> {
    packets::v6(CLIENT6, SERVER6, UDP, b"hello")
}
fn tcp6() -> Vec<u8> {
    packets::v6(CLIENT6, SERVER6, TCP, b"")
}

fn v6_payload_len(f: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([f[ETH_LEN + 4], f[ETH_LEN + 5]]))
}

fn expect(out: Outcome, action: u32, slot: u16, reason: Reason) {
    assert_eq!(
        out,
        Outcome {
            action,
            slot,
            reason
        }
    );
}

/// One test per case: `case!(name, || frame, action, slot, reason)` runs XDP ingress.
macro_rules! case {
    ($name:ident, $frame:expr, $action:expr, $slot:expr, $reason:expr) => {
        #[test]
        fn $name() {
            if !require_root(stringify!($name)) {
                return;
            }
            let frame: Vec<u8> = $frame;
            let mut k = Kernel::standard();
            expect(k.xdp(&frame), $action, $slot, $reason);
            // The TC ingress program (the default on veths) runs the same parser and decision.
            k.clear_state();
            k.tc_ingress = true;
            if TC_TEST_RUN_REFUSES.contains(&stringify!($name)) {
                assert!(
                    k.try_test_run(boundary_common::Direction::Ingress, &frame)
                        .is_err(),
                    "BPF_PROG_TEST_RUN now builds this skb: remove it from TC_TEST_RUN_REFUSES"
                );
            } else {
                expect(k.xdp(&frame), $action, $slot, $reason);
            }
        }
    };
}

/// Frames `BPF_PROG_TEST_RUN` will not build an skb from (it reads the IP header to set the
/// skb up, and refuses one cut short), so the TC ingress program cannot be run on them here.
const TC_TEST_RUN_REFUSES: &[&str] = &["ipv4_truncated", "ipv6_truncated"];

// --- well-formed shapes reach the workload lookup --------------------------------------------
case!(ipv4_udp, udp4(), XDP_PASS, WEB, Reason::DefaultAllow);
case!(ipv4_tcp, tcp4(), XDP_PASS, WEB, Reason::DefaultAllow);
case!(
    ipv4_icmp_echo,
    packets::v4(CLIENT, SERVER, L4::IcmpEcho, b"ping"),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv4_with_options,
    packets::with_ipv4_options(&udp4(), 3),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv4_max_options,
    packets::with_ipv4_options(&tcp4(), 10),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv4_other_protocol,
    {
        let mut f = udp4();
        f[ETH_LEN + 9] = 47; // GRE: no ports to read, still a well-formed packet
        packets::fix_ipv4_checksum(&mut f);
        f
    },
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    vlan_single_tag,
    packets::v4_tagged(&[100], CLIENT, SERVER, UDP, b"x"),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    vlan_double_tag,
    packets::v4_tagged(&[100, 200], CLIENT, SERVER, TCP, b""),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(ipv6_udp, udp6(), XDP_PASS, WEB, Reason::DefaultAllow);
case!(ipv6_tcp, tcp6(), XDP_PASS, WEB, Reason::DefaultAllow);
case!(
    ipv6_icmpv6_echo,
    packets::v6(CLIENT6, SERVER6, L4::IcmpEcho, b"ping"),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv6_hop_by_hop,
    packets::with_ipv6_exts(&tcp6(), &[Ext::HopByHop]),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv6_routing,
    packets::with_ipv6_exts(&tcp6(), &[Ext::Routing]),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv6_destination_options,
    packets::with_ipv6_exts(&udp6(), &[Ext::DestOpts]),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv6_authentication_header,
    packets::with_ipv6_exts(&tcp6(), &[Ext::Auth]),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv6_chain_of_five,
    packets::with_ipv6_exts(
        &tcp6(),
        &[
            Ext::HopByHop,
            Ext::DestOpts,
            Ext::Routing,
            Ext::Fragment {
                offset: 0,
                more: false
            },
            Ext::Auth
        ]
    ),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv6_eight_headers_is_the_bound,
    packets::with_ipv6_exts(&udp6(), &[Ext::DestOpts; 8]),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv4_first_fragment,
    {
        let mut f = packets::v4(CLIENT, SERVER, UDP, &[7; 64]);
        packets::set_ipv4_fragment(&mut f, 0, true);
        f
    },
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
// A later fragment whose first was never seen: no ports, nothing to decide it by.
case!(
    ipv4_later_fragment,
    {
        let mut f = packets::v4(CLIENT, SERVER, UDP, &[7; 64]);
        packets::set_ipv4_fragment(&mut f, 185, false);
        f
    },
    XDP_DROP,
    WEB,
    Reason::FragmentUnknown
);
case!(
    ipv6_first_fragment,
    packets::with_ipv6_exts(
        &packets::v6(CLIENT6, SERVER6, UDP, &[7; 64]),
        &[Ext::Fragment {
            offset: 0,
            more: true
        }]
    ),
    XDP_PASS,
    WEB,
    Reason::DefaultAllow
);
case!(
    ipv6_later_fragment,
    packets::with_ipv6_exts(
        &packets::v6(CLIENT6, SERVER6, UDP, &[7; 64]),
        &[Ext::Fragment {
            offset: 185,
            more: false
        }]
    ),
    XDP_DROP,
    WEB,
    Reason::FragmentUnknown
);

// The walk must land on the transport header exactly: the same chains with the TCP header
// cut short are caught as TCP truncation, not as a broken extension header.
case!(
    ipv6_auth_length_rule_lands_on_tcp,
    {
        let f = packets::with_ipv6_exts(&tcp6(), &[Ext::Auth]);
        let len = v6_payload_len(&f);
        packets::cut_v6(f, len - 10)
    },
    XDP_DROP,
    WEB,
    Reason::TcpTruncated
);
case!(
    ipv6_chain_lands_on_tcp,
    {
        let f = packets::with_ipv6_exts(&tcp6(), &[Ext::HopByHop, Ext::Routing, Ext::DestOpts]);
        let len = v6_payload_len(&f);
        packets::cut_v6(f, len - 10)
    },
    XDP_DROP,
    WEB,
    Reason::TcpTruncated
);

// --- Ethernet and VLAN -----------------------------------------------------------------------
// (A frame shorter than 14 bytes cannot be fed to BPF_PROG_TEST_RUN, which refuses anything
// below ETH_HLEN; the datapath still checks for it: `Reason::EthTruncated`.)
case!(
    vlan_truncated,
    {
        let mut f = udp4();
        f.truncate(ETH_LEN + 2);
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f
    },
    XDP_DROP,
    UNPROTECTED,
    Reason::VlanTruncated
);
case!(
    vlan_three_tags,
    packets::push_vlan(
        &packets::v4_tagged(&[100, 200], CLIENT, SERVER, UDP, b"x"),
        300
    ),
    XDP_DROP,
    UNPROTECTED,
    Reason::VlanTooDeep
);

// --- IPv4 ------------------------------------------------------------------------------------
case!(
    ipv4_truncated,
    {
        let mut f = udp4();
        f.truncate(ETH_LEN + 12);
        f
    },
    XDP_DROP,
    UNPROTECTED,
    Reason::Ipv4Truncated
);
case!(
    ipv4_bad_version,
    {
        let mut f = udp4();
        f[ETH_LEN] = 0x65;
        f
    },
    XDP_DROP,
    UNPROTECTED,
    Reason::Ipv4BadVersion
);
case!(
    ipv4_ihl_below_five,
    {
        let mut f = udp4();
        f[ETH_LEN] = 0x44;
        f
    },
    XDP_DROP,
    WEB,
    Reason::Ipv4BadIhl
);
case!(
    ipv4_options_past_the_end,
    {
        let mut f = udp4();
        f[ETH_LEN] = 0x4f;
        f
    },
    XDP_DROP,
    WEB,
    Reason::Ipv4OptionsTruncated
);
case!(
    ipv4_total_length_past_the_end,
    {
        let mut f = udp4();
        let total = u16::try_from(f.len() - ETH_LEN + 1).expect("fits");
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
        f
    },
    XDP_DROP,
    WEB,
    Reason::Ipv4BadTotalLength
);
case!(
    ipv4_total_length_below_header,
    {
        let mut f = udp4();
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&16u16.to_be_bytes());
        f
    },
    XDP_DROP,
    WEB,
    Reason::Ipv4BadTotalLength
);
case!(
    ipv4_ethernet_padding_is_not_payload,
    {
        // A short packet padded to the Ethernet minimum: the padding must not be read as TCP.
        let mut f = packets::cut_v4(tcp4(), IPV4_LEN + 10);
        f.resize(60, 0);
        f
    },
    XDP_DROP,
    WEB,
    Reason::TcpTruncated
);

// --- TCP, UDP, ICMP --------------------------------------------------------------------------
case!(
    tcp_data_offset_below_five,
    {
        let mut f = tcp4();
        f[ETH_LEN + IPV4_LEN + 12] = 0x40;
        f
    },
    XDP_DROP,
    WEB,
    Reason::TcpBadDataOffset
);
case!(
    tcp_options_past_the_end,
    {
        let mut f = tcp4();
        f[ETH_LEN + IPV4_LEN + 12] = 0xf0;
        f
    },
    XDP_DROP,
    WEB,
    Reason::TcpTruncated
);
case!(
    tcp_truncated,
    packets::cut_v4(tcp4(), IPV4_LEN + 12),
    XDP_DROP,
    WEB,
    Reason::TcpTruncated
);
case!(
    tcp_truncated_ipv6,
    packets::cut_v6(tcp6(), 12),
    XDP_DROP,
    WEB,
    Reason::TcpTruncated
);
case!(
    udp_truncated,
    packets::cut_v4(udp4(), IPV4_LEN + 4),
    XDP_DROP,
    WEB,
    Reason::UdpTruncated
);
case!(
    udp_length_below_header,
    {
        let mut f = udp4();
        f[ETH_LEN + IPV4_LEN + 4..ETH_LEN + IPV4_LEN + 6].copy_from_slice(&4u16.to_be_bytes());
        f
    },
    XDP_DROP,
    WEB,
    Reason::UdpBadLength
);
case!(
    udp_length_past_the_packet,
    {
        let mut f = udp4();
        f[ETH_LEN + IPV4_LEN + 4..ETH_LEN + IPV4_LEN + 6].copy_from_slice(&200u16.to_be_bytes());
        f
    },
    XDP_DROP,
    WEB,
    Reason::UdpBadLength
);
case!(
    icmp_truncated,
    packets::cut_v4(packets::v4(CLIENT, SERVER, L4::IcmpEcho, b""), IPV4_LEN + 4),
    XDP_DROP,
    WEB,
    Reason::IcmpTruncated
);
case!(
    icmpv6_truncated,
    packets::cut_v6(packets::v6(CLIENT6, SERVER6, L4::IcmpEcho, b""), 4),
    XDP_DROP,
    WEB,
    Reason::Icmpv6Truncated
);

// --- IPv6 ------------------------------------------------------------------------------------
case!(
    ipv6_truncated,
    {
        let mut f = udp6();
        f.truncate(ETH_LEN + 30);
        f
    },
    XDP_DROP,
    UNPROTECTED,
    Reason::Ipv6Truncated
);
case!(
    ipv6_bad_version,
    {
        let mut f = udp6();
        f[ETH_LEN] = 0x40;
        f
    },
    XDP_DROP,
    UNPROTECTED,
    Reason::Ipv6BadVersion
);
case!(
    ipv6_payload_length_past_the_end,
    {
        let mut f = udp6();
        let len = u16::try_from(v6_payload_len(&f) + 1).expect("fits");
        f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&len.to_be_bytes());
        f
    },
    XDP_DROP,
    WEB,
    Reason::Ipv6BadPayloadLength
);
case!(
    ipv6_extension_header_truncated,
    {
        // The hop-by-hop header says 16 bytes; only 4 of them are there.
        let f = packets::with_ipv6_exts(&udp6(), &[Ext::HopByHop]);
        packets::cut_v6(f, 4)
    },
    XDP_DROP,
    WEB,
    Reason::Ipv6ExtTruncated
);
case!(
    ipv6_nine_extension_headers,
    packets::with_ipv6_exts(&udp6(), &[Ext::DestOpts; 9]),
    XDP_DROP,
    WEB,
    Reason::Ipv6TooManyExtHeaders
);
case!(
    ipv6_hop_by_hop_not_first,
    packets::with_ipv6_exts(&udp6(), &[Ext::DestOpts, Ext::HopByHop]),
    XDP_DROP,
    WEB,
    Reason::Ipv6HopByHopNotFirst
);
case!(
    ipv6_mobility_header,
    packets::with_ipv6_exts(&udp6(), &[Ext::Other(135)]),
    XDP_DROP,
    WEB,
    Reason::Ipv6UnsupportedExtHeader
);

// --- fragments (RFC 1858, RFC 7112) ----------------------------------------------------------
case!(
    ipv4_tiny_first_fragment,
    {
        let mut f = packets::cut_v4(tcp4(), IPV4_LEN + 8);
        packets::set_ipv4_fragment(&mut f, 0, true);
        f
    },
    XDP_DROP,
    WEB,
    Reason::FragmentTiny
);
case!(
    ipv4_tcp_fragment_at_offset_one,
    {
        let mut f = tcp4();
        packets::set_ipv4_fragment(&mut f, 1, true);
        f
    },
    XDP_DROP,
    WEB,
    Reason::FragmentOverlap
);
case!(
    ipv6_tiny_first_fragment,
    {
        let f = packets::with_ipv6_exts(
            &tcp6(),
            &[Ext::Fragment {
                offset: 0,
                more: true,
            }],
        );
        packets::cut_v6(f, 8 + 8)
    },
    XDP_DROP,
    WEB,
    Reason::FragmentTiny
);
case!(
    ipv6_first_fragment_without_whole_chain,
    {
        // RFC 7112: the first fragment must carry every extension header up to the transport one.
        let f = packets::with_ipv6_exts(
            &tcp6(),
            &[
                Ext::Fragment {
                    offset: 0,
                    more: true,
                },
                Ext::DestOpts,
            ],
        );
        packets::cut_v6(f, 8 + 4)
    },
    XDP_DROP,
    WEB,
    Reason::FragmentTiny
);
case!(
    ipv6_tcp_fragment_at_offset_one,
    packets::with_ipv6_exts(
        &tcp6(),
        &[Ext::Fragment {
            offset: 1,
            more: true
        }]
    ),
    XDP_DROP,
    WEB,
    Reason::FragmentOverlap
);

// --- who the packet is for -------------------------------------------------------------------
case!(
    address_no_workload_claims,
    packets::v4(CLIENT, SERVER_OTHER, UDP, b"x"),
    XDP_PASS,
    UNPROTECTED,
    Reason::Unprotected
);
case!(
    workload_default_deny,
    packets::v4(CLIENT, SERVER_B, TCP, b""),
    XDP_DROP,
    LOCKED,
    Reason::DefaultDeny
);
case!(
    workload_in_audit_mode_passes_and_counts,
    packets::v4(CLIENT, AUDITED_ADDR, TCP, b""),
    XDP_PASS,
    AUDITED,
    Reason::Audit
);
case!(
    audit_mode_still_drops_malformed,
    {
        let mut f = packets::v4(CLIENT, AUDITED_ADDR, TCP, b"");
        f[ETH_LEN + IPV4_LEN + 12] = 0x30;
        f
    },
    XDP_DROP,
    AUDITED,
    Reason::TcpBadDataOffset
);
case!(
    source_address_does_not_pick_the_workload,
    packets::v4(SERVER, CLIENT, UDP, b"x"),
    XDP_PASS,
    UNPROTECTED,
    Reason::Unprotected
);
case!(
    non_ip_passes_by_default,
    packets::arp(CLIENT, SERVER),
    XDP_PASS,
    UNPROTECTED,
    Reason::NonIpPass
);

#[test]
fn non_ip_drop_when_configured() {
    if !require_root("non_ip_drop_when_configured") {
        return;
    }
    let mut k = Kernel::new(support::STANDARD_POLICY, Action::Drop);
    expect(
        k.xdp(&packets::arp(CLIENT, SERVER)),
        XDP_DROP,
        UNPROTECTED,
        Reason::NonIpDrop,
    );
    // IP traffic is unaffected by the non-IP default.
    expect(k.xdp(&udp4()), XDP_PASS, WEB, Reason::DefaultAllow);
}

// --- TC egress: the same parser, the local address is the source ----------------------------
#[test]
fn egress_counts_under_the_sending_workload() {
    if !require_root("egress_counts_under_the_sending_workload") {
        return;
    }
    let mut k = Kernel::standard();
    expect(
        k.tc(&packets::v4(SERVER, CLIENT, UDP, b"reply")),
        TC_NEXT,
        WEB,
        Reason::DefaultAllow,
    );
    expect(
        k.tc(&packets::v6(SERVER6, CLIENT6, TCP, b"")),
        TC_NEXT,
        WEB,
        Reason::DefaultAllow,
    );
    expect(
        k.tc(&packets::v4(SERVER_B, CLIENT, TCP, b"")),
        TC_SHOT,
        LOCKED,
        Reason::DefaultDeny,
    );
    expect(
        k.tc(&packets::v4(SERVER_OTHER, CLIENT, UDP, b"x")),
        TC_NEXT,
        UNPROTECTED,
        Reason::Unprotected,
    );
    let mut bad = packets::v4(SERVER, CLIENT, TCP, b"");
    bad[ETH_LEN + IPV4_LEN + 12] = 0x20;
    expect(k.tc(&bad), TC_SHOT, WEB, Reason::TcpBadDataOffset);
    expect(
        k.tc(&packets::with_ipv6_exts(
            &packets::v6(SERVER6, CLIENT6, UDP, b"x"),
            &[Ext::Other(139)],
        )),
        TC_SHOT,
        WEB,
        Reason::Ipv6UnsupportedExtHeader,
    );
}

#[test]
fn ipv6_addresses_are_matched_whole() {
    if !require_root("ipv6_addresses_are_matched_whole") {
        return;
    }
    let mut k = Kernel::standard();
    // Same last bytes as the workload's address, different prefix: not the workload.
    let near = Ipv6Addr::new(0xfd00, 0x204, 0, 0, 0, 0, 0, 1);
    expect(
        k.xdp(&packets::v6(CLIENT6, near, UDP, b"x")),
        XDP_PASS,
        UNPROTECTED,
        Reason::Unprotected,
    );
    // The IPv4 address embedded in an IPv4-mapped IPv6 address is not the IPv4 workload.
    let mapped = Ipv4Addr::new(10, 203, 0, 3).to_ipv6_mapped();
    expect(
        k.xdp(&packets::v6(CLIENT6, mapped, TCP, b"")),
        XDP_PASS,
        UNPROTECTED,
        Reason::Unprotected,
    );
}

// --- jumbo frames: multi-buffer XDP (`xdp.frags`) -----------------------------------------------
// A frame longer than a page reaches the program in several buffers; BPF_PROG_TEST_RUN builds
// them so for a frags-aware program. The headers are in the first buffer, the length is the
// whole frame's (`run` asserts the bytes counted are the frame's length).
#[test]
fn jumbo_frames_are_judged_whole_at_xdp() {
    if !require_root("jumbo_frames_are_judged_whole_at_xdp") {
        return;
    }
    let mut k = Kernel::standard();
    let jumbo4 = packets::v4(CLIENT, SERVER, UDP, &[7; 8950]);
    expect(k.xdp(&jumbo4), XDP_PASS, WEB, Reason::DefaultAllow);
    let jumbo6 = packets::v6(CLIENT6, SERVER6, TCP, &[7; 8900]);
    expect(k.xdp(&jumbo6), XDP_PASS, WEB, Reason::DefaultAllow);
    let denied = packets::v4(CLIENT, SERVER_B, UDP, &[7; 8950]);
    expect(k.xdp(&denied), XDP_DROP, LOCKED, Reason::DefaultDeny);
    // A jumbo frame shorter than its IP header says is still malformed, whichever buffer
    // it ends in.
    let mut cut = jumbo4.clone();
    cut.truncate(8000);
    expect(k.xdp(&cut), XDP_DROP, WEB, Reason::Ipv4BadTotalLength);
}
