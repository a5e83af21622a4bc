//! `duplicate`: the packet goes on, and a clone of it beside it, as a
//! network that duplicates would deliver it (netem's `duplicate`, without
//! sch_netem, which this machine's kernel does not even have). UDP
//! applications receive the datagram twice; a TCP receiver sees duplicate
//! segments and answers them with D-SACKs. tc only (XDP has no skb to
//! clone).
//!
//! The clone is made with `bpf_clone_redirect` to the interface and hook
//! the packet was taken at (`BPF_F_INGRESS` at ingress), so it crosses our
//! program again. It carries [`DUPLICATE_MARK`] while it does: the entry
//! point ([`is_clone`], called before anything else) lets it pass and
//! clears the mark, so a duplicate is never duplicated again (a loop would
//! show as 4x, 8x) and is not counted as matched. The original keeps its
//! own mark; the clone leaves with mark 0.

use aya_ebpf::{bindings::BPF_F_INGRESS, helpers::bpf_clone_redirect, programs::TcContext};
use faultbpf_common::DUPLICATE_MARK;

use crate::hook::Hook;

/// Sends a clone of the packet back into `hook`; true when one was sent.
#[inline(always)]
pub fn clone(ctx: &TcContext, hook: Hook) -> bool {
    // SAFETY: `skb` is this run's context pointer.
    let (mark, ifindex) = unsafe { ((*ctx.skb.skb).mark, (*ctx.skb.skb).ifindex) };
    let flags = match hook {
        Hook::Ingress => u64::from(BPF_F_INGRESS),
        Hook::Egress => 0,
    };
    // The clone copies the mark at the moment it is made.
    ctx.set_mark(DUPLICATE_MARK);
    // SAFETY: valid context; the helper copies the skb and takes no
    // pointer into packet data (none is used after it).
    let sent = unsafe { bpf_clone_redirect(ctx.skb.skb, ifindex, flags) } == 0;
    ctx.set_mark(mark);
    sent
}

/// True for a clone crossing our hook again; its mark is cleared and the
/// caller lets it pass.
#[inline(always)]
pub fn is_clone(ctx: &TcContext) -> bool {
    // SAFETY: `skb` is this run's context pointer.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark != DUPLICATE_MARK {
        return false;
    }
    ctx.set_mark(0);
    true
}
