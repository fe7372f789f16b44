//! Commit-confirm, the habit of network operators: `boundary-agent apply --confirm 60s FILE`
//! installs a policy that rolls back to the one before unless `boundary-agent confirm` comes
//! in time. A policy that locks the operator out (over SSH, say) undoes itself.
//!
//! The state lives in files under the agent's `stateDir`, so it outlives the agent and works
//! whether or not the agent is running when the commands are given:
//! - `pending.json`: the policy file's digest as `apply` wrote it, the policy before it, and
//!   the deadline. `confirm` removes it.
//! - `rolled-back.json`: after a rollback, the digest of the refused file and the policy put
//!   back. While the policy file still holds the refused text, neither the file watch nor a
//!   restart applies it: the policy put back stays until the file changes.
//!
//! The agent never writes the policy file (it may be a read-only `ConfigMap`): a rollback is
//! the previous policy applied, and remembered.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::policy::fingerprint::fnv1a;

const PENDING: &str = "pending.json";
const ROLLED_BACK: &str = "rolled-back.json";

/// The digest of a policy file's bytes, as kept in the state files.
pub fn digest(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

/// A policy applied with `--confirm`, not confirmed yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// [`digest`] of the policy file `apply` wrote.
    pub digest: String,
    /// The policy file's text before it.
    pub previous: String,
    /// When it rolls back, in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
}

/// A rollback that happened: the refused file's digest and the policy put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBack {
    pub digest: String,
    pub policy: String,
}

/// The state files under one `stateDir`.
#[derive(Clone, Debug)]
pub struct ConfirmState {
    dir: PathBuf,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ConfirmState {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn pending(&self) -> io::Result<Option<Pending>> {
        self.read(PENDING)
    }

    pub fn rolled_back(&self) -> io::Result<Option<RolledBack>> {
        self.read(ROLLED_BACK)
    }

    /// Records a policy awaiting confirmation for `confirm_in`.
    pub fn set_pending(
        &self,
        digest: String,
        previous: String,
        confirm_in: Duration,
    ) -> io::Result<()> {
        let deadline_ms = now_ms() + u64::try_from(confirm_in.as_millis()).unwrap_or(u64::MAX);
        self.write(
            PENDING,
            &Pending {
                digest,
                previous,
                deadline_ms,
            },
        )
    }

    /// Confirms the pending policy; false when nothing was pending.
    pub fn confirm(&self) -> io::Result<bool> {
        remove(&self.dir.join(PENDING))
    }

    /// Records that the pending policy was rolled back to `policy`.
    pub fn record_rollback(&self, digest: String, policy: String) -> io::Result<()> {
        self.write(ROLLED_BACK, &RolledBack { digest, policy })?;
        remove(&self.dir.join(PENDING)).map(drop)
    }

    /// Forgets a rollback: the policy file changed since.
    pub fn clear_rollback(&self) -> io::Result<()> {
        remove(&self.dir.join(ROLLED_BACK)).map(drop)
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, name: &str) -> io::Result<Option<T>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::other(format!("{}: {e}", self.dir.join(name).display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `value` to `name` atomically (a temporary file renamed over it).
    fn write<T: Serialize>(&self, name: &str, value: &T) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(value).map_err(io::Error::other)?,
        )?;
        std::fs::rename(&tmp, self.dir.join(name))
    }
}

/// Removes `path`; false when it was not there.
fn remove(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What the agent does with the policy file it just read (`file`: its text, or `None` if it
/// could not be read), given the state.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Apply the file as it is.
    File,
    /// Apply the file, which a `--confirm` window is open for.
    Pending,
    /// Apply this text instead: the policy put back by a rollback (the file still holds the
    /// refused one), or being put back now (`rolled_back_now`: a pending policy's time ran
    /// out).
    Previous {
        policy: String,
        rolled_back_now: bool,
    },
}

impl ConfirmState {
    /// Decides what to apply for a file whose bytes have [`digest`] `file_digest`, at
    /// `now_ms`. Records a rollback when a pending policy's time is up; forgets an old
    /// rollback once the file holds something else.
    pub fn plan(&self, file_digest: &str, now_ms: u64) -> io::Result<Plan> {
        if let Some(p) = self.pending()? {
            if p.digest != file_digest {
                // The file changed again since `apply`: what is pending is no longer there.
                self.confirm()?;
            } else if now_ms >= p.deadline_ms {
                self.record_rollback(p.digest, p.previous.clone())?;
                return Ok(Plan::Previous {
                    policy: p.previous,
                    rolled_back_now: true,
                });
            } else {
                return Ok(Plan::Pending);
            }
        }
        match self.rolled_back()? {
            Some(r) if r.digest == file_digest => Ok(Plan::Previous {
                policy: r.policy,
                rolled_back_now: false,
            }),
            Some(_) => {
                self.clear_rollback()?;
                Ok(Plan::File)
            }
            None => Ok(Plan::File),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(tag: &str) -> (ConfirmState, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bnd-confirm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (ConfirmState::new(&dir), dir)
    }

    #[test]
    fn an_unconfirmed_policy_rolls_back_at_its_deadline_and_stays_rolled_back() {
        let (s, dir) = state("roll");
        let new = digest(b"new");
        s.set_pending(new.clone(), "old".into(), Duration::from_secs(60))
            .expect("write");
        let now = now_ms();
        assert_eq!(s.plan(&new, now).expect("plan"), Plan::Pending, "in time");
        let late = now + 61_000;
        assert_eq!(
            s.plan(&new, late).expect("plan"),
            Plan::Previous {
                policy: "old".into(),
                rolled_back_now: true
            }
        );
        assert_eq!(s.pending().expect("read"), None);
        // The file still holds the refused policy: the previous one stays, not "rolled back"
        // again.
        assert_eq!(
            s.plan(&new, late + 2_000).expect("plan"),
            Plan::Previous {
                policy: "old".into(),
                rolled_back_now: false
            }
        );
        // The file changes: it is applied, and the rollback forgotten.
        assert_eq!(s.plan(&digest(b"newer"), late).expect("plan"), Plan::File);
        assert_eq!(s.rolled_back().expect("read"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_confirmed_policy_stays() {
        let (s, dir) = state("confirm");
        let new = digest(b"new");
        s.set_pending(new.clone(), "old".into(), Duration::from_secs(1))
            .expect("write");
        assert!(s.confirm().expect("confirm"));
        assert!(
            !s.confirm().expect("confirm twice"),
            "nothing pending any more"
        );
        assert_eq!(s.plan(&new, now_ms() + 10_000).expect("plan"), Plan::File);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_changed_after_apply_drops_the_pending_state() {
        let (s, dir) = state("changed");
        s.set_pending(digest(b"new"), "old".into(), Duration::from_secs(1))
            .expect("write");
        assert_eq!(
            s.plan(&digest(b"other"), now_ms() + 10_000).expect("plan"),
            Plan::File
        );
        assert_eq!(s.pending().expect("read"), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
