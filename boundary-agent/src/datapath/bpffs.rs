//! Making sure the pin directory is on a BPF filesystem.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt as _, path::Path};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is conventionally mounted.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Whether `path` (which must exist) is on a bpffs.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st: libc::statfs = unsafe_zeroed_statfs();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
    #[expect(unsafe_code, reason = "statfs(2) has no safe wrapper in std")]
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // `f_type` is signed in glibc and unsigned in musl: compare them where both fit.
    Ok(i128::from(st.f_type) == i128::from(BPF_FS_MAGIC))
}

fn unsafe_zeroed_statfs() -> libc::statfs {
    // SAFETY: statfs is a plain C struct of integers; all-zero is a valid value.
    #[expect(unsafe_code, reason = "zero-initialising a C struct")]
    unsafe {
        std::mem::zeroed()
    }
}

/// Ensures `pin_dir` exists on a bpffs. Mounts bpffs on `/sys/fs/bpf` when the pin directory
/// is below it and nothing is mounted there yet (as Cilium's agent does).
pub fn ensure(pin_dir: &Path) -> io::Result<()> {
    let root = Path::new(BPFFS_ROOT);
    if pin_dir.starts_with(root) && root.is_dir() && !is_bpffs(root)? {
        mount_bpffs(root)?;
    }
    if let Err(e) = std::fs::create_dir_all(pin_dir) {
        // bpffs refuses dots in the names made on it (they are reserved for its own files),
        // and says only EPERM.
        let dotted = pin_dir
            .components()
            .any(|c| matches!(c, std::path::Component::Normal(n) if n.as_bytes().contains(&b'.')));
        if e.kind() == io::ErrorKind::PermissionDenied && dotted {
            return Err(io::Error::other(format!(
                "{}: {e}; bpffs refuses names with a dot: choose a pinDir without one",
                pin_dir.display()
            )));
        }
        return Err(e);
    }
    if !is_bpffs(pin_dir)? {
        return Err(io::Error::other(format!(
            "{} is not on a bpffs; mount one (mount -t bpf bpf {BPFFS_ROOT}) or choose a pinDir below it",
            pin_dir.display()
        )));
    }
    Ok(())
}

fn mount_bpffs(target: &Path) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    #[expect(unsafe_code, reason = "mount(2) has no safe wrapper in std")]
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_dir_with_a_dot_is_refused_saying_why() {
        if !Path::new(BPFFS_ROOT).is_dir() || !is_bpffs(Path::new(BPFFS_ROOT)).unwrap_or(false) {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "no bpffs at {BPFFS_ROOT} and CI=true forbids skipping");
            eprintln!("SKIPPED: no bpffs at {BPFFS_ROOT}");
            return;
        }
        let dir = Path::new(BPFFS_ROOT).join(format!("boundary-test-{}.v2", std::process::id()));
        let e = ensure(&dir).expect_err("bpffs took a name with a dot");
        assert!(
            e.to_string().contains("bpffs refuses names with a dot"),
            "{e}"
        );
        assert!(!dir.exists());
    }
}
