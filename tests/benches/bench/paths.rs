//! The per-packet rows, as data: each path names the frame that takes it, where random keys
//! for it come from, and the verdict and reason it must produce (checked before it is timed, so
//! a row can never measure a different path than it claims). Paths the datapath does not have
//! yet are rows too, printed as "not implemented yet".
//!
//! The key space: `entries` endpoint addresses, half IPv4 (10.128.0.0/9, index `j` is
//! 10.128.0.0 + j) and half IPv6 (`fd00:b0::j`). Index `j` belongs to workload `j % WORKLOADS`;
//! even workloads allow ingress by default and odd ones deny it, so even indexes are the allow
//! set and odd ones the deny set. Unprotected addresses come from ranges the map never holds.
//! These frames only ever go to `BPF_PROG_TEST_RUN` (or to the harness's own namespaces).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use boundary_common::Reason;
use boundary_tests::packets::{self, ETH_LEN, Ext, IPV4_LEN, IPV6_LEN, L4};

use super::sys::{XDP_DROP, XDP_PASS};

/// Workloads the filled map spreads its addresses over (slots 1..=WORKLOADS).
pub const WORKLOADS: u16 = 32;

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 2);
const V4_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const V4_UNPROTECTED: u32 = u32::from_be_bytes([10, 64, 0, 0]);
const V6_BASE: u128 = 0xfd00_00b0_u128 << 96;
const V6_UNPROTECTED: u128 = 0xfd00_dead_u128 << 96;
/// Offsets of the destination address in an untagged frame.
pub const DST_OFFSET_V4: usize = ETH_LEN + 16;
pub const DST_OFFSET_V6: usize = ETH_LEN + 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    /// Not IP, or broken before the IP version is known.
    L2,
}

impl Family {
    pub const fn label(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
            Family::L2 => "-",
        }
    }
}

/// Where the random-key variant draws destination addresses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    Allow,
    Deny,
    Unprotected,
    /// The datapath never reads an address on this path: no random-key variant.
    Fixed,
}

/// What a frame must make the XDP program do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub action: u32,
    pub reason: Reason,
}

impl Expect {
    pub fn label(self) -> String {
        let verdict = if self.action == XDP_PASS {
            "pass"
        } else {
            "drop"
        };
        format!("{verdict} {}", self.reason.label())
    }
}

pub enum Kind {
    Measured {
        /// The frame, for a given destination address.
        build: fn(IpAddr) -> Vec<u8>,
        keys: Keys,
        expect: Expect,
    },
    NotImplemented,
}

pub struct PathDef {
    pub name: &'static str,
    pub family: Family,
    pub kind: Kind,
}

impl PathDef {
    /// Where the destination address sits in this path's frame, for the random-key variant.
    pub fn dst_offset(&self) -> Option<usize> {
        match (&self.kind, self.family) {
            (Kind::Measured { keys, .. }, _) if *keys == Keys::Fixed => None,
            (_, Family::V4) => Some(DST_OFFSET_V4),
            (_, Family::V6) => Some(DST_OFFSET_V6),
            _ => None,
        }
    }
}

/// The address space behind one prefix count.
#[derive(Clone, Copy, Debug)]
pub struct KeySpace {
    pub entries: usize,
}

impl KeySpace {
    pub fn per_family(self) -> usize {
        self.entries / 2
    }

    pub fn v4(j: usize) -> Ipv4Addr {
        Ipv4Addr::from(V4_BASE + u32::try_from(j).expect("index fits the /9"))
    }

    pub fn v6(j: usize) -> Ipv6Addr {
        Ipv6Addr::from(V6_BASE + j as u128)
    }

    pub fn addr(family: Family, j: usize) -> IpAddr {
        match family {
            Family::V4 => Self::v4(j).into(),
            _ => Self::v6(j).into(),
        }
    }

    /// Workload slot of index `j` (1-based; slot 0 is "unprotected").
    pub fn slot(j: usize) -> u16 {
        u16::try_from(j % usize::from(WORKLOADS)).expect("small") + 1
    }

    pub fn allows(j: usize) -> bool {
        j.is_multiple_of(2)
    }

    /// An address for `keys`: `r` picks it (uniformly over the set when `r` is uniform).
    pub fn pick(self, keys: Keys, family: Family, r: u64) -> IpAddr {
        let half = (self.per_family() / 2).max(1) as u64;
        #[expect(clippy::cast_possible_truncation, reason = "below per_family")]
        let j = (r % half) as usize * 2;
        match keys {
            Keys::Allow | Keys::Fixed => Self::addr(family, j),
            Keys::Deny => Self::addr(family, j + 1),
            Keys::Unprotected => match family {
                Family::V4 => {
                    let low = u32::try_from(r & 0x3f_ffff).expect("masked to 22 bits");
                    Ipv4Addr::from(V4_UNPROTECTED + low).into()
                }
                _ => Ipv6Addr::from(V6_UNPROTECTED + u128::from(r)).into(),
            },
        }
    }

    /// The hot single flow's address: one fixed member of the set, mid-table.
    pub fn hot(self, keys: Keys, family: Family) -> IpAddr {
        self.pick(keys, family, (self.per_family() / 4) as u64)
    }
}

/// Writes `addr` at `off` in `frame` (the destination of an untagged frame). Checksums are not
/// fixed: the datapath does not verify them.
pub fn set_dst(frame: &mut [u8], off: usize, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => frame[off..off + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => frame[off..off + 16].copy_from_slice(&a.octets()),
    }
}

/// A small, fast, deterministic generator (splitmix64) for drawing keys: quality is ample for
/// spreading lookups over a table, and it keeps the harness free of a rand dependency.
pub struct SplitMix(u64);

impl SplitMix {
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const UDP: L4 = L4::Udp {
    sport: 40_000,
    dport: 53,
};
const TCP: L4 = L4::Tcp {
    sport: 40_000,
    dport: 443,
};

fn v4(dst: IpAddr) -> Ipv4Addr {
    match dst {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::new(10, 128, 0, 0),
    }
}

fn v6(dst: IpAddr) -> Ipv6Addr {
    match dst {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => KeySpace::v6(0),
    }
}

/// 64-byte UDP frames, the size the notes' figures use.
fn udp4(dst: IpAddr) -> Vec<u8> {
    packets::v4(CLIENT4, v4(dst), UDP, &[0; 22])
}
fn udp6(dst: IpAddr) -> Vec<u8> {
    packets::v6(CLIENT6, v6(dst), UDP, &[0; 2])
}
fn tcp4(dst: IpAddr) -> Vec<u8> {
    packets::v4(CLIENT4, v4(dst), TCP, b"")
}
fn tcp6(dst: IpAddr) -> Vec<u8> {
    packets::v6(CLIENT6, v6(dst), TCP, b"")
}

/// Cuts an untagged IPv4 frame to `ip_len` bytes of IP packet, fixing the total length.
fn cut_v4(mut f: Vec<u8>, ip_len: usize) -> Vec<u8> {
    f.truncate(ETH_LEN + ip_len);
    let total = u16::try_from(ip_len).expect("fits");
    f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
    packets::fix_ipv4_checksum(&mut f);
    f
}

/// Cuts an untagged IPv6 frame to `payload` bytes after the fixed header.
fn cut_v6(mut f: Vec<u8>, payload: usize) -> Vec<u8> {
    f.truncate(ETH_LEN + IPV6_LEN + payload);
    let len = u16::try_from(payload).expect("fits");
    f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&len.to_be_bytes());
    f
}

fn three_tags(f: &[u8]) -> Vec<u8> {
    packets::push_vlan(&packets::push_vlan(&packets::push_vlan(f, 100), 200), 300)
}

const fn pass(reason: Reason) -> Expect {
    Expect {
        action: XDP_PASS,
        reason,
    }
}

const fn drop(reason: Reason) -> Expect {
    Expect {
        action: XDP_DROP,
        reason,
    }
}

fn row(
    name: &'static str,
    family: Family,
    keys: Keys,
    expect: Expect,
    build: fn(IpAddr) -> Vec<u8>,
) -> PathDef {
    PathDef {
        name,
        family,
        kind: Kind::Measured {
            build,
            keys,
            expect,
        },
    }
}

fn not_yet(name: &'static str, family: Family) -> PathDef {
    PathDef {
        name,
        family,
        kind: Kind::NotImplemented,
    }
}

pub const ALLOW: &str = "allow (workload default allow, exact endpoint)";
pub const DENY: &str = "deny (workload default deny)";

/// Every row of the per-packet table, in print order.
#[expect(clippy::too_many_lines, reason = "a table, one entry per path")]
pub fn all() -> Vec<PathDef> {
    use Family::{L2, V4, V6};
    use Keys::{Allow, Deny, Fixed, Unprotected};
    use Reason as R;
    // Malformed frames go to an allow workload's address: the datapath still looks the
    // workload up (to count the drop under it) whenever the addresses were readable.
    vec![
        row(ALLOW, V4, Allow, pass(R::DefaultAllow), udp4),
        row(ALLOW, V6, Allow, pass(R::DefaultAllow), udp6),
        not_yet("allow (CIDR identity)", V4),
        not_yet("allow (CIDR identity)", V6),
        row(DENY, V4, Deny, drop(R::DefaultDeny), udp4),
        row(DENY, V6, Deny, drop(R::DefaultDeny), udp6),
        not_yet("policy miss (no rule matches)", V4),
        not_yet("policy miss (no rule matches)", V6),
        not_yet("established reply (conntrack)", V4),
        not_yet("established reply (conntrack)", V6),
        not_yet("rate-limited", V4),
        not_yet("rate-limited", V6),
        row(
            "unprotected (no workload owns dst)",
            V4,
            Unprotected,
            pass(R::Unprotected),
            udp4,
        ),
        row(
            "unprotected (no workload owns dst)",
            V6,
            Unprotected,
            pass(R::Unprotected),
            udp6,
        ),
        row(
            "non-IP (ARP, default pass)",
            L2,
            Fixed,
            pass(R::NonIpPass),
            |_| packets::arp(CLIENT4, Ipv4Addr::new(10, 203, 0, 1)),
        ),
        // --- malformed ---------------------------------------------------------------------
        row(
            "malformed: vlan_truncated",
            L2,
            Fixed,
            drop(R::VlanTruncated),
            |d| {
                let mut f = udp4(d);
                f.truncate(ETH_LEN + 2);
                f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: vlan_too_deep (3 tags)",
            V4,
            Fixed,
            drop(R::VlanTooDeep),
            |d| three_tags(&udp4(d)),
        ),
        row(
            "malformed: vlan_too_deep (3 tags)",
            V6,
            Fixed,
            drop(R::VlanTooDeep),
            |d| three_tags(&udp6(d)),
        ),
        row(
            "malformed: ipv4_truncated",
            V4,
            Fixed,
            drop(R::Ipv4Truncated),
            |d| {
                let mut f = udp4(d);
                f.truncate(ETH_LEN + 12);
                f
            },
        ),
        row(
            "malformed: ipv4_bad_version",
            V4,
            Fixed,
            drop(R::Ipv4BadVersion),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN] = 0x65;
                f
            },
        ),
        row(
            "malformed: ipv4_bad_ihl",
            V4,
            Allow,
            drop(R::Ipv4BadIhl),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN] = 0x44;
                f
            },
        ),
        row(
            "malformed: ipv4_options_truncated",
            V4,
            Allow,
            drop(R::Ipv4OptionsTruncated),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN] = 0x4f;
                f
            },
        ),
        row(
            "malformed: ipv4_bad_total_length",
            V4,
            Allow,
            drop(R::Ipv4BadTotalLength),
            |d| {
                let mut f = udp4(d);
                let total = u16::try_from(f.len() - ETH_LEN + 1).expect("fits");
                f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: ipv6_truncated",
            V6,
            Fixed,
            drop(R::Ipv6Truncated),
            |d| {
                let mut f = udp6(d);
                f.truncate(ETH_LEN + 30);
                f
            },
        ),
        row(
            "malformed: ipv6_bad_version",
            V6,
            Fixed,
            drop(R::Ipv6BadVersion),
            |d| {
                let mut f = udp6(d);
                f[ETH_LEN] = 0x45;
                f
            },
        ),
        row(
            "malformed: ipv6_bad_payload_length",
            V6,
            Allow,
            drop(R::Ipv6BadPayloadLength),
            |d| {
                let mut f = udp6(d);
                let len = u16::try_from(f.len() - ETH_LEN - IPV6_LEN + 1).expect("fits");
                f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&len.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: ipv6_ext_truncated",
            V6,
            Allow,
            drop(R::Ipv6ExtTruncated),
            |d| {
                let mut f = packets::with_ipv6_exts(&udp6(d), &[Ext::DestOpts]);
                // Header length 21 units of 8 bytes: far past the end of the packet.
                f[ETH_LEN + IPV6_LEN + 1] = 20;
                f
            },
        ),
        row(
            "malformed: ipv6_too_many_ext_headers (9)",
            V6,
            Allow,
            drop(R::Ipv6TooManyExtHeaders),
            |d| packets::with_ipv6_exts(&udp6(d), &[Ext::DestOpts; 9]),
        ),
        row(
            "malformed: ipv6_hop_by_hop_not_first",
            V6,
            Allow,
            drop(R::Ipv6HopByHopNotFirst),
            |d| packets::with_ipv6_exts(&udp6(d), &[Ext::DestOpts, Ext::HopByHop]),
        ),
        row(
            "malformed: ipv6_unsupported_ext_header",
            V6,
            Allow,
            drop(R::Ipv6UnsupportedExtHeader),
            |d| packets::with_ipv6_exts(&udp6(d), &[Ext::Other(135)]),
        ),
        row(
            "malformed: tcp_bad_data_offset",
            V4,
            Allow,
            drop(R::TcpBadDataOffset),
            |d| {
                let mut f = tcp4(d);
                f[ETH_LEN + IPV4_LEN + 12] = 0x40;
                f
            },
        ),
        row(
            "malformed: tcp_bad_data_offset",
            V6,
            Allow,
            drop(R::TcpBadDataOffset),
            |d| {
                let mut f = tcp6(d);
                f[ETH_LEN + IPV6_LEN + 12] = 0x40;
                f
            },
        ),
        row(
            "malformed: tcp_truncated (options)",
            V4,
            Allow,
            drop(R::TcpTruncated),
            |d| {
                let mut f = tcp4(d);
                f[ETH_LEN + IPV4_LEN + 12] = 0xf0;
                f
            },
        ),
        row(
            "malformed: tcp_truncated (options)",
            V6,
            Allow,
            drop(R::TcpTruncated),
            |d| {
                let mut f = tcp6(d);
                f[ETH_LEN + IPV6_LEN + 12] = 0xf0;
                f
            },
        ),
        row(
            "malformed: udp_truncated",
            V4,
            Allow,
            drop(R::UdpTruncated),
            |d| cut_v4(udp4(d), IPV4_LEN + 4),
        ),
        row(
            "malformed: udp_truncated",
            V6,
            Allow,
            drop(R::UdpTruncated),
            |d| cut_v6(udp6(d), 4),
        ),
        row(
            "malformed: udp_bad_length",
            V4,
            Allow,
            drop(R::UdpBadLength),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN + IPV4_LEN + 4..ETH_LEN + IPV4_LEN + 6]
                    .copy_from_slice(&4u16.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: udp_bad_length",
            V6,
            Allow,
            drop(R::UdpBadLength),
            |d| {
                let mut f = udp6(d);
                f[ETH_LEN + IPV6_LEN + 4..ETH_LEN + IPV6_LEN + 6]
                    .copy_from_slice(&4u16.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: icmp_truncated",
            V4,
            Allow,
            drop(R::IcmpTruncated),
            |d| {
                cut_v4(
                    packets::v4(CLIENT4, v4(d), L4::IcmpEcho, b"ping"),
                    IPV4_LEN + 4,
                )
            },
        ),
        row(
            "malformed: icmpv6_truncated",
            V6,
            Allow,
            drop(R::Icmpv6Truncated),
            |d| cut_v6(packets::v6(CLIENT6, v6(d), L4::IcmpEcho, b"ping"), 4),
        ),
        row(
            "malformed: fragment_tiny",
            V4,
            Allow,
            drop(R::FragmentTiny),
            |d| {
                let mut f = cut_v4(tcp4(d), IPV4_LEN + 10);
                packets::set_ipv4_fragment(&mut f, 0, true);
                f
            },
        ),
        row(
            "malformed: fragment_tiny",
            V6,
            Allow,
            drop(R::FragmentTiny),
            |d| {
                let f = packets::with_ipv6_exts(
                    &tcp6(d),
                    &[Ext::Fragment {
                        offset: 0,
                        more: true,
                    }],
                );
                cut_v6(f, 8 + 10)
            },
        ),
        row(
            "malformed: fragment_overlap",
            V4,
            Allow,
            drop(R::FragmentOverlap),
            |d| {
                let mut f = tcp4(d);
                packets::set_ipv4_fragment(&mut f, 1, false);
                f
            },
        ),
        row(
            "malformed: fragment_overlap",
            V6,
            Allow,
            drop(R::FragmentOverlap),
            |d| {
                packets::with_ipv6_exts(
                    &tcp6(d),
                    &[Ext::Fragment {
                        offset: 1,
                        more: false,
                    }],
                )
            },
        ),
    ]
}
