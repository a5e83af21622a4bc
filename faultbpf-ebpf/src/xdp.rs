//! The XDP program's logic: the ingress half of faultbpf at the driver
//! (`--xdp`), before any skb exists, for hosts under a flood where the tc
//! hook would cost an skb per dropped packet.
//!
//! Same parser (`parse::flow` through [`Packet`]), same rule lookup
//! (`matcher`) and same draw and counters (`draw`) as the tc programs;
//! only the verdicts differ:
//! - `drop`, and `hang` on TCP segments with payload: `XDP_DROP`;
//! - `reset`: the answer is built in place and sent back out of the
//!   interface with `XDP_TX` (`xdp_reset.rs`);
//! - `corrupt`, `mark` and `ecn` are not done here and pass untouched:
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
//! 5.18, for `bpf_xdp_load_bytes` / `bpf_xdp_store_bytes` /
//! `bpf_xdp_get_buff_len`: bounds-checked copies that need no verifier
//! reasoning about variable packet offsets (IPv6 extension headers).

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_xdp_get_buff_len, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use faultbpf_common::FaultKind;

use crate::{
    actions::Hook,
    draw, matcher,
    parse::{self, Packet},
    xdp_reset,
};

impl Packet for XdpContext {
    #[inline(always)]
    fn load_into<T>(&self, off: usize, dst: &mut T) -> bool {
        // SAFETY: `ctx` is this run's context and `dst` is writable for
        // size_of::<T>() bytes; the helper checks the range against the
        // buffer, so the verifier needs no bound on `off`. The length is a
        // constant, as it requires.
        let r = unsafe {
            bpf_xdp_load_bytes(
                self.ctx,
                off as u32,
                (dst as *mut T).cast(),
                size_of::<T>() as u32,
            )
        };
        r == 0
    }

    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: helper without preconditions on a valid context. Used
        // rather than `data_end - data`: pointer subtraction needs
        // CAP_PERFMON from the verifier.
        unsafe { bpf_xdp_get_buff_len(self.ctx) as usize }
    }
}

/// Writes `v` at `off`; `false` past the end of the buffer.
#[inline(always)]
pub fn store<T>(ctx: &XdpContext, off: usize, v: &T) -> bool {
    // SAFETY: `v` is a live, initialised value of size_of::<T>() bytes on
    // the stack; the helper only reads it and checks the packet range.
    let r = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            off as u32,
            (v as *const T).cast_mut().cast(),
            size_of::<T>() as u32,
        )
    };
    r == 0
}

/// The XDP verdict for one packet.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    // A packet we cannot parse is never ours: pass it untouched.
    let Some(flow) = parse::flow(ctx) else {
        return XDP_PASS;
    };
    let Some(rule) = matcher::rule_for(&flow, Hook::Ingress) else {
        return XDP_PASS;
    };
    let Some(hit) = draw::hit(&flow, rule, 1, ctx.len() as u64) else {
        return XDP_PASS;
    };
    let verdict = match hit.kind {
        FaultKind::Drop => XDP_DROP,
        FaultKind::Hang => match parse::tcp_payload_len(ctx, &flow) {
            Some(n) if n > 0 => XDP_DROP,
            _ => return XDP_PASS,
        },
        FaultKind::Reset => match xdp_reset::reply(ctx, &flow) {
            // A RST passes, as on tc: never answered, not counted as acted.
            XDP_PASS => return XDP_PASS,
            v => v,
        },
        FaultKind::Corrupt
        | FaultKind::Mark
        | FaultKind::Ecn
        | FaultKind::Delay
        | FaultKind::Mix => {
            return XDP_PASS;
        }
    };
    hit.acted();
    verdict
}
