//! Workload names as [`NAMES_MAP`](crate::maps::NAMES_MAP) stores them
//! ([`WorkloadName`](crate::maps::WorkloadName)): UTF-8, NUL-padded to [`WORKLOAD_NAME_LEN`]
//! bytes, the last byte always NUL. The encoding lives beside the value type it fills.

// The crate is `no_std` for the eBPF side; userspace (the `user` feature) has an allocator.
#[cfg(feature = "user")]
extern crate alloc;

use crate::maps::WORKLOAD_NAME_LEN;

/// A name as stored in the names map: NUL-padded.
pub fn encode_name(name: &str) -> [u8; WORKLOAD_NAME_LEN] {
    let mut out = [0u8; WORKLOAD_NAME_LEN];
    let n = name.len().min(WORKLOAD_NAME_LEN - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The inverse of [`encode_name`]; `None` for an empty (unused) slot.
#[cfg(feature = "user")]
pub fn decode_name(raw: &[u8; WORKLOAD_NAME_LEN]) -> Option<alloc::string::String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    (end > 0).then(|| alloc::string::String::from_utf8_lossy(&raw[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_nul_padded_and_a_long_one_cut_to_keep_the_last_nul() {
        assert_eq!(&encode_name("ab")[..3], b"ab\0");
        let long = [b'n'; WORKLOAD_NAME_LEN + 5];
        let raw = encode_name(core::str::from_utf8(&long).expect("ASCII"));
        assert_eq!(raw[..WORKLOAD_NAME_LEN - 1], long[..WORKLOAD_NAME_LEN - 1]);
        assert_eq!(raw[WORKLOAD_NAME_LEN - 1], 0);
    }

    #[cfg(feature = "user")]
    #[test]
    fn names_round_trip_and_an_empty_slot_has_none() {
        let longest = [b'n'; WORKLOAD_NAME_LEN - 1];
        let longest = core::str::from_utf8(&longest).expect("ASCII");
        for name in ["a", "payments-api", longest] {
            assert_eq!(decode_name(&encode_name(name)).as_deref(), Some(name));
        }
        assert_eq!(decode_name(&[0; WORKLOAD_NAME_LEN]), None);
    }
}
