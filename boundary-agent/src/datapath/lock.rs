//! One agent per pin directory: `run` holds an exclusive `flock` on the directory for its
//! whole life. A second agent on the same pins would otherwise take the first one's live
//! generation for residue of an interrupted swap and delete it under it. The lock goes with
//! the process (a `kill -9` releases it), and bpffs directories take `flock` as any other.
//! Read-only commands (`status`, `counters`, `monitor`, `trace`) do not take it. `detach`
//! does not wait for it (it must work whatever state the host is in): it asks who holds it
//! ([`Holder`]) to stop that agent, and takes it once the agent has gone. An agent takes it
//! first thing when the directory exists, before reading its policy, so a starting agent is
//! found as a running one is.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    time::Duration,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use super::{DatapathError, bpffs, pins::PinLayout};

/// The held lock; released on drop or when the process ends.
pub struct PinLock {
    held: Flock<File>,
}

impl PinLock {
    /// Makes sure the pin directory exists on a bpffs, then locks it, or says who holds it.
    pub fn acquire(layout: &PinLayout) -> Result<Self, DatapathError> {
        let root = layout.root();
        let pin_err = |source| DatapathError::PinDir {
            path: root.display().to_string(),
            source,
        };
        bpffs::ensure(root).map_err(pin_err)?;
        let dir = File::open(root).map_err(pin_err)?;
        Self::lock(dir, root)
    }

    /// Locks the pin directory if it exists, creating nothing: taken first thing at start, so
    /// `detach` finds an agent that is still reading its policy, while a refused start leaves
    /// no directory behind. `None` if there is no directory yet.
    pub fn acquire_existing(layout: &PinLayout) -> Result<Option<Self>, DatapathError> {
        let root = layout.root();
        match File::open(root) {
            Ok(dir) => Self::lock(dir, root).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DatapathError::PinDir {
                path: root.display().to_string(),
                source,
            }),
        }
    }

    /// This lock if the directory it holds is still the pin directory (on a bpffs); else
    /// (removed and made again meanwhile) a lock on the one there now.
    pub fn still_here(self, layout: &PinLayout) -> Result<Self, DatapathError> {
        let root = layout.root();
        let same = match (self.held.metadata(), std::fs::metadata(root)) {
            (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
            _ => false,
        };
        if same {
            bpffs::ensure(root).map_err(|source| DatapathError::PinDir {
                path: root.display().to_string(),
                source,
            })?;
            Ok(self)
        } else {
            drop(self);
            Self::acquire(layout)
        }
    }

    fn lock(dir: File, root: &Path) -> Result<Self, DatapathError> {
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Self { held }),
            Err((_, Errno::EWOULDBLOCK)) => Err(DatapathError::Locked {
                path: root.display().to_string(),
            }),
            Err((_, e)) => Err(DatapathError::PinDir {
                path: root.display().to_string(),
                source: io::Error::from(e),
            }),
        }
    }
}

/// A look at who holds a pin directory's lock, through a handle on the directory that stays
/// valid after the directory is removed (`detach` removes it while an agent may hold it).
pub struct Holder {
    dir: File,
}

impl Holder {
    /// Opens the pin directory at `root`; `None` if there is none.
    pub fn open(root: &Path) -> io::Result<Option<Self>> {
        match File::open(root) {
            Ok(dir) => Ok(Some(Self { dir })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The lock, if nobody holds it: held until dropped, so no agent starts on the pins
    /// meanwhile.
    pub fn try_lock(&self) -> io::Result<Option<Flock<File>>> {
        // A descriptor of its own (not a `dup`): a lock belongs to an open file description.
        let dir = File::open(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))?;
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Some(held)),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io::Error::from(e)),
        }
    }

    /// The process holding the lock, as `/proc/locks` names it in this PID namespace
    /// (`None` if nobody does, or the holder is not visible from here).
    pub fn pid(&self) -> io::Result<Option<u32>> {
        let meta = self.dir.metadata()?;
        let dev = meta.dev();
        let id = format!(
            "{:02x}:{:02x}:{}",
            libc::major(dev),
            libc::minor(dev),
            meta.ino()
        );
        Ok(holder_in(&std::fs::read_to_string("/proc/locks")?, &id))
    }

    /// Waits up to `limit` for the lock to be let go, and takes it.
    pub fn wait_lock(&self, limit: Duration) -> io::Result<Option<Flock<File>>> {
        let until = std::time::Instant::now() + limit;
        loop {
            if let Some(held) = self.try_lock()? {
                return Ok(Some(held));
            }
            if std::time::Instant::now() >= until {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The PID of the `flock` holder of the file `id` (`MAJOR:MINOR:INODE` as `/proc/locks`
/// writes it) in the text of `/proc/locks`. A PID of 0 or less (the holder is in a PID
/// namespace this one cannot see) is `None`.
fn holder_in(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 13199 00:27:39603 0 EOF"; a blocked waiter's line has
        // "->" after the number, which shifts the fields: skip it.
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, file, ..] if *file == id => pid
                .parse::<i64>()
                .ok()
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "\
1: FLOCK  ADVISORY  WRITE 13199 00:27:39603 0 EOF
1: -> FLOCK  ADVISORY  WRITE 14000 00:27:39603 0 EOF
2: FLOCK  ADVISORY  WRITE 12880 fe:00:5406813 0 EOF
3: POSIX  ADVISORY  WRITE 777 00:27:1 0 EOF
";
        assert_eq!(holder_in(locks, "00:27:39603"), Some(13199));
        assert_eq!(holder_in(locks, "fe:00:5406813"), Some(12880));
        assert_eq!(holder_in(locks, "00:27:1"), None, "not a flock");
        assert_eq!(holder_in(locks, "00:27:2"), None);
        assert_eq!(
            holder_in("1: FLOCK  ADVISORY  WRITE -1 00:27:5 0 EOF", "00:27:5"),
            None
        );
    }

    #[test]
    fn a_held_lock_is_seen_with_its_holder_and_its_release() {
        let dir = std::env::temp_dir().join(format!("boundary-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let holder = Holder::open(&dir).expect("open").expect("exists");
        let probe = holder.try_lock().expect("try").expect("free");
        assert_eq!(holder.pid().expect("pid"), Some(std::process::id()));
        drop(probe);
        assert_eq!(holder.pid().expect("pid"), None);
        let lock = Flock::lock(
            File::open(&dir).expect("open"),
            FlockArg::LockExclusiveNonblock,
        )
        .map_err(|(_, e)| e)
        .expect("lock");
        assert!(holder.try_lock().expect("try").is_none());
        assert_eq!(holder.pid().expect("pid"), Some(std::process::id()));
        assert!(
            holder
                .wait_lock(Duration::from_millis(100))
                .expect("wait")
                .is_none()
        );
        drop(lock);
        assert!(
            holder
                .wait_lock(Duration::from_secs(1))
                .expect("wait")
                .is_some()
        );
        std::fs::remove_dir(&dir).expect("rmdir");
    }
}
