//! Matched packet -> tc verdict. Counting the match and drawing happen
//! before, in `draw.rs`, shared with the XDP program (`xdp.rs`), which has
//! its own verdicts; what each fault does is in `fault/<kind>.rs`. Why an
//! egress drop is not `TC_ACT_SHOT`: `fault/drop.rs`.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use faultbpf_common::{
    FLAG_SHAPE, FaultKind, RuleValue,
    trace_reason::{ACTED, NOT_APPLICABLE, NOT_DRAWN},
};

use crate::{
    draw,
    fault::{corrupt, delay, dns, drop, duplicate, ecn, hang, mark, reset, throttle},
    flow::Flow,
    hook::Hook,
    trace::Outcome,
};

/// "No verdict": TCX_NEXT under TCX, continue with the next filter under
/// cls_bpf. Programs after ours still see the packet.
pub const NO_VERDICT: i32 = TC_ACT_UNSPEC;

/// What an action did: a verdict, or nothing (the packet was not one the
/// action applies to, e.g. `hang` on a pure ACK), which counts as not acted.
enum Acted {
    Yes(i32),
    Untouched,
}

/// The verdict for a packet `rule` matched, and what became of it (for
/// `faultbpf trace`).
#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow, rule: &RuleValue, hook: Hook) -> (i32, Outcome) {
    let mut outcome = Outcome {
        reason: NOT_APPLICABLE,
        slot: rule.slot,
        kind: 0,
    };
    // Every action reads the packet at the flow's offsets and checks them
    // itself: from an opaque copy the verifier walks the actions once, not
    // once per parser path (L2 tags x IP version x extension headers:
    // 2.3x the instructions without it, 1.7x with it, against one tag and
    // 6 extension headers before). Costs a matched packet one per-CPU copy.
    let Some(flow) = flow.opaque() else {
        return (NO_VERDICT, outcome);
    };
    // SAFETY: `skb` is the valid context pointer of this program run.
    let segs = u64::from(unsafe { (*ctx.skb.skb).gso_segs }).max(1);
    let Some(hit) = draw::hit(flow, rule, segs, u64::from(ctx.len())) else {
        outcome.reason = NOT_DRAWN;
        return (NO_VERDICT, outcome);
    };
    let kind = hit.kind;
    match act(ctx, flow, rule, kind, hook) {
        Acted::Yes(verdict) => {
            hit.acted();
            outcome.reason = ACTED;
            outcome.kind = kind as u8;
            (verdict, outcome)
        }
        Acted::Untouched => (NO_VERDICT, outcome),
    }
}

#[inline(always)]
fn act(ctx: &TcContext, flow: &Flow, rule: &RuleValue, kind: FaultKind, hook: Hook) -> Acted {
    match kind {
        FaultKind::Drop => Acted::Yes(drop::tc_verdict(hook)),
        FaultKind::Hang => {
            if hang::applies(ctx, flow) {
                Acted::Yes(drop::tc_verdict(hook))
            } else {
                Acted::Untouched
            }
        }
        // A packet we cannot answer (IPv4 options, ...) is still dropped:
        // the rule's port must stay closed. Our own RSTs cross our other
        // hook on the way out: they pass.
        FaultKind::Reset => match reset::reply(ctx, flow) {
            reset::Outcome::Answered => Acted::Yes(reset::send_back(ctx, hook)),
            reset::Outcome::Pass => Acted::Untouched,
            reset::Outcome::Drop => Acted::Yes(drop::tc_verdict(hook)),
        },
        FaultKind::Corrupt => done(corrupt::flip(ctx, flow)),
        FaultKind::Mark => {
            mark::set(ctx, rule);
            Acted::Yes(NO_VERDICT)
        }
        FaultKind::Ecn => done(ecn::ecn_ce(ctx, flow)),
        FaultKind::Delay => match delay::hold(ctx, flow, rule, hook) {
            Some(verdict) => Acted::Yes(verdict),
            None => Acted::Untouched,
        },
        FaultKind::Duplicate => done(duplicate::clone(ctx, hook)),
        FaultKind::Throttle if rule.flags & FLAG_SHAPE != 0 => {
            match throttle::departure(ctx, rule, hook) {
                throttle::Shaped::Now => Acted::Untouched,
                // No device (it went away under us): the packet goes now.
                throttle::Shaped::At(at) => match delay::hold_until(ctx, hook, at) {
                    Some(verdict) => Acted::Yes(verdict),
                    None => Acted::Untouched,
                },
                throttle::Shaped::Over => Acted::Yes(drop::tc_verdict(hook)),
            }
        }
        FaultKind::Throttle => {
            if throttle::over_rate(ctx, rule, hook) {
                Acted::Yes(drop::tc_verdict(hook))
            } else {
                Acted::Untouched
            }
        }
        FaultKind::Dns => match dns::act(ctx, flow, rule) {
            dns::Outcome::Answered => Acted::Yes(reset::send_back(ctx, hook)),
            dns::Outcome::Drop => Acted::Yes(drop::tc_verdict(hook)),
            dns::Outcome::Pass => Acted::Untouched,
        },
        FaultKind::Mix => Acted::Untouched,
    }
}

/// A pass-through action that either changed the packet or did not.
#[inline(always)]
fn done(changed: bool) -> Acted {
    if changed {
        Acted::Yes(NO_VERDICT)
    } else {
        Acted::Untouched
    }
}
