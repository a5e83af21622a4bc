//! faultbpf's kernel side: the entry points only. Each parses the packet
//! (`parse`, through `packet`'s view of its hook, into a `flow`), looks its
//! ports up in the rule maps (`matcher`), draws (`draw`) and turns a hit
//! into its hook's verdict (`actions` for tc, `xdp` for XDP) with the
//! faults in `fault/`; everything else passes with "no verdict" (tc) or
//! `XDP_PASS`, so programs after ours (a CNI's, say) still run.
//!
//! Module layering, no circles: `hdr`, `hook`, `packet`, `flow`, `maps`,
//! `csum` depend on nothing of ours; `parse`, `matcher`, `counters`, `draw`,
//! `answer` on those; `fault/*` on all of them; `actions` and `xdp` on
//! `fault`; `steer` (the `sk_lookup` program of `faultbpf http`) on the
//! common types only; `trace` (`faultbpf trace`'s events) on `flow` and
//! `matcher`; `main` on everything.
#![no_std]
#![no_main]
// `asm!` for the throttle's compare-and-exchange (`fault/throttle.rs`);
// the crate is built with RUSTC_BOOTSTRAP=1 already (`faultbpf/build.rs`).
#![feature(asm_experimental_arch)]

mod actions;
mod answer;
mod counters;
mod csum;
mod draw;
mod fault;
mod flow;
mod hdr;
mod hook;
mod maps;
mod matcher;
mod packet;
mod parse;
mod steer;
mod steer_out;
mod trace;
mod xdp;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier, sk_lookup, sock_ops, xdp},
    programs::{SkLookupContext, SockAddrContext, SockOpsContext, TcContext, XdpContext},
};

use faultbpf_common::{TRACE_HOOK_EGRESS, TRACE_HOOK_INGRESS};

use crate::{
    actions::NO_VERDICT,
    fault::{delay, duplicate},
    hook::Hook,
};

/// Ingress hook: packets arriving on the interface.
#[classifier]
pub fn faultbpf_in(ctx: TcContext) -> i32 {
    run(&ctx, Hook::Ingress)
}

/// Egress hook: packets the host sends out of the interface.
#[classifier]
pub fn faultbpf_out(ctx: TcContext) -> i32 {
    run(&ctx, Hook::Egress)
}

/// Far end of the delay device: held packets go back where they came from.
#[classifier]
pub fn faultbpf_ret(ctx: TcContext) -> i32 {
    delay::back(&ctx)
}

/// `--xdp`: the ingress half at the driver (or generic XDP), instead of
/// `faultbpf_in`.
#[xdp]
pub fn faultbpf_xdp(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
}

/// `faultbpf http`: gives selected new connections to the responder.
#[sk_lookup]
pub fn faultbpf_steer(ctx: SkLookupContext) -> u32 {
    steer::run(&ctx)
}

/// `faultbpf http --side client`: selected IPv4 connects go to the responder.
#[cgroup_sock_addr(connect4)]
pub fn faultbpf_connect4(ctx: SockAddrContext) -> i32 {
    steer_out::connect(&ctx, false)
}

/// `faultbpf http --side client`: selected IPv6 connects go to the responder.
#[cgroup_sock_addr(connect6)]
pub fn faultbpf_connect6(ctx: SockAddrContext) -> i32 {
    steer_out::connect(&ctx, true)
}

/// `faultbpf http --side client`: a steered socket's peer is the one dialled.
#[cgroup_sock_addr(getpeername4)]
pub fn faultbpf_peername4(ctx: SockAddrContext) -> i32 {
    steer_out::peername(&ctx, false)
}

/// `faultbpf http --side client`: a steered socket's peer is the one dialled.
#[cgroup_sock_addr(getpeername6)]
pub fn faultbpf_peername6(ctx: SockAddrContext) -> i32 {
    steer_out::peername(&ctx, true)
}

/// `faultbpf http --side client`: files a steered connection's destination
/// under its source port.
#[sock_ops]
pub fn faultbpf_sockops(ctx: SockOpsContext) -> u32 {
    steer_out::sockops(&ctx)
}

#[inline(always)]
fn run(ctx: &TcContext, hook: Hook) -> i32 {
    // Back from the delay device: already faulted once, pass it on.
    if delay::returning(ctx) {
        return NO_VERDICT;
    }
    // A `duplicate` clone: pass it, never clone it again.
    if duplicate::is_clone(ctx) {
        return NO_VERDICT;
    }
    // SAFETY: `skb` is the valid context pointer of this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let traced = match hook {
        Hook::Ingress => TRACE_HOOK_INGRESS,
        Hook::Egress => TRACE_HOOK_EGRESS,
    };
    // A packet we cannot parse is never ours: pass it untouched.
    let Some(flow) = parse::flow(ctx) else {
        trace::unparsed(ifindex, traced, NO_VERDICT);
        return NO_VERDICT;
    };
    match matcher::rule_for(&flow, hook) {
        Some(rule) => {
            let (verdict, outcome) = actions::apply(ctx, &flow, rule, hook);
            trace::packet(ifindex, traced, &flow, outcome, verdict);
            verdict
        }
        None => {
            trace::missed(ifindex, traced, &flow, hook, NO_VERDICT);
            NO_VERDICT
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
