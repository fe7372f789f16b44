//! bpf(2) for the commands aya 0.16 does not wrap (batch map operations, map-in-map
//! creation and update), in one place.

use std::{io, mem::size_of};

/// `bpf(cmd, attr, sizeof attr)`: the kernel's return value (a new descriptor for commands
/// that make one), or the errno.
///
/// `attr` must be a `#[repr(C)]` prefix of `union bpf_attr` for `cmd`, and every pointer in it
/// must point at memory the caller keeps alive for the call, sized as the command reads or
/// writes it (for batch commands: `count` entries of the map's key and value sizes).
pub(super) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    #[expect(
        unsafe_code,
        reason = "bpf(2) has no safe wrapper in std or aya for these commands"
    )]
    // SAFETY: `attr` is a live `#[repr(C)]` prefix of `union bpf_attr` for `cmd` and its size is
    // passed along, so the kernel reads and writes only inside it; the pointers inside it are
    // the caller's to keep valid (see above).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The prefix of `union bpf_attr` that `BPF_MAP_DELETE_ELEM` reads.
#[repr(C)]
struct DeleteAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
}

/// Deletes `key` from the map `fd` (which aya 0.16 cannot do for an array of maps). A key
/// that is not there is not an error.
pub(super) fn delete_elem<K>(fd: std::os::fd::BorrowedFd<'_>, key: &K) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    let mut attr = DeleteAttr {
        map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
        pad: 0,
        key: std::ptr::from_ref(key) as u64,
    };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}
