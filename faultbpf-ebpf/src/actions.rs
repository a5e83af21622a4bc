//! Matched packet -> verdict.
//!
//! The one place where a drop is turned into a tc return code, because the
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

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect},
    programs::TcContext,
};
use faultbpf_common::{DIR_EGRESS, DIR_INGRESS, FaultKind, RuleValue, draw_hits};

use crate::{counters, maps::LEASE};

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

#[inline(always)]
pub fn apply(ctx: &TcContext, rule: &RuleValue, hook: Hook) -> i32 {
    let dir = match hook {
        Hook::Ingress => DIR_INGRESS,
        Hook::Egress => DIR_EGRESS,
    };
    if rule.directions & dir == 0 {
        return NO_VERDICT;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if (rule.expires_ns != 0 && now >= rule.expires_ns) || lease_expired(now) {
        return NO_VERDICT;
    }

    // SAFETY: `skb` is the valid context pointer of this program run.
    let segs = u64::from(unsafe { (*ctx.skb.skb).gso_segs }).max(1);
    let bytes = u64::from(ctx.len());
    let c = counters::matched(rule.slot, segs, bytes);
    // SAFETY: helper without preconditions.
    if !draw_hits(rule.threshold, unsafe { bpf_get_prandom_u32() }) {
        return NO_VERDICT;
    }
    let verdict = match FaultKind::from_u8(rule.action) {
        Some(FaultKind::Drop) => drop(hook),
        None => return NO_VERDICT,
    };
    counters::acted(c, segs, bytes);
    verdict
}

/// See the module docs for why egress does not return `TC_ACT_SHOT`.
#[inline(always)]
fn drop(hook: Hook) -> i32 {
    match hook {
        Hook::Ingress => TC_ACT_SHOT as i32,
        // SAFETY: helper without preconditions; flags 0 is valid.
        Hook::Egress => unsafe { bpf_redirect(NOWHERE_IFINDEX, 0) as i32 },
    }
}

/// True when an owner set a lease and stopped renewing it.
#[inline(always)]
fn lease_expired(now: u64) -> bool {
    match LEASE.get(0) {
        Some(l) => l.lease_ns != 0 && now > l.heartbeat_ns.saturating_add(l.lease_ns),
        None => false,
    }
}
