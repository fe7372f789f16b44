//! The daemon's lifecycle: load and attach the datapath, enforce the policy, serve the HTTP
//! endpoints, reload on change, and stop on a signal leaving enforcement in place.
//!
//! `cli/run.rs` only reads its arguments and calls [`Agent::start`] then
//! [`Agent::run_until_signal`] (as ztunnel's `main` hands over to `app.rs`).

pub mod confirm;
mod memory;
mod notify;

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use boundary_common::maps::Action;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use self::confirm::{ConfirmState, Plan};
use crate::{
    config::{AgentConfig, NonIpAction},
    datapath::{
        Datapath, DatapathError, Maps, PinLayout, PinLock, interface_index, maps::MapsError,
        require_ethernet,
    },
    metrics::{self, AgentState, HttpError},
    policy::{self, CompileError, Interfaces, Policy, PolicyError},
};

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// Whether the operator's input (a policy file) is at fault rather than the host.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, AgentError::Policy(_) | AgentError::Compile(_))
    }
}

/// How often the policy file is re-read. Polling (rather than inotify) follows every way a
/// file can change, a `ConfigMap`'s `..data` symlink swap included, at the cost of a read.
const POLL: Duration = Duration::from_secs(2);

/// A running agent: the datapath attached and enforcing, the HTTP endpoints serving.
pub struct Agent {
    config: AgentConfig,
    /// The commit-confirm state files (see `confirm.rs`).
    confirm: ConfirmState,
    /// The digest of the policy text last tried (applied or refused): the same text is not
    /// tried again until something changes.
    tried: Option<String>,
    /// Held for the agent's life (see `datapath/lock.rs`).
    _lock: PinLock,
    /// The protected interfaces and their indexes, which policies are read against.
    interfaces: Interfaces,
    datapath: Datapath,
    state: Arc<Mutex<AgentState>>,
    workloads: usize,
}

impl Agent {
    /// Parses the policy, loads the datapath (adopting a previous agent's pins), applies the
    /// policy, attaches to every configured interface, pins the programs and starts the HTTP
    /// endpoints. Returns once the host is enforcing.
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        // The policy first (the file, or what the commit-confirm state says instead), its
        // interface names checked against the config: a bad file is refused before anything
        // touches the kernel.
        let confirm = ConfirmState::new(&config.state_dir);
        let (bytes, tried) = first_policy(&confirm, &config);
        let names = Interfaces::named(config.interfaces.iter().map(ToString::to_string));
        let mut policy = memory::off_main_arena(|| parse_policy(&config.policy, bytes, &names))?;
        // Every interface checked before anything is loaded or attached: a refusal leaves the
        // host as it was. Their indexes are what a workload's `interfaces:` compile to.
        let mut indexes = Vec::with_capacity(config.interfaces.len());
        for iface in &config.interfaces {
            require_ethernet(iface)?;
            indexes.push((iface.to_string(), interface_index(iface)?));
        }
        let interfaces = Interfaces::protected(indexes);
        policy.bind_interfaces(&interfaces);
        let layout = PinLayout::new(&config.pin_dir);
        // Before anything under the pins is read or written: one agent per pin directory.
        let pin_lock = PinLock::acquire(&layout)?;
        let mut datapath = Datapath::load(layout.clone(), config.max_workloads)?;
        let state = Arc::new(Mutex::new(AgentState::default()));
        apply(&mut datapath, &config, &policy, &state)?;
        for iface in &config.interfaces {
            let ingress = datapath.attach(
                iface,
                config.ingress_for(iface),
                config.xdp_mode,
                config.allow_generic_fallback,
            )?;
            info!(interface = %iface, ingress = %ingress, "enforcing");
            lock(&state)
                .attach_modes
                .push((iface.to_string(), ingress.hook(), ingress.mode()));
        }
        datapath.enable_tail_calls()?;
        datapath.detach_others(&config.interfaces)?;
        datapath.pin_programs()?;
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
            let maps = Maps::from_pins(&layout)?;
            metrics::serve(
                addr,
                metrics::registry(maps, Arc::clone(&state)),
                Arc::clone(&state),
            )?;
        }
        let workloads = policy.workloads.len();
        // The parsed policy is as large as the compiled one (17 MiB at 100k rules): nothing
        // needs it once applied, and a reload parses the file afresh.
        drop(policy);
        memory::release_freed_memory();
        Ok(Self {
            config,
            confirm,
            tried,
            _lock: pin_lock,
            interfaces,
            datapath,
            state,
            workloads,
        })
    }

    /// Serves until SIGTERM or SIGINT: reloads the policy on SIGHUP and whenever the file
    /// changes (a bad file is reported and the running policy stays). On return the datapath
    /// stays attached and pinned (`boundary-agent detach` removes it).
    pub fn run_until_signal(mut self) -> Result<(), AgentError> {
        let io = |what| move |source| AgentError::Io { what, source };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the runtime"))?;
        runtime.block_on(self.serve())
    }

    async fn serve(&mut self) -> Result<(), AgentError> {
        let io = |what| move |source| AgentError::Io { what, source };
        // Handlers first, then "ready": a SIGHUP sent on seeing "ready" must reload, not kill.
        let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;
        lock(&self.state).ready = true;
        let notify = notify::Notifier::from_env();
        notify.ready(&self.status());
        info!(
            interfaces = self.config.interfaces.len(),
            workloads = self.workloads,
            pin_dir = %self.config.pin_dir.display(),
            "boundary agent ready"
        );
        let mut poll = tokio::time::interval(POLL);
        loop {
            let forced = tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => true,
                _ = poll.tick() => false,
            };
            self.tick(forced, &notify);
        }
        notify.stopping();
        info!(
            "stopping; the datapath stays attached and pinned (boundary-agent detach removes it)"
        );
        Ok(())
    }

    /// Reads the policy file and applies what the commit-confirm state says to (the file, or
    /// the policy a rollback put back), if it is not what was last tried or `forced`.
    fn tick(&mut self, forced: bool, notify: &notify::Notifier) {
        let file = std::fs::read(&self.config.policy).ok();
        let file_digest = file.as_deref().map(confirm::digest);
        let plan = file_digest
            .as_deref()
            .map_or(Ok(Plan::File), |d| self.confirm.plan(d, confirm::now_ms()));
        let plan = plan.unwrap_or_else(|e| {
            warn!(error = %e, state_dir = %self.config.state_dir.display(), "cannot read the commit-confirm state; following the policy file");
            Plan::File
        });
        lock(&self.state).pending_confirmation = plan == Plan::Pending;
        let (bytes, digest, trigger) = match plan {
            Plan::File | Plan::Pending => (
                file,
                file_digest,
                if forced { "SIGHUP" } else { "file change" },
            ),
            Plan::Previous {
                policy,
                rolled_back_now,
            } => {
                if rolled_back_now {
                    error!(
                        "the policy applied with --confirm was not confirmed in time: rolling back to the one before (the file is not applied again until it changes)"
                    );
                    lock(&self.state).rollbacks += 1;
                }
                let digest = confirm::digest(policy.as_bytes());
                (Some(policy.into_bytes()), Some(digest), "rollback")
            }
        };
        if !forced && digest == self.tried {
            return;
        }
        self.tried = digest;
        notify.reloading();
        let applied = self.reload(bytes, trigger);
        let refused = if applied {
            ""
        } else {
            "; the last reload was refused"
        };
        notify.ready(&format!("{}{refused}", self.status()));
    }

    /// One line for the service manager (`systemctl status`).
    fn status(&self) -> String {
        format!(
            "enforcing {} workloads on {} interfaces",
            self.workloads,
            self.config.interfaces.len()
        )
    }

    /// Parses and applies the policy file (`bytes`, just read); a refusal keeps the running
    /// policy, is counted and returns false.
    fn reload(&mut self, bytes: Option<Vec<u8>>, trigger: &'static str) -> bool {
        let started = Instant::now();
        let path = self.config.policy.clone();
        let interfaces = &self.interfaces;
        let result =
            memory::off_main_arena(|| parse_policy(&path, bytes, interfaces)).and_then(|p| {
                apply(&mut self.datapath, &self.config, &p, &self.state).map(|()| p.workloads.len())
            });
        memory::release_freed_memory();
        match result {
            Ok(workloads) => {
                self.workloads = workloads;
                lock(&self.state).reloads_ok += 1;
                info!(
                    workloads,
                    apply_ms = started.elapsed().as_secs_f64() * 1000.0,
                    trigger,
                    "policy reloaded"
                );
                true
            }
            Err(e) => {
                lock(&self.state).reloads_failed += 1;
                error!(error = %crate::report::chain(&e), "policy reload refused; the running policy stays");
                false
            }
        }
    }
}

/// The policy text to start with: the policy file, unless the commit-confirm state says a
/// pending policy ran out of time (rolled back now) or was rolled back; and its digest.
fn first_policy(confirm: &ConfirmState, config: &AgentConfig) -> (Option<Vec<u8>>, Option<String>) {
    let Ok(file) = std::fs::read(&config.policy) else {
        // `parse_policy` reads it again and says why it cannot.
        return (None, None);
    };
    let file_digest = confirm::digest(&file);
    match confirm.plan(&file_digest, confirm::now_ms()) {
        Ok(Plan::File | Plan::Pending) => (Some(file), Some(file_digest)),
        Ok(Plan::Previous {
            policy,
            rolled_back_now,
        }) => {
            if rolled_back_now {
                error!(
                    "the policy applied with --confirm was not confirmed in time (the agent was down): starting with the one before"
                );
            } else {
                warn!(
                    "the policy file still holds a policy that was rolled back: starting with the one before it"
                );
            }
            let digest = confirm::digest(policy.as_bytes());
            (Some(policy.into_bytes()), Some(digest))
        }
        Err(e) => {
            warn!(error = %e, state_dir = %config.state_dir.display(), "cannot read the commit-confirm state; following the policy file");
            (Some(file), Some(file_digest))
        }
    }
}

/// Parses the policy from the bytes just read; if there were none or they are not UTF-8,
/// reads the file again so the error says what is wrong with it.
fn parse_policy(
    path: &Path,
    bytes: Option<Vec<u8>>,
    interfaces: &Interfaces,
) -> Result<Policy, AgentError> {
    Ok(match bytes.map(String::from_utf8) {
        Some(Ok(text)) => Policy::from_str_on(&path.display().to_string(), &text, interfaces),
        _ => Policy::from_file_on(path, interfaces),
    }?)
}

fn lock(state: &Mutex<AgentState>) -> MutexGuard<'_, AgentState> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep serving it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Compiles `policy` against the installed workload slots and swaps it in as the next
/// generation; records what the metrics report of it.
fn apply(
    datapath: &mut Datapath,
    config: &AgentConfig,
    policy: &Policy,
    state: &Mutex<AgentState>,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let slots = datapath.maps().slot_table()?;
    let rule_ids = datapath.maps().rule_table()?;
    let buckets = datapath.maps().bucket_table()?;
    let compiled = memory::off_main_arena(|| {
        policy::compile_keeping(policy, &slots, &rule_ids, &buckets, config.max_workloads)
    })?;
    let non_ip = match config.non_ip {
        NonIpAction::Pass => Action::Pass,
        NonIpAction::Drop => Action::Drop,
    };
    let rules = compiled
        .rules
        .iter()
        .map(|(&id, r)| (id, r.workload.clone(), r.direction.as_str(), r.name.clone()))
        .collect();
    let limits = compiled
        .rules
        .iter()
        .filter_map(|(&id, r)| Some((id, r.limit?)))
        .collect();
    let entries = compiled.entry_counts();
    let bindings = compiled.identities.len() as u64;
    datapath.apply(&compiled, non_ip)?;
    let generation = datapath.maps().datapath_config()?.generation;
    let mut s = lock(state);
    s.rules = rules;
    s.limits = limits;
    s.map_entries = entries;
    s.static_bindings = bindings;
    s.policy_generation = generation;
    s.last_apply_seconds = started.elapsed().as_secs_f64();
    Ok(())
}
