//! The datapath's diagnostics: rare events logged through aya-log (drained by the agent's
//! `datapath/kernel_log.rs` into its own log, target `boundary::kernel`). Never for what every
//! packet does: drops and their reasons are counted (`stats`) and sampled (`events`).
//!
//! Off unless the agent asks: `BND_LOG_LEVEL` is a `.rodata` byte, zero in the object, that the
//! agent sets at load (`EbpfLoader::override_global`, from `kernelLog` in its config). The
//! verifier reads the frozen map as a constant, so a site above the level is a branch never
//! taken and is removed before the JIT sees it: with logging off the loaded program is the one
//! without any log call (the bench's `kernel log` row shows the counts and the cost).
//!
//! The log macros are aya-log-ebpf's. Their own level check reads `AYA_LOG_LEVEL`, which the
//! agent leaves at its built-in 0xff (everything): ours comes first and is the one that counts,
//! with a default of off for every loader of the object.

use aya_log_ebpf::{debug, error, macro_support::Level, warn};
use boundary_common::Reason;

/// The most verbose level whose sites run (`aya_log::Level` numbers, 0 = none); see the
/// module doc and `boundary_common::diag::LOG_LEVEL_GLOBAL`.
#[unsafe(no_mangle)]
static BND_LOG_LEVEL: u8 = 0;

#[inline(always)]
fn enabled(level: Level) -> bool {
    // SAFETY: a read of a global. Volatile, or LLVM folds the zero it was compiled with; the
    // verifier turns the read of the frozen .rodata map into a constant.
    level as u8 <= unsafe { core::ptr::read_volatile(&raw const BND_LOG_LEVEL) }
}

/// Logs a map update in the datapath that failed (`result` is the helper's, a negative errno
/// on failure). What a failure costs is the caller's to say: a conntrack insert lost means a
/// reply loses its shortcut. The level is tested before the result, so that with logging off
/// the verifier prunes the site before it would follow the result's two branches.
#[inline(always)]
pub fn map_update(map: &'static str, result: Result<(), i64>, slot: u16, direction: u8) {
    if !enabled(Level::Warn) {
        return;
    }
    if let Err(err) = result {
        // aya-log records carry no context: the macro's first argument is unused.
        warn!(
            &(),
            "map update failed: map={} err={} slot={} direction={}", map, err, slot, direction
        );
    }
}

/// A state the datapath is built never to reach; the packet is judged `internal_error`.
#[inline(always)]
pub fn impossible(what: &'static str, direction: u8) {
    if enabled(Level::Error) {
        error!(
            &(),
            "impossible state: {} direction={} reason=internal_error", what, direction
        );
    }
}

/// A stored reason code (verdict cache, fragment table) that names no reason: the packet is
/// judged `internal_error`.
#[inline(always)]
pub fn unknown_reason(table: &'static str, code: u8, slot: u16) -> Reason {
    if enabled(Level::Error) {
        error!(
            &(),
            "impossible state: {} holds unknown reason code {} slot={} reason=internal_error",
            table,
            code,
            slot
        );
    }
    Reason::Internal
}

/// A parse limit the packet went past (the drop itself is counted and sampled as usual); the
/// log says which limit, on what, for whom. Attackers choose these packets: debug level.
#[inline(always)]
pub fn parse_limit(reason: Reason, slot: u16, direction: u8, ifindex: u32) {
    if !enabled(Level::Debug) {
        return;
    }
    // One call per limit: a record's strings must have lengths the verifier knows.
    match reason {
        Reason::VlanTooDeep => debug!(
            &(),
            "parse limit hit: more than two VLAN tags reason=vlan_too_deep slot={} direction={} ifindex={}",
            slot,
            direction,
            ifindex
        ),
        Reason::Ipv6TooManyExtHeaders => debug!(
            &(),
            "parse limit hit: IPv6 extension headers past the walk's bound reason=ipv6_too_many_ext_headers slot={} direction={} ifindex={}",
            slot,
            direction,
            ifindex
        ),
        _ => {}
    }
}
