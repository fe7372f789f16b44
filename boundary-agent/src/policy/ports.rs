//! Port ranges as prefixes: a range is covered by at most 30 (value, prefix bits) pairs, so
//! a longest-prefix-match trie holds ranges without one entry per port.

/// The minimal prefixes covering `lo..=hi`, as (first port, prefix bits).
pub fn range_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The largest aligned block starting at `lo` that does not pass `hi`.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            1u32 << lo.trailing_zeros().min(16)
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "lo <= hi <= 65535, size <= 2^16"
        )]
        out.push((lo as u16, (16 - size.trailing_zeros()) as u8));
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(prefixes: &[(u16, u8)]) -> Vec<u32> {
        let mut ports: Vec<u32> = prefixes
            .iter()
            .flat_map(|&(p, bits)| {
                let size = 1u32 << (16 - bits);
                (u32::from(p)..u32::from(p) + size).collect::<Vec<_>>()
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    #[test]
    fn prefixes_cover_exactly_the_range() {
        for (lo, hi) in [
            (1, 1),
            (30_000, 30_100),
            (1, 65_535),
            (1024, 2047),
            (7, 9),
            (0, 65_535),
            (65_535, 65_535),
        ] {
            let p = range_prefixes(lo, hi);
            assert_eq!(
                covered(&p),
                (u32::from(lo)..=u32::from(hi)).collect::<Vec<_>>(),
                "{lo}-{hi}"
            );
            assert!(p.len() <= 30, "{lo}-{hi}: {} prefixes", p.len());
        }
        assert_eq!(range_prefixes(1024, 2047), vec![(1024, 6)]);
    }
}
