//! `reset`: drop the packet and answer its sender from the kernel, as a
//! closed port or an iptables REJECT would.
//!
//! - TCP: the segment is turned into its own answer. No ACK in it (a SYN):
//!   RST|ACK acking everything it carried, so `connect()` fails at once with
//!   ECONNREFUSED. With an ACK: RST whose seq is that ack number, exactly
//!   the sender's next expected byte, so its next call fails with
//!   ECONNRESET (RFC 5961 accepts only that seq without a challenge).
//! - UDP: an ICMP / ICMPv6 port unreachable quoting the datagram, so a
//!   connected UDP socket gets ECONNREFUSED.
//!
//! The answer leaves where the original came from: out of the same
//! interface at ingress, into the local stack at egress (`BPF_F_INGRESS`).
//!
//! Checksums: locally sent TCP is still CHECKSUM_PARTIAL here (the field
//! holds only the pseudo-header sum and is finished later), so a checksum
//! computed from scratch would be wrong on such packets. TCP answers are
//! therefore built only with incremental updates, which are right whatever
//! the skb's checksum state: swapping addresses or ports leaves a sum
//! unchanged; the rest of the header changes through one `bpf_csum_diff`.
//! The payload is kept (a RST may carry data; receivers ignore it), with
//! the data offset set to 5 so old options count as payload, except for a
//! GSO skb, which would otherwise leave as one RST per segment: that one is
//! trimmed to its header (GSO skbs are CHECKSUM_PARTIAL, so only the
//! pseudo-header length needs fixing). ICMP answers are new headers whose
//! checksums are computed from scratch; ICMP is never offloaded.
//!
//! Never answers a RST: it passes untouched, which also lets our own RSTs
//! through when they cross our other hook on the way out. ICMP errors never
//! match. Multicast, broadcast and a packet it cannot answer (IPv4 options
//! or IPv6 extension headers on UDP) are dropped without an answer.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_PSEUDO_HDR, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes},
    programs::TcContext,
};
use faultbpf_common::{PROTO_TCP, PROTO_UDP};

use crate::{
    actions::Hook,
    answer::{self, TCP_RST},
    csum::{self, Words},
    maps::{SCRATCH, SCRATCH_LEN},
    parse::{Flow, TCP_HDR_LEN, UDP_HDR_LEN},
};

const TCP_CSUM_OFF: usize = 16;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const ICMP_HDR_LEN: usize = 8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const REPLY_TTL: u8 = 64;

/// What to do with a packet `reply` did not answer.
pub enum NoReply {
    /// A RST: let it through.
    Pass,
    /// Anything else: drop it, the port must stay closed.
    Drop,
}

impl From<()> for NoReply {
    fn from(_: ()) -> Self {
        Self::Drop
    }
}

/// Answers the packet and returns the redirect verdict that sends the
/// answer.
#[inline(always)]
pub fn reply(ctx: &TcContext, f: &Flow, hook: Hook) -> Result<i32, NoReply> {
    let f = f.opaque().ok_or(())?;
    if f.fragment || answer::multicast(f) {
        return Err(NoReply::Drop);
    }
    match f.proto {
        PROTO_TCP => tcp(ctx, f)?,
        PROTO_UDP if f.v6 => udp6(ctx, f)?,
        PROTO_UDP => udp4(ctx, f)?,
        _ => return Err(NoReply::Drop),
    }
    swap_macs(ctx)?;
    // SAFETY: `skb` is the valid context pointer of this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let flags = match hook {
        Hook::Ingress => 0,
        Hook::Egress => u64::from(BPF_F_INGRESS),
    };
    // SAFETY: helper without preconditions.
    Ok(unsafe { bpf_redirect(ifindex, flags) } as i32)
}

#[inline(always)]
fn tcp(ctx: &TcContext, f: &Flow) -> Result<(), NoReply> {
    let mut old: Words<TCP_HDR_LEN> = ctx.load(f.l4).map_err(|_| ())?;
    if old.0[13] & TCP_RST != 0 {
        return Err(NoReply::Pass);
    }
    let mut new = Words([0u8; TCP_HDR_LEN]);
    answer::rst(&old.0, f.l4_len(), &mut new.0)?;
    // Same checksum bytes on both sides: they stay out of the diff.
    new.0[16] = old.0[16];
    new.0[17] = old.0[17];
    let d = csum::diff(&mut old, &mut new)?;
    ctx.store(f.l4, &new, 0).map_err(|_| ())?;
    ctx.l4_csum_replace(f.l4 + TCP_CSUM_OFF, 0, u64::from(d), 0)
        .map_err(|_| ())?;
    swap_addrs(ctx, f)?;

    // SAFETY: `skb` is the valid context pointer of this program run.
    if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        trim_tcp(ctx, f)?;
    }
    Ok(())
}

/// Cuts a GSO segment down to its (new, option-less) header, fixing the IP
/// length and the pseudo-header length in the TCP checksum.
#[inline(always)]
fn trim_tcp(ctx: &TcContext, f: &Flow) -> Result<(), ()> {
    let new_end = f.l4 + TCP_HDR_LEN;
    let old_l4 = (f.l4_len() as u16).to_be();
    let new_l4 = (TCP_HDR_LEN as u16).to_be();
    // SAFETY: valid context; flags must be 0.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, new_end as u32, 0) } != 0 {
        return Err(());
    }
    ctx.l4_csum_replace(
        f.l4 + TCP_CSUM_OFF,
        u64::from(old_l4),
        u64::from(new_l4),
        u64::from(BPF_F_PSEUDO_HDR) | 2,
    )
    .map_err(|_| ())?;
    if f.v6 {
        let len = ((new_end - f.l3 - IPV6_HDR_LEN) as u16).to_be();
        ctx.store(f.l3 + 4, &len, 0).map_err(|_| ())
    } else {
        let old_tot = ((f.l3_end - f.l3) as u16).to_be();
        let new_tot = ((new_end - f.l3) as u16).to_be();
        ctx.store(f.l3 + 2, &new_tot, 0).map_err(|_| ())?;
        ctx.l3_csum_replace(f.l3 + 10, u64::from(old_tot), u64::from(new_tot), 2)
            .map_err(|_| ())
    }
}

/// ICMP port unreachable for an IPv4/UDP datagram without IP options:
/// [eth][new IPv4][ICMP][quoted IPv4 header + 8 bytes of UDP].
///
/// Built in the per-CPU `SCRATCH` buffer, not on the stack: the tc
/// programs are close to the verifier's 512-byte stack limit.
#[inline(always)]
fn udp4(ctx: &TcContext, f: &Flow) -> Result<(), ()> {
    const QUOTE: usize = IPV4_HDR_LEN + UDP_HDR_LEN;
    const ROOM: usize = IPV4_HDR_LEN + ICMP_HDR_LEN;
    if f.l4 != f.l3 + IPV4_HDR_LEN {
        return Err(());
    }
    let b = scratch()?;
    // [0..20) new IP header, [20..28) ICMP header, [28..56) the quote.
    b.fill(0);
    load_into(ctx, f.l3, &mut b[ROOM..ROOM + QUOTE])?;
    make_room(ctx, f.l3 + QUOTE, ROOM)?;

    let tot = ((ROOM + QUOTE) as u16).to_be_bytes();
    b[0] = 0x45;
    b[2] = tot[0];
    b[3] = tot[1];
    b[8] = REPLY_TTL;
    b[9] = IPPROTO_ICMP;
    for i in 0..4 {
        b[12 + i] = b[ROOM + 16 + i];
        b[16 + i] = b[ROOM + 12 + i];
    }
    let c = csum::finish(csum::sum_raw(b.as_mut_ptr(), IPV4_HDR_LEN as u32, 0)?);
    b[10] = c[0];
    b[11] = c[1];
    // Type 3 (destination unreachable), code 3 (port unreachable).
    b[IPV4_HDR_LEN] = 3;
    b[IPV4_HDR_LEN + 1] = 3;
    // SAFETY: the ICMP part lies inside the scratch buffer.
    let icmp = unsafe { b.as_mut_ptr().add(IPV4_HDR_LEN) };
    let c = csum::finish(csum::sum_raw(icmp, (ICMP_HDR_LEN + QUOTE) as u32, 0)?);
    b[IPV4_HDR_LEN + 2] = c[0];
    b[IPV4_HDR_LEN + 3] = c[1];
    store_from(ctx, f.l3, &b[..ROOM + QUOTE])
}

/// ICMPv6 port unreachable for an IPv6/UDP datagram without extension
/// headers: [eth][new IPv6][ICMPv6][quoted IPv6 header + 8 bytes of UDP].
#[inline(always)]
fn udp6(ctx: &TcContext, f: &Flow) -> Result<(), ()> {
    const QUOTE: usize = IPV6_HDR_LEN + UDP_HDR_LEN;
    const ROOM: usize = IPV6_HDR_LEN + ICMP_HDR_LEN;
    const ICMP_LEN: usize = ICMP_HDR_LEN + QUOTE;
    /// Where the pseudo-header's length and next-header words go.
    const TAIL: usize = ROOM + QUOTE;
    if f.l4 != f.l3 + IPV6_HDR_LEN {
        return Err(());
    }
    let b = scratch()?;
    // [0..40) new IPv6 header, [40..48) ICMPv6 header, [48..96) the quote,
    // [96..104) the rest of the pseudo-header.
    b.fill(0);
    load_into(ctx, f.l3, &mut b[ROOM..ROOM + QUOTE])?;
    make_room(ctx, f.l3 + QUOTE, ROOM)?;

    let plen = (ICMP_LEN as u16).to_be_bytes();
    b[0] = 0x60;
    b[4] = plen[0];
    b[5] = plen[1];
    b[6] = IPPROTO_ICMPV6;
    b[7] = REPLY_TTL;
    for i in 0..16 {
        b[8 + i] = b[ROOM + 24 + i];
        b[24 + i] = b[ROOM + 8 + i];
    }
    // The ICMPv6 checksum covers a pseudo-header: both addresses (in the
    // new header), the length and the next header.
    b[TAIL + 2] = plen[0];
    b[TAIL + 3] = plen[1];
    b[TAIL + 7] = IPPROTO_ICMPV6;
    // Type 1 (destination unreachable), code 4 (port unreachable).
    b[IPV6_HDR_LEN] = 1;
    b[IPV6_HDR_LEN + 1] = 4;
    let base = b.as_mut_ptr();
    // SAFETY: every range below lies inside the scratch buffer.
    let s = unsafe {
        let s = csum::sum_raw(base.add(8), 32, 0)?;
        let s = csum::sum_raw(base.add(TAIL), 8, s)?;
        csum::sum_raw(base.add(IPV6_HDR_LEN), ICMP_LEN as u32, s)?
    };
    let c = csum::finish(s);
    b[IPV6_HDR_LEN + 2] = c[0];
    b[IPV6_HDR_LEN + 3] = c[1];
    store_from(ctx, f.l3, &b[..ROOM + QUOTE])
}

/// This CPU's scratch buffer for building answers.
#[inline(always)]
fn scratch() -> Result<&'static mut [u8; SCRATCH_LEN], ()> {
    let p = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: a per-CPU value is only touched by this CPU, and a program
    // run is not preempted by another run of itself on the same CPU.
    Ok(unsafe { &mut (*p).0 })
}

/// `bpf_skb_load_bytes` into `dst` (a constant-length part of the scratch).
#[inline(always)]
fn load_into(ctx: &TcContext, off: usize, dst: &mut [u8]) -> Result<(), ()> {
    // SAFETY: `dst` is valid for its length; the helper checks the packet.
    let r = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
        )
    };
    if r == 0 { Ok(()) } else { Err(()) }
}

/// `bpf_skb_store_bytes` from `src` (a constant-length part of the scratch).
#[inline(always)]
fn store_from(ctx: &TcContext, off: usize, src: &[u8]) -> Result<(), ()> {
    // SAFETY: `src` is valid for its length; the helper checks the packet.
    let r = unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            src.as_ptr().cast(),
            src.len() as u32,
            0,
        )
    };
    if r == 0 { Ok(()) } else { Err(()) }
}

/// Trims the packet to `keep` bytes (which also ends GSO), then opens
/// `room` bytes between the Ethernet and the IP header.
#[inline(always)]
fn make_room(ctx: &TcContext, keep: usize, room: usize) -> Result<(), ()> {
    // SAFETY: valid context; flags must be 0.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, keep as u32, 0) } != 0 {
        return Err(());
    }
    ctx.adjust_room(room as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| ())
}

#[inline(always)]
fn swap_addrs(ctx: &TcContext, f: &Flow) -> Result<(), ()> {
    if f.v6 {
        let a: [u8; 32] = ctx.load(f.l3 + 8).map_err(|_| ())?;
        let mut s = [0u8; 32];
        for i in 0..16 {
            s[i] = a[16 + i];
            s[16 + i] = a[i];
        }
        ctx.store(f.l3 + 8, &s, 0).map_err(|_| ())
    } else {
        let a: [u8; 8] = ctx.load(f.l3 + 12).map_err(|_| ())?;
        let s = [a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]];
        ctx.store(f.l3 + 12, &s, 0).map_err(|_| ())
    }
}

/// The answer goes back where the original came from: at ingress the
/// remote MAC becomes the destination; at egress our own MAC does, so the
/// local stack takes the answer as addressed to it.
#[inline(always)]
fn swap_macs(ctx: &TcContext) -> Result<(), ()> {
    let m: [u8; 12] = ctx.load(0).map_err(|_| ())?;
    let mut s = [0u8; 12];
    for i in 0..6 {
        s[i] = m[6 + i];
        s[6 + i] = m[i];
    }
    ctx.store(0, &s, 0).map_err(|_| ())
}
