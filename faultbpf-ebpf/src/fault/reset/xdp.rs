//! `reset` at XDP: the packet becomes its own answer and leaves through
//! the interface it came in on (`XDP_TX`), with the same effect as the tc
//! path (`fault/reset.rs`) and the same [`Outcome`]: a TCP `connect()`
//! fails with ECONNREFUSED, an open connection with ECONNRESET, a
//! connected UDP socket gets ECONNREFUSED.
//!
//! The answers are whole new headers from `answer.rs`:
//! - TCP: [L2, MACs swapped][new IPv4/IPv6 header][RST, no options], the
//!   rest cut off with `bpf_xdp_adjust_tail`. IPv4 options and IPv6
//!   extension headers of the original do not reappear.
//! - UDP: the tail is cut after the IP + UDP headers (the quote);
//!   `bpf_xdp_adjust_head` opens room in front of them for the new IP and
//!   ICMP headers (XDP guarantees 256 bytes of headroom), and the L2 header
//!   is written again at the new start. As on tc, UDP with IPv4 options or
//!   IPv6 extension headers is dropped unanswered.
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
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use faultbpf_common::{PROTO_TCP, PROTO_UDP};

use super::Outcome;
use crate::{
    answer::{self, RST4_LEN, RST6_LEN, UNREACH4_LEN, UNREACH4_ROOM, UNREACH6_LEN, UNREACH6_ROOM},
    flow::Flow,
    hdr::{ETH_LEN, MAC_LEN, TCP_FLAGS, TCP_LEN, TCP_RST, VLAN_LEN},
    packet::Packet,
    parse::VLAN_MAX,
};

/// Ethernet header with one VLAN tag, and with two (QinQ, the most `parse`
/// reads: `parse::VLAN_MAX`).
const ETH_VLAN_LEN: usize = ETH_LEN + VLAN_LEN;
const ETH_QINQ_LEN: usize = ETH_LEN + VLAN_MAX * VLAN_LEN;

/// Turns the packet into its answer, ready for `XDP_TX`.
#[inline(always)]
pub fn reply(ctx: &XdpContext, f: &Flow) -> Outcome {
    if f.fragment || answer::multicast(f) {
        return Outcome::Drop;
    }
    // Read before a head adjustment moves it. `parse` accepted the packet,
    // so it is longer than 22 bytes whatever its L2 header.
    let mut l2 = [0u8; ETH_QINQ_LEN];
    if !ctx.load_into(0, &mut l2) {
        return Outcome::Drop;
    }
    for i in 0..MAC_LEN {
        l2.swap(i, MAC_LEN + i);
    }
    let done = match f.proto {
        PROTO_TCP => match tcp(ctx, f) {
            Err(o) => return o,
            Ok(()) => true,
        },
        PROTO_UDP => udp(ctx, f).is_ok(),
        _ => false,
    };
    // `f.l3` is 14, 18 or 22: parse reads at most two VLAN tags.
    let done = done
        && if f.l3 == ETH_QINQ_LEN {
            ctx.store(0, &l2)
        } else if f.l3 == ETH_VLAN_LEN {
            let mut eth = [0u8; ETH_VLAN_LEN];
            eth.copy_from_slice(&l2[..ETH_VLAN_LEN]);
            ctx.store(0, &eth)
        } else {
            let mut eth = [0u8; ETH_LEN];
            eth.copy_from_slice(&l2[..ETH_LEN]);
            ctx.store(0, &eth)
        };
    if done {
        Outcome::Answered
    } else {
        Outcome::Drop
    }
}

/// The RST answer, over the original headers.
#[inline(always)]
fn tcp(ctx: &XdpContext, f: &Flow) -> Result<(), Outcome> {
    let mut o = [0u8; TCP_LEN];
    if !ctx.load_into(f.l4, &mut o) {
        return Err(Outcome::Drop);
    }
    if o[TCP_FLAGS] & TCP_RST != 0 {
        return Err(Outcome::Pass);
    }
    let b = answer::scratch()?;
    answer::rst_packet(f, &o, b)?;
    let done = if f.v6 {
        answer::store::<_, RST6_LEN>(ctx, f.l3, b) && set_len(ctx, f.l3 + RST6_LEN)
    } else {
        answer::store::<_, RST4_LEN>(ctx, f.l3, b) && set_len(ctx, f.l3 + RST4_LEN)
    };
    if done { Ok(()) } else { Err(Outcome::Drop) }
}

/// ICMP / ICMPv6 port unreachable: [L2][new IP][ICMP][its IP + UDP headers].
#[inline(always)]
fn udp(ctx: &XdpContext, f: &Flow) -> Result<(), ()> {
    let b = answer::scratch()?;
    answer::unreach(ctx, f, b)?;
    // The quoted headers stay in the packet, the new ones go in front, and
    // the whole answer is written over both.
    let done = if f.v6 {
        set_len(ctx, f.l3 + UNREACH6_LEN - UNREACH6_ROOM)
            && grow_head(ctx, UNREACH6_ROOM)
            && answer::store::<_, UNREACH6_LEN>(ctx, f.l3, b)
    } else {
        set_len(ctx, f.l3 + UNREACH4_LEN - UNREACH4_ROOM)
            && grow_head(ctx, UNREACH4_ROOM)
            && answer::store::<_, UNREACH4_LEN>(ctx, f.l3, b)
    };
    if done { Ok(()) } else { Err(()) }
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
