//! The CIDR identities laid out as prefix levels (see `boundary_common::maps::prefixes` for
//! the layout and why): which level lengths each family gets, and the regions of each level.
//! Pure: the datapath writer calls [`PrefixLayout::of`] on the compiled prefixes.
//!
//! ## Choosing the levels
//! Fewer levels mean fewer probes for a peer covered by long prefixes; coarser levels mean
//! more regions (a /17 under a level of 24 is 128 regions). Per family, among the level sets
//! that end at the longest length used and have at most [`MAX_PREFIX_LEVELS`] levels, each
//! level at a length in use, the one with the fewest levels whose expansion stays within
//! [`expansion_budget`] is taken, and of those the one with the fewest regions (a dynamic
//! program over the distinct lengths, as in Srinivasan and Varghese's controlled prefix
//! expansion). When no level set fits, or the regions with their markers would not fit the
//! map's share of a generation, the family stays in the trie.

use std::collections::{BTreeMap, HashMap};

use boundary_common::maps::{
    FAMILY_IPV4, FAMILY_IPV6, IDENTITY_WORLD, MAX_PREFIX_LEVELS, PREFIX_LEVELS_NONE,
    PREFIX_LEVELS_TRIE, PrefixLevels, PrefixValue, family_index,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// How one generation's CIDR identities are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixLayout {
    pub levels: PrefixLevels,
    /// The regions of every level, each as a network of its level's length, sorted.
    pub regions: Vec<(IpNet, PrefixValue)>,
    /// The prefixes of the families left in the trie.
    pub trie: Vec<(IpNet, u32)>,
}

/// Prefixes a family needs before it is laid out in levels; fewer stay in the trie. A hash
/// probe pays a cache miss whatever the set's size (its bucket array is sized for the map's
/// capacity, 32 MiB, not for the policy), while a small trie stays in the cache: the bench
/// measured a one-prefix policy's spoofed-source flood at about twice the cost in levels,
/// and the 1k first-packet rows slower in levels than in the trie, while at 100k and 1M
/// levels won by 1.1 to 2.6 us. The threshold is where the trie's nodes (about 64 bytes
/// each, two per prefix) outgrow a core's L2; the crossover itself was not measured.
pub const LEVELS_FROM: usize = 16_384;

/// A prefix as its top `len` bits, right-aligned.
type Bits = u128;

/// A family's level lengths and the regions of its levels.
type Levelled = (Vec<u8>, Vec<(IpNet, PrefixValue)>);

/// Regions a layout may expand `n` prefixes into before it takes another level: four times
/// the prefixes, and at least 65,536 more. A level saved is a dependent cache miss saved on
/// every first packet it would have been probed for; a region costs about 100 bytes of
/// kernel memory (a 1M-prefix policy is capped by the map anyway).
pub fn expansion_budget(n: usize) -> usize {
    (4 * n).max(n + 65_536)
}

impl PrefixLayout {
    /// The layout of `cidrs` (prefix -> identity) in a map with room for `capacity` regions.
    pub fn of(cidrs: &BTreeMap<IpNet, u32>, capacity: usize) -> Self {
        Self::of_with(cidrs, capacity, LEVELS_FROM)
    }

    /// As [`PrefixLayout::of`], a family laid out in levels from `levels_from` prefixes on
    /// (tests lay small sets out in levels with 0).
    pub fn of_with(cidrs: &BTreeMap<IpNet, u32>, capacity: usize, levels_from: usize) -> Self {
        let mut out = Self {
            levels: PrefixLevels::TRIE,
            ..Self::default()
        };
        let mut room = capacity;
        for family in [FAMILY_IPV4, FAMILY_IPV6] {
            let mine: Vec<(IpNet, u32)> = cidrs
                .iter()
                .filter(|(n, _)| family_of(n) == family)
                .map(|(n, id)| (*n, *id))
                .collect();
            let f = family_index(family);
            if mine.is_empty() {
                out.levels.count[f] = PREFIX_LEVELS_NONE;
                continue;
            }
            if mine.len() < levels_from {
                out.levels.count[f] = PREFIX_LEVELS_TRIE;
                out.trie.extend(mine);
                continue;
            }
            let Some((lens, regions)) = lay_out(family, &mine, room) else {
                out.levels.count[f] = PREFIX_LEVELS_TRIE;
                out.trie.extend(mine);
                continue;
            };
            room -= regions.len();
            #[expect(clippy::cast_possible_truncation, reason = "at most 8 levels")]
            {
                out.levels.count[f] = lens.len() as u8;
            }
            let slots = if family == FAMILY_IPV4 {
                &mut out.levels.v4
            } else {
                &mut out.levels.v6
            };
            slots[..lens.len()].copy_from_slice(&lens);
            out.regions.extend(regions);
        }
        out.regions.sort_by_key(|r| r.0);
        out
    }

    /// The identity the datapath's walk gives `addr` (what a test or `trace` checks the
    /// layout by); `None` when `addr`'s family is in the trie.
    pub fn walk(&self, addr: std::net::IpAddr) -> Option<u32> {
        let family = if addr.is_ipv4() {
            FAMILY_IPV4
        } else {
            FAMILY_IPV6
        };
        let count = self.levels.count[family_index(family)];
        if count == PREFIX_LEVELS_NONE {
            return Some(IDENTITY_WORLD);
        }
        if count == PREFIX_LEVELS_TRIE {
            return None;
        }
        let lens = if family == FAMILY_IPV4 {
            &self.levels.v4
        } else {
            &self.levels.v6
        };
        let mut id = IDENTITY_WORLD;
        for &len in &lens[..usize::from(count)] {
            let region = IpNet::new(addr, len)
                .expect("level lengths fit the family")
                .trunc();
            match self.regions.binary_search_by(|r| r.0.cmp(&region)) {
                Err(_) => break,
                Ok(i) => {
                    let v = self.regions[i].1;
                    id = v.id;
                    if v.deeper == 0 {
                        break;
                    }
                }
            }
        }
        Some(id)
    }
}

fn family_of(n: &IpNet) -> u8 {
    match n {
        IpNet::V4(_) => FAMILY_IPV4,
        IpNet::V6(_) => FAMILY_IPV6,
    }
}

fn width(family: u8) -> u8 {
    if family == FAMILY_IPV4 { 32 } else { 128 }
}

/// `n`'s top `prefix_len` bits, right-aligned.
fn bits_of(n: &IpNet) -> Bits {
    let (addr, w): (u128, u8) = match n {
        IpNet::V4(v) => (u128::from(u32::from(v.network())), 32),
        IpNet::V6(v) => (u128::from(v.network()), 128),
    };
    shr(addr, w - n.prefix_len())
}

fn shr(v: u128, by: u8) -> u128 {
    v.checked_shr(u32::from(by)).unwrap_or(0)
}

fn shl(v: u128, by: u8) -> u128 {
    v.checked_shl(u32::from(by)).unwrap_or(0)
}

/// The network of `len` bits `bits` (right-aligned) in `family`.
fn net_of(family: u8, bits: Bits, len: u8) -> IpNet {
    let addr = shl(bits, width(family) - len);
    if family == FAMILY_IPV4 {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "an IPv4 address is 32 bits"
        )]
        let a = std::net::Ipv4Addr::from(addr as u32);
        Ipv4Net::new(a, len).expect("length fits").into()
    } else {
        Ipv6Net::new(std::net::Ipv6Addr::from(addr), len)
            .expect("length fits")
            .into()
    }
}

/// The levels and regions of one family's prefixes, or `None` if they do not fit `room`.
fn lay_out(family: u8, prefixes: &[(IpNet, u32)], room: usize) -> Option<Levelled> {
    // Prefixes by length: length -> (bits -> identity).
    let mut by_len: BTreeMap<u8, HashMap<Bits, u32>> = BTreeMap::new();
    for (n, id) in prefixes {
        by_len
            .entry(n.prefix_len())
            .or_default()
            .insert(bits_of(n), *id);
    }
    let lens: Vec<u8> = by_len.keys().copied().collect();
    let counts: Vec<u128> = by_len.values().map(|m| m.len() as u128).collect();
    let budget = expansion_budget(prefixes.len()).min(room);
    let levels = choose_levels(&lens, &counts, budget)?;
    let regions = regions(family, &by_len, &levels);
    (regions.len() <= room).then_some((levels, regions))
}

/// The fewest levels (at most [`MAX_PREFIX_LEVELS`], the last the longest of `lens`) whose
/// expansion of the prefixes (`counts[i]` of length `lens[i]`) stays within `budget`, with
/// the fewest regions among those; `None` if no such set.
fn choose_levels(lens: &[u8], counts: &[u128], budget: usize) -> Option<Vec<u8>> {
    let d = lens.len();
    // cost[p][j]: regions the prefixes longer than level p (p == d: none) and at most lens[j]
    // long expand into at level lens[j]; saturating, as a level may expand past any budget.
    let cost = |p: usize, j: usize| -> u128 {
        let from = if p == d { 0 } else { p + 1 };
        (from..=j).fold(0u128, |acc, i| {
            let gap = u32::from(lens[j] - lens[i]);
            let each = if gap >= 100 { u128::MAX } else { 1u128 << gap };
            acc.saturating_add(counts[i].saturating_mul(each))
        })
    };
    let budget = budget as u128;
    // best[j]: the fewest regions covering lens[..=j] with its last level at lens[j], using
    // exactly k levels; with the choice of the level before.
    let mut best: Vec<Option<(u128, Vec<u8>)>> =
        (0..d).map(|j| Some((cost(d, j), vec![lens[j]]))).collect();
    for k in 1..=MAX_PREFIX_LEVELS.min(d) {
        if let Some((total, levels)) = &best[d - 1]
            && *total <= budget
        {
            debug_assert_eq!(levels.len(), k);
            return Some(levels.clone());
        }
        let next: Vec<Option<(u128, Vec<u8>)>> = (0..d)
            .map(|j| {
                (0..j)
                    .filter_map(|p| {
                        best[p]
                            .as_ref()
                            .map(|(t, l)| (t.saturating_add(cost(p, j)), l))
                    })
                    .min_by_key(|(t, _)| *t)
                    .map(|(t, l)| {
                        let mut l = l.clone();
                        l.push(lens[j]);
                        (t, l)
                    })
            })
            .collect();
        best = next;
    }
    None
}

/// Every region of every level, with its value (see the module doc of the ABI).
fn regions(
    family: u8,
    by_len: &BTreeMap<u8, HashMap<Bits, u32>>,
    levels: &[u8],
) -> Vec<(IpNet, PrefixValue)> {
    let mut out = Vec::new();
    let mut prev: Option<u8> = None;
    for &level in levels {
        // region bits -> a longer prefix lies inside
        let mut here: HashMap<Bits, bool> = HashMap::new();
        for (&len, set) in by_len {
            if prev.is_some_and(|p| len <= p) {
                continue;
            }
            if len <= level {
                let spread = level - len;
                for &bits in set.keys() {
                    let base = shl(bits, spread);
                    for r in 0..(1u128 << spread) {
                        here.entry(base | r).or_insert(false);
                    }
                }
            } else {
                for &bits in set.keys() {
                    here.insert(shr(bits, len - level), true);
                }
            }
        }
        for (bits, deeper) in here {
            let id = longest(by_len, level, bits).unwrap_or(IDENTITY_WORLD);
            out.push((net_of(family, bits, level), PrefixValue::new(id, deeper)));
        }
        prev = Some(level);
    }
    out
}

/// The identity of the longest prefix at most `level` long that covers the region `bits`
/// of `level`.
fn longest(by_len: &BTreeMap<u8, HashMap<Bits, u32>>, level: u8, bits: Bits) -> Option<u32> {
    by_len
        .range(..=level)
        .rev()
        .find_map(|(&len, set)| set.get(&shr(bits, level - len)).copied())
}

#[cfg(test)]
mod tests;
