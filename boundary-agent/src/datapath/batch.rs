//! Writing, deleting and reading many entries of one map in one bpf(2) call:
//! `BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH` and `BPF_MAP_LOOKUP_BATCH`, which aya 0.16
//! does not wrap.
//!
//! Hash maps, LPM tries and arrays all take the kernel's generic batch ops
//! (`generic_map_update_batch` / `generic_map_delete_batch` in kernel/bpf/syscall.c). They go
//! through the keys in order, do what one `BPF_MAP_UPDATE_ELEM` / `BPF_MAP_DELETE_ELEM` would
//! do for each, stop at the first error and write back in `count` how many entries they handled
//! before it. The callers rely on that prefix: a swap that fails takes back exactly the entries
//! written. A kernel or map type without the op answers `ENOTSUPP` (524, or `EINVAL` from
//! kernels that predate the command) before touching any entry; then the same work is done one
//! entry per call, with a warning saying why.
//!
//! The maps are passed as aya's typed maps, whose constructors checked the key and value sizes
//! against the kernel's: the kernel steps through the arrays by its own sizes, so a mismatch
//! would read past them.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData, PerCpuArray},
};
use tracing::warn;

/// The kernel's internal `ENOTSUPP`, which the batch commands return for a map type without
/// the op (it has no libc name: it is not a POSIX errno).
const ENOTSUPP: i32 = 524;

/// A batch command and the one-entry command it stands for.
struct Command {
    batch: (libc::c_long, &'static str),
    elem: (libc::c_long, &'static str),
    /// Deletes pass over a key already gone (`ENOENT`) and go on with the next one.
    skip_missing: bool,
    /// Whether the fallback to one entry per call was reported (once per process).
    warned: AtomicBool,
}

static UPDATE: Command = Command {
    batch: (26, "BPF_MAP_UPDATE_BATCH"),
    elem: (2, "BPF_MAP_UPDATE_ELEM"),
    skip_missing: false,
    warned: AtomicBool::new(false),
};

static DELETE: Command = Command {
    batch: (27, "BPF_MAP_DELETE_BATCH"),
    elem: (3, "BPF_MAP_DELETE_ELEM"),
    skip_missing: true,
    warned: AtomicBool::new(false),
};

static LOOKUP: Command = Command {
    batch: (24, "BPF_MAP_LOOKUP_BATCH"),
    elem: (1, "BPF_MAP_LOOKUP_ELEM"),
    skip_missing: false,
    warned: AtomicBool::new(false),
};

impl Command {
    /// Says once per process that the batch command was refused and why, once the first entry
    /// went through one by one (so an `EINVAL` that was that entry's own fault is reported as
    /// such, not as a missing command).
    fn warn_fallback(&self, batch_error: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            warn!(
                command = self.batch.1,
                error = %batch_error,
                "the kernel refused the batch command for this map: one entry per call instead (slower, same result)"
            );
        }
    }

    fn skips(&self, e: &io::Error) -> bool {
        self.skip_missing && e.raw_os_error() == Some(libc::ENOENT)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{op} stopped at entry {done} of {total}: {source}")]
pub struct Error {
    pub op: &'static str,
    /// Entries handled before the error (written, or deleted or found missing).
    pub done: usize,
    pub total: usize,
    #[source]
    pub source: io::Error,
}

impl Error {
    /// The map had no room for the entry (`E2BIG` from a hash map, `ENOSPC` from an LPM trie).
    pub fn is_full(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC))
    }
}

/// The batch part of `union bpf_attr` (`struct { ... } batch` in include/uapi/linux/bpf.h).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The element part of `union bpf_attr`, for the one-entry fallback.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// bpf(2) for a command whose return value says nothing but success.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    super::syscall::bpf(cmd, attr).map(drop)
}

fn map_fd<K: Pod, V, M: IterableMap<K, V>>(map: &M) -> u32 {
    let fd = map.map().fd().as_fd().as_raw_fd();
    u32::try_from(fd).expect("file descriptors are non-negative")
}

fn addr<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// `values`' address from entry `from` on; 0 (none) for a delete.
fn values_from<V>(values: Option<&[V]>, from: usize) -> u64 {
    values.map_or(0, |v| addr(v[from..].as_ptr()))
}

/// Whether `e`, returned before any entry was handled, may mean the command is not there.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// `cmd` over `keys` (and `values`, for an update) in as few batch calls as the kernel allows,
/// or one entry per call if the batch command is not there. Returns the keys passed over.
fn run<K, V>(cmd: &Command, fd: u32, keys: &[K], values: Option<&[V]>) -> Result<usize, Error> {
    if let Some(v) = values {
        assert_eq!(keys.len(), v.len(), "one value per key");
    }
    match batched(cmd, fd, keys, values) {
        Err(e) if e.done == 0 && unsupported(&e.source) => {
            one_by_one(cmd, fd, keys, values, &e.source)
        }
        other => other,
    }
}

/// The batch command from the first entry on, restarted after each entry passed over.
fn batched<K, V>(cmd: &Command, fd: u32, keys: &[K], values: Option<&[V]>) -> Result<usize, Error> {
    let total = keys.len();
    let (mut done, mut skipped) = (0, 0);
    while done < total {
        let rest = total - done;
        let mut attr = BatchAttr {
            in_batch: 0,
            out_batch: 0,
            keys: addr(keys[done..].as_ptr()),
            values: values_from(values, done),
            count: u32::try_from(rest).unwrap_or(u32::MAX),
            map_fd: fd,
            elem_flags: 0,
            flags: 0,
        };
        let result = bpf(cmd.batch.0, &mut attr);
        // On success and on error alike, `count` is how many entries the kernel handled.
        let handled = (attr.count as usize).min(rest);
        done += handled;
        let source = match result {
            Ok(()) if handled > 0 => continue,
            Ok(()) => io::Error::other("the kernel handled no entry and reported no error"),
            Err(e) if cmd.skips(&e) => {
                done += 1;
                skipped += 1;
                continue;
            }
            Err(e) => e,
        };
        return Err(Error {
            op: cmd.batch.1,
            done,
            total,
            source,
        });
    }
    Ok(skipped)
}

/// One entry per call, after the batch command failed with `batch_error` before handling any
/// entry. The warning waits for the first entry to go through, so an `EINVAL` that was that
/// entry's own fault is reported as such, not as a missing command.
fn one_by_one<K, V>(
    cmd: &Command,
    fd: u32,
    keys: &[K],
    values: Option<&[V]>,
    batch_error: &io::Error,
) -> Result<usize, Error> {
    let mut skipped = 0;
    for i in 0..keys.len() {
        let mut attr = ElemAttr {
            map_fd: fd,
            pad: 0,
            key: addr(std::ptr::from_ref(&keys[i])),
            value: values_from(values, i),
            flags: 0,
        };
        match bpf(cmd.elem.0, &mut attr) {
            Ok(()) => {}
            Err(e) if cmd.skips(&e) => skipped += 1,
            Err(source) => {
                return Err(Error {
                    op: cmd.elem.1,
                    done: i,
                    total: keys.len(),
                    source,
                });
            }
        }
        if i == 0 {
            cmd.warn_fallback(batch_error);
        }
    }
    Ok(skipped)
}

/// Writes `keys[i] -> values[i]` for every `i` (`BPF_ANY`), in order. On error, the entries
/// before `Error::done` were written and no later one was.
pub fn update<K: Pod, V: Pod, M: IterableMap<K, V>>(
    map: &mut M,
    keys: &[K],
    values: &[V],
) -> Result<(), Error> {
    run(&UPDATE, map_fd(map), keys, Some(values)).map(|_| ())
}

/// Deletes every key in `keys`; keys already absent are passed over. Returns how many were
/// absent.
pub fn delete<K: Pod, V, M: IterableMap<K, V>>(map: &mut M, keys: &[K]) -> Result<usize, Error> {
    run::<K, u8>(&DELETE, map_fd(map), keys, None)
}

/// Reads entries `0..count` of a per-CPU array and hands each to `each` as (index, one value
/// per possible CPU), a few hundred kilobytes of values per call: a scrape of 100,000 rule
/// counters is a handful of syscalls, not 100,000.
pub fn read_per_cpu<V: Pod>(
    map: &PerCpuArray<MapData, V>,
    count: u32,
    mut each: impl FnMut(u32, &[V]),
) -> Result<(), Error> {
    // The kernel lays each key's values out one per possible CPU, each rounded up to 8 bytes;
    // the buffer below is u64 words, viewed as `V`s.
    assert!(
        size_of::<V>().is_multiple_of(8) && align_of::<V>() <= 8,
        "per-CPU values are read as 8-byte words"
    );
    let cpus = aya::util::nr_cpus().map_or(1, |n| n.get() as usize);
    let per_key = size_of::<V>() * cpus;
    let chunk = (256 * 1024 / per_key)
        .clamp(1, 4096)
        .min(count as usize)
        .max(1);
    let mut keys = vec![0u32; chunk];
    let mut words = vec![0u64; chunk * per_key / 8];
    let fd = map_fd(map);
    let (mut done, mut prev, mut next) = (0u32, 0u32, 0u32);
    while done < count {
        let want = chunk.min((count - done) as usize);
        let mut attr = BatchAttr {
            in_batch: if done == 0 { 0 } else { addr(&raw const prev) },
            out_batch: addr(&raw mut next),
            keys: addr(keys.as_mut_ptr()),
            values: addr(words.as_mut_ptr()),
            count: u32::try_from(want).unwrap_or(u32::MAX),
            map_fd: fd,
            elem_flags: 0,
            flags: 0,
        };
        let result = bpf(LOOKUP.batch.0, &mut attr);
        let got = (attr.count as usize).min(want);
        #[expect(
            unsafe_code,
            reason = "viewing the kernel's value buffer as the values"
        )]
        // SAFETY: `words` holds `chunk * per_key` bytes, 8-aligned; `V` is `Pod` (any bytes are
        // a value) with size a multiple of 8 and alignment at most 8 (asserted above).
        let values =
            unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<V>(), chunk * cpus) };
        for (i, key) in keys.iter().enumerate().take(got) {
            each(*key, &values[i * cpus..(i + 1) * cpus]);
        }
        done += u32::try_from(got).unwrap_or(u32::MAX);
        match result {
            // The array ended before `count`.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if done == 0 && unsupported(&e) => {
                return read_one_by_one(fd, count, cpus, &e, each);
            }
            Err(source) => {
                return Err(Error {
                    op: LOOKUP.batch.1,
                    done: done as usize,
                    total: count as usize,
                    source,
                });
            }
            Ok(()) if got == 0 => return Ok(()),
            Ok(()) => prev = next,
        }
    }
    Ok(())
}

/// Reads entries `start..start + count` of an array (the rule -> bucket half of one
/// generation: 131,072 entries in a handful of calls, where one call each took 0.3 s; a CPU's
/// block of rule hits). Entries the batch command cannot read (a kernel without it) come back
/// one by one.
pub fn read_array<V: Pod + Default>(
    map: &aya::maps::Array<MapData, V>,
    start: u32,
    count: u32,
) -> Result<Vec<V>, Error> {
    const CHUNK: usize = 16_384;
    let fd = map.map().fd().as_fd().as_raw_fd();
    let fd = u32::try_from(fd).expect("file descriptors are non-negative");
    let mut out = Vec::with_capacity(count as usize);
    let mut keys = vec![0u32; CHUNK];
    let mut values = vec![V::default(); CHUNK];
    // The batch starts after the key `in_batch` names: before `start`, or at the array's start.
    let mut prev = start.wrapping_sub(1);
    let mut next = 0u32;
    while out.len() < count as usize {
        let want = CHUNK.min(count as usize - out.len());
        let mut attr = BatchAttr {
            in_batch: if start == 0 && out.is_empty() {
                0
            } else {
                addr(&raw const prev)
            },
            out_batch: addr(&raw mut next),
            keys: addr(keys.as_mut_ptr()),
            values: addr(values.as_mut_ptr()),
            count: u32::try_from(want).unwrap_or(u32::MAX),
            map_fd: fd,
            elem_flags: 0,
            flags: 0,
        };
        let result = bpf(LOOKUP.batch.0, &mut attr);
        let got = (attr.count as usize).min(want);
        out.extend_from_slice(&values[..got]);
        match result {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) if out.is_empty() && unsupported(&e) => {
                LOOKUP.warn_fallback(&e);
                return (start..start + count)
                    .map(|i| {
                        map.get(&i, 0).map_err(|e| Error {
                            op: LOOKUP.elem.1,
                            done: (i - start) as usize,
                            total: count as usize,
                            source: io::Error::other(e.to_string()),
                        })
                    })
                    .collect();
            }
            Err(source) => {
                return Err(Error {
                    op: LOOKUP.batch.1,
                    done: out.len(),
                    total: count as usize,
                    source,
                });
            }
            Ok(()) if got == 0 => break,
            Ok(()) => prev = next,
        }
    }
    Ok(out)
}

/// `read_per_cpu` one key per call, after the batch command failed with `batch_error`.
fn read_one_by_one<V: Pod>(
    fd: u32,
    count: u32,
    cpus: usize,
    batch_error: &io::Error,
    mut each: impl FnMut(u32, &[V]),
) -> Result<(), Error> {
    let mut words = vec![0u64; size_of::<V>() * cpus / 8];
    for key in 0..count {
        let mut attr = ElemAttr {
            map_fd: fd,
            pad: 0,
            key: addr(&raw const key),
            value: addr(words.as_mut_ptr()),
            flags: 0,
        };
        if let Err(source) = bpf(LOOKUP.elem.0, &mut attr) {
            if source.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            return Err(Error {
                op: LOOKUP.elem.1,
                done: key as usize,
                total: count as usize,
                source,
            });
        }
        if key == 0 {
            LOOKUP.warn_fallback(batch_error);
        }
        #[expect(
            unsafe_code,
            reason = "viewing the kernel's value buffer as the values"
        )]
        // SAFETY: as in `read_per_cpu`.
        let values = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<V>(), cpus) };
        each(key, values);
    }
    Ok(())
}
