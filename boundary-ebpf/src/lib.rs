//! Exists so that boundary-agent can list this crate as a build-dependency: cargo then reruns
//! the agent's build script (which builds the eBPF object) when this crate or
//! boundary-common changes. The programs themselves are the `boundary` binary (main.rs).
#![no_std]
