//! What can go wrong loading, pinning and attaching the datapath.

use std::io;

use aya::programs::{ProgramError, links::LinkError};

use super::maps::MapsError;

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
    #[error(
        "another boundary-agent is running on {path} (it holds the pin directory's lock): stop it first, or give this one another pinDir"
    )]
    Locked { path: String },
    #[error("pinning {path}: {source}")]
    PinObject {
        path: String,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("kernel log ring {map}: {source}")]
    KernelLog {
        map: &'static str,
        #[source]
        source: aya_log::Error,
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
