//! Reading the agent's OCI image (`cargo xtask image`) as a registry or runtime would: the
//! layout's index, the manifest and config it points to, each blob checked against its
//! digest, and the layer unpacked with GNU tar. It shares no code with the writer in xtask.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest as _, Sha256};

/// The image layout to test: `BOUNDARY_IMAGE` (set by `cargo xtask test`), else the one
/// `cargo xtask image` writes for this version under the target directory, if it is there.
pub fn image_layout() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BOUNDARY_IMAGE") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let p = target.join(format!(
        "image/boundary-agent-{}",
        env!("CARGO_PKG_VERSION")
    ));
    p.join("index.json").exists().then_some(p)
}

/// An image read from a layout, its blobs verified.
pub struct Image {
    pub layout: PathBuf,
    /// The index's one manifest descriptor (with its annotations).
    pub descriptor: serde_json::Value,
    pub manifest: serde_json::Value,
    pub config: serde_json::Value,
    /// The layers' blob files, in order.
    pub layers: Vec<PathBuf>,
}

impl Image {
    /// Reads the layout at `layout`; panics with what is wrong with it.
    pub fn read(layout: &Path) -> Self {
        let json = |path: &Path| -> serde_json::Value {
            let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
        };
        let oci_layout = json(&layout.join("oci-layout"));
        assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0", "oci-layout");
        let index = json(&layout.join("index.json"));
        assert_eq!(index["schemaVersion"], 2, "index schemaVersion");
        let manifests = index["manifests"].as_array().expect("index manifests");
        assert_eq!(manifests.len(), 1, "one manifest in the index");
        let descriptor = manifests[0].clone();
        assert_eq!(
            descriptor["mediaType"], "application/vnd.oci.image.manifest.v1+json",
            "manifest media type"
        );
        let manifest = json(&verified_blob(layout, &descriptor));
        assert_eq!(
            manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json",
            "config media type"
        );
        let config = json(&verified_blob(layout, &manifest["config"]));
        let layers = manifest["layers"]
            .as_array()
            .expect("manifest layers")
            .iter()
            .map(|d| verified_blob(layout, d))
            .collect();
        Self {
            layout: layout.to_path_buf(),
            descriptor,
            manifest,
            config,
            layers,
        }
    }

    /// Unpacks every layer, in order, into `dir` (which must exist).
    pub fn unpack(&self, dir: &Path) {
        for layer in &self.layers {
            let out = Command::new("tar")
                .arg("-xzf")
                .arg(layer)
                .arg("-C")
                .arg(dir)
                .arg("--numeric-owner")
                .output()
                .expect("run tar");
            assert!(
                out.status.success(),
                "tar -xzf {}: {}",
                layer.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The blob a descriptor points to, after checking its size and SHA-256.
fn verified_blob(layout: &Path, descriptor: &serde_json::Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().expect("a descriptor digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest}: not sha256"));
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        Some(bytes.len() as u64),
        descriptor["size"].as_u64(),
        "{digest}: size"
    );
    let actual = Sha256::digest(&bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
    assert_eq!(actual, hex, "{digest}: the blob's content does not match");
    path
}
