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
