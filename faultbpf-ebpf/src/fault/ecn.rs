//! `mark --ecn`: set Congestion Experienced on ECN-capable packets, as a
//! congested router's AQM would, so senders' congestion control reacts
//! (the application sees slower throughput, no error). tc only.

use aya_ebpf::programs::TcContext;

use crate::{
    flow::Flow,
    hdr::{IPV4_CHECK, IPV4_TOS, IPV6_TCLASS_LO},
};

const ECN_MASK: u8 = 0b11;

/// Sets CE; false for Not-ECT packets (the ECN codepoint 00), which a
/// router would have to drop instead.
#[inline(always)]
pub fn ecn_ce(ctx: &TcContext, flow: &Flow) -> bool {
    if flow.v6 {
        // Traffic class straddles bytes 0 and 1; its ECN bits are bits 4-5
        // of byte 1. IPv6 has no header checksum and the pseudo-header
        // does not cover it.
        let Ok(b1) = ctx.load::<u8>(flow.l3 + IPV6_TCLASS_LO) else {
            return false;
        };
        if (b1 >> 4) & ECN_MASK == 0 {
            return false;
        }
        let v = b1 | (ECN_MASK << 4);
        return store(ctx, flow.l3 + IPV6_TCLASS_LO, &v);
    }
    let Ok(w) = ctx.load::<[u8; 2]>(flow.l3) else {
        return false;
    };
    if w[IPV4_TOS] & ECN_MASK == 0 {
        return false;
    }
    let new = [w[0], w[IPV4_TOS] | ECN_MASK];
    store(ctx, flow.l3, &new)
        && ctx
            .l3_csum_replace(
                flow.l3 + IPV4_CHECK,
                u64::from(u16::from_ne_bytes(w)),
                u64::from(u16::from_ne_bytes(new)),
                2,
            )
            .is_ok()
}

#[inline(always)]
fn store<T>(ctx: &TcContext, off: usize, v: &T) -> bool {
    ctx.store(off, v, 0).is_ok()
}
