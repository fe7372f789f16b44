//! The eBPF object built by `build.rs` (boundary-ebpf for bpfel-unknown-none), embedded.

/// The ELF object holding the three programs and all maps.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/boundary"));

/// XDP ingress program name in the object.
pub const XDP_PROGRAM: &str = "boundary_xdp";
/// TC (tcx) ingress program name in the object.
pub const TC_INGRESS_PROGRAM: &str = "boundary_tc_ingress";
/// TC (tcx) egress program name in the object.
pub const TC_PROGRAM: &str = "boundary_tc";

/// A fresh key for the verdict cache's slot hash (see `boundary_common::maps::CACHE_KEY_GLOBAL`):
/// random words from the kernel's random source, new for every load, so nobody can choose
/// flows that collide in the cache.
pub fn cache_key() -> std::io::Result<[u64; boundary_common::maps::CACHE_KEY_WORDS]> {
    use std::io::Read as _;
    let mut bytes = [0u8; 8 * boundary_common::maps::CACHE_KEY_WORDS];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut key = [0u64; boundary_common::maps::CACHE_KEY_WORDS];
    for (k, chunk) in key.iter_mut().zip(bytes.as_chunks::<8>().0) {
        *k = u64::from_ne_bytes(*chunk);
    }
    Ok(key)
}

/// Sets a fresh [`cache_key`] in `loader`: every loader of the object must call this, or every
/// flow shares one cache slot.
pub fn set_cache_key<'a>(
    loader: &mut aya::EbpfLoader<'a>,
    key: &'a [u64; boundary_common::maps::CACHE_KEY_WORDS],
) {
    loader.override_global(boundary_common::maps::CACHE_KEY_GLOBAL, key, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_new_for_every_load() {
        let a = cache_key().expect("urandom");
        let b = cache_key().expect("urandom");
        assert_ne!(a, b, "a key must not repeat from one load to the next");
        assert!(a.iter().all(|&k| k != 0), "{a:x?}");
    }
}
