//! `cargo xtask image`: the agent as an OCI image, written here as an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/`) and the same layout as a tar archive.
//!
//! The agent is built for `x86_64-unknown-linux-musl`: a static binary, so the image needs no
//! base and holds that one file. No shell, no libc, nothing else to patch. The layout is
//! written directly (config, manifest, index, one gzipped tar layer, each addressed by its
//! SHA-256) rather than through a container engine: no daemon, no storage driver, and every
//! byte reproducible from the commit (timestamps are the commit's).
//!
//! Push it with `skopeo copy oci:target/image/boundary-agent-VERSION docker://REGISTRY/...`
//! or import the archive on a node with `ctr -n k8s.io images import`.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{cargo, root, setup};

/// The target the image's binary is built for (installed by `cargo xtask setup`).
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// Where the binary sits in the image, and so the image's entrypoint.
pub const ENTRYPOINT: &str = "/boundary-agent";
/// The image's name, as a cluster's runtime would know it after an import.
const NAME: &str = "boundary-agent";
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(clap::Args)]
pub struct Args {
    /// Build the binary with the dev profile (quicker to build; what `cargo xtask test`
    /// checks) instead of release.
    #[arg(long)]
    pub debug: bool,
    /// Where to write the layout and the archive (default: `target/image`).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// What was written.
pub struct Image {
    /// The OCI image layout (a directory).
    pub layout: PathBuf,
    /// The same layout as a tar archive (`oci-archive:` for skopeo and podman, `ctr import`).
    pub archive: PathBuf,
    /// The manifest's digest, `sha256:...`.
    pub digest: String,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    setup::run()?;
    let image = build(args)?;
    eprintln!(
        "xtask: image {NAME}:{VERSION} ({})\n  layout  {}\n  archive {}\n\
         push:   skopeo copy oci:{}:{VERSION} docker://REGISTRY/{NAME}:{VERSION}\n\
         import: ctr -n k8s.io images import {}",
        image.digest,
        image.layout.display(),
        image.archive.display(),
        image.layout.display(),
        image.archive.display(),
    );
    Ok(())
}

/// Builds the static agent and writes the image. Expects `cargo xtask setup` to have run.
pub fn build(args: &Args) -> anyhow::Result<Image> {
    let binary = build_static_agent(args.debug)?;
    let version = agent_version(&binary)?;
    if version != VERSION {
        bail!("the agent says it is {version}, the workspace is {VERSION}");
    }
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| target_dir().join("image"));
    let layout = out.join(format!("{NAME}-{VERSION}"));
    let archive = out.join(format!("{NAME}-{VERSION}.tar"));
    let epoch = source_date_epoch();
    let revision = git(&["rev-parse", "HEAD"]);

    if layout.exists() {
        fs::remove_dir_all(&layout).with_context(|| format!("remove {}", layout.display()))?;
    }
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
    let put = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let hex = hex(&Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).context("write a blob")?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };

    let tar = layer_tar(&binary, epoch)?;
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
    let layer = put(&gzip(&tar)?)?;
    let config = put(&serde_json::to_vec(&config(
        epoch,
        revision.as_deref(),
        &diff_id,
    ))?)?;
    let manifest = put(&serde_json::to_vec(&manifest(config, layer))?)?;
    let digest = manifest.0.clone();
    write_index(&layout, manifest)?;
    write_archive(&layout, &archive, epoch)?;
    Ok(Image {
        layout,
        archive,
        digest,
    })
}

/// The image config (OCI image-spec config.md). `Cmd` is what the `DaemonSet` passes as args.
fn config(epoch: u64, revision: Option<&str>, diff_id: &str) -> serde_json::Value {
    let created = rfc3339(epoch);
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("org.opencontainers.image.title", NAME),
        ("org.opencontainers.image.version", VERSION),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE"),
        ),
        (
            "org.opencontainers.image.description",
            "Boundary's agent: eBPF host firewall (XDP/tcx), one per node",
        ),
        ("org.opencontainers.image.created", &created),
    ] {
        labels.insert(k.into(), v.into());
    }
    if let Some(rev) = revision {
        labels.insert("org.opencontainers.image.revision".into(), rev.into());
    }
    json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": [ENTRYPOINT],
            "Cmd": ["run", "--config", "/etc/boundary/agent.yaml"],
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": created, "created_by": "cargo xtask image" }],
    })
}

/// The manifest of one config and one gzipped layer, each given as (digest, size).
fn manifest(
    (config_digest, config_size): (String, usize),
    (layer_digest, layer_size): (String, usize),
) -> serde_json::Value {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_size,
        }],
        "annotations": { "org.opencontainers.image.version": VERSION },
    })
}

/// Writes `index.json`, pointing at the manifest (given as (digest, size)), and `oci-layout`.
fn write_index(layout: &Path, (digest, manifest_size): (String, usize)) -> anyhow::Result<()> {
    // `ref.name` is the tag within the layout (skopeo `oci:DIR:TAG`, umoci); containerd's
    // `ctr images import` names the image after `io.containerd.image.name`, which is what the
    // DaemonSet's `image: boundary-agent:VERSION` resolves to.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest_size,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "org.opencontainers.image.ref.name": VERSION,
                "io.containerd.image.name": format!("docker.io/library/{NAME}:{VERSION}"),
            },
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec_pretty(&index)?,
    )?;
    fs::write(
        layout.join("oci-layout"),
        serde_json::to_vec(&json!({ "imageLayoutVersion": "1.0.0" }))?,
    )?;
    Ok(())
}

/// The target directory cargo builds into (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Builds the agent for the musl target and returns the binary, after checking it is static.
fn build_static_agent(debug: bool) -> anyhow::Result<PathBuf> {
    let mut build = vec![
        "build",
        "--package",
        "boundary-agent",
        "--target",
        MUSL_TARGET,
    ];
    if !debug {
        build.push("--release");
    }
    // Debug info is half the release binary and three quarters of the debug one; symbols stay
    // (for backtraces). Set for this target only, so the eBPF object keeps its BTF.
    let rustflags_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        MUSL_TARGET.to_uppercase().replace('-', "_")
    );
    // ring (rustls' crypto) compiles C and assembly: with musl's gcc wrapper for this target
    // (musl-tools), which cc-rs does not find by itself (it looks for x86_64-linux-musl-gcc).
    let cc_var = format!("CC_{}", MUSL_TARGET.replace('-', "_"));
    cargo(
        &build,
        &[
            (&rustflags_var, "-C strip=debuginfo"),
            (&cc_var, "musl-gcc"),
        ],
    )?;
    let binary = target_dir()
        .join(MUSL_TARGET)
        .join(if debug { "debug" } else { "release" })
        .join("boundary-agent");
    if has_interpreter(&binary)? {
        bail!(
            "{} is dynamically linked: an image without a libc cannot run it",
            binary.display()
        );
    }
    Ok(binary)
}

/// Whether the ELF file at `path` names a program interpreter (`PT_INTERP`), i.e. needs a
/// dynamic loader. A static-pie binary has `PT_DYNAMIC` for its own relocations, but no
/// interpreter.
fn has_interpreter(path: &Path) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    let elf = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // ELF64, little-endian: the only kind the x86_64 target produces.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{}: truncated ELF header", path.display());
    };
    let phoff = usize::try_from(phoff)?;
    for i in 0..usize::from(phnum) {
        let at = phoff + i * usize::from(phentsize);
        match u32_at(at) {
            Some(PT_INTERP) => return Ok(true),
            Some(_) => {}
            None => bail!("{}: truncated program headers", path.display()),
        }
    }
    Ok(false)
}

/// The version the binary reports (`boundary-agent 0.1.0` -> `0.1.0`).
fn agent_version(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("run {} --version", binary.display()))?;
    if !out.status.success() {
        bail!("{} --version failed ({})", binary.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("boundary-agent ")
        .map(str::to_owned)
        .with_context(|| format!("unexpected --version output {text:?}"))
}

/// The layer: the binary at the root, owned by root, mode 0755, and nothing else.
fn layer_tar(binary: &Path, epoch: u64) -> anyhow::Result<Vec<u8>> {
    let bytes = fs::read(binary).with_context(|| format!("read {}", binary.display()))?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(epoch);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(
        &mut header,
        ENTRYPOINT.trim_start_matches('/'),
        bytes.as_slice(),
    )?;
    Ok(tar.into_inner()?)
}

/// Gzip with a fixed header (no name, mtime 0), so equal input gives an equal blob.
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes)?;
    Ok(gz.finish()?)
}

/// Writes the layout's files into a tar archive, in a fixed order with fixed metadata.
fn write_archive(layout: &Path, archive: &Path, epoch: u64) -> anyhow::Result<()> {
    let mut files = vec![PathBuf::from("oci-layout"), PathBuf::from("index.json")];
    let mut blobs: Vec<PathBuf> = fs::read_dir(layout.join("blobs/sha256"))?
        .map(|e| e.map(|e| Path::new("blobs/sha256").join(e.file_name())))
        .collect::<Result<_, _>>()?;
    blobs.sort();
    files.extend(blobs);
    let file =
        fs::File::create(archive).with_context(|| format!("create {}", archive.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_mtime(epoch);
        header.set_size(0);
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    for rel in files {
        let bytes = fs::read(layout.join(&rel))?;
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(epoch);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &rel, bytes.as_slice())?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Seconds since the epoch for every timestamp in the image: `SOURCE_DATE_EPOCH` when set
/// (reproducible-builds.org), else the commit's time, else 0.
fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%ct"]))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `git ARGS` in the workspace, trimmed; None if git fails (a source tarball, no git).
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `epoch` as an RFC 3339 UTC timestamp (`1970-01-01T00:00:00Z`), as the image spec wants.
fn rfc3339(epoch: u64) -> String {
    let (days, secs) = (epoch / 86_400, epoch % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(1_798_761_600), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn an_interpreter_is_found_in_a_dynamic_binary() {
        // The test binary itself is dynamically linked against glibc.
        let me = std::env::current_exe().expect("current exe");
        assert!(has_interpreter(&me).expect("parse own ELF"));
    }
}
