//! The eBPF object built by `build.rs` (boundary-ebpf for bpfel-unknown-none), embedded.

/// The ELF object holding both programs and all maps.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/boundary"));

/// XDP ingress program name in the object.
pub const XDP_PROGRAM: &str = "boundary_xdp";
/// TC (tcx) egress program name in the object.
pub const TC_PROGRAM: &str = "boundary_tc";
