//! Waiting out the datapath's readers.
//!
//! A packet reads the live generation from the config entry once, then looks its endpoint,
//! peers and rules up under that generation. After a swap makes the next generation live, a
//! packet that read the config just before may still be looking up the old generation's
//! entries; deleting them under it would make it miss (`unprotected`: a pass). So between the
//! switch and the delete the agent waits until every program that may have read the old
//! config has returned.
//!
//! The programs run inside RCU read-side critical sections (XDP in NAPI with bottom halves off,
//! TC under `rcu_read_lock`, test runs under `rcu_read_lock`), and an update of a map-in-map
//! entry from user space returns only after `synchronize_rcu()` (`maybe_wait_bpf_programs`
//! in kernel/bpf/syscall.c, for `BPF_MAP_TYPE_ARRAY_OF_MAPS` and `HASH_OF_MAPS`, on
//! success). [`Grace`] holds a one-entry array of maps, used for nothing else, and writes its
//! entry to wait: a real grace period, not a sleep.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The prefix of `union bpf_attr` that `BPF_MAP_CREATE` reads.
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The prefix of `union bpf_attr` that `BPF_MAP_UPDATE_ELEM` reads.
#[repr(C)]
struct UpdateAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// A one-entry array of maps whose update is a grace period.
pub struct Grace {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl Grace {
    pub fn new() -> io::Result<Self> {
        let mut inner = CreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_name: *b"bnd_grace_in\0\0\0\0",
            ..CreateAttr::default()
        };
        let inner = create(&mut inner)?;
        let mut outer = CreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: fd_u32(&inner),
            map_name: *b"bnd_grace\0\0\0\0\0\0\0",
            ..CreateAttr::default()
        };
        let outer = create(&mut outer)?;
        Ok(Self { outer, inner })
    }

    /// Returns once every BPF program running when it was called has returned.
    pub fn wait(&self) -> io::Result<()> {
        let key = 0u32;
        let value = fd_u32(&self.inner);
        let mut attr = UpdateAttr {
            map_fd: fd_u32(&self.outer),
            pad: 0,
            key: std::ptr::from_ref(&key) as u64,
            value: std::ptr::from_ref(&value) as u64,
            flags: 0,
        };
        super::syscall::bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }
}

fn fd_u32(fd: &OwnedFd) -> u32 {
    u32::try_from(fd.as_raw_fd()).expect("file descriptors are not negative")
}

/// `BPF_MAP_CREATE`: the new map's descriptor.
fn create(attr: &mut CreateAttr) -> io::Result<OwnedFd> {
    let ret = super::syscall::bpf(BPF_MAP_CREATE, attr)?;
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("bpf(2) returned no descriptor"))?;
    #[expect(
        unsafe_code,
        reason = "taking ownership of the fd bpf(2) just returned"
    )]
    // SAFETY: BPF_MAP_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
