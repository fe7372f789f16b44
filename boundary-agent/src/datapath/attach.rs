//! Attaching the programs to interfaces, adopting and replacing a previous agent's links.

use std::{ffi::CString, io};

use aya::programs::{
    ProgramError, TcAttachType,
    links::{FdLink, LinkError, PinnedLink},
    tc::SchedClassifierLink,
    xdp::{XdpLink, XdpMode as AyaXdpMode},
};
use tracing::{error, info, warn};

use super::{
    Datapath, DatapathError, linkinfo, netdev,
    object::{TC_INGRESS_PROGRAM, TC_PROGRAM},
    pins::{LinkPin, PinLayout},
};
use crate::config::{IngressHook, InterfaceName, XdpMode};

/// How a protected interface's ingress is enforced once attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressAttach {
    Xdp(XdpMode),
    Tc,
}

impl IngressAttach {
    /// `xdp` or `tc`.
    pub fn hook(self) -> &'static str {
        match self {
            IngressAttach::Xdp(_) => "xdp",
            IngressAttach::Tc => "tc",
        }
    }

    /// `native` or `generic` for XDP, `tcx` for TC.
    pub fn mode(self) -> &'static str {
        match self {
            IngressAttach::Xdp(XdpMode::Native) => "native",
            IngressAttach::Xdp(XdpMode::Generic) => "generic",
            IngressAttach::Tc => "tcx",
        }
    }
}

impl std::fmt::Display for IngressAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.hook(), self.mode())
    }
}

/// Refuses an interface without an Ethernet header. The parser starts at one: on a device
/// without (tun, `WireGuard`, GRE, ...) it would read the IP header as one and pass what the
/// policy denies.
pub fn require_ethernet(iface: &InterfaceName) -> Result<(), DatapathError> {
    match netdev::link_type(iface) {
        Ok(netdev::ARPHRD_ETHER) => Ok(()),
        Ok(link_type) => Err(DatapathError::NotEthernet {
            interface: iface.to_string(),
            link_type,
        }),
        Err(source) => Err(DatapathError::LinkType {
            interface: iface.to_string(),
            source,
        }),
    }
}

/// The hook `auto` stands for on `iface`: TC on veths (see [`IngressHook::Auto`]), XDP on
/// everything else, including interfaces whose driver cannot be asked.
pub fn resolve_ingress(iface: &InterfaceName, hook: IngressHook) -> IngressHook {
    match hook {
        IngressHook::Auto => match netdev::driver(iface) {
            Ok(driver) if driver == "veth" => IngressHook::Tc,
            Ok(_) => IngressHook::Xdp,
            Err(e) => {
                warn!(interface = %iface, error = %e, "cannot read the interface's driver; ingress at XDP");
                IngressHook::Xdp
            }
        },
        h => h,
    }
}

impl Datapath {
    /// Attaches the ingress program (XDP or tcx, per `hook`, `auto` resolved by the driver)
    /// and tcx egress to `iface` and pins the links. A link already pinned for the interface is
    /// updated in place (`BPF_LINK_UPDATE`): the new program takes over with no moment where
    /// the interface is unprotected. When the ingress hook changes, the new one is attached
    /// before the old one is removed. Returns how ingress is enforced.
    pub fn attach(
        &mut self,
        iface: &InterfaceName,
        hook: IngressHook,
        mode: XdpMode,
        allow_generic_fallback: bool,
    ) -> Result<IngressAttach, DatapathError> {
        require_ethernet(iface)?;
        let ingress = if resolve_ingress(iface, hook) == IngressHook::Tc {
            self.attach_tcx(iface, TcAttachType::Ingress)?;
            self.remove_links(iface, |p| matches!(p, LinkPin::Xdp { .. }))?;
            IngressAttach::Tc
        } else {
            let mode = self.attach_xdp(iface, mode, allow_generic_fallback)?;
            self.remove_links(iface, |p| matches!(p, LinkPin::TcIngress { .. }))?;
            IngressAttach::Xdp(mode)
        };
        self.attach_tcx(iface, TcAttachType::Egress)?;
        Ok(ingress)
    }

    /// Unpins (and so detaches) `iface`'s links that `which` selects.
    fn remove_links(
        &self,
        iface: &InterfaceName,
        which: impl Fn(&LinkPin) -> bool,
    ) -> Result<(), DatapathError> {
        let layout = self.layout()?;
        let links = layout.links().map_err(|source| DatapathError::Pin {
            path: layout.links_dir().display().to_string(),
            source,
        })?;
        for (pin, path) in links {
            if pin.interface() == iface.as_str() && which(&pin) {
                info!(interface = %iface, pin = %path.display(), "ingress hook changed: detaching the old one");
                remove_if_present(&path)?;
            }
        }
        Ok(())
    }

    fn attach_xdp(
        &mut self,
        iface: &InterfaceName,
        mode: XdpMode,
        allow_generic_fallback: bool,
    ) -> Result<XdpMode, DatapathError> {
        // A pin in the wanted mode is adopted; one in the other mode is replaced (after the new
        // attach succeeds would be better, but the kernel allows one XDP program per interface).
        // The mode of a link removed for that: if the new mode cannot attach, the interface is
        // protected again in the mode it had.
        let mut replaced = None;
        let layout = self.layout()?.clone();
        for (pin, path) in layout.links().map_err(|source| DatapathError::Pin {
            path: layout.links_dir().display().to_string(),
            source,
        })? {
            if let LinkPin::Xdp {
                mode: pinned,
                interface,
            } = &pin
                && interface == iface.as_str()
            {
                if *pinned == mode
                    && let Some(link) = adopt::<XdpLink>(&path)?
                {
                    let xdp = self.xdp();
                    match xdp.attach_to_link(link) {
                        Ok(id) => {
                            let link = xdp.take_link(id).map_err(attach_err("xdp", iface))?;
                            release_updated(link, &path)?;
                            info!(interface = %iface, %mode, "xdp program replaced in the pinned link");
                            return Ok(mode);
                        }
                        Err(e) => {
                            // One XDP program per interface: the old link must go before a new
                            // attach, and the interface is unprotected for that moment.
                            warn!(interface = %iface, error = %e, "could not update the pinned xdp link; detaching it to attach anew");
                            remove_if_present(&path)?;
                        }
                    }
                } else {
                    warn!(interface = %iface, from = %pinned, to = %mode, "xdp mode changes: detaching the old link");
                    remove_if_present(&path)?;
                    replaced = Some(*pinned);
                }
            }
        }

        let ifname = cstring(iface);
        let first = self.xdp().attach(ifname.as_c_str(), aya_mode(mode));
        let refused = match (first, mode) {
            (Ok(id), m) => Ok((id, m)),
            (Err(source), XdpMode::Native) if !allow_generic_fallback => {
                Err(DatapathError::NativeRefused {
                    interface: iface.to_string(),
                    source,
                })
            }
            (Err(e), XdpMode::Native) => {
                warn!(interface = %iface, error = %e, "native XDP failed; falling back to generic as allowGenericFallback permits");
                self.xdp()
                    .attach(ifname.as_c_str(), AyaXdpMode::Skb)
                    .map(|id| (id, XdpMode::Generic))
                    .map_err(attach_err("xdp (generic)", iface))
            }
            (Err(e), XdpMode::Generic) => Err(attach_err("xdp (generic)", iface)(e)),
        };
        let (id, mode) = match (refused, replaced) {
            (Ok(attached), _) => attached,
            (Err(e), Some(before)) if before != mode => {
                // The interface had a program a moment ago: it gets one again, this agent's,
                // in the mode that worked, and the error still stands.
                warn!(interface = %iface, %mode, %before, error = %e, "the new xdp mode cannot attach: attaching in the mode the interface had");
                let restored = self
                    .xdp()
                    .attach(ifname.as_c_str(), aya_mode(before))
                    .and_then(|id| self.xdp().take_link(id))
                    .map_err(attach_err("xdp (the mode before)", iface))
                    .and_then(|link| pin_link(link, &layout.xdp_link(iface, before)));
                match restored {
                    Ok(()) => {
                        warn!(interface = %iface, %before, "the interface stays protected in the mode it had");
                    }
                    Err(r) => {
                        error!(interface = %iface, %before, error = %r, "could not attach in the mode the interface had either: it is NOT protected");
                    }
                }
                return Err(e);
            }
            (Err(e), _) => return Err(e),
        };
        let link = self.xdp().take_link(id).map_err(attach_err("xdp", iface))?;
        pin_link(link, &layout.xdp_link(iface, mode))?;
        info!(interface = %iface, %mode, "xdp attached");
        Ok(mode)
    }

    /// Attaches the tcx program for `at` (ingress or egress) to `iface`, or updates its pinned
    /// link in place.
    fn attach_tcx(&mut self, iface: &InterfaceName, at: TcAttachType) -> Result<(), DatapathError> {
        let (path, program, what) = match at {
            TcAttachType::Ingress => (
                self.layout()?.tc_ingress_link(iface),
                TC_INGRESS_PROGRAM,
                "tc ingress",
            ),
            TcAttachType::Egress => (self.layout()?.tc_link(iface), TC_PROGRAM, "tc egress"),
        };
        if let Some(link) = adopt::<SchedClassifierLink>(&path)? {
            let tc = self.classifier(program);
            match tc.attach_to_link(link) {
                Ok(id) => {
                    let link = tc.take_link(id).map_err(attach_err(what, iface))?;
                    release_updated(link, &path)?;
                    info!(interface = %iface, hook = what, "tc program replaced in the pinned link");
                    return Ok(());
                }
                Err(e) => {
                    // tcx takes several programs: the new one is attached beside the old,
                    // whose pin (and so link) goes only once the new one is pinned.
                    warn!(interface = %iface, hook = what, error = %e, "could not update the pinned tc link; attaching anew beside it");
                }
            }
        }
        let ifname = cstring(iface);
        let tc = self.classifier(program);
        let id = tc
            .attach(ifname.as_c_str(), at)
            .map_err(attach_err(what, iface))?;
        let link = tc.take_link(id).map_err(attach_err(what, iface))?;
        pin_link(link, &path)?;
        info!(interface = %iface, hook = what, "attached");
        Ok(())
    }

    /// Unpins (and so detaches) links of interfaces `keep` does not select (no config entry
    /// names or matches them). Staged pins a killed process left (see [`pin_link`]) go too.
    pub fn detach_others(&self, keep: impl Fn(&str) -> bool) -> Result<(), DatapathError> {
        let layout = self.layout()?;
        for path in layout.staged_links().map_err(|source| DatapathError::Pin {
            path: layout.links_dir().display().to_string(),
            source,
        })? {
            info!(pin = %path.display(), "a link pinned by an interrupted attach: detaching it");
            remove_if_present(&path)?;
        }
        for (pin, path) in self.link_pins()? {
            if !keep(pin.interface()) {
                info!(
                    interface = pin.interface(),
                    "no longer configured: detaching"
                );
                remove_if_present(&path)?;
            }
        }
        Ok(())
    }

    /// The interface names that have link pins.
    pub fn pinned_interfaces(&self) -> Result<Vec<String>, DatapathError> {
        let mut names: Vec<String> = self
            .link_pins()?
            .into_iter()
            .map(|(p, _)| p.interface().to_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Unpins every link of `iface` (a vanished interface: its links are defunct, or hold a
    /// renamed device the config no longer selects). Returns how many pins went.
    pub fn forget(&self, iface: &str) -> Result<usize, DatapathError> {
        let mut removed = 0;
        for (pin, path) in self.link_pins()? {
            if pin.interface() == iface {
                remove_if_present(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Unpins `iface`'s links that are not on the device numbered `index` (the interface was
    /// re-created: the old device's links were detached with it and cannot be updated in
    /// place). Returns how many pins went.
    pub fn drop_defunct(&self, iface: &str, index: u32) -> Result<usize, DatapathError> {
        let mut removed = 0;
        for (pin, path) in self.link_pins()? {
            if pin.interface() != iface {
                continue;
            }
            match linkinfo::pinned_link_ifindex(&path) {
                Ok(i) if i == index => {}
                Ok(i) => {
                    info!(interface = iface, pin = %path.display(), was = i, now = index, "the interface was re-created: its old link is defunct, unpinning it");
                    remove_if_present(&path)?;
                    removed += 1;
                }
                Err(e) => {
                    warn!(pin = %path.display(), error = %e, "cannot read the pinned link's interface; left in place");
                }
            }
        }
        Ok(removed)
    }

    fn link_pins(&self) -> Result<Vec<(LinkPin, std::path::PathBuf)>, DatapathError> {
        let layout = self.layout()?;
        layout.links().map_err(|source| DatapathError::Pin {
            path: layout.links_dir().display().to_string(),
            source,
        })
    }
}

fn aya_mode(mode: XdpMode) -> AyaXdpMode {
    match mode {
        XdpMode::Native => AyaXdpMode::Driver,
        XdpMode::Generic => AyaXdpMode::Skb,
    }
}

fn cstring(iface: &InterfaceName) -> CString {
    CString::new(iface.as_str()).expect("interface names are validated to hold no NUL")
}

fn attach_err(
    what: &'static str,
    iface: &InterfaceName,
) -> impl FnOnce(ProgramError) -> DatapathError {
    let interface = iface.to_string();
    move |source| DatapathError::Attach {
        what,
        interface,
        source,
    }
}

/// Opens a pinned link, ready for `attach_to_link` (`BPF_LINK_UPDATE`). The pin stays: if
/// the update fails, the link and its program keep enforcing.
pub(super) fn adopt<L: TryFrom<FdLink, Error = LinkError>>(
    path: &std::path::Path,
) -> Result<Option<L>, DatapathError> {
    if !path.exists() {
        return Ok(None);
    }
    let link_err = |source| DatapathError::Link {
        path: path.display().to_string(),
        source,
    };
    let fd_link = FdLink::from(PinnedLink::from_pin(path).map_err(link_err)?);
    match L::try_from(fd_link) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "pinned link is not of the expected type; left in place");
            Ok(None)
        }
    }
}

/// Closes this process's handle on a link that was updated in place (`BPF_LINK_UPDATE`).
/// The pin at `path` is the same kernel link and stays as it is: the link never has fewer
/// than one reference, so a `kill -9` at any moment leaves the interface enforced.
pub(super) fn release_updated<L>(link: L, path: &std::path::Path) -> Result<(), DatapathError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    // Converted rather than dropped as is: a link wrapper's drop detaches a link it owns.
    let fd_link = FdLink::try_from(link).map_err(|source| DatapathError::Link {
        path: path.display().to_string(),
        source,
    })?;
    drop(fd_link);
    Ok(())
}

/// Pins a newly attached link at `path`, replacing whatever link was pinned there in one
/// step: the link is pinned under a temporary name beside it and renamed over it (bpffs
/// renames atomically). The old link, if any, loses its pin only then, so it keeps
/// enforcing until the new one is pinned, and a `kill -9` at any moment leaves one of them.
/// A temporary pin left by a process killed between the two steps is removed by the next
/// attach to the interface, by [`Datapath::detach_others`] and by `detach`.
pub(super) fn pin_link<L>(link: L, path: &std::path::Path) -> Result<(), DatapathError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let link_err = |source| DatapathError::Link {
        path: path.display().to_string(),
        source,
    };
    let fd_link = FdLink::try_from(link).map_err(link_err)?;
    let staged = PinLayout::staged(path);
    remove_if_present(&staged)?;
    fd_link
        .pin(&staged)
        .map_err(|source| DatapathError::PinObject {
            path: staged.display().to_string(),
            source,
        })?;
    std::fs::rename(&staged, path).map_err(|source| DatapathError::Pin {
        path: path.display().to_string(),
        source,
    })?;
    Ok(())
}

pub(super) fn remove_if_present(path: &std::path::Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Pin {
            path: path.display().to_string(),
            source,
        }),
    }
}
