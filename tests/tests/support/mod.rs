//! The real eBPF object run through `BPF_PROG_TEST_RUN`, with a policy applied to its maps.

#![allow(dead_code, reason = "each test binary uses a different part")]

use aya::programs::{TestRun as _, TestRunOptions};
use boundary_agent::{
    datapath::{
        Datapath, LoadOptions,
        maps::{EarnedBinding, monotonic_ns},
    },
    policy::{self, Policy, SlotTable, Tables},
};
use boundary_common::{Direction, Reason, maps::Action};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// `TC_ACT_UNSPEC` (-1): pass on to the next tcx program or the stack.
pub const TC_NEXT: u32 = u32::MAX;
pub const TC_SHOT: u32 = 2;

/// The policy most kernel tests run under: one workload per behaviour.
pub const STANDARD_POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: allow, egress: allow }
failsafe: []
workloads:
  - name: web            # slot 1: allows both ways
    addresses: [10.203.0.1, \"fd00:203::1\"]
  - name: locked         # slot 2: denies both ways
    addresses: [10.203.0.3]
    defaults: { ingress: deny, egress: deny }
  - name: audited        # slot 3: would deny, audits
    addresses: [10.203.0.5]
    mode: audit
    defaults: { ingress: deny }
";

pub const WEB: u16 = 1;
pub const LOCKED: u16 = 2;
pub const AUDITED: u16 = 3;
pub const UNPROTECTED: u16 = 0;

pub const SLOTS: u32 = 8;

pub struct Kernel {
    pub dp: Datapath,
    /// Ingress runs through the TC ingress program instead of XDP (`XDP_PASS`/`XDP_DROP` are
    /// then reported as the TC program's pass/drop, so tests read the same either way).
    pub tc_ingress: bool,
    /// The interface packets cross (see [`run_context`]); 0: none given, so the kernel runs
    /// them on loopback (index 1).
    pub ifindex: u32,
}

/// The `BPF_PROG_TEST_RUN` context that puts a frame of `len` bytes on the interface numbered
/// `ifindex`: an `xdp_md` whose `ingress_ifindex` it is for XDP, an `__sk_buff` whose
/// `ifindex` it is for TC (`skb->dev`: the kernel runs an skb on loopback unless told
/// otherwise). The interface must exist in the calling thread's network namespace.
pub fn run_context(xdp: bool, len: usize, ifindex: u32) -> Vec<u8> {
    let mut ctx;
    if xdp {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel wants data_end to be the frame's length.
        ctx = vec![0u8; 24];
        ctx[4..8].copy_from_slice(&u32::try_from(len).expect("frame length").to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    } else {
        // struct __sk_buff (192 bytes): ifindex at 40, every field the kernel does not
        // accept from the caller zero.
        ctx = vec![0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    }
    ctx
}

/// What one packet did: the program's return value and the single counter it moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    pub slot: u16,
    pub reason: Reason,
}

/// Pins the calling thread to the CPU it runs on. The datapath's verdict cache is per CPU, so
/// a test that repeats a flow must run every packet on one CPU to be answered from it.
fn stay_on_this_cpu() {
    // SAFETY: a plain syscall.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(
        cpu >= 0,
        "sched_getcpu: {}",
        std::io::Error::last_os_error()
    );
    move_to_cpu(u32::try_from(cpu).expect("cpu"));
}

/// Moves the calling thread to `cpu` alone.
pub fn move_to_cpu(cpu: u32) {
    // SAFETY: plain syscalls on a zeroed cpu_set_t of this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(usize::try_from(cpu).expect("cpu"), &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Kernel {
    pub fn new(policy_yaml: &str, non_ip: Action) -> Self {
        Self::loaded_with(policy_yaml, non_ip, &LoadOptions::default())
    }

    /// As [`Kernel::new`], the object loaded as `options` say (its workload slots are ours).
    pub fn loaded_with(policy_yaml: &str, non_ip: Action, options: &LoadOptions<'_>) -> Self {
        stay_on_this_cpu();
        let options = LoadOptions {
            max_workloads: SLOTS,
            ..options.clone()
        };
        let mut dp =
            Datapath::load_with(None, &options).expect("load the eBPF object (root needed)");
        let policy = Policy::from_str("test-policy.yaml", policy_yaml).expect("valid policy");
        let compiled = policy::compile(&policy, &SlotTable::new(), SLOTS).expect("compiles");
        dp.apply(&compiled, non_ip).expect("apply");
        Self {
            dp,
            tc_ingress: false,
            ifindex: 0,
        }
    }

    pub fn standard() -> Self {
        Self::new(STANDARD_POLICY, Action::Pass)
    }

    fn snapshot(&self) -> Vec<(u16, u8, usize, u64, u64)> {
        let mut out = Vec::new();
        for slot in 0..u16::try_from(SLOTS).expect("fits") {
            for dir in [0u8, 1] {
                let row = self
                    .dp
                    .maps()
                    .counter_row(slot, dir)
                    .expect("read counters");
                for (i, c) in row.counters.iter().enumerate() {
                    out.push((slot, dir, i, c.packets, c.bytes));
                }
            }
        }
        out
    }

    /// Runs `frame` through the program for `direction`; asserts exactly one counter moved,
    /// by one packet of `frame.len()` bytes, and returns the outcome.
    pub fn run(&mut self, direction: Direction, frame: &[u8]) -> Outcome {
        let before = self.snapshot();
        let action = self.test_run(direction, frame);
        let after = self.snapshot();
        let moved: Vec<_> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(b, a)| (a.0, a.1, a.2, a.3 - b.3, a.4 - b.4))
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one counter must move, got {moved:?}"
        );
        let (slot, dir, code, packets, bytes) = moved[0];
        assert_eq!(dir, direction as u8, "counted in the wrong direction");
        assert_eq!(packets, 1);
        assert_eq!(bytes, frame.len() as u64, "bytes counted");
        let reason = Reason::from_code(u8::try_from(code).expect("code")).expect("known reason");
        Outcome {
            action,
            slot,
            reason,
        }
    }

    /// Empties the conntrack and fragment maps (and so makes cached verdicts stale, as the
    /// agent must whenever it writes state a cached verdict depends on).
    pub fn clear_state(&mut self) {
        self.dp.forget_flows().expect("forget flows");
    }

    /// One `BPF_PROG_TEST_RUN` of the program for `direction`, or the kernel's refusal to run it.
    pub fn try_test_run(
        &mut self,
        direction: Direction,
        frame: &[u8],
    ) -> Result<u32, aya::programs::ProgramError> {
        let xdp = direction == Direction::Ingress && !self.tc_ingress;
        let ctx = run_context(xdp, frame.len(), self.ifindex);
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: (self.ifindex != 0).then_some(ctx.as_slice()),
            repeat: 1,
            ..Default::default()
        };
        match direction {
            Direction::Ingress if self.tc_ingress => self.dp.tc_ingress().test_run(opts),
            Direction::Ingress => self.dp.xdp().test_run(opts),
            Direction::Egress => self.dp.tc().test_run(opts),
        }
        .map(|r| r.return_value)
    }

    /// One `BPF_PROG_TEST_RUN` of the program for `direction`; its return value.
    pub fn test_run(&mut self, direction: Direction, frame: &[u8]) -> u32 {
        let xdp = direction == Direction::Ingress && !self.tc_ingress;
        let ctx = run_context(xdp, frame.len(), self.ifindex);
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: (self.ifindex != 0).then_some(ctx.as_slice()),
            repeat: 1,
            ..Default::default()
        };
        let tc_ingress = self.tc_ingress;
        let ret = match direction {
            Direction::Ingress if tc_ingress => self.dp.tc_ingress().test_run(opts),
            Direction::Ingress => self.dp.xdp().test_run(opts),
            Direction::Egress => self.dp.tc().test_run(opts),
        }
        .unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN {direction:?} on {} bytes {frame:02x?}: {e:?}",
                frame.len()
            )
        })
        .return_value;
        match (direction, tc_ingress, ret) {
            (Direction::Ingress, true, TC_NEXT) => XDP_PASS,
            (Direction::Ingress, true, TC_SHOT) => XDP_DROP,
            (Direction::Ingress, true, other) => panic!("tc ingress returned {other}"),
            _ => ret,
        }
    }

    pub fn xdp(&mut self, frame: &[u8]) -> Outcome {
        self.run(Direction::Ingress, frame)
    }

    pub fn tc(&mut self, frame: &[u8]) -> Outcome {
        self.run(Direction::Egress, frame)
    }
}

impl Kernel {
    /// Loads the programs with no policy yet and a rate-limit clock that stands still at
    /// `clock_ns` (see `LoadOptions::frozen_clock_ns`). CIDR identities go to the prefix
    /// levels however few (the differential test's policies name a handful; every other
    /// kernel test keeps the default, which leaves so few in the trie).
    pub fn frozen(clock_ns: u64) -> Self {
        Self::frozen_with(clock_ns, &[])
    }

    /// As [`Kernel::frozen`], with maps given `capacities` (see `LoadOptions::capacities`).
    pub fn frozen_with(clock_ns: u64, capacities: &[(&'static str, u32)]) -> Self {
        stay_on_this_cpu();
        let options = LoadOptions {
            max_workloads: SLOTS,
            frozen_clock_ns: clock_ns,
            prefix_levels_from: Some(0),
            capacities,
            ..Default::default()
        };
        Self {
            dp: Datapath::load_with(None, &options).expect("load the eBPF object (root needed)"),
            tc_ingress: false,
            ifindex: 0,
        }
    }

    /// Loads the programs with no policy yet.
    pub fn empty() -> Self {
        stay_on_this_cpu();
        Self {
            dp: Datapath::load_unpinned(SLOTS).expect("load the eBPF object (root needed)"),
            tc_ingress: false,
            ifindex: 0,
        }
    }

    /// Compiles `policy` (keeping installed slots) and swaps it in; returns what was installed.
    pub fn install(&mut self, policy: &Policy, non_ip: Action) -> Tables {
        let slots = self.dp.maps().slot_table().expect("slots");
        let tables = policy::compile(policy, &slots, SLOTS).expect("compiles");
        self.dp.apply(&tables, non_ip).expect("apply");
        tables
    }

    /// As the agent reloads: slots, rule ids and rate-limit buckets kept for what is unchanged.
    pub fn reload(&mut self, policy: &Policy) -> Tables {
        let maps = self.dp.maps();
        let slots = maps.slot_table().expect("slots");
        let rules = maps.rule_table().expect("rule ids");
        let buckets = maps.bucket_table().expect("buckets");
        let tables =
            policy::compile_keeping(policy, &slots, &rules, &buckets, SLOTS).expect("compiles");
        self.dp.apply(&tables, Action::Pass).expect("apply");
        tables
    }

    /// Runs `frame` and returns (program return value, the reason whose counter moved in
    /// `slot`'s row, if exactly one did). Cheaper than `run`: two row reads, not all rows.
    pub fn run_in_row(
        &mut self,
        direction: Direction,
        frame: &[u8],
        slot: u16,
    ) -> (u32, Option<Reason>) {
        let before = self
            .dp
            .maps()
            .counter_row(slot, direction as u8)
            .expect("row");
        let action = self.test_run(direction, frame);
        let after = self
            .dp
            .maps()
            .counter_row(slot, direction as u8)
            .expect("row");
        let moved: Vec<usize> = (0..before.counters.len())
            .filter(|&i| before.counters[i] != after.counters[i])
            .collect();
        let reason = match moved.as_slice() {
            [i] => Reason::from_code(u8::try_from(*i).expect("code")),
            _ => None,
        };
        (action, reason)
    }
}

/// A second, writable handle on one of the datapath's maps. The agent's maps have one writer
/// (its `Datapath`); a test reaches around it only to set up a state no agent writes (a full
/// event budget, the residue of an interrupted swap, a flow forgotten).
pub fn writable<T>(map: &aya::maps::MapData) -> T
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let id = map.info().expect("map info").id();
    let data = aya::maps::MapData::from_id(id).expect("open the map by id");
    aya::maps::Map::from_map_data(data)
        .expect("a map type aya knows")
        .try_into()
        .expect("the map's type")
}

/// An earned binding of `addr` to `spiffe` for `lasts` from now (certificate fields made up).
pub fn earned(
    addr: impl Into<std::net::IpAddr>,
    spiffe: &str,
    lasts: std::time::Duration,
) -> EarnedBinding {
    EarnedBinding {
        addr: addr.into(),
        id: spiffe.to_owned(),
        expires: monotonic_ns() + u64::try_from(lasts.as_nanos()).expect("fits"),
        not_after: 2_000_000_000,
        renewed: 1_800_000_000,
        issuer: 1,
        serial: vec![1, 2, 3],
        chain: Vec::new(),
        anchor: 1,
    }
}

/// Compiles `p` with the identity endpoint on and `bindings` earned, and swaps it in.
pub fn swap_earned(k: &mut Kernel, p: &Policy, bindings: &[&EarnedBinding]) -> Tables {
    use policy::{Earned, spiffe::SpiffeId};
    let maps = k.dp.maps();
    let t = policy::compile_with(
        p,
        &maps.slot_table().expect("slots"),
        &maps.rule_table().expect("rules"),
        &maps.bucket_table().expect("buckets"),
        SLOTS,
        &Earned {
            enabled: true,
            bindings: bindings
                .iter()
                .map(|b| {
                    let id: SpiffeId = b.id.parse().expect("SPIFFE ID");
                    (b.addr, (id, b.expires))
                })
                .collect(),
            endpoint: None,
        },
    )
    .expect("compiles");
    k.dp.apply(&t, Action::Pass).expect("apply");
    t
}

/// Binds `e` live, in the generation `p` compiled to `t` is.
pub fn bind_live(k: &mut Kernel, p: &Policy, t: &Tables, e: &EarnedBinding) {
    let id: policy::spiffe::SpiffeId = e.id.parse().expect("SPIFFE ID");
    let binding = policy::Binder::new(p, t).bind(e.addr, &id);
    k.dp.bind(e, &binding).expect("bind");
}

/// A one-byte UDP datagram from `src` to port `dport` of `server` (its IPv4 or IPv6 address,
/// as `src` is).
pub fn udp_to(
    src: std::net::IpAddr,
    server: (std::net::Ipv4Addr, std::net::Ipv6Addr),
    dport: u16,
    sport: u16,
) -> Vec<u8> {
    use boundary_tests::packets::{self, L4};
    let l4 = L4::Udp { sport, dport };
    match src {
        std::net::IpAddr::V4(a) => packets::v4(a, server.0, l4, b"x"),
        std::net::IpAddr::V6(a) => packets::v6(a, server.1, l4, b"x"),
    }
}
