//! The agent's OCI image (`cargo xtask image`, issue #12), read as a registry and a runtime
//! would read it: every blob matches its digest, the config says how to run it (entrypoint
//! `/boundary-agent`, the version in its labels), the one layer holds the agent and nothing
//! else (no shell, no libc), and that binary runs with nothing else in its root. umoci, which
//! shares no code with the writer, must unpack it into the same runtime bundle.
//!
//! The image is `BOUNDARY_IMAGE` (set by `cargo xtask test`, which builds it) or the one
//! under `target/image/`; without either the test skips, except under `CI=true`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use boundary_tests::{
    apps::TempDir,
    oci::{Image, image_layout},
};
use sha2::{Digest as _, Sha256};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The image, or None (after saying why) when the test may skip.
fn image(test: &str) -> Option<Image> {
    if let Some(layout) = image_layout() {
        return Some(Image::read(&layout));
    }
    assert!(
        !ci(),
        "{test}: no image (BOUNDARY_IMAGE unset, none under target/image) and CI=true forbids skipping"
    );
    eprintln!("SKIPPED {test}: no image; run `cargo xtask image` or `cargo xtask test`");
    None
}

/// Runs `cmd`, panicking with its stderr if it fails; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn image_config_runs_the_agent_and_names_its_version() {
    let Some(image) = image("image_config_runs_the_agent_and_names_its_version") else {
        return;
    };
    let c = &image.config;
    assert_eq!(c["os"], "linux");
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(
        c["config"]["Entrypoint"],
        serde_json::json!(["/boundary-agent"])
    );
    let labels = &c["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION);
    assert_eq!(labels["org.opencontainers.image.title"], "boundary-agent");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    // No environment to carry a shell's PATH, no user (the DaemonSet runs it as root with
    // the capabilities it names).
    assert!(c["config"]["Env"].is_null(), "{}", c["config"]["Env"]);
    assert!(c["config"]["User"].is_null(), "{}", c["config"]["User"]);
    assert_eq!(
        image.descriptor["annotations"]["org.opencontainers.image.ref.name"],
        VERSION
    );

    // One layer, and the config's diff_id is its uncompressed digest.
    assert_eq!(image.layers.len(), 1, "one layer");
    let tar = Command::new("gzip")
        .arg("-dc")
        .arg(&image.layers[0])
        .output()
        .expect("run gzip");
    assert!(tar.status.success(), "the layer is gzip");
    let diff_id: String = Sha256::digest(&tar.stdout)
        .iter()
        .fold("sha256:".into(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
    assert_eq!(c["rootfs"]["diff_ids"], serde_json::json!([diff_id]));

    // The archive next to the layout holds the same layout.
    let archive = PathBuf::from(format!("{}.tar", image.layout.display()));
    let listing = run(Command::new("tar").arg("-tf").arg(&archive));
    for want in ["oci-layout", "index.json"] {
        assert!(listing.lines().any(|l| l == want), "{want} in the archive");
    }
    for blob in std::fs::read_dir(image.layout.join("blobs/sha256")).expect("blobs") {
        let name = blob.expect("a blob").file_name();
        let want = format!("blobs/sha256/{}", name.to_string_lossy());
        assert!(listing.lines().any(|l| l == want), "{want} in the archive");
    }
}

#[test]
fn image_layer_is_the_static_agent_alone() {
    let Some(image) = image("image_layer_is_the_static_agent_alone") else {
        return;
    };
    // `tar -tv`: mode, owner, size, date, time, name. One regular file, root's, executable.
    let listing = run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvzf")
        .arg(&image.layers[0]));
    let entries: Vec<&str> = listing.lines().collect();
    assert_eq!(entries.len(), 1, "only the agent in the layer:\n{listing}");
    let fields: Vec<&str> = entries[0].split_whitespace().collect();
    assert_eq!(fields[0], "-rwxr-xr-x", "{listing}");
    assert_eq!(fields[1], "0/0", "{listing}");
    assert_eq!(fields.last(), Some(&"boundary-agent"), "{listing}");

    // Unpacked, it runs with nothing else in its root: no libc, no loader, no /bin/sh.
    let rootfs = TempDir::new("image-rootfs");
    image.unpack(rootfs.path());
    let agent = rootfs.path().join("boundary-agent");
    let version = if nix::unistd::geteuid().is_root() {
        run(Command::new("chroot")
            .arg(rootfs.path())
            .args(["/boundary-agent", "--version"]))
    } else {
        assert!(!ci(), "running the agent in its own root needs root");
        eprintln!("not root: running the image's agent outside its root");
        run(Command::new(&agent).arg("--version"))
    };
    assert_eq!(version.trim(), format!("boundary-agent {VERSION}"));
    let files: Vec<_> = std::fs::read_dir(rootfs.path())
        .expect("read the rootfs")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(files, ["boundary-agent"], "the unpacked root");
}

#[test]
fn umoci_unpacks_the_image_into_the_same_bundle() {
    let Some(image) = image("umoci_unpacks_the_image_into_the_same_bundle") else {
        return;
    };
    let ok = Command::new("umoci").arg("--version").output();
    if ok.is_err() {
        assert!(
            !ci(),
            "umoci is missing (apt: umoci) and CI=true forbids skipping"
        );
        eprintln!(
            "SKIPPED umoci_unpacks_the_image_into_the_same_bundle: no umoci; run `cargo xtask setup`"
        );
        return;
    }
    let dir = TempDir::new("image-bundle");
    let bundle = dir.path().join("bundle");
    let reference = format!("{}:{VERSION}", image.layout.display());
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !nix::unistd::geteuid().is_root() {
        unpack.arg("--rootless");
    }
    run(unpack.arg("--image").arg(&reference).arg(&bundle));
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("config.json")).expect("the bundle's config.json"),
    )
    .expect("runtime spec JSON");
    let args: Vec<&str> = spec["process"]["args"]
        .as_array()
        .expect("process.args")
        .iter()
        .map(|a| a.as_str().expect("a string"))
        .collect();
    assert_eq!(
        args,
        [
            "/boundary-agent",
            "run",
            "--config",
            "/etc/boundary/agent.yaml"
        ]
    );
    assert_eq!(
        spec["annotations"]["org.opencontainers.image.version"],
        VERSION
    );
    let root = Path::new(&bundle).join("rootfs");
    let files: Vec<_> = std::fs::read_dir(&root)
        .expect("read the bundle's rootfs")
        .map(|e| e.expect("an entry").file_name())
        .collect();
    assert_eq!(files, ["boundary-agent"], "umoci's rootfs");
}
