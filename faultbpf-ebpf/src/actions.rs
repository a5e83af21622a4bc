//! Matched packet -> verdict.
//!
//! This is the one place where a drop becomes a tc return code, because the
//! right code depends on the hook:
//! - Ingress: `TC_ACT_SHOT`. The sender is remote; the packet is just gone.
//! - Egress: `TC_ACT_SHOT` would be seen by the local sender (the hook
//!   returns NET_XMIT_DROP: TCP re-sends every 0.5 s without backoff and a
//!   `connect()` fails after ~6 s instead of ~135 s after real loss).
//!   `TC_ACT_STOLEN` hides the drop on the netlink (cls_bpf) path, but under
//!   TCX (kernel >= 6.6) it is no verdict at all and the packet passes. What
//!   works on both: `bpf_redirect` to an ifindex that cannot exist and
//!   return its `TC_ACT_REDIRECT`; the egress hook reports NET_XMIT_SUCCESS,
//!   the redirect finds no device and frees the packet, and TCP backs off on
//!   its RTO exactly as after loss in the network.
//!
//! Counting the match and drawing happen before, in `draw.rs`, shared with
//! the XDP program (`xdp.rs`), which has its own verdicts.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_redirect,
    programs::TcContext,
};
use faultbpf_common::{FaultKind, RuleValue};

use crate::{
    corrupt, delay, draw, mark,
    parse::{self, Flow},
    reset,
};

/// "No verdict": TCX_NEXT under TCX, continue with the next filter under
/// cls_bpf. Programs after ours still see the packet.
pub const NO_VERDICT: i32 = TC_ACT_UNSPEC;

/// ifindex 0 is never given to a device, so a redirect there always drops.
const NOWHERE_IFINDEX: u32 = 0;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

/// What an action did: a verdict, or nothing (the packet was not one the
/// action applies to, e.g. `hang` on a pure ACK), which counts as not acted.
enum Outcome {
    Acted(i32),
    Untouched,
}

#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow, rule: &RuleValue, hook: Hook) -> i32 {
    // SAFETY: `skb` is the valid context pointer of this program run.
    let segs = u64::from(unsafe { (*ctx.skb.skb).gso_segs }).max(1);
    let Some(hit) = draw::hit(flow, rule, segs, u64::from(ctx.len())) else {
        return NO_VERDICT;
    };
    match act(ctx, flow, rule, hit.kind, hook) {
        Outcome::Acted(verdict) => {
            hit.acted();
            verdict
        }
        Outcome::Untouched => NO_VERDICT,
    }
}

#[inline(always)]
fn act(ctx: &TcContext, flow: &Flow, rule: &RuleValue, kind: FaultKind, hook: Hook) -> Outcome {
    match kind {
        FaultKind::Drop => Outcome::Acted(drop(hook)),
        FaultKind::Hang => match parse::tcp_payload_len(ctx, flow) {
            Some(n) if n > 0 => Outcome::Acted(drop(hook)),
            _ => Outcome::Untouched,
        },
        // A packet we cannot answer (IPv4 options, ...) is still dropped:
        // the rule's port must stay closed. Our own RSTs cross our other
        // hook on the way out: they pass.
        FaultKind::Reset => match reset::reply(ctx, flow, hook) {
            Ok(verdict) => Outcome::Acted(verdict),
            Err(reset::NoReply::Pass) => Outcome::Untouched,
            Err(reset::NoReply::Drop) => Outcome::Acted(drop(hook)),
        },
        FaultKind::Corrupt => done(corrupt::flip(ctx, flow)),
        FaultKind::Mark => {
            ctx.set_mark(rule.mark);
            Outcome::Acted(NO_VERDICT)
        }
        FaultKind::Ecn => done(mark::ecn_ce(ctx, flow)),
        FaultKind::Delay => match delay::hold(ctx, flow, rule, hook) {
            Some(verdict) => Outcome::Acted(verdict),
            None => Outcome::Untouched,
        },
        FaultKind::Mix => Outcome::Untouched,
    }
}

/// A pass-through action that either changed the packet or did not.
#[inline(always)]
fn done(changed: bool) -> Outcome {
    if changed {
        Outcome::Acted(NO_VERDICT)
    } else {
        Outcome::Untouched
    }
}

/// See the module docs for why egress does not return `TC_ACT_SHOT`.
#[inline(always)]
pub fn drop(hook: Hook) -> i32 {
    match hook {
        Hook::Ingress => TC_ACT_SHOT as i32,
        // SAFETY: helper without preconditions; flags 0 is valid.
        Hook::Egress => unsafe { bpf_redirect(NOWHERE_IFINDEX, 0) as i32 },
    }
}
