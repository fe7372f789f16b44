//! A generation swap never lets a packet in flight miss its workload.
//!
//! A packet reads the live generation from the config, then looks its endpoint up under it.
//! The swap switches the generation and deletes the old one's entries; between the two it
//! waits until no program that read the old config can still be running (a grace period,
//! `datapath/grace.rs`). Without the wait, a packet that read the config just before the
//! switch looks its endpoint up after the delete, misses, and passes as `unprotected`.
//!
//! The window is nanoseconds wide in production. Here the reader is a datapath loaded with a
//! pause between its read of the config and its first lookup (`LoadOptions::reader_delay_ns`),
//! adopting the same pinned maps as the writer. Each arm runs a packet to a deny-by-default
//! workload through the paused reader and swaps generations on the writer while it is paused:
//! with the grace period the packet is denied; without it (the control arm, which shows the
//! test can see the leak) it passes.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions};
use boundary_agent::{
    datapath::{Datapath, LoadOptions, PinLayout},
    policy::{self, Policy, Tables},
};
use boundary_common::maps::Action;
use boundary_tests::{
    netns::{
        addr::{CLIENT, SERVER},
        unique_name,
    },
    packets::{self, L4},
    require_root,
};

const POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    defaults: { ingress: deny }
";

/// How long the reader pauses between the config and the endpoint lookup: far longer than
/// the writer needs to swap (about a millisecond), so the order is not left to the scheduler.
const PAUSE: Duration = Duration::from_millis(300);
/// How long after the reader's start the writer swaps: the reader has read the config by
/// then (a syscall's entry, not a scheduling decision, stands between).
const HEAD_START: Duration = Duration::from_millis(60);

const XDP_PASS: u32 = 2;
const XDP_DROP: u32 = 1;

/// A pin directory on the bpffs, removed on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A writer datapath on fresh pins, and a reader on the same pins that pauses `PAUSE` between
/// its config read and its endpoint lookup.
struct Race {
    writer: Datapath,
    reader: Datapath,
    _pins: PinDir,
}

impl Race {
    /// With `first` installed; `grace` false skips the swap's wait (the control arm).
    fn new(tag: &str, grace: bool, first: &str) -> Self {
        let pins = PinDir(PathBuf::from("/sys/fs/bpf").join(unique_name(tag)));
        let layout = PinLayout::new(&pins.0);
        let mut writer = Datapath::load(layout.clone(), 8).expect("load with pinned maps (root)");
        if !grace {
            writer.skip_grace_period_for_tests();
        }
        let reader = Datapath::load_with(
            Some(layout),
            &LoadOptions {
                max_workloads: 8,
                reader_delay_ns: u64::try_from(PAUSE.as_nanos()).expect("fits"),
                ..LoadOptions::default()
            },
        )
        .expect("load the paused reader on the same pins");
        let mut race = Self {
            writer,
            reader,
            _pins: pins,
        };
        let tables = race.compile(first);
        race.writer.apply(&tables, Action::Pass).expect("apply");
        race
    }

    fn compile(&self, text: &str) -> Tables {
        let p = Policy::from_str("p.yaml", text).expect("valid");
        policy::compile(&p, &self.writer.maps().slot_table().expect("slots"), 8).expect("compiles")
    }

    /// Runs one packet from `CLIENT`:`sport` to `SERVER`:9 through the paused reader while
    /// the writer installs `next`: the reader's verdict, and whether the swap returned only
    /// after the reader did (it waited for a packet in flight).
    fn swap_under(&mut self, next: &Tables, sport: u16) -> (u32, bool) {
        let frame = packets::v4(CLIENT, SERVER, L4::Udp { sport, dport: 9 }, b"x");
        let (started, running) = mpsc::channel();
        let (writer, reader) = (&mut self.writer, &self.reader);
        thread::scope(|s| {
            let run = s.spawn(|| {
                started.send(()).expect("main waits");
                let verdict = reader
                    .xdp_program()
                    .test_run(TestRunOptions {
                        data_in: Some(&frame),
                        repeat: 1,
                        ..Default::default()
                    })
                    .expect("BPF_PROG_TEST_RUN")
                    .return_value;
                (verdict, Instant::now())
            });
            running.recv().expect("the reader started");
            thread::sleep(HEAD_START);
            writer.apply(next, Action::Pass).expect("swap");
            let swapped = Instant::now();
            let (verdict, read) = run.join().expect("the reader thread");
            (verdict, swapped >= read)
        })
    }
}

/// One packet through the paused reader while the writer swaps to the same policy again.
fn race(grace: bool, sport: u16) -> (u32, bool) {
    let mut race = Race::new("bnd-kt-swap", grace, POLICY);
    let tables = race.compile(POLICY);
    race.swap_under(&tables, sport)
}

#[test]
fn a_swap_waits_out_the_packets_in_flight() {
    if !require_root("a_swap_waits_out_the_packets_in_flight") {
        return;
    }
    assert_eq!(
        SERVER,
        Ipv4Addr::new(10, 203, 0, 1),
        "the policy's workload"
    );
    // Control: without the wait, the packet that read the old config misses its endpoint
    // and passes. Tried a few times: a reader descheduled before its config read for longer
    // than the head start would read the new generation and not show the leak.
    let leaked = (0..8).any(|i| {
        let (verdict, _) = race(false, 40_000 + i);
        verdict == XDP_PASS
    });
    assert!(
        leaked,
        "without the grace period a packet in flight should pass as unprotected: the test cannot see the leak it guards against"
    );
    // With it, every packet is judged by its workload's policy. An iteration proves something
    // only when the reader was in flight at the switch: then the swap returned after it (it
    // waited). At least one must, or the test saw nothing.
    let mut waited = 0;
    for i in 0..4 {
        let (verdict, after_the_reader) = race(true, 41_000 + i);
        assert_eq!(
            verdict, XDP_DROP,
            "a packet in flight during a swap must still be judged by its workload's policy"
        );
        waited += usize::from(after_the_reader);
    }
    assert!(
        waited > 0,
        "no swap overlapped a paused reader: the test proved nothing"
    );
}

const GONE: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: gone
    addresses: [10.203.0.1]
    defaults: { ingress: deny }
";
const NEWCOMER: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: newcomer
    addresses: [10.203.0.3]
    defaults: { ingress: deny }
";

/// Packets counted under `workload`, all reasons and directions.
fn packets_of(dp: &Datapath, workload: &str) -> u64 {
    boundary_agent::datapath::counters::read(dp.maps(), Some(workload))
        .expect("counters")
        .iter()
        .map(|c| c.packets)
        .sum()
}

#[test]
fn packets_in_flight_for_a_removed_workload_are_not_counted_for_its_successor() {
    if !require_root("packets_in_flight_for_a_removed_workload_are_not_counted_for_its_successor") {
        return;
    }
    let mut race = Race::new("bnd-kt-slot", true, GONE);
    let second = race.compile(NEWCOMER);
    assert_ne!(
        second.names.get(&1).map(String::as_str),
        Some("newcomer"),
        "the slot gone still counts into is not handed over in the same swap"
    );
    let (verdict, _) = race.swap_under(&second, 43_000);
    assert_eq!(verdict, XDP_DROP, "the packet in flight was gone's (deny)");
    assert_eq!(
        packets_of(&race.writer, "newcomer"),
        0,
        "newcomer received nothing; gone's packet in flight is not on its row"
    );
}
