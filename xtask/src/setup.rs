//! Makes a fresh machine ready: apt packages, the pinned toolchains with `rust-src`,
//! bpf-linker built against the pinned nightly's own LLVM, bpffs. Idempotent and fast when
//! everything is there. The recipe is the one in shared/EBPF-NOTES.md.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

/// The userspace toolchain, as rust-toolchain.toml pins it (the one place it is written).
pub static STABLE: std::sync::LazyLock<&str> =
    std::sync::LazyLock::new(|| channel(include_str!("../../rust-toolchain.toml")));
/// The eBPF crate's nightly, as boundary-ebpf/rust-toolchain.toml pins it (boundary-agent's
/// build.rs reads the same file). Dated on purpose: updating it would remove the libLLVM that
/// bpf-linker was built against.
pub static NIGHTLY: std::sync::LazyLock<&str> =
    std::sync::LazyLock::new(|| channel(include_str!("../../boundary-ebpf/rust-toolchain.toml")));

/// The `channel = "..."` of a rust-toolchain.toml.
fn channel(toml: &'static str) -> &'static str {
    toml.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .find_map(|rest| {
            rest.trim()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .split('"')
                .next()
        })
        .expect("a rust-toolchain.toml names its channel")
}
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM major bpf-linker's default feature (`llvm-23`) expects.
const LLVM_MAJOR: &str = "23";

/// (command that proves the package is there, Debian package).
const APT: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("nsenter", "util-linux"),
    ("ping", "iputils-ping"),
    // Prometheus scrapes the agent in the observability end-to-end test; promtool checks
    // the exposition format.
    ("promtool", "prometheus"),
    // The end-to-end tests with real applications (tests/tests/e2e_real.rs) and the demo's
    // HTTP download: Python's http.server serves, curl fetches, ethtool turns offloads off.
    ("python3", "python3"),
    ("curl", "curl"),
    ("ethtool", "ethtool"),
    // The identity endpoint's test registers with clients outside the project's code:
    // `openssl s_client` and `curl --cert` (boundary-agent/tests/identity_endpoint.rs).
    ("openssl", "openssl"),
    // The static (musl) agent of `cargo xtask image`: ring, the identity endpoint's TLS
    // crypto, compiles C and assembly, with musl's headers and `musl-gcc` for that target.
    ("musl-gcc", "musl-tools"),
    // The rate-limit end-to-end tests (tests/tests/e2e_ratelimit.rs) flood with iperf3 and
    // read what the receiver counted; the bench measures throughput with it.
    ("iperf3", "iperf3"),
    // The systemd unit's tests (xtask/src/install/): `systemd-analyze verify` and `security`,
    // `systemctl --root enable`, and systemd itself, booted in a namespace to run the unit.
    // Debian's systemd package; installing it does not make systemd the machine's init.
    ("systemd-analyze", "systemd"),
    // The OCI image test unpacks `cargo xtask image`'s layout with a tool that shares no
    // code with the writer (tests/tests/oci_image.rs).
    ("umoci", "umoci"),
];

/// The Kubernetes schema validator the manifest test runs (`tests/tests/e2e_kubernetes.rs`):
/// the API's JSON schemas ship inside the package, so it works without a cluster or a network.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

pub fn run() -> anyhow::Result<()> {
    let start = Instant::now();
    step("apt packages", apt)?;
    build_tools()?;
    step("bpffs", bpffs)?;
    step("musl target", musl_target)?;
    step("kubernetes-validate", kubernetes_validate)?;
    eprintln!(
        "xtask: setup complete in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What building the agent needs beyond the stable toolchain: the pinned nightly with
/// `rust-src` and bpf-linker (`cargo xtask install` builds with nothing else).
pub fn build_tools() -> anyhow::Result<()> {
    step("rust toolchains", toolchains)?;
    step("bpf-linker", bpf_linker)
}

fn step(name: &str, f: fn() -> anyhow::Result<()>) -> anyhow::Result<()> {
    f().with_context(|| format!("setup step '{name}' failed"))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Finds `cmd` on PATH or in the sbin directories (root's tools live there).
pub fn find_command(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn apt() -> anyhow::Result<()> {
    apt_install(APT)
}

/// Installs the packages of `wanted` whose command is missing.
pub fn apt_install(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| find_command(cmd).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_get_install(&missing)
}

/// `apt-get install` of `missing` (nothing if it is empty), as root.
fn apt_get_install(missing: &[&str]) -> anyhow::Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {missing:?}; install them as root: apt-get install {}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {missing:?} with apt-get");
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn toolchains() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed (https://rustup.rs)")?;
    let has = |name: &str| {
        installed
            .lines()
            .any(|l| l.starts_with(&format!("{name}-")))
    };
    if !has(*STABLE) {
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            *STABLE,
            "--profile",
            "minimal",
            "-c",
            "rustfmt",
            "-c",
            "clippy",
        ]))?;
    }
    if !has(*NIGHTLY)
        || !nightly_sysroot()?
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
    {
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            *NIGHTLY,
            "--profile",
            "minimal",
            "-c",
            "rust-src",
        ]))?;
    }
    Ok(())
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let s = output(Command::new("rustup").args(["run", *NIGHTLY, "rustc", "--print", "sysroot"]))?;
    Ok(PathBuf::from(s.trim()))
}

fn bpf_linker() -> anyhow::Result<()> {
    if let Some(bin) = find_command("bpf-linker")
        && let Ok(v) = output(Command::new(&bin).arg("--version"))
        && v.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let llvm = output(Command::new("rustup").args(["run", *NIGHTLY, "rustc", "-vV"]))?;
    let major = llvm
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .unwrap_or_default();
    if major != LLVM_MAJOR {
        bail!(
            "{} ships LLVM {major}, bpf-linker {BPF_LINKER_VERSION} is built here for LLVM {LLVM_MAJOR}",
            *NIGHTLY
        );
    }
    link_libllvm(&sysroot.join("lib"))?;
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {}'s LLVM (about a minute)",
        *NIGHTLY
    );
    run_cmd(
        Command::new("cargo")
            .args([
                &format!("+{}", *STABLE),
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ])
            .env("LLVM_PREFIX", &sysroot)
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}

/// bpf-linker links `-lLLVM`; the nightly ships only the versioned file.
fn link_libllvm(lib: &Path) -> anyhow::Result<()> {
    let link = lib.join("libLLVM.so");
    if link.exists() {
        return Ok(());
    }
    let versioned = std::fs::read_dir(lib)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM in {}; reinstall {}", lib.display(), *NIGHTLY))?;
    std::os::unix::fs::symlink(&versioned, &link)
        .with_context(|| format!("symlink {} -> {versioned}", link.display()))
}

fn bpffs() -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    let mounted = std::fs::read_to_string("/proc/mounts")?.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    if !is_root() {
        bail!("bpffs is not mounted at /sys/fs/bpf; as root: mount -t bpf bpf /sys/fs/bpf");
    }
    std::fs::create_dir_all(root)?;
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// The target `cargo xtask image` builds the static agent for, added to the pinned stable.
fn musl_target() -> anyhow::Result<()> {
    let target = crate::image::MUSL_TARGET;
    let installed = output(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        *STABLE,
    ]))?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["target", "add", target, "--toolchain", *STABLE]))
}

/// Where the validator's virtualenv lives: under the target directory, so a clean removes it.
pub fn kubernetes_validate_bin() -> PathBuf {
    crate::image::target_dir().join("tools/kubernetes-validate/bin/kubernetes-validate")
}

/// kubernetes-validate at the pinned version, in a virtualenv of its own (pip, from `PyPI`).
fn kubernetes_validate() -> anyhow::Result<()> {
    let bin = kubernetes_validate_bin();
    if let Ok(v) = output(Command::new(&bin).arg("--version"))
        && v.trim() == KUBERNETES_VALIDATE_VERSION
    {
        return Ok(());
    }
    let venv = bin
        .parent()
        .and_then(Path::parent)
        .context("the validator's path has a virtualenv")?;
    let python = find_command("python3").context("python3 is needed (apt: python3)")?;
    let make_venv = || {
        Command::new(&python)
            .args(["-m", "venv", "--clear"])
            .arg(venv)
            .status()
            .is_ok_and(|s| s.success())
    };
    // Debian's python3 leaves venv (ensurepip) to a package of its own.
    if !make_venv() {
        apt_get_install(&["python3-venv"])?;
        if !make_venv() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    eprintln!("xtask: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} with pip");
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
    )
}
