//! One agent per pin directory: `run` holds an exclusive `flock` on the directory for its
//! whole life. A second agent on the same pins would otherwise take the first one's live
//! generation for residue of an interrupted swap and delete it under it. The lock goes with
//! the process (a `kill -9` releases it), and bpffs directories take `flock` as any other.
//! Read-only commands (`status`, `counters`, `monitor`, `trace`) do not take it, and neither
//! does `detach`, which must work whatever state the host is in.

use std::{fs::File, io};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use super::{DatapathError, bpffs, pins::PinLayout};

/// The held lock; released on drop or when the process ends.
pub struct PinLock {
    _held: Flock<File>,
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
        match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Self { _held: held }),
            Err((_, Errno::EWOULDBLOCK)) => Err(DatapathError::Locked {
                path: root.display().to_string(),
            }),
            Err((_, e)) => Err(pin_err(io::Error::from(e))),
        }
    }
}
