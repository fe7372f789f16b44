//! Boundary's datapath: XDP or TC (tcx) on ingress, TC (tcx) on egress.
//!
//! Entry points stay thin; the packet being decided is in `packet`, parsing in `parse`, the
//! decision in `verdict`, counters in `stats`, map definitions in `maps`. On the host this crate compiles to an empty binary so
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
mod delay;
#[cfg(target_arch = "bpf")]
mod diag;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod fragments;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod ratelimit;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod table;
#[cfg(target_arch = "bpf")]
mod verdict;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        EbpfContext as _,
        bindings::{__sk_buff, TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
        helpers::bpf_xdp_get_buff_len,
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };
    use boundary_common::{
        Direction, Reason, Verdict,
        maps::{PROG_TC_EGRESS, PROG_TC_INGRESS, UNPROTECTED_SLOT},
    };

    use crate::{
        diag, events,
        maps::PROGS,
        packet::{self, Packet},
        parse::{self, Frame},
        stats,
        verdict::{self, Decision, Wire},
    };

    /// Counts the decision (`packets` on the wire, `bytes` with their headers), and sends a
    /// sampled event for a drop or an audited would-be drop.
    #[inline(always)]
    fn account(pkt: &Packet, d: &Decision, direction: Direction, packets: u64, bytes: u64) {
        stats::count(d.slot, direction, d.reason, packets, bytes);
        if d.rule != verdict::NO_RULE {
            stats::count_rule(d.rule, packets, d.limited);
        }
        if d.reason.verdict() == Verdict::Drop || d.reason == Reason::Audit {
            #[expect(clippy::cast_possible_truncation, reason = "an skb is below 4 GiB")]
            events::emit(pkt, d, direction, bytes as u32);
            diag::parse_limit(d.reason, d.slot, direction as u8, pkt.ifindex);
        }
    }

    /// XDP ingress: every frame that arrives on an interface protected at XDP (physical NICs
    /// by default). Multi-buffer aware (`xdp.frags`), so it attaches at any MTU: the headers
    /// are read from the first buffer, the whole length is asked of the kernel when needed.
    #[xdp(frags)]
    pub fn boundary_xdp(ctx: XdpContext) -> u32 {
        let (data, end) = (ctx.data(), ctx.data_end());
        let Some(pkt) = packet::scratch() else {
            // No packet memory: nothing can be judged, and an unjudged packet is not let in.
            diag::impossible("no packet scratch entry", Direction::Ingress as u8);
            stats::count(
                UNPROTECTED_SLOT,
                Direction::Ingress,
                Reason::Internal,
                1,
                (end - data) as u64,
            );
            return xdp_action::XDP_DROP;
        };
        // SAFETY: the program's own context.
        pkt.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
        let f = Frame {
            data,
            end,
            len: end - data,
        };
        let parsed = parse::parse(&f, pkt);
        let mut len = f.len;
        if pkt.ip_end as usize > len {
            // SAFETY: the program's own context, passed to the helper that takes it.
            len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
        }
        let parsed = parse::settle(parse::check_length(parsed, pkt, len), pkt);
        let wire = Wire {
            packets: 1,
            bytes: len as u64,
        };
        let d = verdict::decide(parsed, Direction::Ingress, pkt, wire);
        account(pkt, &d, Direction::Ingress, wire.packets, wire.bytes);
        match d.reason.verdict() {
            Verdict::Pass => xdp_action::XDP_PASS,
            Verdict::Drop => xdp_action::XDP_DROP,
        }
    }

    /// TC ingress (tcx): every packet that arrives on an interface protected at TC (veths by
    /// default: native XDP on a veth strips its peer's GSO, so the host would handle every
    /// 64 KiB aggregate as 45 frames).
    #[classifier]
    pub fn boundary_tc_ingress(ctx: TcContext) -> i32 {
        tc(&ctx, Direction::Ingress)
    }

    /// TC egress (tcx): every packet the host sends on a protected interface.
    #[classifier]
    pub fn boundary_tc(ctx: TcContext) -> i32 {
        tc(&ctx, Direction::Egress)
    }

    /// The decision for an skb, judged by `skb->len` rather than its linear part: TCP data
    /// (page frags, GSO super-packets) is mostly non-linear. A GSO super-packet gets one
    /// verdict for all its segments and counts as its segments, with the headers each one
    /// repeats on the wire, so counters read the same with offloads on or off.
    #[inline(always)]
    fn tc(ctx: &TcContext, direction: Direction) -> i32 {
        let (len, gso) = skb_len(ctx);
        let Some(pkt) = packet::scratch() else {
            // No packet memory: nothing can be judged, and an unjudged packet does not cross.
            diag::impossible("no packet scratch entry", direction as u8);
            stats::count(
                UNPROTECTED_SLOT,
                direction,
                Reason::Internal,
                skb_segs(ctx),
                len as u64,
            );
            return TC_ACT_SHOT as i32;
        };
        pkt.gso_skb = gso;
        // SAFETY: the program's own context.
        let skb = unsafe { &*ctx.as_ptr().cast::<__sk_buff>() };
        pkt.vlan_offloaded = u8::from(skb.vlan_present != 0);
        // The device the skb is on: where it arrived on ingress, where it leaves on egress.
        pkt.ifindex = skb.ifindex;
        let (data, end) = (ctx.data(), ctx.data_end());
        let parsed = parse::parse(&Frame { data, end, len }, pkt);
        // Headers are nearly always in the linear part (the stack builds them there, GRO pulls
        // them there). When one was not (an AF_PACKET frame above a page keeps only its
        // Ethernet header linear), pull the headers in, never the payload (on a cloned skb, as
        // TCP's are, a pull copies the head), and start this program again through a tail call:
        // one parse per run keeps the verifier's work what it is for XDP. After the pull the
        // linear part holds `min(len, HEADERS_MAX)`, so the second run does not pull again.
        let want = if len < verdict::HEADERS_MAX {
            len
        } else {
            verdict::HEADERS_MAX
        };
        if end - data < want && parse::wants_more(&parsed, pkt) {
            #[expect(clippy::cast_possible_truncation, reason = "at most HEADERS_MAX")]
            if ctx.pull_data(want as u32).is_ok() {
                let index = match direction {
                    Direction::Ingress => PROG_TC_INGRESS,
                    Direction::Egress => PROG_TC_EGRESS,
                };
                // SAFETY: a tail call into this same program (the agent fills the array); it
                // does not return when it succeeds.
                unsafe { PROGS.tail_call(ctx, index) };
            }
            // No tail call (the array is empty): decide on what the first parse found.
        }
        // What the segments carry on the wire: each repeats the headers, none the jumbo
        // hop-by-hop header of a BIG TCP packet.
        let (segs, hbh) = (skb_segs(ctx), u64::from(pkt.jumbo_hbh));
        let headers = u64::from(pkt.headers_len).saturating_sub(hbh);
        let parsed = parse::settle(parse::check_length(parsed, pkt, len), pkt);
        let wire = Wire {
            packets: segs,
            bytes: (len as u64).saturating_sub(hbh) + (segs - 1) * headers,
        };
        let d = verdict::decide(parsed, direction, pkt, wire);
        account(pkt, &d, direction, wire.packets, wire.bytes);
        match d.reason.verdict() {
            // TCX_NEXT: let any program after ours have its say; the default is to pass.
            Verdict::Pass => TC_ACT_UNSPEC,
            Verdict::Drop => TC_ACT_SHOT as i32,
        }
    }

    /// `skb->len`, and whether the skb is a GSO super-packet (1) or not (0).
    #[inline(always)]
    fn skb_len(ctx: &TcContext) -> (usize, u8) {
        // SAFETY: the program's own context.
        let skb = unsafe { &*ctx.as_ptr().cast::<__sk_buff>() };
        (skb.len as usize, u8::from(skb.gso_size != 0))
    }

    /// The segments the skb stands for on the wire: `gso_segs` for a GSO super-packet, else 1.
    #[inline(always)]
    fn skb_segs(ctx: &TcContext) -> u64 {
        // SAFETY: the program's own context.
        let skb = unsafe { &*ctx.as_ptr().cast::<__sk_buff>() };
        u64::from(skb.gso_segs.max(1))
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
