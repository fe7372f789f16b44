//! Kernel-side diagnostics (aya-log): the names the agent loads and drains them by.
//!
//! The datapath logs its rare events (a map update that failed, a state that cannot happen, a
//! parse limit reached) through aya-log. Which of them are compiled into the loaded program is
//! decided at load: [`LOG_LEVEL_GLOBAL`] is a `.rodata` byte the agent sets, the verifier reads
//! as a constant and prunes every log site above it. Drop events do not go here: they have
//! their own sampled ring ([`crate::maps::EVENTS_MAP`]).

/// `u8` global: the most verbose level whose log sites run, as `aya_log::Level` numbers them
/// (1 error, 2 warn, 3 info, 4 debug); 0, the value in the object, turns every site off.
pub const LOG_LEVEL_GLOBAL: &str = "BND_LOG_LEVEL";

/// aya-log's ring of records (the name is aya-log-ebpf's). Pinned beside the other maps, so a
/// restarted agent drains what the programs it adopted logged while no agent ran.
pub const LOG_MAP: &str = "AYA_LOGS";
