//! The XDP program's logic: the ingress half of faultbpf at the driver
//! (`--xdp`), before any skb exists, for hosts under a flood where the tc
//! hook would cost an skb per dropped packet.
//!
//! Same parser (`parse::flow` through [`Packet`]), same rule lookup
//! (`matcher`) and same draw and counters (`draw`) as the tc programs;
//! only the verdicts differ:
//! - `drop`, and `hang` on TCP segments with payload: `XDP_DROP`;
//! - `reset`: the answer is built in place and sent back out of the
//!   interface with `XDP_TX` (`fault/reset/xdp.rs`);
//! - `corrupt`, `mark`, `ecn`, `delay` and `duplicate` are not done here and pass untouched:
//!   XDP has no skb to mark, and a payload or ECN rewrite would have to
//!   fix checksums that, on veth, may still be partial (offloaded). The
//!   CLI refuses `--xdp` with those faults (`FaultKind::on_xdp`).
//! - anything unparsed or unmatched: `XDP_PASS`.
//!
//! Counters count one packet per XDP buffer: XDP runs before GRO, so there
//! are no GSO super-packets here (generic mode on a locally forwarded GSO
//! skb is the exception and counts it as one).
//!
//! # Minimum kernel version
//!
//! 5.18, for the bounds-checked XDP copies `packet.rs` uses.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    programs::XdpContext,
};
use faultbpf_common::{
    FaultKind, RuleValue, TRACE_HOOK_XDP,
    trace_reason::{ACTED, NOT_APPLICABLE, NOT_DRAWN},
};

use crate::{
    draw,
    fault::{hang, reset},
    flow::Flow,
    hook::Hook,
    matcher,
    packet::Packet,
    parse,
    trace::{self, Outcome},
};

/// The XDP verdict for one packet.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    // SAFETY: `ctx` is the valid context pointer of this program run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // A packet we cannot parse is never ours: pass it untouched.
    let Some(flow) = parse::flow(ctx) else {
        trace::unparsed(ifindex, TRACE_HOOK_XDP, XDP_PASS as i32);
        return XDP_PASS;
    };
    match matcher::rule_for(&flow, Hook::Ingress) {
        Some(rule) => {
            let (verdict, outcome) = apply(ctx, &flow, rule);
            trace::packet(ifindex, TRACE_HOOK_XDP, &flow, outcome, verdict as i32);
            verdict
        }
        None => {
            trace::missed(
                ifindex,
                TRACE_HOOK_XDP,
                &flow,
                Hook::Ingress,
                XDP_PASS as i32,
            );
            XDP_PASS
        }
    }
}

/// The verdict for a packet `rule` matched, and what became of it.
#[inline(always)]
fn apply(ctx: &XdpContext, flow: &Flow, rule: &RuleValue) -> (u32, Outcome) {
    let mut outcome = Outcome {
        reason: NOT_APPLICABLE,
        slot: rule.slot,
        kind: 0,
    };
    // As on tc (`actions::apply`): the rest sees an opaque flow, so the
    // verifier walks it once, not once per parser path.
    let Some(flow) = flow.opaque() else {
        return (XDP_PASS, outcome);
    };
    let Some(hit) = draw::hit(flow, rule, 1, ctx.len() as u64) else {
        outcome.reason = NOT_DRAWN;
        return (XDP_PASS, outcome);
    };
    let kind = hit.kind;
    let verdict = match kind {
        FaultKind::Drop => XDP_DROP,
        FaultKind::Hang => {
            if !hang::applies(ctx, flow) {
                return (XDP_PASS, outcome);
            }
            XDP_DROP
        }
        FaultKind::Reset => match reset::xdp::reply(ctx, flow) {
            reset::Outcome::Answered => XDP_TX,
            // A RST passes, as on tc: never answered, not counted as acted.
            reset::Outcome::Pass => return (XDP_PASS, outcome),
            reset::Outcome::Drop => XDP_DROP,
        },
        FaultKind::Corrupt
        | FaultKind::Mark
        | FaultKind::Ecn
        | FaultKind::Delay
        | FaultKind::Duplicate
        | FaultKind::Throttle
        | FaultKind::Dns
        | FaultKind::Mix => {
            return (XDP_PASS, outcome);
        }
    };
    hit.acted();
    outcome.reason = ACTED;
    outcome.kind = kind as u8;
    (verdict, outcome)
}
