//! What a matched packet's rule decides before any hook-specific verdict:
//! count the match, draw (per packet, or per flow with `FLAG_PER_FLOW`),
//! pick the action (the rule's own under its threshold, or one entry of a
//! chaos mix), and credit the acted counters (and the mix entry's) once the
//! hook has acted.
//!
//! Shared by the tc programs (`actions.rs`) and the XDP program (`xdp.rs`)
//! so `--pct`, `--per flow`, mixes and the counters mean the same on both;
//! only the verdict a hook returns for an action differs.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use faultbpf_common::{
    FLAG_PER_FLOW, FaultKind, MIX_LEN, RuleCounters, RuleValue, THRESHOLD_ALWAYS, draw_hits,
    flow_hash,
};

use crate::{counters, flow::Flow};

/// A matched packet the draw selected for `kind`.
pub struct Hit {
    pub kind: FaultKind,
    /// The mix entry that picked `kind`; `MIX_LEN` for a rule's own action.
    entry: usize,
    counters: Option<&'static mut RuleCounters>,
    segs: u64,
    bytes: u64,
}

impl Hit {
    /// Credits the acted counters; call once the hook acted on the packet
    /// (not when the action turned out not to apply, e.g. `hang` on an ACK).
    #[inline(always)]
    pub fn acted(self) {
        counters::acted(self.counters, self.entry, self.segs, self.bytes);
    }
}

/// Counts a packet of `segs` segments and `bytes` bytes as matched by
/// `rule`, then draws; `None` when the draw spares it.
#[inline(always)]
pub fn hit(flow: &Flow, rule: &RuleValue, segs: u64, bytes: u64) -> Option<Hit> {
    let c = counters::matched(rule.slot, segs, bytes);
    let draw = if rule.flags & FLAG_PER_FLOW != 0 {
        flow_hash(
            rule.seed,
            flow.proto,
            &flow.saddr.0,
            flow.sport_be,
            &flow.daddr.0,
            flow.dport_be,
        )
    } else if rule.threshold == THRESHOLD_ALWAYS && rule.action != FaultKind::Mix as u8 {
        // 100 %: no draw needed (one helper call less on the drop path).
        0
    } else {
        // SAFETY: helper without preconditions.
        unsafe { bpf_get_prandom_u32() }
    };
    let (kind, entry) = pick(rule, draw)?;
    Some(Hit {
        kind,
        entry,
        counters: c,
        segs,
        bytes,
    })
}

/// The action this draw selects, if any, and its mix entry: the rule's own
/// action under its threshold (entry `MIX_LEN`: none), or the mix entry
/// whose cumulative threshold the draw is under.
#[inline(always)]
fn pick(rule: &RuleValue, draw: u32) -> Option<(FaultKind, usize)> {
    let kind = FaultKind::from_u8(rule.action)?;
    if kind != FaultKind::Mix {
        return draw_hits(rule.threshold, draw).then_some((kind, MIX_LEN));
    }
    for i in 0..MIX_LEN {
        let e = &rule.mix[i];
        if e.action == 0 {
            return None;
        }
        if draw_hits(e.upto, draw) {
            return Some((FaultKind::from_u8(e.action)?, i));
        }
    }
    None
}
