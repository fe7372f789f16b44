use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use super::{CliError, PinDirArg};
use crate::datapath::{LockHolder, PinLayout};

/// How long the holder of the pins is given to let them go (an agent asked to stop, or
/// another command finishing).
const HOLDER_GONE: Duration = Duration::from_secs(15);

/// Stop enforcing: remove the pinned links, programs and maps, and stop the agent running on
/// them.
///
/// Break glass: works with or without a running agent, whatever state it is in. The links
/// are removed first, which detaches the programs from their interfaces at once; then the
/// programs and maps. Counters are lost. An agent holding the pin directory (running, or
/// starting and still reading its policy) is then stopped (SIGTERM; under systemd the unit
/// ends as stopped, not failed), and whatever it pinned meanwhile is removed once it has
/// gone. A service manager that restarts the agent (systemd's `Restart=` after a crash,
/// the kubelet) attaches it again: stop it there too (`systemctl stop`, the `DaemonSet`).
///
/// Example: boundary-agent detach
#[derive(Debug, clap::Args)]
pub struct Detach {
    #[command(flatten)]
    pub pins: PinDirArg,
}

impl Detach {
    pub fn execute(self) -> Result<(), CliError> {
        let layout = PinLayout::new(&self.pins.pin_dir);
        let root = layout.root().display().to_string();
        let Some(holder) = LockHolder::open(layout.root()).map_err(CliError::failed)? else {
            println!("nothing pinned at {root}");
            return Ok(());
        };
        let mut removed = Vec::new();
        let held = if let Some(held) = holder.try_lock().map_err(CliError::failed)? {
            held
        } else {
            // Someone holds the pins. Enforcement ends first, before anything is asked of
            // an agent that may not answer; what could not be removed is tried again.
            let pid = holder.pid().map_err(CliError::failed)?;
            let target = pid.map(Target::open).transpose()?;
            removed.extend(remove(&layout, false).unwrap_or_default());
            if let Some(target) = &target {
                target.stop();
            }
            let Some(held) = holder.wait_lock(HOLDER_GONE).map_err(CliError::failed)? else {
                return Err(CliError::failed(match pid {
                    Some(pid) => format!(
                        "pins removed, but pid {pid} still holds {root} after {}s and may \
                         attach again: kill -9 {pid}, then run detach again",
                        HOLDER_GONE.as_secs()
                    ),
                    None => format!(
                        "pins removed, but a process this PID namespace cannot see holds \
                         {root} and may attach again: stop it where it runs (the agent's \
                         container, say), then run detach again"
                    ),
                }));
            };
            if let Some(pid) = pid {
                println!("pid {pid} let go of the pins");
            }
            held
        };
        // Holding the lock: no agent starts on these pins until they are gone.
        let late = remove(&layout, true);
        let failed = late.is_none();
        removed.extend(late.unwrap_or_default());
        drop(held);
        if failed {
            return Err(CliError::failed(format!(
                "some pins under {root} could not be removed (above); run detach again"
            )));
        }
        layout.remove_root().map_err(CliError::failed)?;
        println!("detached: {} pins removed from {root}", removed.len());
        Ok(())
    }
}

/// Removes the pins, printing what went and what could not; `None` if anything could not
/// and `last` (else what could not go is left for the next pass).
fn remove(layout: &PinLayout, last: bool) -> Option<Vec<PathBuf>> {
    let removal = layout.remove_contents();
    for p in &removal.removed {
        println!("removed {}", p.display());
    }
    for (p, e) in &removal.failed {
        eprintln!("could not remove {}: {e}", p.display());
    }
    (removal.failed.is_empty() || !last).then_some(removal.removed)
}

/// The process holding the pins, by a pidfd taken before anything is removed: a signal goes
/// to that process or to none, never to one that reused its PID.
struct Target {
    pid: u32,
    fd: Option<OwnedFd>,
    /// `boundary-agent run`: stopped. Another command holding the pins for a moment
    /// (`identity revoke` with no agent, a second `detach`) is waited for instead.
    agent: bool,
}

impl Target {
    fn open(pid: u32) -> Result<Self, CliError> {
        let raw = i32::try_from(pid).map_err(CliError::failed)?;
        #[expect(unsafe_code, reason = "pidfd_open(2) has no wrapper in std or nix")]
        // SAFETY: a plain system call with integer arguments; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        let fd = (fd >= 0).then(|| {
            #[expect(unsafe_code, reason = "owning the descriptor pidfd_open returned")]
            // SAFETY: a new descriptor the kernel just made for this call.
            unsafe {
                OwnedFd::from_raw_fd(i32::try_from(fd).expect("a descriptor"))
            }
        });
        // Read after the pidfd is open: if the PID was reused before, the pidfd is the new
        // process's and so is this; if after, the signal finds no process.
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|&c| c == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let agent = argv.iter().any(|a| a == "run")
            && argv.first().is_some_and(|a| a.ends_with("boundary-agent"));
        Ok(Self { pid, fd, agent })
    }

    /// Asks an agent to stop (`SIGTERM`).
    fn stop(&self) {
        let Some(fd) = &self.fd else {
            println!("pid {} holds the pins and has already gone", self.pid);
            return;
        };
        if !self.agent {
            println!(
                "pid {} (not an agent) holds the pins: waiting for it",
                self.pid
            );
            return;
        }
        println!(
            "stopping the agent running on these pins (pid {})",
            self.pid
        );
        #[expect(
            unsafe_code,
            reason = "pidfd_send_signal(2) has no wrapper in std or nix"
        )]
        // SAFETY: a plain system call on a descriptor we own; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGTERM,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc != 0 {
            println!(
                "could not signal pid {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
    }
}
