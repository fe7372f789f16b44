//! Kernel-side diagnostics (boundary-ebpf's `diag.rs`): the level compiled in at load, the
//! aya-log ring their records come through, drained into this process's log under the target
//! [`TARGET`], and the switch of a running datapath to another level.
//!
//! The level is fixed at load: it is a `.rodata` byte the verifier reads as a constant to prune
//! every log site above it. So a switch loads the programs again and puts them in place of the
//! running ones through the pinned links (`BPF_LINK_UPDATE`), as a restarted agent does: no
//! interface is without a program for any moment, and the maps (pinned) are the same ones.
//!
//! The ring ([`LOG_MAP`]) is pinned with the maps: the programs of every load share it, so a
//! switch keeps the one reader, and a restarted agent reads what the programs it adopted
//! logged while no agent ran (up to the ring's 128 KiB; aya-log drops records when it is full).

use aya::maps::MapInfo;
use aya::programs::{tc::SchedClassifierLink, xdp::XdpLink};
use aya_log::EbpfLogger;
use boundary_common::diag::LOG_MAP;
use tokio::io::{Interest, unix::AsyncFd};
use tracing::warn;

use super::{
    Datapath, DatapathError, LoadOptions,
    attach::{adopt, release_updated, remove_if_present},
    loader::fill_program_array,
    object::{OBJECT, TC_INGRESS_PROGRAM, TC_PROGRAM},
    pins::{LinkPin, PinLayout},
};
use crate::config::KernelLog;

/// The tracing target of every kernel log record.
pub const TARGET: &str = "boundary::kernel";

/// The value of boundary-ebpf's `BND_LOG_LEVEL` for `level`: aya-log's numbering, 0 for off.
pub fn global_value(level: KernelLog) -> u8 {
    match level {
        KernelLog::Off => 0,
        KernelLog::Error => aya_log::Level::Error as u8,
        KernelLog::Warn => aya_log::Level::Warn as u8,
        KernelLog::Info => aya_log::Level::Info as u8,
        KernelLog::Debug => aya_log::Level::Debug as u8,
    }
}

/// Removes a pinned ring that is not what the object defines (another aya-log's, say), so the
/// load creates it anew: aya would reuse the pin without a look. Its unread records are lost.
pub(super) fn prepare_pinned(layout: &PinLayout) -> Result<(), DatapathError> {
    let path = layout.map(LOG_MAP);
    if !path.exists() {
        return Ok(());
    }
    let object = aya_obj::Object::parse(OBJECT)
        .map_err(|e| DatapathError::Maps(super::maps::MapsError::Object(e.to_string())))?;
    let wanted = object
        .maps
        .get(LOG_MAP)
        .map(|m| (m.map_type(), m.max_entries()));
    let found = MapInfo::from_pin(&path)
        .ok()
        .and_then(|i| Some((i.map_type().ok()? as u32, i.max_entries())));
    if found.is_none() || found != wanted {
        warn!(
            map = LOG_MAP,
            ?found,
            ?wanted,
            "the pinned kernel log ring has another shape: replacing it"
        );
        remove_if_present(&path)?;
    }
    Ok(())
}

/// Hands each kernel log record to tracing, under [`TARGET`], with the kernel source module
/// and line it came from. The records' own target (the eBPF module path) goes into `module`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let module = record.module_path().unwrap_or("");
        let line = record.line().unwrap_or(0);
        let message = record.args();
        // tracing's level and target are part of each call site: one per level.
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, module, line, "{message}"),
            log::Level::Warn => tracing::warn!(target: TARGET, module, line, "{message}"),
            log::Level::Info => tracing::info!(target: TARGET, module, line, "{message}"),
            log::Level::Debug => tracing::debug!(target: TARGET, module, line, "{message}"),
            log::Level::Trace => tracing::trace!(target: TARGET, module, line, "{message}"),
        }
    }

    fn flush(&self) {}
}

/// Reads the kernel log ring and logs each record through `L`.
pub type KernelLogReader<L = TracingLog> = EbpfLogger<L>;

/// Drains `reader` as records arrive (the ring's fd is readable), for as long as the runtime
/// runs. Meant for `tokio::spawn`.
pub async fn drain<L: log::Log>(reader: KernelLogReader<L>) {
    // SAFETY: the reader owns the ring's fd for as long as it is registered, and reading
    // (`flush`) neither closes nor replaces it.
    #[expect(
        unsafe_code,
        reason = "tokio's registration of a raw fd it does not own"
    )]
    let registered = unsafe { AsyncFd::register_with_interest(reader, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "cannot wait on the kernel log ring: kernel log records are not read");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "waiting on the kernel log ring failed: kernel log records are no longer read");
                return;
            }
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

impl Datapath {
    /// The reader of this load's kernel log ring, logging through `logger`; once per load (it
    /// takes the ring). With pins, the ring is the one every load shares.
    pub fn kernel_log<L: log::Log>(
        &mut self,
        logger: L,
    ) -> Result<KernelLogReader<L>, DatapathError> {
        EbpfLogger::init_with_logger(&mut self.ebpf, logger).map_err(|source| {
            DatapathError::KernelLog {
                map: LOG_MAP,
                source,
            }
        })
    }

    /// Loads the programs again as `options` say (the kernel log level, above all) and puts
    /// them in place of the running ones: every pinned link is updated in place, then the tail
    /// call array and the program pins. The maps, and this handle's knowledge of them, stay.
    ///
    /// A load the verifier refuses changes nothing. A link whose update fails keeps its
    /// program (the pin stays, and so does enforcement); the error names it. Returns how many
    /// links were updated.
    pub fn reload_programs(&mut self, options: &LoadOptions<'_>) -> Result<usize, DatapathError> {
        let layout = self.layout()?.clone();
        let links = layout.links().map_err(|source| DatapathError::Pin {
            path: layout.links_dir().display().to_string(),
            source,
        })?;
        let ebpf = Self::load_programs(Some(&layout), options)?;
        let old = std::mem::replace(&mut self.ebpf, ebpf);
        let (mut updated, mut failed) = (0, Vec::new());
        for (pin, path) in &links {
            match self.update_link(pin, path) {
                Ok(true) => updated += 1,
                Ok(false) => {}
                Err(e) => {
                    warn!(pin = %path.display(), error = %crate::report::chain(&e), "could not put the new program in this link; it keeps the one it had");
                    failed.push(e);
                }
            }
        }
        if updated == 0 && !failed.is_empty() {
            // Nothing took the new programs: the old ones stay this handle's.
            self.ebpf = old;
            return Err(failed.remove(0));
        }
        fill_program_array(&mut self.ebpf)?;
        self.pin_programs()?;
        drop(old);
        match failed.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(updated),
        }
    }

    /// Puts this load's program for `pin` into the link pinned at `path`. False when the pin
    /// is gone or holds another kind of link (left as it is).
    fn update_link(
        &mut self,
        pin: &LinkPin,
        path: &std::path::Path,
    ) -> Result<bool, DatapathError> {
        let attach = |what: &'static str| {
            let interface = pin.interface().to_owned();
            move |source| DatapathError::Attach {
                what,
                interface,
                source,
            }
        };
        match pin {
            LinkPin::Xdp { .. } => {
                let Some(link) = adopt::<XdpLink>(path)? else {
                    return Ok(false);
                };
                let xdp = self.xdp();
                let id = xdp.attach_to_link(link).map_err(attach("xdp"))?;
                release_updated(xdp.take_link(id).map_err(attach("xdp"))?, path)?;
            }
            LinkPin::TcIngress { .. } | LinkPin::TcEgress { .. } => {
                let (program, what) = if matches!(pin, LinkPin::TcIngress { .. }) {
                    (TC_INGRESS_PROGRAM, "tc ingress")
                } else {
                    (TC_PROGRAM, "tc egress")
                };
                let Some(link) = adopt::<SchedClassifierLink>(path)? else {
                    return Ok(false);
                };
                let tc = self.classifier(program);
                let id = tc.attach_to_link(link).map_err(attach(what))?;
                release_updated(tc.take_link(id).map_err(attach(what))?, path)?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_aya_logs_numbers_and_off_is_zero() {
        // The kernel compares aya-log-ebpf's `Level as u8` against this byte.
        assert_eq!(global_value(KernelLog::Off), 0);
        assert_eq!(global_value(KernelLog::Error), 1);
        assert_eq!(global_value(KernelLog::Warn), 2);
        assert_eq!(global_value(KernelLog::Info), 3);
        assert_eq!(global_value(KernelLog::Debug), 4);
    }
}
