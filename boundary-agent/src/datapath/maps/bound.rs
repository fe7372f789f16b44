//! The bound-address bitmap (`BOUND_MAP`): a bit per hash of every address a generation binds,
//! so that a peer whose bit is clear (a CIDR or `world` peer) is not probed for in the
//! identity map. Bits are only ever added to a live generation (a set bit with no binding
//! costs the probe, nothing more); a generation's whole bitmap is written before the switch
//! to it.

use std::net::IpAddr;

use boundary_common::maps::{BOUND_MAP, BOUND_WORDS, bound_bit, bound_word_index};

use super::{Maps, MapsError, keys::addr_key, map_err, swap::write_map};
use crate::policy::Tables;

/// (word, bit) of `addr` within a generation's bitmap.
fn word_and_bit(addr: IpAddr) -> (usize, u64) {
    let bit = bound_bit(&addr_key(0, addr).addr);
    ((bit >> 6) as usize, 1u64 << (bit & 63))
}

impl Maps {
    /// Writes the bitmap of generation `g` for the addresses `t` binds: only that generation
    /// reads it, so a failed swap leaves nothing to take back. Words this process already
    /// wrote for that generation are skipped when unchanged.
    pub(super) fn write_bound_bits(&mut self, g: u8, t: &Tables) -> Result<(), MapsError> {
        let mut bits = vec![0u64; BOUND_WORDS as usize];
        for &addr in t.identities.keys() {
            let (word, bit) = word_and_bit(addr);
            bits[word] |= bit;
        }
        let known = self.bound_words[usize::from(g & 1)].take();
        let (mut indices, mut words) = (Vec::new(), Vec::new());
        for (word, value) in bits.iter().enumerate() {
            if known.as_ref().is_some_and(|k| k[word] == *value) {
                continue;
            }
            #[expect(clippy::cast_possible_truncation, reason = "BOUND_WORDS words")]
            indices.push(bound_word_index(g, (word as u32) << 6));
            words.push(*value);
        }
        let mut written = 0;
        write_map(&mut self.bound, BOUND_MAP, &indices, &words, &mut written)?;
        self.bound_words[usize::from(g & 1)] = Some(bits);
        Ok(())
    }

    /// Sets `addr`'s bit in live generation `g`: before its binding is written, so that no
    /// packet finds the binding's bit clear.
    pub(super) fn add_bound_bit(&mut self, g: u8, addr: IpAddr) -> Result<(), MapsError> {
        let (word, bit) = word_and_bit(addr);
        #[expect(clippy::cast_possible_truncation, reason = "BOUND_WORDS words")]
        let index = bound_word_index(g, (word as u32) << 6);
        let value = self.bound.get(&index, 0).map_err(map_err(BOUND_MAP))?;
        if value & bit == 0 {
            self.bound
                .set(index, &(value | bit), 0)
                .map_err(map_err(BOUND_MAP))?;
        }
        if let Some(known) = &mut self.bound_words[usize::from(g & 1)] {
            known[word] |= bit;
        }
        Ok(())
    }
}
