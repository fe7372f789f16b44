//! Where the datapath's objects are pinned:
//!
//! ```text
//! <pin dir>/maps/BND_*                    maps (adopted by the next agent)
//! <pin dir>/programs/{xdp,tc,tc-ingress}  the programs currently attached
//! <pin dir>/links/xdp:<mode>:<interface>  XDP ingress link (mode native or generic)
//! <pin dir>/links/tc:ingress:<interface>  tcx ingress link (instead of XDP)
//! <pin dir>/links/tc:egress:<interface>   tcx egress link
//! <pin dir>/links/staged:<link name>       a new link for a moment: renamed over its name
//! ```
//!
//! The links hold the programs on the interfaces: enforcement continues while no agent runs,
//! and ends when the link pins are removed (`boundary-agent detach`).

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::config::{InterfaceName, XdpMode};

/// An interface's name as it appears in a pin's name. bpffs refuses dots in names (reserved
/// for its own files), and VLAN sub-interfaces have them (`eth0.100`): a dot is written as
/// `:`, which no interface name holds (the kernel refuses it), so the mapping goes back.
fn pin_name(iface: &str) -> String {
    iface.replace('.', ":")
}

/// The interface a pin's name is for (see [`pin_name`]).
fn interface_of(pinned: &str) -> String {
    pinned.replace(':', ".")
}

/// The prefix of a link pinned for the moment before its rename.
const STAGED: &str = "staged:";

#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

/// What [`PinLayout::remove_contents`] removed, and what it could not.
#[derive(Debug, Default)]
pub struct Removal {
    pub removed: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, io::Error)>,
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
        self.links_dir()
            .join(format!("xdp:{mode}:{}", pin_name(iface.as_str())))
    }

    pub fn tc_link(&self, iface: &InterfaceName) -> PathBuf {
        self.links_dir()
            .join(format!("tc:egress:{}", pin_name(iface.as_str())))
    }

    pub fn tc_ingress_link(&self, iface: &InterfaceName) -> PathBuf {
        self.links_dir()
            .join(format!("tc:ingress:{}", pin_name(iface.as_str())))
    }

    /// Where a link bound for `path` is pinned before it is renamed over `path`: beside it,
    /// under a name [`PinLayout::links`] does not take for a link.
    pub fn staged(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        path.with_file_name(format!("{STAGED}{name}"))
    }

    /// Staged link pins left behind by a process killed between pinning and renaming.
    pub fn staged_links(&self) -> io::Result<Vec<PathBuf>> {
        let dir = match std::fs::read_dir(self.links_dir()) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(STAGED) {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
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
                    interface: interface_of(i),
                }),
                (Some("xdp"), Some("generic"), Some(i)) => Some(LinkPin::Xdp {
                    mode: XdpMode::Generic,
                    interface: interface_of(i),
                }),
                (Some("tc"), Some("ingress"), Some(i)) => Some(LinkPin::TcIngress {
                    interface: interface_of(i),
                }),
                (Some("tc"), Some("egress"), Some(i)) => Some(LinkPin::TcEgress {
                    interface: interface_of(i),
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
    /// directories under the root, going on past what cannot be removed. The root stays:
    /// the lock on it is how `detach` and a starting agent find each other.
    pub fn remove_contents(&self) -> Removal {
        let mut out = Removal::default();
        for dir in [self.links_dir(), self.programs_dir(), self.maps_dir()] {
            let entries = match std::fs::read_dir(&dir) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.failed.push((dir, e));
                    continue;
                }
            };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                match std::fs::remove_file(&p) {
                    Ok(()) => out.removed.push(p),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => out.failed.push((p, e)),
                }
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => out.failed.push((dir, e)),
            }
        }
        out
    }

    /// Removes the (empty) root directory.
    pub fn remove_root(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_dotted_interfaces_without_a_dot_and_read_back_their_names() {
        let dir = std::env::temp_dir().join(format!("boundary-pins-{}", std::process::id()));
        let layout = PinLayout::new(&dir);
        std::fs::create_dir_all(layout.links_dir()).expect("dir");
        let vlan: InterfaceName = "eth0.100".parse().expect("name");
        let plain: InterfaceName = "veth1".parse().expect("name");
        let paths = [
            layout.xdp_link(&vlan, XdpMode::Native),
            layout.tc_link(&vlan),
            layout.tc_ingress_link(&plain),
        ];
        for p in &paths {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            assert!(!name.contains('.'), "bpffs refuses {name}");
            std::fs::write(p, b"").expect("write");
        }
        // A staged pin is not a link pin, and is listed as staged.
        let staged = PinLayout::staged(&paths[1]);
        std::fs::write(&staged, b"").expect("write");
        let links: Vec<LinkPin> = layout
            .links()
            .expect("links")
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(
            links,
            [
                LinkPin::TcEgress {
                    interface: "eth0.100".into()
                },
                LinkPin::TcIngress {
                    interface: "veth1".into()
                },
                LinkPin::Xdp {
                    mode: XdpMode::Native,
                    interface: "eth0.100".into()
                },
            ]
        );
        assert_eq!(layout.staged_links().expect("staged"), [staged]);
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
