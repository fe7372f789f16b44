//! Tier 2: the datapath's kernel-side diagnostics (boundary-ebpf's `diag.rs`). With a level
//! set at load, a parse limit hit arrives as a log record through aya-log's ring; with logging
//! off (the default) nothing arrives, and the verifier has removed every log site: no
//! instruction of the loaded program touches the log ring.

mod support;

use std::{
    process::Command,
    sync::{Arc, Mutex},
};

use boundary_agent::{
    config::KernelLog,
    datapath::{LoadOptions, ProgramStats},
};
use boundary_common::{Reason, diag::LOG_MAP, maps::Action};
use boundary_tests::{
    netns::addr::{CLIENT, CLIENT6, SERVER, SERVER6},
    packets::{self, Ext, L4},
    require_root,
};
use support::{Kernel, STANDARD_POLICY, UNPROTECTED, WEB, XDP_DROP};

const UDP: L4 = L4::Udp {
    sport: 40_000,
    dport: 53,
};

/// Keeps every record's level and message.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Records {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .expect("records")
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

impl Records {
    fn take(&self) -> Vec<(log::Level, String)> {
        std::mem::take(&mut *self.0.lock().expect("records"))
    }
}

fn kernel(level: KernelLog) -> Kernel {
    Kernel::loaded_with(
        STANDARD_POLICY,
        Action::Pass,
        &LoadOptions {
            kernel_log: level,
            ..LoadOptions::default()
        },
    )
}

fn three_vlan_tags() -> Vec<u8> {
    packets::push_vlan(
        &packets::v4_tagged(&[100, 200], CLIENT, SERVER, UDP, b"x"),
        300,
    )
}

fn nine_extension_headers() -> Vec<u8> {
    packets::with_ipv6_exts(
        &packets::v6(CLIENT6, SERVER6, UDP, b"hello"),
        &[Ext::DestOpts; 9],
    )
}

/// Sends both parse-limit frames through XDP and returns the records that arrived.
fn hit_parse_limits(k: &mut Kernel, records: &Records) -> Vec<(log::Level, String)> {
    let mut reader = k.dp.kernel_log(records.clone()).expect("the log ring");
    let out = k.xdp(&three_vlan_tags());
    assert_eq!(
        (out.action, out.slot, out.reason),
        (XDP_DROP, UNPROTECTED, Reason::VlanTooDeep)
    );
    let out = k.xdp(&nine_extension_headers());
    assert_eq!(
        (out.action, out.slot, out.reason),
        (XDP_DROP, WEB, Reason::Ipv6TooManyExtHeaders)
    );
    reader.flush();
    records.take()
}

#[test]
fn parse_limits_are_logged_at_debug() {
    if !require_root("parse_limits_are_logged_at_debug") {
        return;
    }
    let mut k = kernel(KernelLog::Debug);
    let records = Records::default();
    let got = hit_parse_limits(&mut k, &records);
    assert_eq!(
        got,
        [
            (
                log::Level::Debug,
                "parse limit hit: more than two VLAN tags reason=vlan_too_deep slot=0 direction=0 ifindex=1"
                    .to_owned()
            ),
            (
                log::Level::Debug,
                format!(
                    "parse limit hit: IPv6 extension headers past the walk's bound reason=ipv6_too_many_ext_headers slot={WEB} direction=0 ifindex=1"
                )
            ),
        ]
    );
}

#[test]
fn a_level_above_a_site_keeps_it_quiet() {
    if !require_root("a_level_above_a_site_keeps_it_quiet") {
        return;
    }
    // Parse limits log at debug: `warn` (failed map updates and impossible states only) does
    // not log them.
    let mut k = kernel(KernelLog::Warn);
    let records = Records::default();
    assert_eq!(hit_parse_limits(&mut k, &records), []);
}

#[test]
fn off_logs_nothing_and_loads_no_log_code() {
    if !require_root("off_logs_nothing_and_loads_no_log_code") {
        return;
    }
    let mut off = kernel(KernelLog::Off);
    let records = Records::default();
    assert_eq!(hit_parse_limits(&mut off, &records), []);

    let mut on = kernel(KernelLog::Debug);
    let (off_stats, on_stats) = (off.dp.program_stats(), on.dp.program_stats());
    for (off_p, on_p) in off_stats.iter().zip(&on_stats) {
        eprintln!(
            "{}: verified instructions {:?} off, {:?} debug; xlated bytes {:?} off, {:?} debug",
            off_p.name,
            off_p.verified_insns,
            on_p.verified_insns,
            off_p.xlated_bytes,
            on_p.xlated_bytes
        );
        // Where the loaded code touches the log ring: nowhere with logging off.
        assert_eq!(
            log_ring_references(off_p),
            0,
            "{}: with logging off, no instruction may touch {LOG_MAP}",
            off_p.name
        );
        assert!(
            log_ring_references(on_p) > 0,
            "{}: with logging on, the log sites touch {LOG_MAP} (else this test proves nothing)",
            on_p.name
        );
        assert!(
            off_p.xlated_bytes < on_p.xlated_bytes,
            "{}: the log sites are removed with logging off",
            off_p.name
        );
    }
}

/// How many instructions of the loaded (translated) program `p` load the address of the log
/// ring: every log site does, to reserve a record in it.
fn log_ring_references(p: &ProgramStats) -> usize {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|i| i.id() == p.id)
        .expect("the program is loaded");
    let ring = info
        .map_ids()
        .expect("map ids")
        .unwrap_or_default()
        .into_iter()
        .find(|&id| aya::maps::MapInfo::from_id(id).is_ok_and(|m| m.name_as_str() == Some(LOG_MAP)))
        .unwrap_or_else(|| panic!("{} holds no {LOG_MAP} map", p.name));
    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &p.id.to_string()])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let needle = format!("map[id:{ring}]");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}
