//! The daemon's lifecycle: load and attach the datapath, enforce the policy, serve the HTTP
//! endpoints, reload on change, and stop on a signal leaving enforcement in place.
//!
//! `cli/run.rs` only reads its arguments and calls [`Agent::start`] then
//! [`Agent::run_until_signal`] (as ztunnel's `main` hands over to `app.rs`).

mod bindings;
pub mod confirm;
pub mod control;
mod identity_loop;
pub mod interfaces;
mod kernel_log;
mod link_events;
mod memory;
mod notify;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use boundary_common::maps::Action;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc::Receiver,
};
use tracing::{error, info, warn};

use self::{
    bindings::Bindings,
    confirm::{ConfirmState, Plan},
    interfaces::Reconciler,
    link_events::LinkEvents,
};
use crate::{
    config::{AgentConfig, NonIpAction},
    datapath::{
        Datapath, DatapathError, LoadOptions, Maps, PinLayout, PinLock,
        maps::MapsError,
        rtnetlink::{self, LinkSubscription},
    },
    identity::{self, Stats, TrustStore},
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
    #[error("identity: {0}")]
    Trust(#[from] identity::TrustError),
    #[error(transparent)]
    Endpoint(#[from] identity::ServeError),
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
        // Native XDP refused without `allowGenericFallback`: the configuration asks for what
        // the interface cannot do, and a restart would not change that (the interface keeps
        // the link it had, see `attach_xdp`).
        matches!(
            self,
            AgentError::Policy(_)
                | AgentError::Compile(_)
                | AgentError::Trust(_)
                | AgentError::Datapath(DatapathError::NativeRefused { .. })
        )
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
    /// The configured interfaces present and their indexes, which policies are read against.
    interfaces: Interfaces,
    /// The text of the live policy, read again against new interface indexes when an
    /// interface it names appears or is re-created; and the indexes it was read with.
    live: Option<Vec<u8>>,
    listed: BTreeMap<String, Option<u32>>,
    reconciler: Reconciler,
    /// Opened at start, before the first link dump; read from the run loop.
    subscription: Option<LinkSubscription>,
    datapath: Datapath,
    state: Arc<Mutex<AgentState>>,
    workloads: usize,
    /// The digest of the agent config file last read for `kernelLog` (see `kernel_log.rs`).
    config_digest: Option<String>,
    /// Earned bindings, when the identity endpoint is on (see `bindings.rs`).
    bindings: Option<Bindings>,
    /// The live policy's static bindings: address -> SPIFFE ID.
    statics: BTreeMap<IpAddr, String>,
    /// Verified peers to bind, and certificates a reloaded CRL lists, from the identity
    /// endpoint (taken by the loop).
    endpoint: Option<identity_loop::Endpoint>,
    /// The control channel (local socket, control API), taken by the loop.
    control: Option<(
        tokio::sync::mpsc::Sender<control::Request>,
        Receiver<control::Request>,
    )>,
}

impl Agent {
    /// Parses the policy, loads the datapath (adopting a previous agent's pins), applies the
    /// policy, attaches to every configured interface present, pins the programs and starts
    /// the HTTP endpoints. Returns once the host is enforcing.
    pub fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let io = |what| move |source| AgentError::Io { what, source };
        // Pins already there are locked before anything else, so `detach` finds a starting
        // agent as it finds a running one (parsing a large policy takes seconds).
        let layout = PinLayout::new(&config.pin_dir);
        let early_lock = PinLock::acquire_existing(&layout)?;
        // The policy first (the file, or what the commit-confirm state says instead), its
        // interface names checked against the config: a bad file is refused before anything
        // touches the kernel.
        let confirm = ConfirmState::new(&config.state_dir);
        let (bytes, tried) = first_policy(&confirm, &config);
        let names = Interfaces::named(config.interfaces.iter().cloned());
        let live = bytes.clone();
        let mut policy = memory::off_main_arena(|| parse_policy(&config.policy, bytes, &names))?;
        // Subscribed before the first dump: a link that appears in between is not missed.
        let subscription = LinkSubscription::new().map_err(io("subscribing to link changes"))?;
        let links = rtnetlink::links().map_err(io("listing the interfaces"))?;
        // Checked before anything is loaded or attached: a refusal leaves the host as it was.
        // The indexes are what a workload's `interfaces:` compile to.
        interfaces::check_exact(&config, &links)?;
        let interfaces = Interfaces::host(
            config.interfaces.iter().cloned(),
            interfaces::indexes(&config.interfaces, &links),
        );
        policy.bind_interfaces(&interfaces);
        let listed = listed(&policy, &interfaces);
        // The identity endpoint's trust too: bad files refuse the start as a bad policy does.
        let trust = config
            .identity
            .as_ref()
            .map(|i| TrustStore::load(i.trust_paths()).map(Arc::new))
            .transpose()?;
        // Before anything under the pins is read or written: one agent per pin directory.
        let pin_lock = match early_lock {
            Some(held) => held.still_here(&layout)?,
            None => PinLock::acquire(&layout)?,
        };
        let mut datapath = load_datapath(&config, &layout, &policy)?;
        let state = Arc::new(Mutex::new(AgentState::default()));
        let mut bindings = config
            .identity
            .as_ref()
            .and_then(|i| Some(Bindings::restore(&datapath, i.lease, i.listen?)));
        apply(&mut datapath, &config, &policy, &state, bindings.as_mut())?;
        bindings::check_at_start(&mut datapath, bindings.as_mut(), trust.as_deref());
        let mut reconciler = Reconciler::default();
        reconciler.run(&mut datapath, &config, &links, true, true)?;
        lock(&state).interfaces = reconciler.status(&config.interfaces, &links);
        datapath.enable_tail_calls()?;
        datapath.detach_others(|name| interfaces::selected(&config.interfaces, name))?;
        datapath.pin_programs()?;
        for p in datapath.program_stats() {
            info!(
                program = p.name,
                id = p.id,
                verified_insns = p.verified_insns,
                xlated_bytes = p.xlated_bytes,
                jited_bytes = p.jited_bytes,
                "program loaded"
            );
        }
        let handshakes = Arc::new(Stats::default());
        if let Some(addr) = config.metrics_address {
            // The collector reads the maps through handles of its own, from the pins.
            let maps = Maps::from_pins(&layout)?;
            let mut registry = metrics::registry(maps, Arc::clone(&state));
            if let Some(trust) = &trust {
                metrics::identity::register(
                    &mut registry,
                    Arc::clone(&handshakes),
                    Arc::clone(trust),
                );
            }
            metrics::serve(addr, registry, Arc::clone(&state))?;
        }
        // Requests from the local control socket and the control API over mTLS.
        let control = tokio::sync::mpsc::channel(16);
        // The identity endpoint last: a peer it verifies is bound against the live policy.
        let endpoint = match &trust {
            Some(trust) => identity_loop::start_endpoint(&config, trust, &control.0, handshakes)?,
            None => None,
        };
        let workloads = policy.workloads.len();
        let statics = statics_of(&policy);
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
            live,
            listed,
            reconciler,
            subscription: Some(subscription),
            datapath,
            state,
            workloads,
            config_digest: None,
            bindings,
            statics,
            endpoint,
            control: Some(control),
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
        self.spawn_kernel_log();
        lock(&self.state).ready = true;
        let notify = notify::Notifier::from_env();
        notify.ready(&self.status());
        info!(
            interfaces = self.config.interfaces.len(),
            workloads = self.workloads,
            kernel_log = %self.config.kernel_log,
            pin_dir = %self.config.pin_dir.display(),
            "boundary agent ready"
        );
        let mut events = self.subscription.take().map(LinkEvents::new).transpose().unwrap_or_else(|e| {
            warn!(error = %e, "cannot watch link changes; interfaces are reconciled on the {}s poll only", POLL.as_secs());
            None
        });
        let mut poll = tokio::time::interval(POLL);
        let (control_tx, mut control) = self
            .control
            .take()
            .unwrap_or_else(|| tokio::sync::mpsc::channel(16));
        if let Err(e) = control::serve(&self.config.state_dir, control_tx) {
            warn!(error = %e, state_dir = %self.config.state_dir.display(), "cannot open the control socket; `identity revoke` and `identity list` cannot reach this agent");
        }
        // Expired bindings are swept each second (the datapath ignores them at once).
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let (mut binds, mut revoked) = self
            .endpoint
            .take()
            .map_or((None, None), |(b, r)| (Some(b), Some(r)));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                Some(request) = next(binds.as_mut()) => {
                    let outcome = self.on_attested(&request.attested);
                    let _ = request.reply.send(outcome);
                }
                Some(trust) = next(revoked.as_mut()) => self.on_trust(&trust),
                Some(request) = control.recv() => match request {
                    control::Request::Reload(reply) => {
                        let refused = lock(&self.state).reloads_failed;
                        self.tick(true, &notify);
                        let _ = reply.send(if lock(&self.state).reloads_failed == refused {
                            Ok(())
                        } else {
                            Err("the policy was refused; the running policy stays (the agent's log says why)".to_owned())
                        });
                    }
                    other => self.on_control(other),
                },
                _ = sweep.tick() => self.sweep_bindings(),
                _ = int.recv() => break,
                _ = hup.recv() => {
                    self.follow_kernel_log(true);
                    self.tick(true, &notify);
                }
                _ = poll.tick() => {
                    self.follow_kernel_log(false);
                    self.tick(false, &notify);
                    self.reconcile("poll", true);
                }
                changes = next_change(events.as_mut()) => match changes {
                    Ok(c) => self.reconcile(if c.overflowed { "link events lost (ENOBUFS)" } else { "link event" }, false),
                    Err(e) => {
                        warn!(error = %e, "reading link changes failed; interfaces are reconciled on the poll only");
                        events = None;
                    }
                },
            }
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
        let state = lock(&self.state);
        let protected = state
            .interfaces
            .iter()
            .filter(|i| i.ingress.is_some())
            .count();
        let unprotected_up = state
            .interfaces
            .iter()
            .filter(|i| i.up && i.ingress.is_none())
            .count();
        let warning = if unprotected_up > 0 {
            format!("; {unprotected_up} configured interfaces up but NOT protected")
        } else {
            String::new()
        };
        format!(
            "enforcing {} workloads on {protected} interfaces{warning}",
            self.workloads
        )
    }

    /// Brings the attachments in line with the interfaces present (see `interfaces.rs`). When
    /// an interface the live policy names appeared, vanished or was re-created, the policy is
    /// first read again against the new indexes and swapped in (as a reload is), so that the
    /// interface is enforced with its workloads from its first packet.
    fn reconcile(&mut self, trigger: &'static str, retry_failed: bool) {
        let links = match rtnetlink::links() {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, trigger, "cannot list the interfaces; reconciling later");
                return;
            }
        };
        let interfaces = Interfaces::host(
            self.config.interfaces.iter().cloned(),
            interfaces::indexes(&self.config.interfaces, &links),
        );
        let moved: Vec<&str> = self
            .listed
            .iter()
            .filter(|(n, i)| interfaces.host_index(n) != **i)
            .map(|(n, _)| n.as_str())
            .collect();
        self.interfaces = interfaces;
        if !moved.is_empty() {
            info!(interfaces = %moved.join(", "), trigger, "interfaces the policy names changed index: applying it again");
            let bytes = self.live.clone();
            self.reload(bytes, "interface index change");
        }
        if let Err(e) = self.reconciler.run(
            &mut self.datapath,
            &self.config,
            &links,
            false,
            retry_failed,
        ) {
            error!(error = %crate::report::chain(&e), trigger, "reconciling the interfaces failed; retrying on the next change or poll");
        }
        let status = self.reconciler.status(&self.config.interfaces, &links);
        lock(&self.state).interfaces = status;
    }

    /// Parses and applies the policy file (`bytes`, just read); a refusal keeps the running
    /// policy, is counted and returns false.
    fn reload(&mut self, bytes: Option<Vec<u8>>, trigger: &'static str) -> bool {
        let started = Instant::now();
        let path = self.config.policy.clone();
        let interfaces = &self.interfaces;
        let text = bytes.clone();
        let result =
            memory::off_main_arena(|| parse_policy(&path, bytes, interfaces)).and_then(|p| {
                apply(
                    &mut self.datapath,
                    &self.config,
                    &p,
                    &self.state,
                    self.bindings.as_mut(),
                )
                .map(|()| (p.workloads.len(), listed(&p, interfaces), statics_of(&p)))
            });
        memory::release_freed_memory();
        match result {
            Ok((workloads, listed, statics)) => {
                self.workloads = workloads;
                self.statics = statics;
                self.live = text;
                self.listed = listed;
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

/// Loads the datapath under `layout` for `config`, its address table sized for `policy` (the
/// policy the first agent starts with; a pinned table keeps its size, see `table_entries`).
fn load_datapath(
    config: &AgentConfig,
    layout: &PinLayout,
    policy: &Policy,
) -> Result<Datapath, AgentError> {
    let table = (
        boundary_common::maps::TABLE_MAP,
        crate::datapath::maps::table_entries(layout, policy.address_keys()),
    );
    Ok(Datapath::load_with(
        Some(layout.clone()),
        &LoadOptions {
            max_workloads: config.max_workloads,
            kernel_log: config.kernel_log,
            capacities: &[table],
            ..LoadOptions::default()
        },
    )?)
}

/// The static bindings of `policy`: address -> SPIFFE ID.
fn statics_of(policy: &Policy) -> BTreeMap<IpAddr, String> {
    policy
        .identities
        .iter()
        .flat_map(|i| i.addresses.iter().map(|a| (*a, i.id.to_string())))
        .collect()
}

/// Each interface `policy` names, with its index on the host when it is present.
fn listed(policy: &Policy, interfaces: &Interfaces) -> BTreeMap<String, Option<u32>> {
    policy
        .interfaces
        .keys()
        .map(|n| (n.clone(), interfaces.host_index(n)))
        .collect()
}

/// The next message on `rx`, or never when there is no channel.
async fn next<T>(rx: Option<&mut Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next batch of link changes, or never when they are not watched.
async fn next_change(events: Option<&mut LinkEvents>) -> std::io::Result<rtnetlink::Changes> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
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
    bindings: Option<&mut Bindings>,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let slots = datapath.maps().slot_table()?;
    let rule_ids = datapath.maps().rule_table()?;
    let buckets = datapath.maps().bucket_table()?;
    let earned = bindings
        .as_deref()
        .map(Bindings::for_compile)
        .unwrap_or_default();
    let compiled = memory::off_main_arena(|| {
        policy::compile_with(
            policy,
            &slots,
            &rule_ids,
            &buckets,
            config.max_workloads,
            &earned,
        )
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
    let mut entries = compiled.entry_counts();
    let statics = (compiled.identities.len() - compiled.earned.len()) as u64;
    datapath.apply(&compiled, non_ip)?;
    // The CIDR identities went to the prefix levels or the trie, as the layout chose.
    if let Some((trie, levels)) = datapath.maps().prefix_entries() {
        entries.retain(|(m, _)| *m != boundary_common::maps::CIDRS_MAP);
        entries.push((boundary_common::maps::CIDRS_MAP, trie));
        entries.push((boundary_common::maps::PREFIXES_MAP, levels));
    }
    if let Some(b) = bindings {
        b.rebuild(datapath, policy, &compiled);
    }
    let generation = datapath.maps().datapath_config()?.generation;
    let table = datapath.maps().table_fill(generation);
    if let Some(fill) = table
        && fill.overflowed * 20 > fill.placed + fill.overflowed
    {
        warn!(
            placed = fill.placed,
            overflowed = fill.overflowed,
            slots = fill.slots,
            "the address table is too small for this policy: the bindings and prefix regions its buckets had no room for cost their peers' first packets a hash probe more (verdicts are the same). A pinned table keeps its size across restarts; an agent started with no pins sizes it for its policy (after `boundary-agent detach`, which ends enforcement until it starts and forgets tracked flows and earned bindings)"
        );
    }
    let mut s = lock(state);
    s.rules = rules;
    s.limits = limits;
    s.map_entries = entries;
    s.address_table = table;
    s.static_bindings = statics;
    s.policy_generation = generation;
    s.last_apply_seconds = started.elapsed().as_secs_f64();
    Ok(())
}
