//! `mark`: set `skb->mark` to the rule's value and let the packet pass,
//! so the host's own policy routing, nftables or tc can act on it. The
//! application sees nothing by itself. tc only (XDP has no skb).

use aya_ebpf::programs::TcContext;
use faultbpf_common::RuleValue;

/// Writes the rule's mark on the packet.
#[inline(always)]
pub fn set(ctx: &TcContext, rule: &RuleValue) {
    ctx.set_mark(rule.mark);
}
