//! The few bpf(2) commands the harness issues itself, for programs aya did not load: the empty
//! XDP program (the floor), the live-frames generator, xdp-filter's program (found by id), the
//! hand-assembled buckets of `ratelimit::alternatives` with their maps (one described by BTF
//! made here), and `BPF_MAP_UPDATE_BATCH`, which aya 0.16 does not wrap.
//!
//! Each attribute struct is the prefix of `union bpf_attr` that its command reads
//! (include/uapi/linux/bpf.h); the kernel accepts a shorter `size` and zero-fills the rest.

use std::{
    ffi::CStr,
    io,
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    time::Duration,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_ARRAY: u32 = 2;

const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE`: native XDP, never a silent fallback to generic.
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames returning `XDP_TX`/`XDP_REDIRECT` are really sent.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
/// `TC_ACT_UNSPEC` (-1) as the test run reports it: pass on (tcx: to the next program).
pub const TC_NEXT: u32 = u32::MAX;
pub const TC_SHOT: u32 = 2;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, `#[repr(C)]` prefix of `union bpf_attr` for `cmd`, and its size
    // is passed along, so the kernel reads and writes only inside it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(ret).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_raw_fd()).expect("file descriptors are non-negative")
}

fn addr<T>(p: *const T) -> u64 {
    p as usize as u64
}

/// `struct bpf_insn`: one instruction of a hand-assembled program.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Insn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one.
    pub regs: u8,
    /// Jumps: how many instructions to skip.
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: src << 4 | dst,
            off,
            imm,
        }
    }

    /// `dst = map` (`BPF_LD | BPF_IMM | BPF_DW` with `BPF_PSEUDO_MAP_FD`): two instructions.
    pub fn ld_map(dst: u8, map: &RawMap) -> [Self; 2] {
        #[expect(clippy::cast_possible_wrap, reason = "a descriptor, as the immediate")]
        let fd = fd_u32(map.fd.as_fd()) as i32;
        [Self::new(0x18, dst, 1, 0, fd), Self::new(0, 0, 0, 0, 0)]
    }
}

/// `r0 = imm` (`BPF_ALU64 | BPF_MOV | BPF_K`).
const fn mov_r0(imm: i32) -> Insn {
    Insn {
        code: 0xb7,
        regs: 0,
        off: 0,
        imm,
    }
}

/// `exit` (`BPF_JMP | BPF_EXIT`).
const EXIT: Insn = Insn {
    code: 0x95,
    regs: 0,
    off: 0,
    imm: 0,
};

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// A loaded program aya knows nothing about.
pub struct RawProgram {
    fd: OwnedFd,
}

impl RawProgram {
    /// Loads the smallest XDP program there is, `return action;` (two instructions), named
    /// `name` (at most 15 bytes). With `XDP_PASS` it is the floor every cost is measured
    /// against: what `BPF_PROG_TEST_RUN` itself costs per run.
    pub fn xdp_returning(action: u32, name: &str) -> io::Result<Self> {
        Self::returning(BPF_PROG_TYPE_XDP, action, name)
    }

    /// The same for the TC (`sched_cls`) program type: the TC egress program's floor.
    pub fn tc_returning(action: u32, name: &str) -> io::Result<Self> {
        Self::returning(BPF_PROG_TYPE_SCHED_CLS, action, name)
    }

    fn returning(prog_type: u32, action: u32, name: &str) -> io::Result<Self> {
        #[expect(
            clippy::cast_possible_wrap,
            reason = "TC_ACT_UNSPEC is -1, passed as its bit pattern"
        )]
        let insns = [mov_r0(action as i32), EXIT];
        Self::load(prog_type, &insns, name)
    }

    /// An XDP program that writes a random source address in 10.0.0.0/8 into an untagged IPv4
    /// frame (`bpf_get_prandom_u32`, so every frame of a live-frames run gets a new one), then
    /// returns `action`. The IPv4 header checksum is left as it was: nothing on the receiving
    /// side of the flood step checks it before dropping the frame.
    pub fn xdp_spoofing(action: u32, name: &str) -> io::Result<Self> {
        Self::xdp_spoofing_in(action, name, Ipv4Addr::new(10, 0, 0, 0), 0x00ff_ffff)
    }

    /// The same, with the source `base | (random & bits)`: `bits` (host order) says which bits
    /// of the address are drawn, `base` gives the others.
    pub fn xdp_spoofing_in(action: u32, name: &str, base: Ipv4Addr, bits: u32) -> io::Result<Self> {
        #[expect(clippy::cast_possible_wrap, reason = "XDP actions are small")]
        let action = action as i32;
        // The store writes r0 in memory order (little endian): the address's network-order
        // bytes read as a native u32.
        #[expect(clippy::cast_possible_wrap, reason = "a bit pattern, as the immediate")]
        let word = |x: u32| u32::from_ne_bytes(x.to_be_bytes()) as i32;
        let insn = Insn::new;
        let insns = [
            insn(0xbf, 6, 1, 0, 0),                             // r6 = r1 (ctx)
            insn(0x85, 0, 0, 0, 7),                             // call bpf_get_prandom_u32
            insn(0x61, 2, 6, 0, 0),                             // r2 = ctx->data
            insn(0x61, 3, 6, 4, 0),                             // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),                             // r4 = r2
            insn(0x07, 4, 0, 0, 30), // r4 += 30: Ethernet + IPv4 up to the source address's end
            insn(0x2d, 4, 3, 3, 0),  // if r4 > r3 goto +3 (too short: leave it)
            insn(0x54, 0, 0, 0, word(bits)), // w0 &= bits
            insn(0x44, 0, 0, 0, word(u32::from(base) & !bits)), // w0 |= base
            insn(0x63, 2, 0, 26, 0), // *(u32 *)(r2 + 26) = r0: the source address
            mov_r0(action),
            EXIT,
        ];
        Self::load(BPF_PROG_TYPE_XDP, &insns, name)
    }

    /// Loads a hand-assembled XDP program; a refusal carries the verifier's log.
    pub fn xdp(insns: &[Insn], name: &str) -> io::Result<Self> {
        Self::load(BPF_PROG_TYPE_XDP, insns, name)
    }

    fn load(prog_type: u32, insns: &[Insn], name: &str) -> io::Result<Self> {
        let license: &CStr = c"GPL";
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: u32::try_from(insns.len()).expect("a few instructions"),
            insns: addr(insns.as_ptr()),
            license: addr(license.as_ptr()),
            ..ProgLoadAttr::default()
        };
        let n = name.len().min(15);
        attr.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
        match bpf(BPF_PROG_LOAD, &mut attr) {
            Ok(fd) => Ok(Self { fd: owned_fd(fd)? }),
            Err(e) => {
                // Again with the verifier's log, to say why.
                let mut log = vec![0u8; 1 << 16];
                attr.log_level = 1;
                attr.log_size = u32::try_from(log.len()).expect("64 KiB");
                attr.log_buf = addr(log.as_mut_ptr());
                let _ = bpf(BPF_PROG_LOAD, &mut attr);
                Err(with_log(&e, &log))
            }
        }
    }

    /// Opens a program another process loaded (`BPF_PROG_GET_FD_BY_ID`). Holding the
    /// descriptor keeps the program alive even if it is detached meanwhile.
    pub fn from_id(id: u32) -> io::Result<Self> {
        #[repr(C)]
        struct Attr {
            prog_id: u32,
            next_id: u32,
            open_flags: u32,
        }
        let mut attr = Attr {
            prog_id: id,
            next_id: 0,
            open_flags: 0,
        };
        let fd = owned_fd(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?)?;
        Ok(Self { fd })
    }

    /// Opens a program pinned on a bpffs (`BPF_OBJ_GET`), such as the agent's.
    pub fn from_pin(path: &std::path::Path) -> io::Result<Self> {
        #[repr(C)]
        struct Attr {
            pathname: u64,
            bpf_fd: u32,
            file_flags: u32,
        }
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        let mut attr = Attr {
            pathname: addr(path.as_ptr()),
            bpf_fd: 0,
            file_flags: 0,
        };
        let fd = owned_fd(bpf(BPF_OBJ_GET, &mut attr)?)?;
        Ok(Self { fd })
    }

    /// Attaches to `ifindex` in native mode through a BPF link (resolved in the calling
    /// thread's network namespace); detached when the returned descriptor is closed.
    pub fn attach_xdp_native(&self, ifindex: u32) -> io::Result<OwnedFd> {
        #[repr(C)]
        struct Attr {
            prog_fd: u32,
            target_ifindex: u32,
            attach_type: u32,
            flags: u32,
        }
        let mut attr = Attr {
            prog_fd: fd_u32(self.fd.as_fd()),
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: XDP_FLAGS_DRV_MODE,
        };
        owned_fd(bpf(BPF_LINK_CREATE, &mut attr)?)
    }
}

impl AsFd for RawProgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A map made here (for the hand-assembled programs of `ratelimit::alternatives`).
pub struct RawMap {
    fd: OwnedFd,
}

impl RawMap {
    /// A one-entry array of `value_size`-byte values, keyed by `u32`, named `name` (at most 15
    /// bytes); with `btf`, described by a loaded BTF blob: (its descriptor, the key's type id,
    /// the value's type id), which a value holding a `bpf_spin_lock` needs.
    pub fn array(
        name: &str,
        value_size: u32,
        btf: Option<(&OwnedFd, u32, u32)>,
    ) -> io::Result<Self> {
        #[repr(C)]
        #[derive(Default)]
        struct Attr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
            inner_map_fd: u32,
            numa_node: u32,
            map_name: [u8; 16],
            map_ifindex: u32,
            btf_fd: u32,
            btf_key_type_id: u32,
            btf_value_type_id: u32,
        }
        let mut attr = Attr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size,
            max_entries: 1,
            ..Attr::default()
        };
        if let Some((fd, key, value)) = btf {
            attr.btf_fd = fd_u32(fd.as_fd());
            attr.btf_key_type_id = key;
            attr.btf_value_type_id = value;
        }
        let n = name.len().min(15);
        attr.map_name[..n].copy_from_slice(&name.as_bytes()[..n]);
        let fd = owned_fd(bpf(BPF_MAP_CREATE, &mut attr)?)?;
        Ok(Self { fd })
    }

    /// Loads a BTF blob (`BPF_BTF_LOAD`); the kernel's log comes with a refusal.
    pub fn load_btf(blob: &[u8]) -> io::Result<OwnedFd> {
        #[repr(C)]
        struct Attr {
            btf: u64,
            btf_log_buf: u64,
            btf_size: u32,
            btf_log_size: u32,
            btf_log_level: u32,
            btf_log_true_size: u32,
        }
        let mut log = vec![0u8; 1 << 16];
        let mut attr = Attr {
            btf: addr(blob.as_ptr()),
            btf_log_buf: addr(log.as_mut_ptr()),
            btf_size: u32::try_from(blob.len()).expect("a small blob"),
            btf_log_size: u32::try_from(log.len()).expect("64 KiB"),
            btf_log_level: 1,
            btf_log_true_size: 0,
        };
        bpf(BPF_BTF_LOAD, &mut attr)
            .map_err(|e| with_log(&e, &log))
            .and_then(owned_fd)
    }
}

impl AsFd for RawMap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `e` with the kernel's log (up to its first NUL) appended.
fn with_log(e: &io::Error, log: &[u8]) -> io::Error {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    io::Error::new(
        e.kind(),
        format!("{e}: {}", String::from_utf8_lossy(&log[..end]).trim_end()),
    )
}

/// `struct xdp_md` as `ctx_in`: only the ingress interface (and queue) may be set; `data_end`
/// must equal the frame length.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

/// What one `BPF_PROG_TEST_RUN` call returned.
#[derive(Clone, Copy, Debug)]
pub struct TestRunOutput {
    pub retval: u32,
    /// The kernel's average time per repetition (whole nanoseconds, rounded down).
    pub per_run: Duration,
}

/// Extra knobs of a test run; the default is a plain run of `data_in`.
#[derive(Clone, Copy, Default)]
pub struct TestRunExtra {
    pub ctx: Option<XdpMd>,
    pub flags: u32,
    pub batch_size: u32,
}

/// `BPF_PROG_TEST_RUN` (bpf(2) command 10) on any program descriptor.
pub fn test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    repeat: u32,
    extra: TestRunExtra,
) -> io::Result<TestRunOutput> {
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog),
        data_in: addr(data.as_ptr()),
        data_size_in: u32::try_from(data.len()).expect("frames are small"),
        repeat,
        flags: extra.flags,
        batch_size: extra.batch_size,
        ..TestRunAttr::default()
    };
    if let Some(ctx) = &extra.ctx {
        attr.ctx_in = addr(std::ptr::from_ref(ctx));
        attr.ctx_size_in = u32::try_from(size_of::<XdpMd>()).expect("small");
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRunOutput {
        retval: attr.retval,
        per_run: Duration::from_nanos(u64::from(attr.duration)),
    })
}

/// `BPF_MAP_UPDATE_BATCH`: writes `keys[i] -> values[i]` in one call (`BPF_ANY`). Returns how
/// many the kernel wrote.
pub fn map_update_batch<K, V>(map: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<u32> {
    #[repr(C)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut attr = Attr {
        in_batch: 0,
        out_batch: 0,
        keys: addr(keys.as_ptr()),
        values: addr(values.as_ptr()),
        count: u32::try_from(keys.len()).expect("batch fits u32"),
        map_fd: fd_u32(map),
        elem_flags: 0,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    Ok(attr.count)
}
