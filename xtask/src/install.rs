//! `cargo xtask install` and `cargo xtask uninstall`: the agent as a systemd service.
//!
//! Three kinds of file, each treated as its kind deserves:
//! - the release binary (`/usr/local/bin`, where software built from source goes) and the
//!   unit (`/etc/systemd/system`, searched by every systemd): ours, replaced by every install
//!   and removed by uninstall;
//! - the example configuration and policy (`/etc/boundary`): the operator's once installed,
//!   so an install never overwrites them and an uninstall removes only a file still exactly
//!   as shipped;
//! - the pinned datapath (`/sys/fs/bpf/boundary`): enforcing whether or not the service runs,
//!   so uninstall refuses while it is there rather than remove the one command that removes
//!   it (`boundary-agent detach`).
//!
//! `--prefix DIR` installs under DIR as if it were `/` (a staging root; no root needed, no
//! `systemctl`). Without it, `/`: root only, and `systemctl daemon-reload` when systemd is the
//! running init (`sd_booted(3)`: `/run/systemd/system` exists).

use std::{
    fs,
    io::{self, ErrorKind},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cargo, setup};

/// The unit's name, as `systemctl` knows it.
pub const SERVICE: &str = "boundary-agent.service";
/// Where the agent goes, relative to the root. The unit's `ExecStart=` names it.
pub const BINARY: &str = "usr/local/bin/boundary-agent";
/// Where the unit goes: the administrator's unit directory, searched by every systemd.
pub const UNIT_DIR: &str = "etc/systemd/system";
/// The configuration directory. The unit's `--config` is `agent.yaml` in it.
pub const CONFIG_DIR: &str = "etc/boundary";
/// The unit, as shipped.
pub const UNIT: &str = include_str!("../../deploy/systemd/boundary-agent.service");
/// The configuration installed where none is: the documented examples.
pub const CONFIGS: &[(&str, &str)] = &[
    ("agent.yaml", include_str!("../../examples/agent.yaml")),
    ("policy.yaml", include_str!("../../examples/policy.yaml")),
];
/// Directories install may create under a staging root; uninstall removes them when empty,
/// deepest first. Never under `/`, where they are the system's.
const LAYOUT_DIRS: &[&str] = &[
    "usr/local/bin",
    "usr/local",
    "usr",
    UNIT_DIR,
    "etc/systemd",
    "etc",
];

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Install under DIR as if it were / (a staging root): no root needed, no systemctl.
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Install this agent binary instead of building the release one.
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct UninstallArgs {
    /// Remove what `install --prefix DIR` put under DIR.
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
}

pub fn install(args: &InstallArgs) -> anyhow::Result<()> {
    let root = root_dir(args.prefix.as_deref())?;
    let binary = if let Some(b) = &args.binary {
        b.clone()
    } else {
        // The agent's build script compiles the eBPF object: it needs the pinned nightly and
        // bpf-linker, nothing else setup installs.
        setup::build_tools()?;
        cargo(&["build", "--release", "--package", "boundary-agent"], &[])?;
        crate::root().join("target/release/boundary-agent")
    };
    for line in Layout::new(&root)
        .install(&binary)
        .with_context(|| format!("install under {}", root.display()))?
    {
        eprintln!("xtask: {line}");
    }
    daemon_reload(&root)?;
    let shown = |p: &str| root.join(p).display().to_string();
    eprintln!(
        "xtask: next: set the interfaces in {} and the policy in {}, check it with \
         `boundary-agent check {}`, then `systemctl enable --now {SERVICE}`",
        shown(&format!("{CONFIG_DIR}/agent.yaml")),
        shown(&format!("{CONFIG_DIR}/policy.yaml")),
        shown(&format!("{CONFIG_DIR}/policy.yaml")),
    );
    Ok(())
}

pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    let root = root_dir(args.prefix.as_deref())?;
    let layout = Layout::new(&root);
    if root == Path::new("/") {
        let pins = layout.pin_dir();
        if pins.exists() {
            bail!(
                "{} still holds the pinned datapath, which enforces the policy with or without \
                 the service. Remove it first, while the agent is installed: \
                 `systemctl stop {SERVICE} && boundary-agent detach --pin-dir {}`",
                pins.display(),
                pins.display()
            );
        }
    }
    for line in layout
        .uninstall()
        .with_context(|| format!("uninstall under {}", root.display()))?
    {
        eprintln!("xtask: {line}");
    }
    daemon_reload(&root)
}

/// The root to install under: the prefix, or `/` for root only.
fn root_dir(prefix: Option<&Path>) -> anyhow::Result<PathBuf> {
    match prefix {
        Some(p) => Ok(p.to_path_buf()),
        None if nix::unistd::geteuid().is_root() => Ok(PathBuf::from("/")),
        None => bail!("installing to / needs root (or use --prefix DIR for a staging root)"),
    }
}

/// `systemctl daemon-reload` when installing to `/` on a host that systemd runs.
fn daemon_reload(root: &Path) -> anyhow::Result<()> {
    if root != Path::new("/") || !Path::new("/run/systemd/system").is_dir() {
        return Ok(());
    }
    let status = Command::new("systemctl")
        .arg("daemon-reload")
        .status()
        .context("run systemctl daemon-reload")?;
    if !status.success() {
        bail!("systemctl daemon-reload failed ({status})");
    }
    Ok(())
}

/// The installed files under one root.
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn binary(&self) -> PathBuf {
        self.root.join(BINARY)
    }

    pub fn unit(&self) -> PathBuf {
        self.root.join(UNIT_DIR).join(SERVICE)
    }

    pub fn config(&self, name: &str) -> PathBuf {
        self.root.join(CONFIG_DIR).join(name)
    }

    /// The installed configuration's `pinDir` (the default if it says none): where the
    /// datapath is pinned while it enforces.
    fn pin_dir(&self) -> PathBuf {
        let config = fs::read_to_string(self.config("agent.yaml")).unwrap_or_default();
        config
            .lines()
            .find_map(|l| l.strip_prefix("pinDir:"))
            .map(|v| v.split('#').next().unwrap_or_default().trim())
            .map(|v| v.trim_matches(['"', '\'']))
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/sys/fs/bpf/boundary"), PathBuf::from)
    }

    /// Installs `binary`, the unit, and the example configuration where none is. Returns what
    /// it did, a line per file.
    pub fn install(&self, binary: &Path) -> io::Result<Vec<String>> {
        let mut done = Vec::new();
        // Copied beside its destination and renamed over it: a running agent keeps its own
        // file (writing into it would fail with ETXTBSY), and no one sees half a binary.
        let dest = self.binary();
        let staged = dest.with_extension("new");
        create_dir(dest.parent().expect("a parent"))?;
        fs::copy(binary, &staged)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))?;
        fs::rename(&staged, &dest)?;
        done.push(format!("installed {}", dest.display()));

        let unit = self.unit();
        create_dir(unit.parent().expect("a parent"))?;
        write(&unit, UNIT, 0o644)?;
        done.push(format!("installed {}", unit.display()));

        create_dir(&self.root.join(CONFIG_DIR))?;
        for (name, text) in CONFIGS {
            let path = self.config(name);
            if path.exists() {
                done.push(format!("kept {} (never overwritten)", path.display()));
            } else {
                write(&path, text, 0o644)?;
                done.push(format!("installed {}", path.display()));
            }
        }
        Ok(done)
    }

    /// Removes what [`Layout::install`] put, except configuration that was changed since.
    /// Returns what it did, a line per file.
    pub fn uninstall(&self) -> io::Result<Vec<String>> {
        let mut done = Vec::new();
        // `systemctl enable` links: they would dangle without the unit.
        let unit_dir = self.root.join(UNIT_DIR);
        for entry in read_dir(&unit_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let link = entry.path().join(SERVICE);
            if [".wants", ".requires", ".upholds"]
                .iter()
                .any(|s| name.ends_with(s))
                && link.is_symlink()
            {
                fs::remove_file(&link)?;
                done.push(format!("removed {}", link.display()));
                remove_empty_dir(&entry.path())?;
            }
        }
        for path in [self.unit(), self.binary()] {
            if remove_file(&path)? {
                done.push(format!("removed {}", path.display()));
            }
        }
        let drop_ins = unit_dir.join(format!("{SERVICE}.d"));
        if drop_ins.exists() {
            done.push(format!("kept {} (yours)", drop_ins.display()));
        }
        for (name, text) in CONFIGS {
            let path = self.config(name);
            match fs::read_to_string(&path) {
                Ok(now) if now == *text => {
                    fs::remove_file(&path)?;
                    done.push(format!("removed {}", path.display()));
                }
                Ok(_) => done.push(format!(
                    "kept {} (changed since it was installed)",
                    path.display()
                )),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        remove_empty_dir(&self.root.join(CONFIG_DIR))?;
        if self.root != Path::new("/") {
            for dir in LAYOUT_DIRS {
                remove_empty_dir(&self.root.join(dir))?;
            }
        }
        Ok(done)
    }
}

fn create_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

fn write(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Removes `path`; false if there was nothing to remove.
fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes `dir` if it exists and is empty.
fn remove_empty_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir(dir) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty | ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The entries of `dir`, none if it does not exist.
fn read_dir(dir: &Path) -> io::Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod under_systemd;
