//! What a kubelet and a container runtime do for the agent's `DaemonSet`, done here without
//! either, so that the manifests in `deploy/kubernetes/` can be run as they are written:
//!
//! - [`ConfigMapVolume`]: a `ConfigMap` volume laid out, and updated, the way the kubelet's
//!   atomic writer does it: the files in a hidden timestamped directory, `..data` a symlink
//!   to it, each key a symlink through `..data`; an update writes a new timestamped
//!   directory, renames a fresh symlink over `..data` (one atomic step) and removes the old
//!   directory.
//! - [`Container`]: a process started as a runtime starts a container's: in the pod's network
//!   namespace, in a mount namespace of its own with the volumes bind-mounted at their
//!   `mountPath`s under a root filesystem it is chrooted into, `/proc`, a read-only `/sys` and a
//!   `/dev` with the usual device nodes,
//!   the capability bounding set cut to what the security context adds, `no_new_privs` when
//!   it forbids privilege escalation, and the environment the container spec gives.

use std::{
    ffi::{CString, OsStr},
    fs::File,
    os::{
        fd::AsRawFd as _,
        unix::{ffi::OsStrExt as _, fs::PermissionsExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::netns::NetNs;

/// The symlink to the live timestamped directory, and the one renamed over it.
const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// A `ConfigMap` volume directory as the kubelet keeps it.
pub struct ConfigMapVolume {
    dir: PathBuf,
}

impl ConfigMapVolume {
    /// Lays out `files` (key, content) in `dir`, which must exist and be empty.
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> Self {
        let volume = Self {
            dir: dir.to_path_buf(),
        };
        volume.update(files);
        volume
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The timestamped directory `..data` points to now.
    pub fn data_dir(&self) -> PathBuf {
        let target = std::fs::read_link(self.dir.join(DATA)).expect("read ..data");
        self.dir.join(target)
    }

    /// Replaces the volume's content with `files`, as the kubelet does when the `ConfigMap`
    /// changes: new timestamped directory, user-visible symlinks for new keys, `..data_tmp`
    /// renamed over `..data`, symlinks of removed keys and the old directory deleted.
    pub fn update(&self, files: &[(&str, &str)]) {
        let old = std::fs::read_link(self.dir.join(DATA)).ok();
        let name = timestamp_dir_name();
        let new = self.dir.join(&name);
        std::fs::create_dir(&new).expect("create the timestamped directory");
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the timestamped directory");
        for (key, content) in files {
            assert!(
                !key.starts_with("..") && !key.contains('/'),
                "{key}: a flat key"
            );
            let path = new.join(key);
            std::fs::write(&path, content).expect("write a key");
            // The volume's defaultMode.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .expect("chmod a key");
            let visible = self.dir.join(key);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA).join(key), &visible)
                    .expect("symlink a key");
            }
        }
        let tmp = self.dir.join(DATA_TMP);
        std::os::unix::fs::symlink(&name, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join(DATA)).expect("rename ..data_tmp over ..data");
        if let Some(old) = old {
            for entry in std::fs::read_dir(self.dir.join(&old)).expect("read the old directory") {
                let key = entry.expect("an entry").file_name();
                if !files.iter().any(|(k, _)| OsStr::new(k) == key) {
                    std::fs::remove_file(self.dir.join(&key)).expect("remove a removed key");
                }
            }
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old directory");
        }
    }
}

/// `..YYYY_MM_DD_HH_MM_SS.N`: the kubelet's name for a timestamped directory (UTC), with a
/// serial where it has a random suffix.
fn timestamp_dir_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, secs) = (now / 86_400, now % 86_400);
    // Civil date from days since 1970-01-01 (the inverse of Howard Hinnant's days_from_civil).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.{}{:04}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    )
}

/// A volume as the container sees it: `source` on the host, bind-mounted at `target` (an
/// absolute path inside the container).
#[derive(Clone, Debug)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// A container as a pod spec describes it, with its root filesystem already unpacked.
#[derive(Clone, Debug)]
pub struct Container {
    /// The root filesystem (the image's layers, unpacked).
    pub rootfs: PathBuf,
    /// `command` then `args`; `argv[0]` is a path inside `rootfs`.
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Capability names as a security context writes them (`BPF`, `NET_ADMIN`); every other
    /// one is dropped from the bounding set.
    pub capabilities: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem: true`.
    pub read_only_root: bool,
}

/// Linux capabilities by number (linux/capability.h), as a security context names them.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// One `mount(2)` call, its strings prepared before the fork.
struct MountCall {
    source: Option<CString>,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    data: Option<CString>,
}

/// The device nodes a runtime puts in a container's `/dev` (a tmpfs): (name, major, minor).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("a path without NUL")
}

impl Container {
    /// The command that starts this container in `netns`. Its child is the container's
    /// process itself (no wrapper), so its PID is the one to signal.
    pub fn command(&self, netns: &NetNs) -> Command {
        let netns_file = File::open(netns.path()).expect("open the netns file");
        let root = cstring(&self.rootfs);
        let calls = self.mount_calls();
        let keep = self.kept_capabilities();
        let no_new_privs = self.no_new_privs;
        let devices: Vec<(CString, libc::dev_t)> = DEVICES
            .iter()
            .map(|(name, major, minor)| {
                (
                    cstring(&self.rootfs.join("dev").join(name)),
                    libc::makedev(*major, *minor),
                )
            })
            .collect();

        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).env_clear();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        #[expect(
            unsafe_code,
            reason = "namespaces, mounts, chroot and prctl between fork and exec"
        )]
        // SAFETY: the closure runs in the child between fork and exec. It calls only
        // async-signal-safe system calls, on strings and a file prepared before the fork, and
        // allocates nothing (iterating a Vec and building an io::Error from errno do not).
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| {
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::setns(netns_file.as_raw_fd(), libc::CLONE_NEWNET))?;
                check(libc::unshare(libc::CLONE_NEWNS))?;
                for c in &calls {
                    check(libc::mount(
                        c.source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                        c.target.as_ptr(),
                        c.fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                        c.flags,
                        c.data
                            .as_ref()
                            .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
                    ))?;
                }
                for (path, dev) in &devices {
                    check(libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *dev))?;
                }
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(c"/".as_ptr()))?;
                // A root process's permitted and effective sets after exec are its bounding
                // set: cutting the bounding set grants exactly the capabilities kept.
                for cap in 0..64 {
                    if !keep.contains(&cap) {
                        let rc = libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                        if rc != 0
                            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                check(libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0,
                ))?;
                if no_new_privs {
                    check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
                }
                Ok(())
            });
        }
        cmd
    }

    /// The `mount(2)` calls that make the container's view, in order.
    fn mount_calls(&self) -> Vec<MountCall> {
        let root = cstring(&self.rootfs);
        let inside = |target: &Path| {
            let rel = target.strip_prefix("/").expect("an absolute mountPath");
            self.rootfs.join(rel)
        };
        // Mount points must exist before the root is made read-only; /proc, /sys and /dev
        // are there in every container.
        for dir in ["proc", "sys", "dev"] {
            std::fs::create_dir_all(self.rootfs.join(dir)).expect("create a mount point");
        }
        let bind = libc::MS_BIND | libc::MS_REC;
        let remount_ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        let mut calls = vec![
            // Nothing mounted below propagates back to the host.
            MountCall {
                source: None,
                target: c"/".to_owned(),
                fstype: None,
                flags: libc::MS_REC | libc::MS_PRIVATE,
                data: None,
            },
            // The root filesystem becomes a mount of its own (to be made read-only).
            MountCall {
                source: Some(root.clone()),
                target: root.clone(),
                fstype: None,
                flags: bind,
                data: None,
            },
            MountCall {
                source: Some(c"proc".to_owned()),
                target: cstring(&self.rootfs.join("proc")),
                fstype: Some(c"proc".to_owned()),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: None,
            },
            // As runtimes mount it for a container that is not privileged: read-only, and
            // showing the network namespace the process is in.
            MountCall {
                source: Some(c"sysfs".to_owned()),
                target: cstring(&self.rootfs.join("sys")),
                fstype: Some(c"sysfs".to_owned()),
                flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: None,
            },
            // /dev: a small tmpfs, its device nodes made below.
            MountCall {
                source: Some(c"tmpfs".to_owned()),
                target: cstring(&self.rootfs.join("dev")),
                fstype: Some(c"tmpfs".to_owned()),
                flags: libc::MS_NOSUID | libc::MS_STRICTATIME,
                data: Some(c"mode=755,size=65536k".to_owned()),
            },
        ];
        for m in &self.mounts {
            let target = inside(&m.target);
            // Under /sys the mount point is sysfs' own directory; elsewhere make it.
            if !m.target.starts_with("/sys") {
                std::fs::create_dir_all(&target).expect("create a mount point");
            }
            calls.push(MountCall {
                source: Some(cstring(&m.source)),
                target: cstring(&target),
                fstype: None,
                flags: bind,
                data: None,
            });
            if m.read_only {
                calls.push(MountCall {
                    source: None,
                    target: cstring(&target),
                    fstype: None,
                    flags: remount_ro,
                    data: None,
                });
            }
        }
        if self.read_only_root {
            calls.push(MountCall {
                source: None,
                target: root.clone(),
                fstype: None,
                flags: remount_ro,
                data: None,
            });
        }
        calls
    }

    /// The capabilities kept in the bounding set, by number.
    fn kept_capabilities(&self) -> Vec<usize> {
        self.capabilities
            .iter()
            .map(|name| {
                let name = name.strip_prefix("CAP_").unwrap_or(name);
                CAPABILITIES
                    .iter()
                    .position(|c| *c == name)
                    .unwrap_or_else(|| panic!("unknown capability {name}"))
            })
            .collect()
    }
}

/// The shared libraries `binary` loads (from `ldd`), the dynamic loader included; empty for a
/// static binary.
pub fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("run ldd (libc-bin)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; "linux-vdso.so.1 (0x...)" has no file.
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}
