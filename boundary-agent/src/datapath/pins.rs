//! Where the datapath's objects are pinned:
//!
//! ```text
//! <pin dir>/maps/BND_*                    maps (adopted by the next agent)
//! <pin dir>/programs/{xdp,tc,tc-ingress}  the programs currently attached
//! <pin dir>/links/xdp:<mode>:<interface>  XDP ingress link (mode native or generic)
//! <pin dir>/links/tc:ingress:<interface>  tcx ingress link (instead of XDP)
//! <pin dir>/links/tc:egress:<interface>   tcx egress link
//! ```
//!
//! The links hold the programs on the interfaces: enforcement continues while no agent runs,
//! and ends when the link pins are removed (`boundary-agent detach`).

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::config::{InterfaceName, XdpMode};

#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

/// A link pin found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkPin {
    Xdp { mode: XdpMode, interface: String },
    TcIngress { interface: String },
    TcEgress { interface: String },
}

impl LinkPin {
    pub fn interface(&self) -> &str {
        match self {
            LinkPin::Xdp { interface, .. }
            | LinkPin::TcIngress { interface }
            | LinkPin::TcEgress { interface } => interface,
        }
    }
}

impl PinLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn programs_dir(&self) -> PathBuf {
        self.root.join("programs")
    }

    pub fn program(&self, kind: &str) -> PathBuf {
        self.programs_dir().join(kind)
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn xdp_link(&self, iface: &InterfaceName, mode: XdpMode) -> PathBuf {
        self.links_dir().join(format!("xdp:{mode}:{iface}"))
    }

    pub fn tc_link(&self, iface: &InterfaceName) -> PathBuf {
        self.links_dir().join(format!("tc:egress:{iface}"))
    }

    pub fn tc_ingress_link(&self, iface: &InterfaceName) -> PathBuf {
        self.links_dir().join(format!("tc:ingress:{iface}"))
    }

    /// Whether anything is pinned here.
    pub fn exists(&self) -> bool {
        self.maps_dir().is_dir()
    }

    /// The link pins present, with their paths.
    pub fn links(&self) -> io::Result<Vec<(LinkPin, PathBuf)>> {
        let mut out = Vec::new();
        let dir = match std::fs::read_dir(self.links_dir()) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.splitn(3, ':');
            let parsed = match (parts.next(), parts.next(), parts.next()) {
                (Some("xdp"), Some("native"), Some(i)) => Some(LinkPin::Xdp {
                    mode: XdpMode::Native,
                    interface: i.to_owned(),
                }),
                (Some("xdp"), Some("generic"), Some(i)) => Some(LinkPin::Xdp {
                    mode: XdpMode::Generic,
                    interface: i.to_owned(),
                }),
                (Some("tc"), Some("ingress"), Some(i)) => Some(LinkPin::TcIngress {
                    interface: i.to_owned(),
                }),
                (Some("tc"), Some("egress"), Some(i)) => Some(LinkPin::TcEgress {
                    interface: i.to_owned(),
                }),
                _ => None,
            };
            if let Some(p) = parsed {
                out.push((p, entry.path()));
            }
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Removes every pin (links first, so enforcement stops before the maps go) and the
    /// directories. Returns what was removed.
    pub fn remove_all(&self) -> io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for dir in [self.links_dir(), self.programs_dir(), self.maps_dir()] {
            let entries = match std::fs::read_dir(&dir) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut paths: Vec<PathBuf> = entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            paths.sort();
            for p in paths {
                std::fs::remove_file(&p)?;
                removed.push(p);
            }
            std::fs::remove_dir(&dir)?;
        }
        match std::fs::remove_dir(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(removed)
    }
}
