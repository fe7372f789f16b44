//! The unit of issue #15's targets, measured in the same run: the latency of one dependent
//! memory miss, from a userspace pointer chase.
//!
//! A buffer of `bytes` holds one pointer per 64-byte line; the pointers form one random cycle
//! through every line (Sattolo's algorithm, seeded), so each load depends on the one before
//! and the prefetchers cannot guess the next line. The buffer is mapped anonymously with 4 KiB
//! pages and `madvise(MADV_NOHUGEPAGE)` before it is touched, as the kernel's vmalloc'd BPF
//! maps are (no huge pages): a chase over a buffer beyond the TLB's reach pays TLB misses too,
//! as a lookup into a large map does. The caller runs it pinned to the CPU the test runs use.
//! Time per step = the thread's CPU time over the timed steps / steps, after one untimed
//! pass (CPU time: a preemption mid-walk does not count).

use std::{hint::black_box, ptr::NonNull};

use anyhow::{Context as _, ensure};

use super::{paths::SplitMix, testrun::Samples};

const LINE: usize = 64;

/// An anonymous mapping of 4 KiB pages, unmapped on drop.
struct Buffer {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

impl Buffer {
    fn map(len: usize) -> anyhow::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        ensure!(
            p != libc::MAP_FAILED,
            "mmap {len} bytes: {}",
            std::io::Error::last_os_error()
        );
        let ptr = NonNull::new(p).context("mmap returned null")?;
        let buf = Self { ptr, len };
        // SAFETY: the range is the mapping just made.
        let rc = unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
        ensure!(
            rc == 0,
            "madvise(MADV_NOHUGEPAGE): {}",
            std::io::Error::last_os_error()
        );
        Ok(buf)
    }

    fn base(&self) -> *mut usize {
        self.ptr.as_ptr().cast()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr(), self.len);
        }
    }
}

/// A buffer of `bytes` (rounded down to whole lines) laid out as one random cycle of
/// pointers, one per line.
pub struct Chase {
    buf: Buffer,
    lines: usize,
}

impl Chase {
    pub fn new(bytes: usize, seed: u64) -> anyhow::Result<Self> {
        let lines = bytes / LINE;
        ensure!(lines >= 2, "a chase needs at least two lines");
        let buf = Buffer::map(lines * LINE)?;
        // Sattolo: a uniformly random permutation with a single cycle.
        let mut next: Vec<u32> = (0..u32::try_from(lines).context("lines fit u32")?).collect();
        let mut rng = SplitMix::new(seed);
        for i in (1..lines).rev() {
            #[expect(clippy::cast_possible_truncation, reason = "below i, a usize")]
            let j = (rng.next_u64() % i as u64) as usize;
            next.swap(i, j);
        }
        let base = buf.base();
        for (i, &n) in next.iter().enumerate() {
            // SAFETY: i and n are line indexes below `lines`; every line is inside the mapping
            // and holds a usize at its start.
            unsafe {
                let target = base.byte_add(n as usize * LINE);
                base.byte_add(i * LINE).write(target as usize);
            }
        }
        Ok(Self { buf, lines })
    }

    pub fn bytes(&self) -> usize {
        self.lines * LINE
    }

    /// `steps` dependent loads from the line at `p`; the line reached.
    fn walk(p: usize, steps: usize) -> usize {
        let mut p = p;
        for _ in 0..steps {
            // SAFETY: every line holds the address of a line of the same mapping.
            p = unsafe { (p as *const usize).read_volatile() };
        }
        black_box(p)
    }

    /// One timed walk of `steps` dependent loads, after an untimed pass over the whole cycle
    /// (or `steps`, whichever is shorter); nanoseconds per load. The timed walk goes on from
    /// where the pass stopped, so over a buffer of more lines than `steps` it reaches lines
    /// the pass did not. Timed in the thread's CPU time, not the wall clock: a preemption
    /// mid-walk (a neighbour on the pinned CPU) would stretch the miss, the unit the targets
    /// divide by, where the programs' runs are timed in the kernel around each run.
    pub fn ns_per_step(&self, steps: usize) -> f64 {
        let p = Self::walk(self.buf.base() as usize, self.lines.min(steps));
        let start = thread_cpu_ns();
        Self::walk(p, steps);
        let d = thread_cpu_ns().saturating_sub(start);
        #[expect(clippy::cast_precision_loss, reason = "step counts are small")]
        let per = d as f64 / steps as f64;
        per
    }
}

/// The calling thread's CPU time, ns (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("CLOCK_THREAD_CPUTIME_ID is always readable");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

/// Dependent loads per timed walk: about 0.2 s over a buffer far beyond the LLC.
pub const STEPS: usize = 2 << 20;

/// `runs` timed walks over a fresh buffer of `bytes`.
pub fn measure(bytes: usize, runs: usize, seed: u64) -> anyhow::Result<Samples> {
    let chase = Chase::new(bytes, seed)?;
    let mut s = Samples::default();
    for _ in 0..runs {
        s.0.push(chase.ns_per_step(STEPS));
    }
    Ok(s)
}
