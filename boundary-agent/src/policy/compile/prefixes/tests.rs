#![expect(
    clippy::cast_possible_truncation,
    reason = "random numbers cut to the widths they are drawn for"
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// A small deterministic generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The longest-prefix match the trie gives (the reference): every length, longest first.
fn lpm(cidrs: &BTreeMap<IpNet, u32>, addr: IpAddr) -> u32 {
    let top = if addr.is_ipv4() { 32 } else { 128 };
    (0..=top)
        .rev()
        .find_map(|len| cidrs.get(&IpNet::new(addr, len).unwrap().trunc()).copied())
        .unwrap_or(IDENTITY_WORLD)
}

fn v4(a: u32, len: u8) -> IpNet {
    Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc().into()
}

fn v6(a: u128, len: u8) -> IpNet {
    Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc().into()
}

/// Addresses worth asking about: random ones, and the first, last and a middle address of
/// every prefix and of its neighbours.
fn probes(cidrs: &BTreeMap<IpNet, u32>, rng: &mut Rng, random: usize) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for n in cidrs.keys() {
        out.push(n.network());
        out.push(n.broadcast());
        match n {
            IpNet::V4(v) => {
                let lo = u32::from(v.network());
                let hi = u32::from(v.broadcast());
                out.push(Ipv4Addr::from(lo.wrapping_sub(1)).into());
                out.push(Ipv4Addr::from(hi.wrapping_add(1)).into());
                out.push(Ipv4Addr::from(lo + (hi - lo) / 2).into());
            }
            IpNet::V6(v) => {
                let lo = u128::from(v.network());
                let hi = u128::from(v.broadcast());
                out.push(Ipv6Addr::from(lo.wrapping_sub(1)).into());
                out.push(Ipv6Addr::from(hi.wrapping_add(1)).into());
                out.push(Ipv6Addr::from(lo + (hi - lo) / 2).into());
            }
        }
    }
    for _ in 0..random {
        // Random addresses near the prefixes (same top byte) and anywhere.
        let base = cidrs
            .keys()
            .nth(rng.below(cidrs.len() as u64) as usize)
            .unwrap();
        match base {
            IpNet::V4(v) => {
                let keep = rng.below(33) as u32;
                let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
                let a = (u32::from(v.network()) & mask) | (rng.next() as u32 & !mask);
                out.push(Ipv4Addr::from(a).into());
            }
            IpNet::V6(v) => {
                let keep = rng.below(129) as u32;
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
                out.push(Ipv6Addr::from((u128::from(v.network()) & mask) | (r & !mask)).into());
            }
        }
    }
    out
}

fn assert_same(cidrs: &BTreeMap<IpNet, u32>, layout: &PrefixLayout, rng: &mut Rng) {
    for addr in probes(cidrs, rng, 4_000) {
        let want = lpm(cidrs, addr);
        if let Some(got) = layout.walk(addr) {
            assert_eq!(got, want, "{addr}: levels {:?}", layout.levels);
        } else {
            // In the trie: the trie holds exactly that family's prefixes.
            let trie: BTreeMap<IpNet, u32> = layout.trie.iter().copied().collect();
            assert_eq!(lpm(&trie, addr), want, "{addr} (trie)");
        }
    }
}

/// Nested and overlapping prefixes of many lengths, both families, with identities
/// repeated (several prefixes share one identity, as rules make them).
fn mixed(rng: &mut Rng, n: usize) -> BTreeMap<IpNet, u32> {
    let mut out = BTreeMap::new();
    let v4_lens = [0u8, 8, 12, 16, 17, 20, 22, 23, 24, 24, 24, 28, 30, 32];
    let v6_lens = [0u8, 16, 29, 32, 32, 40, 44, 48, 48, 56, 64, 64, 96, 128];
    let mut last4 = 0x0a00_0000u32;
    let mut last6 = 0xfd00u128 << 112;
    for i in 0..n {
        let id = 2 + (rng.below(40) as u32);
        if i % 2 == 0 {
            let len = v4_lens[rng.below(v4_lens.len() as u64) as usize];
            // Half of them inside the previous one's neighbourhood: nesting.
            let a = if rng.below(2) == 0 {
                last4 ^ (rng.next() as u32 >> (8 + rng.below(24)))
            } else {
                rng.next() as u32
            };
            last4 = a;
            out.insert(v4(a, len), id);
        } else {
            let len = v6_lens[rng.below(v6_lens.len() as u64) as usize];
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            let a = if rng.below(2) == 0 {
                last6 ^ (r >> (16 + rng.below(112)))
            } else {
                (0xfd00u128 << 112) | (r >> 16)
            };
            last6 = a;
            out.insert(v6(a, len), id);
        }
    }
    out
}

#[test]
fn the_walk_matches_the_longest_prefix_for_nested_prefixes_of_many_lengths() {
    let mut rng = Rng(7);
    for round in 0..40 {
        let n = 1 + rng.below(120) as usize;
        let cidrs = mixed(&mut rng, n);
        let layout = PrefixLayout::of_with(&cidrs, 1 << 20, 0);
        assert_same(&cidrs, &layout, &mut rng);
        if round == 0 {
            // The sets above spread over up to 14 lengths: some rounds lay them out in
            // levels, which is what this test is about.
            assert!(layout.levels.count.iter().all(|&c| c != PREFIX_LEVELS_NONE));
        }
    }
}

#[test]
fn every_round_of_mixed_lengths_is_laid_out_in_levels_somewhere() {
    // Not every set fits levels within the budget (a /0 beside a /32 expands past it); the
    // differential above checks both outcomes. Most must take levels, or the layout would
    // be the trie in disguise.
    let mut rng = Rng(11);
    let mut levelled = 0;
    for _ in 0..40 {
        let n = 1 + rng.below(120) as usize;
        let cidrs = mixed(&mut rng, n);
        let layout = PrefixLayout::of_with(&cidrs, 1 << 20, 0);
        levelled += layout
            .levels
            .count
            .iter()
            .filter(|&&c| c != PREFIX_LEVELS_TRIE && c != PREFIX_LEVELS_NONE)
            .count();
    }
    // This generator spreads over 14 lengths from /0 to /32 (/128): about half fit.
    assert!(levelled >= 40, "{levelled} of 80 families in levels");
}

#[test]
fn one_length_is_one_level_and_one_region_per_prefix() {
    let cidrs: BTreeMap<IpNet, u32> = (0..1000u32)
        .map(|j| (v4(0x0a80_0000 + (j << 4), 28), 2 + j))
        .chain(
            (0..1000u128).map(|j| (v6((0xfd00_0c1du128 << 96) + (j << 64), 64), 5000 + j as u32)),
        )
        .collect();
    let layout = PrefixLayout::of_with(&cidrs, 1 << 20, 0);
    assert_eq!(layout.levels.count, [1, 1]);
    assert_eq!(layout.levels.v4[0], 28);
    assert_eq!(layout.levels.v6[0], 64);
    assert_eq!(layout.regions.len(), 2000);
    assert!(layout.regions.iter().all(|r| r.1.deeper == 0));
    assert_eq!(layout.trie, []);
    assert_same(&cidrs, &layout, &mut Rng(3));
}

#[test]
fn a_bgp_like_table_takes_few_levels_and_little_expansion() {
    // Mostly /24, then /16../23, a few /8../15: the shape of a routing table.
    let mut rng = Rng(5);
    let mut cidrs = BTreeMap::new();
    while cidrs.len() < 5_000 {
        let r = rng.below(100);
        let len = match r {
            0..=54 => 24,
            55..=94 => 16 + rng.below(8) as u8,
            _ => 8 + rng.below(8) as u8,
        };
        cidrs.insert(v4(rng.next() as u32, len), 2 + rng.below(1000) as u32);
    }
    let layout = PrefixLayout::of_with(&cidrs, 1 << 20, 0);
    let levels = layout.levels.count[0];
    assert!((2..=4).contains(&levels), "{:?}", layout.levels);
    assert!(
        layout.regions.len() <= expansion_budget(cidrs.len()) + cidrs.len() * usize::from(levels),
        "{} regions",
        layout.regions.len()
    );
    assert_eq!(layout.levels.count[1], PREFIX_LEVELS_NONE);
    assert_same(&cidrs, &layout, &mut rng);
}

#[test]
fn lengths_too_spread_for_any_level_set_stay_in_the_trie() {
    // Nine lengths 16 bits apart: five levels cannot hold them, and merging any two
    // expands a prefix into 65,536 regions or more, past the room of this map.
    let cidrs: BTreeMap<IpNet, u32> = (0..=8u8)
        .flat_map(|i| {
            let len = 16 * i;
            [0u128, u128::MAX].map(|a| (v6(a, len), 2 + u32::from(len)))
        })
        .collect();
    let layout = PrefixLayout::of_with(&cidrs, 50_000, 0);
    assert_eq!(layout.levels.count[1], PREFIX_LEVELS_TRIE);
    assert_eq!(layout.trie.len(), cidrs.len());
    assert_eq!(layout.regions, []);
    assert_eq!(layout.walk("fd00::1".parse().unwrap()), None);
    // Four of those lengths take four levels, one region per prefix.
    let four: BTreeMap<IpNet, u32> = cidrs
        .iter()
        .filter(|(n, _)| [16, 48, 64, 128].contains(&n.prefix_len()))
        .map(|(n, id)| (*n, *id))
        .collect();
    let roomy = PrefixLayout::of_with(&four, 1 << 20, 0);
    assert_eq!(roomy.levels.count[1], 4);
    assert_eq!(&roomy.levels.v6[..4], [16, 48, 64, 128]);
    assert_same(&four, &roomy, &mut Rng(2));
}

#[test]
fn a_family_past_the_room_left_stays_in_the_trie_and_the_other_keeps_its_levels() {
    let cidrs: BTreeMap<IpNet, u32> = (0..100u32)
        .map(|j| (v4(0x0a00_0000 + (j << 8), 24), 2))
        .chain((0..100u128).map(|j| (v6((0xfd00u128 << 112) + (j << 80), 48), 3)))
        .collect();
    let layout = PrefixLayout::of_with(&cidrs, 150, 0);
    assert_eq!(layout.levels.count, [1, PREFIX_LEVELS_TRIE]);
    assert_eq!(layout.regions.len(), 100);
    assert_eq!(layout.trie.len(), 100);
    assert_same(&cidrs, &layout, &mut Rng(9));
}

#[test]
fn no_prefix_of_a_family_is_world_without_a_lookup() {
    let cidrs: BTreeMap<IpNet, u32> = [(v4(0x0a00_0000, 8), 2)].into_iter().collect();
    let layout = PrefixLayout::of_with(&cidrs, 1 << 20, 0);
    assert_eq!(layout.levels.count, [1, PREFIX_LEVELS_NONE]);
    assert_eq!(
        layout.walk("fd00::1".parse().unwrap()),
        Some(IDENTITY_WORLD)
    );
    assert_eq!(layout.walk("10.9.9.9".parse().unwrap()), Some(2));
    assert_eq!(
        layout.walk("11.0.0.0".parse().unwrap()),
        Some(IDENTITY_WORLD)
    );
}

#[test]
fn the_default_route_and_a_host_inside_it() {
    let cidrs: BTreeMap<IpNet, u32> = [(v4(0, 0), 2), (v4(0x0a00_0001, 32), 3)]
        .into_iter()
        .collect();
    let layout = PrefixLayout::of_with(&cidrs, 1 << 20, 0);
    assert_same(&cidrs, &layout, &mut Rng(1));
    assert_eq!(layout.walk("10.0.0.1".parse().unwrap()), Some(3));
    assert_eq!(layout.walk("10.0.0.2".parse().unwrap()), Some(2));
}

#[test]
fn a_small_family_stays_in_the_trie_by_default() {
    let small: BTreeMap<IpNet, u32> = (0..100u32)
        .map(|j| (v4(0x0a00_0000 + (j << 8), 24), 2))
        .collect();
    let layout = PrefixLayout::of(&small, 1 << 20);
    assert_eq!(
        layout.levels.count,
        [PREFIX_LEVELS_TRIE, PREFIX_LEVELS_NONE]
    );
    assert_eq!(layout.trie.len(), 100);
    let large: BTreeMap<IpNet, u32> = (0..LEVELS_FROM as u32)
        .map(|j| (v4(0x0a00_0000 + (j << 8), 24), 2))
        .collect();
    assert_eq!(PrefixLayout::of(&large, 1 << 20).levels.count[0], 1);
}

/// A set built to corner the layout: a few lengths drawn at random from the whole range of
/// the family (so the levels chosen are often not at the shortest length, and a /0, a /32 or
/// a /128 turns up beside them), addresses clustered under a few roots so that prefixes nest
/// and one prefix's expansion lands on another's markers; IPv4-mapped IPv6 among the IPv6.
fn cornered(rng: &mut Rng) -> BTreeMap<IpNet, u32> {
    let mut out = BTreeMap::new();
    for (family_bits, mapped) in [(32u8, false), (128, false), (128, true)] {
        if rng.below(4) == 0 {
            continue;
        }
        let lens: Vec<u8> = (0..=rng.below(9))
            .map(|_| match rng.below(6) {
                0 => 0,
                1 => family_bits,
                2 if mapped => 96 + rng.below(33) as u8,
                _ => rng.below(u64::from(family_bits) + 1) as u8,
            })
            .collect();
        let roots: Vec<u128> = (0..=rng.below(3))
            .map(|_| {
                let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
                match (family_bits, mapped) {
                    (32, _) => r >> 96,
                    (_, true) => (0xffffu128 << 32) | (r >> 96),
                    _ => r,
                }
            })
            .collect();
        for _ in 0..=rng.below(60) {
            let len = lens[rng.below(lens.len() as u64) as usize];
            let root = roots[rng.below(roots.len() as u64) as usize];
            // Flip a few bits just past a random depth: siblings and cousins of the root.
            let depth = rng.below(u64::from(family_bits) + 1) as u32;
            let flip = if depth >= u32::from(family_bits) {
                0
            } else {
                1u128 << (u32::from(family_bits) - 1 - depth)
            };
            let a = if rng.below(2) == 0 { root } else { root ^ flip };
            let id = 2 + rng.below(6) as u32;
            let net = if family_bits == 32 {
                v4(a as u32, len)
            } else {
                v6(a, len)
            };
            out.insert(net, id);
        }
    }
    out
}

/// What the datapath relies on beyond the answers: every region is a network of a level of
/// its family, none twice, none on the last level with something deeper (the kernel's walk
/// does not count levels), at most [`MAX_PREFIX_LEVELS`] levels, shortest first, and no more
/// regions than the room.
fn assert_well_formed(layout: &PrefixLayout, room: usize) {
    assert!(
        layout.regions.len() <= room,
        "{} > {room}",
        layout.regions.len()
    );
    let mut seen = std::collections::HashSet::new();
    for (net, v) in &layout.regions {
        assert!(seen.insert(*net), "{net} twice");
        assert_eq!(net.trunc(), *net, "{net} not masked");
        let (count, lens) = match net {
            IpNet::V4(_) => (layout.levels.count[0], &layout.levels.v4),
            IpNet::V6(_) => (layout.levels.count[1], &layout.levels.v6),
        };
        assert!(
            count != PREFIX_LEVELS_TRIE && count != PREFIX_LEVELS_NONE,
            "{net}: a region of a family without levels ({count})"
        );
        let lens = &lens[..usize::from(count)];
        let at = lens
            .iter()
            .position(|&l| l == net.prefix_len())
            .unwrap_or_else(|| panic!("{net} on no level of {lens:?}"));
        assert!(
            at + 1 < lens.len() || v.deeper == 0,
            "{net}: deeper on the last level"
        );
    }
    for (count, lens) in [
        (layout.levels.count[0], &layout.levels.v4),
        (layout.levels.count[1], &layout.levels.v6),
    ] {
        if count != PREFIX_LEVELS_TRIE && count != PREFIX_LEVELS_NONE {
            assert!(usize::from(count) <= MAX_PREFIX_LEVELS);
            let lens = &lens[..usize::from(count)];
            assert!(lens.windows(2).all(|w| w[0] < w[1]), "{lens:?}");
        }
    }
    assert_eq!(layout.levels.world, IDENTITY_WORLD);
}

#[test]
fn cornered_sets_in_any_room_walk_to_the_longest_prefix() {
    let mut rng = Rng(0x15);
    let (mut levelled, mut trie, mut split) = (0, 0, 0);
    for _ in 0..300 {
        let cidrs = cornered(&mut rng);
        let room = match rng.below(3) {
            0 => rng.below(40) as usize,
            1 => rng.below(2_000) as usize,
            _ => 1 << 20,
        };
        let layout = PrefixLayout::of_with(&cidrs, room, 0);
        assert_well_formed(&layout, room);
        let kinds = layout.levels.count.map(|c| match c {
            PREFIX_LEVELS_TRIE => 1,
            PREFIX_LEVELS_NONE => 0,
            _ => 2,
        });
        match kinds {
            [1, 2] | [2, 1] => split += 1,
            [1, 0 | 1] | [0, 1] => trie += 1,
            [2, 0 | 2] | [0, 2] => levelled += 1,
            _ => {}
        }
        // The trie holds exactly the prefixes of the families left there.
        let trie_families: Vec<bool> = layout
            .levels
            .count
            .iter()
            .map(|&c| c == PREFIX_LEVELS_TRIE)
            .collect();
        let want_trie: Vec<(IpNet, u32)> = cidrs
            .iter()
            .filter(|(n, _)| trie_families[usize::from(n.addr().is_ipv6())])
            .map(|(n, id)| (*n, *id))
            .collect();
        let mut got_trie = layout.trie.clone();
        got_trie.sort();
        assert_eq!(got_trie, want_trie);
        if cidrs.is_empty() {
            continue;
        }
        let in_trie: BTreeMap<IpNet, u32> = layout.trie.iter().copied().collect();
        for addr in probes(&cidrs, &mut rng, 100) {
            let want = lpm(&cidrs, addr);
            let got = layout.walk(addr).unwrap_or_else(|| lpm(&in_trie, addr));
            assert_eq!(got, want, "{addr}: levels {:?}\n{cidrs:?}", layout.levels);
        }
    }
    eprintln!("{levelled} in levels, {trie} in the trie, {split} split");
    assert!(
        levelled > 40 && trie > 40 && split > 20,
        "{levelled} in levels, {trie} in the trie, {split} split"
    );
}
