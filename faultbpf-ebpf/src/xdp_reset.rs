//! `reset` at XDP: the packet becomes its own answer and leaves through
//! the interface it came in on (`XDP_TX`), with the same effect as the tc
//! path (`reset.rs`): a TCP `connect()` fails with ECONNREFUSED, an open
//! connection with ECONNRESET, a connected UDP socket gets ECONNREFUSED.
//!
//! The headers are built from scratch (`answer.rs` says why):
//! - TCP: [L2, MACs swapped][new IPv4/IPv6 header][RST, no options], the
//!   rest cut off with `bpf_xdp_adjust_tail`. IPv4 options and IPv6
//!   extension headers of the original do not reappear.
//! - UDP: the tail is cut after the IP + UDP headers, which stay where
//!   they are and become the quote; `bpf_xdp_adjust_head` opens room in
//!   front of them for the new IP and ICMP headers (XDP guarantees 256
//!   bytes of headroom), and the L2 header is written again at the new
//!   start. As on tc, UDP with IPv4 options or IPv6 extension headers is
//!   dropped unanswered.
//!
//! A RST is never answered and passes; multicast, broadcast and fragments
//! are dropped unanswered.
//!
//! # veth
//!
//! In native mode on veth, `XDP_TX` queues the answer on the peer device's
//! XDP ring. That ring exists only while the peer runs in NAPI mode (it
//! has an XDP program, or GRO on), else the answer is dropped and counted
//! in our `xdp_tx_errors`; and the kernel wakes the peer's NAPI for it only
//! when the peer has an XDP program, so with GRO alone the answer waits for
//! unrelated traffic to the peer (seen on Linux 6.18). Native reset on veth
//! therefore needs an XDP program, any, on the peer. Generic mode sends the
//! answer as an skb and has no such condition.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use faultbpf_common::{PROTO_TCP, PROTO_UDP};

use crate::{
    answer::{
        self, ICMP_HDR_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPV4_HDR_LEN, IPV6_HDR_LEN,
        QUOTE4, QUOTE6, TCP_RST,
    },
    csum::{self, Words},
    parse::{Flow, Packet, TCP_HDR_LEN},
    xdp::store,
};

/// Ethernet header without (14) and with (18) one 802.1Q tag.
const ETH_LEN: usize = 14;
const ETH_VLAN_LEN: usize = 18;

/// Turns the packet into its answer and returns the verdict: `XDP_TX`
/// sends the answer, `XDP_PASS` lets a RST through, `XDP_DROP` drops what
/// cannot be answered (the rule's port must stay closed).
#[inline(always)]
pub fn reply(ctx: &XdpContext, f: &Flow) -> u32 {
    let Some(f) = f.opaque() else {
        return XDP_DROP;
    };
    if f.fragment || answer::multicast(f) {
        return XDP_DROP;
    }
    // Read before a head adjustment moves it. `parse` accepted the packet,
    // so it is longer than 18 bytes whatever its L2 header.
    let mut l2 = [0u8; ETH_VLAN_LEN];
    if !ctx.load_into(0, &mut l2) {
        return XDP_DROP;
    }
    for i in 0..6 {
        l2.swap(i, 6 + i);
    }
    let done = match f.proto {
        PROTO_TCP => match tcp(ctx, f) {
            Err(Rst) => return XDP_PASS,
            Ok(ok) => ok,
        },
        PROTO_UDP => udp(ctx, f),
        _ => false,
    };
    // `f.l3` is 14 or 18: parse reads at most one VLAN tag.
    let done = done
        && if f.l3 == ETH_VLAN_LEN {
            store(ctx, 0, &l2)
        } else {
            let mut eth = [0u8; ETH_LEN];
            eth.copy_from_slice(&l2[..ETH_LEN]);
            store(ctx, 0, &eth)
        };
    if done { XDP_TX } else { XDP_DROP }
}

/// The segment is a RST: let it through unanswered.
struct Rst;

/// The RST answer; `Ok(false)` when it could not be built.
#[inline(always)]
fn tcp(ctx: &XdpContext, f: &Flow) -> Result<bool, Rst> {
    let mut o = Words([0u8; TCP_HDR_LEN]);
    if !ctx.load_into(f.l4, &mut o) {
        return Ok(false);
    }
    if o.0[13] & TCP_RST != 0 {
        return Err(Rst);
    }
    let mut h = Words([0u8; TCP_HDR_LEN]);
    if answer::rst(&o.0, f.l4_len(), &mut h.0).is_err() {
        return Ok(false);
    }
    let seed = answer::pseudo_sum(f, IPPROTO_TCP, TCP_HDR_LEN);
    let Ok(s) = csum::sum(&mut h, seed) else {
        return Ok(false);
    };
    let c = csum::finish(s);
    h.0[16] = c[0];
    h.0[17] = c[1];
    let ip_len = if f.v6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    Ok(ip_header(ctx, f, IPPROTO_TCP, TCP_HDR_LEN)
        && store(ctx, f.l3 + ip_len, &h)
        && set_len(ctx, f.l3 + ip_len + TCP_HDR_LEN))
}

/// ICMP / ICMPv6 port unreachable for a UDP datagram without IPv4 options
/// or IPv6 extension headers: [L2][new IP][ICMP][its IP + UDP headers].
#[inline(always)]
fn udp(ctx: &XdpContext, f: &Flow) -> bool {
    let (ip_len, quote) = if f.v6 {
        (IPV6_HDR_LEN, QUOTE6)
    } else {
        (IPV4_HDR_LEN, QUOTE4)
    };
    if f.l4 != f.l3 + ip_len {
        return false;
    }
    let icmp_len = ICMP_HDR_LEN + quote;
    // The quote's sum, read while it sits at f.l3; the bytes stay in the
    // packet and end up right after the new ICMP header.
    let sums = if f.v6 {
        let mut q = Words([0u8; QUOTE6]);
        ctx.load_into(f.l3, &mut q)
            .then(|| csum::sum(&mut q, 0).ok())
            .flatten()
            .map(|q| (q, answer::pseudo_sum(f, IPPROTO_ICMPV6, icmp_len)))
    } else {
        let mut q = Words([0u8; QUOTE4]);
        ctx.load_into(f.l3, &mut q)
            .then(|| csum::sum(&mut q, 0).ok())
            .flatten()
            .map(|q| (q, 0))
    };
    let Some((quote_sum, seed)) = sums else {
        return false;
    };
    let Ok(icmp) = answer::unreach(f.v6, seed, quote_sum) else {
        return false;
    };
    let proto = if f.v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
    set_len(ctx, f.l3 + quote)
        && grow_head(ctx, ip_len + ICMP_HDR_LEN)
        && ip_header(ctx, f, proto, icmp_len)
        && store(ctx, f.l3 + ip_len, &icmp)
}

/// Writes the answer's IP header at `f.l3`.
#[inline(always)]
fn ip_header(ctx: &XdpContext, f: &Flow, proto: u8, payload: usize) -> bool {
    if f.v6 {
        let mut ip = Words([0u8; IPV6_HDR_LEN]);
        answer::ipv6_reply(f, proto, payload, &mut ip);
        store(ctx, f.l3, &ip)
    } else {
        let mut ip = Words([0u8; IPV4_HDR_LEN]);
        answer::ipv4_reply(f, proto, payload, &mut ip).is_ok() && store(ctx, f.l3, &ip)
    }
}

/// Cuts the packet to `len` bytes (every answer is at most as long as the
/// headers it replaces, so this only ever trims).
#[inline(always)]
fn set_len(ctx: &XdpContext, len: usize) -> bool {
    let delta = len as i64 - ctx.len() as i64;
    if delta > 0 {
        return false;
    }
    // SAFETY: valid context; a negative delta only trims, and the helper
    // refuses to cut below an Ethernet header.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) == 0 }
}

/// Opens `room` bytes in front of the packet, to be written by the caller.
#[inline(always)]
fn grow_head(ctx: &XdpContext, room: usize) -> bool {
    // SAFETY: valid context; the helper checks the headroom.
    unsafe { bpf_xdp_adjust_head(ctx.ctx, -(room as i32)) == 0 }
}
