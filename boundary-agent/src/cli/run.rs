use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use boundary_common::maps::Action;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use super::CliError;
use crate::{
    config::{AgentConfig, NonIpAction, XdpMode},
    datapath::{Datapath, Maps, PinLayout},
    metrics::{self, AgentState},
    policy::{self, Policy},
};

/// Load the datapath, attach it to the configured interfaces and enforce the policy.
///
/// On every configured interface, XDP or tcx takes ingress (`ingress: auto` picks tcx on
/// veths, XDP elsewhere) and tcx takes egress. Maps, programs and
/// links are pinned under the pin directory, so enforcement continues after the agent exits
/// (SIGTERM/SIGINT); `boundary-agent detach` removes it. SIGHUP reloads the policy file; a bad
/// file is reported and the running policy stays. The policy file is also re-read every
/// two seconds and reloaded when it changed. A previous agent's pins are adopted: maps
/// keep their contents and counters, links are switched to the new programs in place.
///
/// Example: boundary-agent run --config /etc/boundary/agent.yaml
#[derive(Debug, clap::Args)]
pub struct Run {
    /// The agent configuration file (YAML).
    #[arg(long)]
    pub config: PathBuf,
    /// Override the config's XDP mode. Native never falls back silently.
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
}

impl Run {
    pub fn execute(self) -> Result<(), CliError> {
        let mut config = AgentConfig::from_file(&self.config).map_err(CliError::bad_input)?;
        if let Some(mode) = self.xdp_mode {
            config.xdp_mode = mode;
        }
        let policy =
            off_main_arena(|| Policy::from_file(&config.policy)).map_err(CliError::bad_input)?;

        let layout = PinLayout::new(&config.pin_dir);
        let mut datapath =
            Datapath::load(layout.clone(), config.max_workloads).map_err(CliError::failed)?;
        let state = Arc::new(Mutex::new(AgentState::default()));
        apply(&mut datapath, &config, &policy, &state)?;
        for iface in &config.interfaces {
            let ingress = datapath
                .attach(
                    iface,
                    config.ingress_for(iface),
                    config.xdp_mode,
                    config.allow_generic_fallback,
                )
                .map_err(CliError::failed)?;
            info!(interface = %iface, ingress = %ingress, "enforcing");
            lock(&state)
                .attach_modes
                .push((iface.to_string(), ingress.hook(), ingress.mode()));
        }
        datapath
            .detach_others(&config.interfaces)
            .map_err(CliError::failed)?;
        datapath.pin_programs().map_err(CliError::failed)?;
        for p in datapath.program_stats() {
            info!(
                program = p.name,
                id = p.id,
                verified_insns = p.verified_insns,
                jited_bytes = p.jited_bytes,
                "program loaded"
            );
        }
        if let Some(addr) = config.metrics_address {
            // The collector reads the maps through handles of its own, from the pins.
            let maps = Maps::from_pins(&layout).map_err(CliError::failed)?;
            metrics::serve(
                addr,
                metrics::registry(maps, Arc::clone(&state)),
                Arc::clone(&state),
            )
            .map_err(CliError::failed)?;
        }
        let workloads = policy.workloads.len();
        // The parsed policy is as large as the compiled one (17 MiB at 100k rules): nothing
        // needs it once applied, and a reload parses the file afresh.
        drop(policy);
        release_freed_memory();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::failed)?;
        runtime.block_on(serve(&mut datapath, &config, &state, workloads))
    }
}

/// Runs `f` (parsing or compiling a policy) on a thread of its own, so that its allocations
/// come from another glibc arena than the main thread's.
///
/// Parsing and compiling a large policy allocates several times what the agent keeps: at
/// 100k rules about 200 MiB for the YAML parser's event list (`serde_yaml_ng` builds it in
/// full before deserializing) and 60 MiB of compiled tables, against about 15 MiB kept (rule
/// labels, the live generation's keys). Made on the main thread, those short-lived
/// allocations interleave with the long-lived ones, which then pin most of the freed pages:
/// measured, 75-100 MiB resident after trimming. In an arena of their own they are freed
/// whole and `release_freed_memory` hands them back (about 30 MiB resident).
fn off_main_arena<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("policy".into())
            .spawn_scoped(s, f)
            .expect("spawn the policy thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Hands the heap's free pages back to the kernel, after a policy was parsed, compiled and
/// applied (see `off_main_arena`). glibc returns little of it on its own, so the agent's
/// resident size would stay near the peak of its largest reload.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    #[expect(unsafe_code, reason = "malloc_trim(3) has no safe wrapper")]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A digest of the policy file, to notice a change without keeping the file's bytes (7 MiB
/// at 100k rules) between polls.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher as _};
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Parses the policy from the bytes just read; if there were none or they are not UTF-8,
/// reads the file again so the error says what is wrong with it.
fn parse_policy(path: &Path, bytes: Option<Vec<u8>>) -> Result<Policy, CliError> {
    match bytes.map(String::from_utf8) {
        Some(Ok(text)) => Policy::from_str(&path.display().to_string(), &text),
        _ => Policy::from_file(path),
    }
    .map_err(CliError::bad_input)
}

fn lock(state: &Mutex<AgentState>) -> std::sync::MutexGuard<'_, AgentState> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep serving it.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn apply(
    datapath: &mut Datapath,
    config: &AgentConfig,
    policy: &Policy,
    state: &Mutex<AgentState>,
) -> Result<(), CliError> {
    let started = Instant::now();
    let slots = datapath.maps.slot_table().map_err(CliError::failed)?;
    let compiled = off_main_arena(|| policy::compile(policy, &slots, config.max_workloads))
        .map_err(CliError::bad_input)?;
    let non_ip = match config.non_ip {
        NonIpAction::Pass => Action::Pass,
        NonIpAction::Drop => Action::Drop,
    };
    let rules = compiled
        .rules
        .iter()
        .map(|r| (r.workload.clone(), r.direction.as_str(), r.name.clone()))
        .collect();
    let entries = vec![
        (
            boundary_common::maps::ENDPOINTS_MAP,
            compiled.endpoints.len() as u64,
        ),
        (
            boundary_common::maps::IDENTITIES_MAP,
            compiled.identities.len() as u64,
        ),
        (
            boundary_common::maps::CIDRS_MAP,
            compiled.cidrs.len() as u64,
        ),
        (
            boundary_common::maps::POLICY_MAP,
            compiled.policy.len() as u64,
        ),
        (
            boundary_common::maps::RANGES_MAP,
            compiled.ranges.len() as u64,
        ),
        (
            boundary_common::maps::FAILSAFE_MAP,
            compiled.failsafe.len() as u64,
        ),
    ];
    let bindings = compiled.identities.len() as u64;
    datapath
        .maps
        .apply(&compiled, non_ip)
        .map_err(CliError::failed)?;
    let generation = datapath
        .maps
        .datapath_config()
        .map_err(CliError::failed)?
        .generation;
    let mut s = lock(state);
    s.rules = rules;
    s.map_entries = entries;
    s.static_bindings = bindings;
    s.policy_generation = generation;
    s.last_apply_seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// How often the policy file is re-read. Polling (rather than inotify) follows every way a
/// file can change, a `ConfigMap`'s `..data` symlink swap included, at the cost of a read.
const POLL: std::time::Duration = std::time::Duration::from_secs(2);

async fn serve(
    datapath: &mut Datapath,
    config: &AgentConfig,
    state: &Mutex<AgentState>,
    workloads: usize,
) -> Result<(), CliError> {
    // Handlers first, then "ready": a SIGHUP sent on seeing "ready" must reload, not kill.
    let mut term = signal(SignalKind::terminate()).map_err(CliError::failed)?;
    let mut int = signal(SignalKind::interrupt()).map_err(CliError::failed)?;
    let mut hup = signal(SignalKind::hangup()).map_err(CliError::failed)?;
    lock(state).ready = true;
    info!(
        interfaces = config.interfaces.len(),
        workloads,
        pin_dir = %config.pin_dir.display(),
        "boundary agent ready"
    );
    let mut poll = tokio::time::interval(POLL);
    let mut last = std::fs::read(&config.policy)
        .ok()
        .as_deref()
        .map(fingerprint);
    loop {
        let forced = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => true,
            _ = poll.tick() => false,
        };
        let now = std::fs::read(&config.policy).ok();
        let digest = now.as_deref().map(fingerprint);
        if !forced && digest == last {
            continue;
        }
        last = digest;
        let started = Instant::now();
        let result = off_main_arena(|| parse_policy(&config.policy, now))
            .and_then(|p| apply(datapath, config, &p, state).map(|()| p.workloads.len()));
        release_freed_memory();
        match result {
            Ok(workloads) => {
                lock(state).reloads_ok += 1;
                info!(
                    workloads,
                    apply_ms = started.elapsed().as_secs_f64() * 1000.0,
                    trigger = if forced { "SIGHUP" } else { "file change" },
                    "policy reloaded"
                );
            }
            Err(e) => {
                lock(state).reloads_failed += 1;
                error!(error = %e, "policy reload refused; the running policy stays");
            }
        }
    }
    info!("stopping; the datapath stays attached and pinned (boundary-agent detach removes it)");
    Ok(())
}
