//! Which device a pinned link holds its program on: an XDP or tcx link outlives the device
//! it was attached to (the kernel detaches it and keeps the link, with ifindex 0: "defunct"),
//! and its pin, named for the interface, then stands for nothing. aya 0.16's `LinkInfo` does
//! not expose the ifindex; `BPF_OBJ_GET_INFO_BY_FD` does (`union bpf_link_info`, xdp and tcx
//! members, both with the ifindex first).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use super::syscall::bpf;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `bpf_attr` for `BPF_OBJ_GET`.
#[repr(C)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct GetInfo {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The prefix of `struct bpf_link_info` read here: type, id, prog id, then the union (8-byte
/// aligned), whose xdp and tcx members start with the ifindex.
#[repr(C)]
#[derive(Default)]
struct LinkInfoPrefix {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
}

/// The interface index the link pinned at `path` is attached to; 0 when its device is gone.
pub fn pinned_link_ifindex(path: &Path) -> io::Result<u32> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut get = ObjGet {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &mut get)?;
    #[expect(unsafe_code, reason = "owning the descriptor BPF_OBJ_GET returned")]
    // SAFETY: a new descriptor the kernel just made for this call, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).expect("a descriptor")) };
    let mut info = LinkInfoPrefix::default();
    let mut attr = GetInfo {
        bpf_fd: u32::try_from(fd.as_raw_fd()).expect("a descriptor"),
        info_len: u32::try_from(size_of::<LinkInfoPrefix>()).expect("small"),
        info: (&raw mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.ifindex)
}
