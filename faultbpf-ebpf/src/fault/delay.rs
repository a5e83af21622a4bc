//! `delay`: hold the packet and deliver it later, with Earliest Departure
//! Time. The program stamps the delivery time on the packet
//! (`bpf_skb_set_tstamp` with a monotonic delivery clock: writing the
//! tstamp field directly gave no delay, a redirect clears a timestamp
//! without the mono flag), marks where it came from and redirects it to
//! faultbpf's delay device, whose fq qdisc holds it until that time; the
//! return program on the device's far end (`faultbpf_ret` in main.rs) sends
//! it back. Only matched packets take the detour; the host's own qdiscs
//! are never touched. See faultbpf/src/delaydev.rs for the device.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect, bpf_skb_set_tstamp},
    programs::TcContext,
};
use faultbpf_common::{
    DELAY_MARK_IFINDEX, DELAY_MARK_INGRESS, DELAY_MARK_MAGIC, DIST_NORMAL, FLAG_REORDER, RuleValue,
    flow_hash,
};

use crate::{
    flow::Flow,
    hook::Hook,
    maps::{DELAY_DEV, FLOW_LAST},
};

/// `BPF_SKB_TSTAMP_DELIVERY_MONO` (uapi bpf.h; an anonymous enum in the
/// generated bindings).
const BPF_SKB_TSTAMP_DELIVERY_MONO: u32 = 1;

/// Sends the packet on its detour; `None` when there is no delay device
/// (the packet then passes untouched).
#[inline(always)]
pub fn hold(ctx: &TcContext, f: &Flow, rule: &RuleValue, hook: Hook) -> Option<i32> {
    detour(ctx)?;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut at = now.saturating_add(delay_ns(rule));
    if rule.flags & FLAG_REORDER == 0 {
        // Never before the flow's previous packet in the same direction:
        // the hash is symmetric, so the hook goes into the seed, or a reply
        // would wait for the last request.
        let seed = match hook {
            Hook::Ingress => 1,
            Hook::Egress => 2,
        };
        let key = flow_hash(
            seed, f.proto, &f.saddr.0, f.sport_be, &f.daddr.0, f.dport_be,
        );
        // SAFETY: plain map value read.
        if let Some(last) = unsafe { FLOW_LAST.get(&key) }
            && *last > at
        {
            at = *last;
        }
        let _ = FLOW_LAST.insert(&key, &at, 0);
    }
    hold_until(ctx, hook, at)
}

/// Sends the packet on its detour through the delay device (which must
/// exist: `dev`), to leave it at `at` (`bpf_ktime_get_ns()` time). Shared
/// with `throttle`'s shaping.
#[inline(always)]
pub fn hold_until(ctx: &TcContext, hook: Hook, at: u64) -> Option<i32> {
    let (dev, ifindex) = detour(ctx)?;
    let dir = match hook {
        Hook::Ingress => DELAY_MARK_INGRESS,
        Hook::Egress => 0,
    };
    ctx.set_mark(DELAY_MARK_MAGIC | dir | ifindex);
    // SAFETY: `skb` is this run's context pointer; tc may write priority.
    // fq's highest band ignores delivery times: priority 0 keeps it out.
    unsafe { (*ctx.skb.skb).priority = 0 };
    // SAFETY: valid context; a monotonic delivery time as the type says.
    if unsafe { bpf_skb_set_tstamp(ctx.skb.skb, at, BPF_SKB_TSTAMP_DELIVERY_MONO) } != 0 {
        return None;
    }
    // SAFETY: helper without preconditions.
    Some(unsafe { bpf_redirect(dev, 0) } as i32)
}

/// The delay device's ifindex and the packet's, if it can take the detour:
/// there is a device, and the packet's ifindex fits in the mark.
#[inline(always)]
fn detour(ctx: &TcContext) -> Option<(u32, u32)> {
    let dev = *DELAY_DEV.get(0)?;
    // SAFETY: `skb` is this run's context pointer.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    (dev != 0 && ifindex & !DELAY_MARK_IFINDEX == 0).then_some((dev, ifindex))
}

/// This packet's delay: the mean plus jitter drawn per the rule, at least 0.
#[inline(always)]
fn delay_ns(rule: &RuleValue) -> u64 {
    let mean = i64::from(rule.delay_us) * 1000;
    let j = i64::from(rule.jitter_us) * 1000;
    if j == 0 {
        return mean as u64;
    }
    let span = (2 * j + 1) as u64;
    // SAFETY: helper without preconditions.
    let u = || ((u64::from(unsafe { bpf_get_prandom_u32() }) * span) >> 32) as i64 - j;
    let off = if rule.dist == DIST_NORMAL {
        // Three uniforms on [-j, j] sum to variance j², so std dev j.
        u() + u() + u()
    } else {
        u()
    };
    (mean + off).max(0) as u64
}

/// The return program's body: a packet back from the delay device goes to
/// where its mark says it came from; anything else on the device is not
/// ours and is dropped.
#[inline(always)]
pub fn back(ctx: &TcContext) -> i32 {
    // SAFETY: `skb` is this run's context pointer.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & faultbpf_common::DELAY_MARK_MASK != DELAY_MARK_MAGIC {
        return aya_ebpf::bindings::TC_ACT_SHOT as i32;
    }
    let flags = if mark & DELAY_MARK_INGRESS != 0 {
        u64::from(aya_ebpf::bindings::BPF_F_INGRESS)
    } else {
        0
    };
    // SAFETY: helper without preconditions.
    unsafe { bpf_redirect(mark & DELAY_MARK_IFINDEX, flags) as i32 }
}

/// A packet back from its detour: let it go on. The mark stays: another
/// faultbpf on the same hook may run after us, and a packet it saw
/// unmarked it would delay again, forever.
#[inline(always)]
pub fn returning(ctx: &TcContext) -> bool {
    // SAFETY: `skb` is this run's context pointer.
    let mark = unsafe { (*ctx.skb.skb).mark };
    mark & faultbpf_common::DELAY_MARK_MASK == DELAY_MARK_MAGIC
}
