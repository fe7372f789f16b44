//! Boundary's datapath: XDP on ingress, TC (tcx) on egress.
//!
//! Entry points stay thin; parsing is in `parse`, the decision in `verdict`, counters in
//! `stats`, map definitions in `maps`. On the host this crate compiles to an empty binary so
//! that `cargo clippy --workspace` covers it; the real object is built for `bpfel-unknown-none`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// One-instruction unaligned loads from packet memory (see `parse::load_u32`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(not(target_arch = "bpf"), allow(dead_code, unused_imports))]

#[cfg(target_arch = "bpf")]
mod cache;
#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod fragments;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod verdict;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };
    use boundary_common::{Direction, Reason, Verdict};

    use crate::{
        events,
        parse::{self, Packet},
        stats,
        verdict::{self, Decision},
    };

    /// Counts the decision, and sends a sampled event for a drop or an audited would-be drop.
    #[inline(always)]
    fn account(pkt: &Packet, d: &Decision, direction: Direction, len: u32) {
        stats::count(d.slot, direction, d.reason, u64::from(len));
        if d.rule != verdict::NO_RULE {
            stats::count_rule(d.rule);
        }
        if d.reason.verdict() == Verdict::Drop || d.reason == Reason::Audit {
            events::emit(pkt, d, direction, len);
        }
    }

    /// XDP ingress: every frame that arrives on a protected interface.
    #[xdp]
    pub fn boundary_xdp(ctx: XdpContext) -> u32 {
        let (data, data_end) = (ctx.data(), ctx.data_end());
        let Some(pkt) = parse::scratch() else {
            return xdp_action::XDP_PASS;
        };
        let d = verdict::decide(data, data_end, Direction::Ingress, pkt);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "an XDP frame is at most a page"
        )]
        account(pkt, &d, Direction::Ingress, (data_end - data) as u32);
        match d.reason.verdict() {
            Verdict::Pass => xdp_action::XDP_PASS,
            Verdict::Drop => xdp_action::XDP_DROP,
        }
    }

    /// TC egress (attached through tcx): every packet the host sends on a protected interface.
    #[classifier]
    pub fn boundary_tc(ctx: TcContext) -> i32 {
        let len = ctx.len();
        // Direct packet access only covers the linear part of the skb; locally built packets
        // normally carry all headers there, but pull them in if not, so that a split header is
        // parsed instead of being dropped as truncated.
        let linear = ctx.data_end() - ctx.data();
        if linear < verdict::HEADERS_MAX && linear < len as usize {
            let want = if (len as usize) < verdict::HEADERS_MAX {
                len
            } else {
                verdict::HEADERS_MAX as u32
            };
            let _ = ctx.pull_data(want);
        }
        let Some(pkt) = parse::scratch() else {
            return TC_ACT_UNSPEC;
        };
        let d = verdict::decide(ctx.data(), ctx.data_end(), Direction::Egress, pkt);
        account(pkt, &d, Direction::Egress, len);
        match d.reason.verdict() {
            // TCX_NEXT: let any program after ours have its say; the default is to pass.
            Verdict::Pass => TC_ACT_UNSPEC,
            Verdict::Drop => TC_ACT_SHOT as i32,
        }
    }

    #[cfg(not(test))]
    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "boundary-ebpf is an eBPF object: build it for bpfel-unknown-none (boundary-agent's build.rs does)"
    );
}
