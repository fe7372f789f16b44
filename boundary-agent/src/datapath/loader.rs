//! Loading the object, pinning it, attaching it, and adopting what a previous agent pinned.

use std::{ffi::CString, io, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::{XdpLink, XdpMode as AyaXdpMode},
    },
};
use aya::{maps::ProgramArray, programs::ProgramFd};
use boundary_common::maps::{
    ALL_MAPS, COUNTERS_MAP, NAMES_MAP, PROG_TC_EGRESS, PROG_TC_INGRESS, PROGS_MAP,
};
use tracing::{info, warn};

use super::{
    bpffs,
    maps::{self, Maps, MapsError},
    netdev,
    object::{OBJECT, TC_INGRESS_PROGRAM, TC_PROGRAM, XDP_PROGRAM, cache_key, set_cache_key},
    pins::{LinkPin, PinLayout},
};
use crate::config::{IngressHook, InterfaceName, XdpMode};

/// Every program in the object, with the name of its pin under `programs/`.
const PROGRAMS: [(&str, &str); 3] = [
    (XDP_PROGRAM, "xdp"),
    (TC_INGRESS_PROGRAM, "tc-ingress"),
    (TC_PROGRAM, "tc"),
];

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

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("reading a random key from /dev/urandom: {0}")]
    Random(#[source] io::Error),
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("program {program} is missing from the object")]
    MissingProgram { program: &'static str },
    #[error("{what} on {interface}: {source}")]
    Attach {
        what: &'static str,
        interface: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "native XDP failed on {interface} ({source}); set `allowGenericFallback: true` or `xdpMode: generic` to accept the slower generic mode"
    )]
    NativeRefused {
        interface: String,
        #[source]
        source: ProgramError,
    },
    #[error("link {path}: {source}")]
    Link {
        path: String,
        #[source]
        source: LinkError,
    },
    #[error(
        "{interface} has no Ethernet header (link type {link_type}, not 1): Boundary parses frames from the Ethernet header, and on this device it would read an IP header as one; protect the Ethernet interface the traffic crosses instead"
    )]
    NotEthernet { interface: String, link_type: u16 },
    #[error("{interface}: cannot read its link type: {source}")]
    LinkType {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("this datapath was loaded without pins and cannot be attached")]
    Unpinned,
    #[error("pin {path}: {source}")]
    Pin {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Verifier and JIT figures of a loaded program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: &'static str,
    pub id: u32,
    pub verified_insns: Option<u32>,
    pub jited_bytes: u32,
}

impl ProgramStats {
    fn from_info(name: &'static str, info: &aya::programs::ProgramInfo) -> Self {
        Self {
            name,
            id: info.id(),
            verified_insns: info.verified_instruction_count(),
            jited_bytes: info.size_jitted(),
        }
    }
}

/// A loaded datapath: programs in the kernel, maps pinned (new or adopted).
pub struct Datapath {
    ebpf: Ebpf,
    /// None for a datapath loaded only to be run with `BPF_PROG_TEST_RUN` (tests, bench).
    layout: Option<PinLayout>,
    pub maps: Maps,
}

impl Datapath {
    /// Loads the programs, creating the pinned maps or adopting the ones already pinned.
    pub fn load(layout: PinLayout, max_workloads: u32) -> Result<Self, DatapathError> {
        Self::prepare_pins(&layout, max_workloads)?;
        Self::load_object(Some(layout), max_workloads)
    }

    /// Loads the programs with fresh, unpinned maps, attached nowhere: for running them with
    /// `BPF_PROG_TEST_RUN` (kernel tests, benchmarks, `trace`).
    pub fn load_unpinned(max_workloads: u32) -> Result<Self, DatapathError> {
        Self::load_object(None, max_workloads)
    }

    fn prepare_pins(layout: &PinLayout, max_workloads: u32) -> Result<(), DatapathError> {
        let pin_err = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| DatapathError::PinDir { path, source }
        };
        bpffs::ensure(layout.root()).map_err(pin_err(layout.root()))?;
        for dir in [layout.maps_dir(), layout.programs_dir(), layout.links_dir()] {
            std::fs::create_dir_all(&dir).map_err(pin_err(&dir))?;
        }
        maps::check_pinned(layout, max_workloads)?;
        Ok(())
    }

    fn load_object(layout: Option<PinLayout>, max_workloads: u32) -> Result<Self, DatapathError> {
        let mut loader = EbpfLoader::new();
        let map_paths: Vec<(&str, PathBuf)> = layout
            .iter()
            .flat_map(|l| ALL_MAPS.iter().map(move |&n| (n, l.map(n))))
            .collect();
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .map_max_entries(NAMES_MAP, max_workloads)
            .map_max_entries(COUNTERS_MAP, max_workloads * 2);
        let key = cache_key().map_err(DatapathError::Random)?;
        set_cache_key(&mut loader, &key);
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;

        for (program, _) in PROGRAMS {
            let p = ebpf
                .program_mut(program)
                .ok_or(DatapathError::MissingProgram { program })?;
            let prog_err = |source| DatapathError::Program { program, source };
            match p {
                aya::programs::Program::Xdp(x) => x.load().map_err(prog_err)?,
                aya::programs::Program::SchedClassifier(t) => t.load().map_err(prog_err)?,
                _ => return Err(DatapathError::MissingProgram { program }),
            }
        }
        if layout.is_none() {
            // Nothing attached here, nothing to keep consistent: ready for test runs at once.
            fill_program_array(&mut ebpf)?;
        }
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self { ebpf, layout, maps })
    }

    fn layout(&self) -> Result<&PinLayout, DatapathError> {
        self.layout.as_ref().ok_or(DatapathError::Unpinned)
    }

    /// Points the pinned program array the TC programs tail-call through (after pulling
    /// non-linear headers in) at this load's programs. Called once every interface is attached:
    /// until then the programs attached before (a previous agent's) keep calling their own.
    pub fn enable_tail_calls(&mut self) -> Result<(), DatapathError> {
        fill_program_array(&mut self.ebpf)
    }

    /// The loaded XDP program (for `BPF_PROG_TEST_RUN` and attach).
    pub fn xdp(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(XDP_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// The loaded TC egress program.
    pub fn tc(&mut self) -> &mut SchedClassifier {
        self.classifier(TC_PROGRAM)
    }

    /// The loaded TC ingress program.
    pub fn tc_ingress(&mut self) -> &mut SchedClassifier {
        self.classifier(TC_INGRESS_PROGRAM)
    }

    fn classifier(&mut self, name: &str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// What the verifier and the JIT made of each program: (name, id, instructions the
    /// verifier processed, JIT image bytes). The verifier count is the budget to watch.
    pub fn program_stats(&mut self) -> Vec<ProgramStats> {
        let mut out = Vec::new();
        for (name, _) in PROGRAMS {
            let info = match self.ebpf.program(name) {
                Some(aya::programs::Program::Xdp(p)) => p.info(),
                Some(aya::programs::Program::SchedClassifier(p)) => p.info(),
                _ => continue,
            };
            if let Ok(info) = info {
                out.push(ProgramStats::from_info(name, &info));
            }
        }
        out
    }

    /// Pins the programs under `programs/`, replacing earlier pins.
    pub fn pin_programs(&mut self) -> Result<(), DatapathError> {
        let layout = self.layout()?.clone();
        for (name, pin) in PROGRAMS {
            let path = layout.program(pin);
            remove_if_present(&path)?;
            let pinned = match self.ebpf.program_mut(name) {
                Some(aya::programs::Program::Xdp(p)) => p.pin(&path),
                Some(aya::programs::Program::SchedClassifier(p)) => p.pin(&path),
                _ => return Err(DatapathError::MissingProgram { program: name }),
            };
            pinned.map_err(|e| DatapathError::Pin {
                path: path.display().to_string(),
                source: io::Error::other(e.to_string()),
            })?;
        }
        Ok(())
    }

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
                            pin_link(link, &path)?;
                            info!(interface = %iface, %mode, "xdp program replaced in the pinned link");
                            return Ok(mode);
                        }
                        Err(e) => {
                            warn!(interface = %iface, error = %e, "could not update pinned xdp link; attaching anew");
                        }
                    }
                } else {
                    warn!(interface = %iface, from = %pinned, to = %mode, "xdp mode changes: detaching the old link");
                    remove_if_present(&path)?;
                }
            }
        }

        let ifname = cstring(iface);
        let first = self.xdp().attach(ifname.as_c_str(), aya_mode(mode));
        let (id, mode) = match (first, mode) {
            (Ok(id), m) => (id, m),
            (Err(source), XdpMode::Native) if !allow_generic_fallback => {
                return Err(DatapathError::NativeRefused {
                    interface: iface.to_string(),
                    source,
                });
            }
            (Err(e), XdpMode::Native) => {
                warn!(interface = %iface, error = %e, "native XDP failed; falling back to generic as allowGenericFallback permits");
                let id = self
                    .xdp()
                    .attach(ifname.as_c_str(), AyaXdpMode::Skb)
                    .map_err(attach_err("xdp (generic)", iface))?;
                (id, XdpMode::Generic)
            }
            (Err(e), XdpMode::Generic) => return Err(attach_err("xdp (generic)", iface)(e)),
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
                    pin_link(link, &path)?;
                    info!(interface = %iface, hook = what, "tc program replaced in the pinned link");
                    return Ok(());
                }
                Err(e) => {
                    warn!(interface = %iface, hook = what, error = %e, "could not update pinned tc link; attaching anew");
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

    /// Unpins (and so detaches) links for interfaces not in `keep`.
    pub fn detach_others(&self, keep: &[InterfaceName]) -> Result<(), DatapathError> {
        let layout = self.layout()?;
        let links = layout.links().map_err(|source| DatapathError::Pin {
            path: layout.links_dir().display().to_string(),
            source,
        })?;
        for (pin, path) in links {
            if !keep.iter().any(|k| k.as_str() == pin.interface()) {
                info!(
                    interface = pin.interface(),
                    "no longer configured: detaching"
                );
                remove_if_present(&path)?;
            }
        }
        Ok(())
    }
}

/// Puts the TC programs into `BND_PROGS`, which they tail-call after pulling non-linear
/// headers in (see boundary-ebpf's `main.rs`). An adopted, pinned array is overwritten: its
/// entries pointed at the previous agent's programs.
fn fill_program_array(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let fd = |ebpf: &Ebpf, program: &'static str| -> Result<ProgramFd, DatapathError> {
        let p: &SchedClassifier = ebpf
            .program(program)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingProgram { program })?;
        p.fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
            .map_err(|source| DatapathError::Program { program, source })
    };
    let ingress = fd(ebpf, TC_INGRESS_PROGRAM)?;
    let egress = fd(ebpf, TC_PROGRAM)?;
    let map_err = |source| {
        DatapathError::Maps(MapsError::Map {
            name: PROGS_MAP,
            source,
        })
    };
    let map = ebpf
        .map_mut(PROGS_MAP)
        .ok_or(DatapathError::Maps(MapsError::Missing { name: PROGS_MAP }))?;
    let mut progs = ProgramArray::try_from(map).map_err(map_err)?;
    progs.set(PROG_TC_INGRESS, &ingress, 0).map_err(map_err)?;
    progs.set(PROG_TC_EGRESS, &egress, 0).map_err(map_err)?;
    Ok(())
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

/// Opens a pinned link and takes it off its pin, ready for `attach_to_link`. The link stays
/// alive through our file descriptor while it is unpinned.
fn adopt<L: TryFrom<FdLink, Error = LinkError>>(
    path: &std::path::Path,
) -> Result<Option<L>, DatapathError> {
    if !path.exists() {
        return Ok(None);
    }
    let link_err = |source| DatapathError::Link {
        path: path.display().to_string(),
        source,
    };
    let pinned = PinnedLink::from_pin(path).map_err(link_err)?;
    let fd_link = pinned.unpin().map_err(|source| DatapathError::Pin {
        path: path.display().to_string(),
        source,
    })?;
    match L::try_from(fd_link) {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "pinned link is not of the expected type; dropped");
            Ok(None)
        }
    }
}

fn pin_link<L>(link: L, path: &std::path::Path) -> Result<(), DatapathError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let link_err = |source| DatapathError::Link {
        path: path.display().to_string(),
        source,
    };
    let fd_link = FdLink::try_from(link).map_err(link_err)?;
    remove_if_present(path)?;
    fd_link.pin(path).map_err(|e| DatapathError::Pin {
        path: path.display().to_string(),
        source: io::Error::other(e.to_string()),
    })?;
    Ok(())
}

fn remove_if_present(path: &std::path::Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Pin {
            path: path.display().to_string(),
            source,
        }),
    }
}
