//! `reset`: drop the packet and answer its sender from the kernel, as a
//! closed port or an iptables REJECT would. What the remote application
//! sees:
//!
//! - TCP: `connect()` fails at once with ECONNREFUSED (a SYN gets RST|ACK);
//!   on an open connection the next call fails with ECONNRESET (a RST whose
//!   seq is the sender's next expected byte, `answer::rst`).
//! - UDP: a connected socket gets ECONNREFUSED from an ICMP / ICMPv6 port
//!   unreachable quoting the datagram.
//!
//! Hooks: tc (this file, both directions) and XDP ingress (`xdp.rs`). No
//! knobs beyond the rule's own (`--pct`, `--per`, ...).
//!
//! Both hooks build their answers with `answer.rs` and report the one
//! [`Outcome`]; each turns it into its own verdict. On tc the answer leaves
//! where the original came from: out of the same interface at ingress,
//! into the local stack at egress (`BPF_F_INGRESS`), except on `lo`
//! ([`send_back`] says why).
//!
//! tc checksums: locally sent TCP is still CHECKSUM_PARTIAL here (the field
//! holds only the pseudo-header sum and is finished later), so a checksum
//! computed from scratch would be wrong on such packets. The tc RST is
//! therefore the segment rewritten in place with incremental updates, which
//! are right whatever the skb's checksum state: swapping addresses or ports
//! leaves a sum unchanged; the rest of the header changes through one
//! `bpf_csum_diff`. The payload is kept (a RST may carry data; receivers
//! ignore it), with the data offset set to 5 so old options count as
//! payload, except for a GSO skb, which would otherwise leave as one RST per
//! segment: that one is trimmed to its header (GSO skbs are
//! CHECKSUM_PARTIAL, so only the pseudo-header length needs fixing).
//!
//! Never answers a RST: it passes untouched, which also lets our own RSTs
//! through when they cross our other hook on the way out. ICMP errors never
//! match. Multicast, broadcast and a packet it cannot answer (IPv4 options
//! or IPv6 extension headers on UDP) are dropped without an answer.

pub mod xdp;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_PSEUDO_HDR, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use faultbpf_common::{PROTO_TCP, PROTO_UDP};

use crate::{
    answer::{self, UNREACH4_LEN, UNREACH4_ROOM, UNREACH6_LEN, UNREACH6_ROOM},
    csum::{self, Words},
    flow::Flow,
    hdr::{
        ETH_MACS_LEN, IPV4_ADDRS_LEN, IPV4_CHECK, IPV4_SADDR, IPV4_TOT_LEN, IPV6_ADDRS_LEN,
        IPV6_LEN, IPV6_PAYLOAD_LEN, IPV6_SADDR, MAC_LEN, TCP_CHECK, TCP_FLAGS, TCP_LEN, TCP_RST,
    },
    hook::Hook,
    packet::Packet,
};

/// What `reset` did with a packet, on either hook.
pub enum Outcome {
    /// The packet is now its answer: send it back.
    Answered,
    /// A RST: never answered, let it through (not counted as acted).
    Pass,
    /// Not answerable (fragment, multicast, IP options, ...): drop it, the
    /// rule's port must stay closed.
    Drop,
}

impl From<()> for Outcome {
    fn from(_: ()) -> Self {
        Self::Drop
    }
}

/// Turns the packet into its answer on a tc hook; on `Answered`, the
/// caller returns [`send_back`]'s verdict.
#[inline(always)]
pub fn reply(ctx: &TcContext, f: &Flow) -> Outcome {
    match build(ctx, f) {
        Ok(()) => Outcome::Answered,
        Err(o) => o,
    }
}

#[inline(always)]
fn build(ctx: &TcContext, f: &Flow) -> Result<(), Outcome> {
    if f.fragment || answer::multicast(f) {
        return Err(Outcome::Drop);
    }
    match f.proto {
        PROTO_TCP => tcp(ctx, f)?,
        PROTO_UDP => udp(ctx, f)?,
        _ => return Err(Outcome::Drop),
    }
    swap_macs(ctx)?;
    Ok(())
}

/// `lo`'s ifindex in every network namespace (the kernel's
/// `LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

/// The redirect verdict that sends an answer back where the original came
/// from: out of the interface at ingress, into the local stack at egress.
///
/// Except on `lo`, where egress answers go out of `lo` again, like every
/// packet on it, and come back in through its own loop. Handing them to
/// the stack with `BPF_F_INGRESS` drops the skb's route, and IPv4 then
/// routes the input afresh: a 127.0.0.0/8 destination arriving that way is
/// a martian (`ip_route_input_slow`, unless `route_localnet`) and is
/// dropped, so `reset` on IPv4 loopback acted like `blackhole` (IPv6 has no
/// such check). Sent out of `lo`, the answer keeps the original's local
/// route, crosses our egress hook (a RST or an ICMP error: it passes) and
/// is delivered as any loopback packet.
#[inline(always)]
pub fn send_back(ctx: &TcContext, hook: Hook) -> i32 {
    // SAFETY: `skb` is the valid context pointer of this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let flags = match hook {
        Hook::Egress if ifindex != LOOPBACK_IFINDEX => u64::from(BPF_F_INGRESS),
        _ => 0,
    };
    // SAFETY: helper without preconditions.
    unsafe { bpf_redirect(ifindex, flags) as i32 }
}

#[inline(always)]
fn tcp(ctx: &TcContext, f: &Flow) -> Result<(), Outcome> {
    let mut old = Words([0u8; TCP_LEN]);
    if !ctx.load_into(f.l4, &mut old) {
        return Err(Outcome::Drop);
    }
    if old.0[TCP_FLAGS] & TCP_RST != 0 {
        return Err(Outcome::Pass);
    }
    let mut new = Words([0u8; TCP_LEN]);
    answer::rst(&old.0, f.l4_len(), &mut new.0)?;
    // Same checksum bytes on both sides: they stay out of the diff.
    new.0[TCP_CHECK] = old.0[TCP_CHECK];
    new.0[TCP_CHECK + 1] = old.0[TCP_CHECK + 1];
    let d = csum::diff(&mut old, &mut new)?;
    ok(Packet::store(ctx, f.l4, &new))?;
    ctx.l4_csum_replace(f.l4 + TCP_CHECK, 0, u64::from(d), 0)
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
    let new_end = f.l4 + TCP_LEN;
    let old_l4 = (f.l4_len() as u16).to_be();
    let new_l4 = (TCP_LEN as u16).to_be();
    // SAFETY: valid context; flags must be 0.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, new_end as u32, 0) } != 0 {
        return Err(());
    }
    ctx.l4_csum_replace(
        f.l4 + TCP_CHECK,
        u64::from(old_l4),
        u64::from(new_l4),
        u64::from(BPF_F_PSEUDO_HDR) | 2,
    )
    .map_err(|_| ())?;
    if f.v6 {
        let len = ((new_end - f.l3 - IPV6_LEN) as u16).to_be();
        ok(Packet::store(ctx, f.l3 + IPV6_PAYLOAD_LEN, &len))
    } else {
        let old_tot = ((f.l3_end - f.l3) as u16).to_be();
        let new_tot = ((new_end - f.l3) as u16).to_be();
        ok(Packet::store(ctx, f.l3 + IPV4_TOT_LEN, &new_tot))?;
        ctx.l3_csum_replace(f.l3 + IPV4_CHECK, u64::from(old_tot), u64::from(new_tot), 2)
            .map_err(|_| ())
    }
}

/// ICMP / ICMPv6 port unreachable: [eth][new IP][ICMP][quoted IP + UDP
/// headers], built by `answer::unreach`, then put in place of the datagram.
#[inline(always)]
fn udp(ctx: &TcContext, f: &Flow) -> Result<(), ()> {
    let b = answer::scratch()?;
    answer::unreach(ctx, f, b)?;
    let stored = if f.v6 {
        make_room(ctx, f.l3 + UNREACH6_LEN - UNREACH6_ROOM, UNREACH6_ROOM)?;
        answer::store::<_, UNREACH6_LEN>(ctx, f.l3, b)
    } else {
        make_room(ctx, f.l3 + UNREACH4_LEN - UNREACH4_ROOM, UNREACH4_ROOM)?;
        answer::store::<_, UNREACH4_LEN>(ctx, f.l3, b)
    };
    ok(stored)
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
pub fn swap_addrs(ctx: &TcContext, f: &Flow) -> Result<(), ()> {
    if f.v6 {
        const A: usize = IPV6_ADDRS_LEN / 2;
        let a: [u8; IPV6_ADDRS_LEN] = Packet::load(ctx, f.l3 + IPV6_SADDR).ok_or(())?;
        let mut s = [0u8; IPV6_ADDRS_LEN];
        for i in 0..A {
            s[i] = a[A + i];
            s[A + i] = a[i];
        }
        ok(Packet::store(ctx, f.l3 + IPV6_SADDR, &s))
    } else {
        const A: usize = IPV4_ADDRS_LEN / 2;
        let a: [u8; IPV4_ADDRS_LEN] = Packet::load(ctx, f.l3 + IPV4_SADDR).ok_or(())?;
        let mut s = [0u8; IPV4_ADDRS_LEN];
        for i in 0..A {
            s[i] = a[A + i];
            s[A + i] = a[i];
        }
        ok(Packet::store(ctx, f.l3 + IPV4_SADDR, &s))
    }
}

/// The answer goes back where the original came from: at ingress the
/// remote MAC becomes the destination; at egress our own MAC does, so the
/// local stack takes the answer as addressed to it.
#[inline(always)]
pub fn swap_macs(ctx: &TcContext) -> Result<(), ()> {
    let m: [u8; ETH_MACS_LEN] = Packet::load(ctx, 0).ok_or(())?;
    let mut s = [0u8; ETH_MACS_LEN];
    for i in 0..MAC_LEN {
        s[i] = m[MAC_LEN + i];
        s[MAC_LEN + i] = m[i];
    }
    ok(Packet::store(ctx, 0, &s))
}

#[inline(always)]
fn ok(done: bool) -> Result<(), ()> {
    if done { Ok(()) } else { Err(()) }
}
