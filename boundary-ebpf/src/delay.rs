//! A pause between reading the config and the first lookup under it, for the test that
//! shows a generation swap waits out the packets in flight (tests/tests/kernel_swap.rs).
//!
//! The pause is a `.rodata` global the agent's loader leaves at zero; only that test sets it
//! (`EbpfLoader::override_global`). The verifier reads the frozen value as a constant and
//! removes the dead branch, so a production load carries no trace of it.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_ns, generated::bpf_loop};

/// Nanoseconds to spin (see `boundary_common::maps::READER_DELAY_GLOBAL`).
#[unsafe(no_mangle)]
static BND_READER_DELAY_NS: u64 = 0;

/// At most this many turns of the spin: about 100 ns each, well past any delay a test asks.
const MAX_TURNS: u32 = 1 << 23;

/// One turn: 1 (stop) once the deadline `ctx` points at has passed, else 0.
#[inline(never)]
extern "C" fn turn(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the caller's stack slot holding the deadline, alive for the loop.
    let deadline = unsafe { *ctx.cast::<u64>() };
    // SAFETY: a helper with no arguments.
    i64::from(unsafe { bpf_ktime_get_ns() } >= deadline)
}

/// Spins for the configured time; nothing when it is zero.
#[inline(always)]
pub fn pause() {
    // SAFETY: a read of a global. Volatile, or LLVM folds the zero it was compiled with; the
    // verifier turns the read of the frozen .rodata map into a constant.
    let ns = unsafe { core::ptr::read_volatile(&raw const BND_READER_DELAY_NS) };
    if ns == 0 {
        return;
    }
    // SAFETY: a helper with no arguments.
    let mut deadline = unsafe { bpf_ktime_get_ns() } + ns;
    // SAFETY: `turn` is a subprogram of this object and `deadline` outlives the loop.
    unsafe {
        bpf_loop(
            MAX_TURNS,
            turn as *mut c_void,
            (&raw mut deadline).cast::<c_void>(),
            0,
        );
    }
}
