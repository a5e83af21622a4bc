//! `corrupt`: damage one 16-bit word of the L4 payload and fix the
//! checksum, so the damaged data is delivered to the application (nothing
//! below it notices), as a buggy middlebox or bad memory would. The
//! application reads changed bytes; TCP and UDP, tc only (XDP has no
//! checksum state).
//!
//! The damage adds [`DAMAGE`] to the word (big-endian, wrapping) rather
//! than inverting it: inversion undoes itself, and an echo crosses the
//! rule twice (`--direction both`), or four times on `lo`, so a short
//! payload came back intact (19 of 20 echoes on main). A word hit k times
//! holds k x DAMAGE more, which is never 0 mod 2^16 for k < 65 536 as
//! DAMAGE is odd, and each hit changes both of its bytes.

use aya_ebpf::{bindings::BPF_F_MARK_MANGLED_0, helpers::bpf_get_prandom_u32, programs::TcContext};
use faultbpf_common::{PROTO_TCP, PROTO_UDP};

use crate::{
    flow::Flow,
    hdr::{TCP_CHECK, UDP_CHECK, UDP_LEN},
    parse,
};

/// True when a word was flipped; false for packets with under 2 payload
/// bytes, which have nothing to corrupt.
#[inline(always)]
pub fn flip(ctx: &TcContext, f: &Flow) -> bool {
    let (start, csum_off, flags) = match f.proto {
        PROTO_TCP => {
            let Some(payload) = parse::tcp_payload_len(ctx, f) else {
                return false;
            };
            (f.l3_end - payload, TCP_CHECK, 0)
        }
        // A UDP checksum of 0 means "none" (IPv4): MARK_MANGLED_0 keeps it so.
        PROTO_UDP if !f.fragment => (f.l4 + UDP_LEN, UDP_CHECK, u64::from(BPF_F_MARK_MANGLED_0)),
        _ => return false,
    };
    let words = f.l3_end.saturating_sub(start) / 2;
    if words == 0 {
        return false;
    }
    // Headers have even lengths, so the word is aligned as the checksum
    // sums it and a 2-byte replace is exact.
    // SAFETY: helper without preconditions.
    let off = start + (unsafe { bpf_get_prandom_u32() } as usize % words) * 2;
    let Ok(old) = ctx.load::<u16>(off) else {
        return false;
    };
    let new = damage(old);
    ctx.store(off, &new, 0).is_ok()
        && ctx
            .l4_csum_replace(f.l4 + csum_off, u64::from(old), u64::from(new), flags | 2)
            .is_ok()
}

/// Added to a damaged word: odd, so repeated hits never cancel out, and
/// 0x55 in each byte, so both bytes of the word change on every hit.
pub const DAMAGE: u16 = 0x5555;

/// The damaged value of a word as it lies in the packet (network order).
#[inline(always)]
fn damage(raw: u16) -> u16 {
    u16::from_be(raw).wrapping_add(DAMAGE).to_be()
}
