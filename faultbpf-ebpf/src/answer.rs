//! The one builder of `reset` answers, for both hooks: the RST header that
//! answers a TCP segment, and the whole [IP][ICMP port unreachable][quote]
//! that answers a UDP datagram (and, for XDP, a whole [IP][RST]), built in
//! this CPU's scratch buffer with complete checksums. The hooks differ only
//! in how they make room in the packet and send it back
//! (`fault/reset.rs`, `fault/reset/xdp.rs`).
//!
//! Why ICMP and XDP answers are built from scratch: ICMP is never offloaded,
//! and an XDP buffer has no checksum state (the frame XDP_TX sends is
//! received as a plain packet, and on veth the original may still carry a
//! partial TCP checksum), so a header-only answer with fresh checksums is
//! always right. The tc RST alone is an in-place rewrite with incremental
//! checksum updates, because a locally sent skb may still be
//! CHECKSUM_PARTIAL there.
//!
//! Answers are built in the per-CPU `SCRATCH` buffer, not on the stack: the
//! tc programs are close to the verifier's 512-byte stack limit. Checksums
//! are summed with `bpf_csum_diff` (`csum.rs`) in native byte order; only
//! the pseudo-header is summed in plain arithmetic, from the addresses the
//! parser already holds. Summing byte pairs in BPF code instead would
//! unroll into hundreds of spilled registers.

use faultbpf_common::PROTO_TCP;

use crate::{
    csum,
    flow::{Flow, MAPPED_V4},
    hdr::{
        ICMP_CHECK, ICMP_CODE, ICMP_DEST_UNREACH, ICMP_LEN, ICMP_PORT_UNREACH, ICMP_TYPE,
        ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_CHECK,
        IPV4_DADDR, IPV4_LEN, IPV4_PROTO, IPV4_SADDR, IPV4_TOT_LEN, IPV4_TTL, IPV4_VIHL_PLAIN,
        IPV6_DADDR, IPV6_HOP_LIMIT, IPV6_LEN, IPV6_NEXT_HDR, IPV6_PAYLOAD_LEN, IPV6_SADDR,
        IPV6_VERSION, REPLY_TTL, TCP_ACK, TCP_ACK_SEQ, TCP_CHECK, TCP_DOFF, TCP_FIN, TCP_FLAGS,
        TCP_LEN, TCP_RST, TCP_SEQ, TCP_SYN, UDP_LEN,
    },
    maps::{SCRATCH, SCRATCH_LEN},
    packet::Packet,
};

/// What an ICMP error quotes of an IPv4/UDP datagram: its IP header (no
/// options) and the 8-byte UDP header.
const QUOTE4: usize = IPV4_LEN + UDP_LEN;
/// The same for IPv6 (no extension headers).
const QUOTE6: usize = IPV6_LEN + UDP_LEN;
/// The answers' lengths from the IP header on.
pub const UNREACH4_LEN: usize = IPV4_LEN + ICMP_LEN + QUOTE4;
pub const UNREACH6_LEN: usize = IPV6_LEN + ICMP_LEN + QUOTE6;
pub const RST4_LEN: usize = IPV4_LEN + TCP_LEN;
pub const RST6_LEN: usize = IPV6_LEN + TCP_LEN;
/// Room an ICMP answer opens in front of the quoted headers.
pub const UNREACH4_ROOM: usize = IPV4_LEN + ICMP_LEN;
pub const UNREACH6_ROOM: usize = IPV6_LEN + ICMP_LEN;
const _: () = assert!(UNREACH6_LEN <= SCRATCH_LEN && RST6_LEN <= SCRATCH_LEN);

/// This CPU's scratch buffer for building answers.
pub type Scratch = [u8; SCRATCH_LEN];

/// Multicast and broadcast destinations are never answered (IPv4
/// broadcast on the local subnet is not known here; 255.255.255.255 is
/// caught as >= 224).
#[inline(always)]
pub fn multicast(f: &Flow) -> bool {
    if f.v6 {
        f.daddr.0[0] == 0xff
    } else {
        f.daddr.0[MAPPED_V4] >= 224
    }
}

/// Writes into `n` (zeroed by the caller) the header of the RST that
/// answers TCP header `o` of a segment with `l4_len` bytes from its header
/// on; checksum 0, no options:
/// - no ACK in `o` (a SYN): RST|ACK acking everything the segment
///   carried, so `connect()` fails at once with ECONNREFUSED;
/// - with an ACK: RST whose seq is that ack number, exactly the sender's
///   next expected byte, so its next call fails with ECONNRESET (RFC 5961
///   accepts only that seq without a challenge).
///
/// `Err` for a RST (never answered) or a data offset past the segment.
#[inline(always)]
pub fn rst(o: &[u8; TCP_LEN], l4_len: usize, n: &mut [u8; TCP_LEN]) -> Result<(), ()> {
    let flags = o[TCP_FLAGS];
    if flags & TCP_RST != 0 {
        return Err(());
    }
    let doff = usize::from(o[TCP_DOFF] >> 4) * 4;
    let payload = l4_len.checked_sub(doff).ok_or(())? as u32;
    // Ports swapped.
    n[0] = o[2];
    n[1] = o[3];
    n[2] = o[0];
    n[3] = o[1];
    if flags & TCP_ACK != 0 {
        for i in 0..4 {
            n[TCP_SEQ + i] = o[TCP_ACK_SEQ + i];
        }
        n[TCP_FLAGS] = TCP_RST;
    } else {
        let seq = u32::from_be_bytes([o[TCP_SEQ], o[TCP_SEQ + 1], o[TCP_SEQ + 2], o[TCP_SEQ + 3]]);
        let a = seq
            .wrapping_add(payload)
            .wrapping_add(u32::from(flags & TCP_SYN != 0))
            .wrapping_add(u32::from(flags & TCP_FIN != 0))
            .to_be_bytes();
        for i in 0..4 {
            n[TCP_ACK_SEQ + i] = a[i];
        }
        n[TCP_FLAGS] = TCP_RST | TCP_ACK;
    }
    n[TCP_DOFF] = ((TCP_LEN / 4) as u8) << 4;
    Ok(())
}

/// This CPU's scratch buffer, zeroed.
#[inline(always)]
pub fn scratch() -> Result<&'static mut Scratch, ()> {
    let p = SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: a per-CPU value is only touched by this CPU, and a program
    // run is not preempted by another run of itself on the same CPU.
    let b = unsafe { &mut (*p).0 };
    b.fill(0);
    Ok(b)
}

/// `N` bytes of the scratch buffer from `OFF`, as an array, so helpers get
/// constant sizes and the indices need no run-time checks.
#[inline(always)]
pub fn at<const OFF: usize, const N: usize>(b: &mut Scratch) -> &mut [u8; N] {
    const { assert!(OFF + N <= SCRATCH_LEN) };
    // SAFETY: OFF + N is within the buffer (checked at compile time), and
    // [u8; N] has alignment 1.
    unsafe { &mut *b.as_mut_ptr().add(OFF).cast::<[u8; N]>() }
}

/// Writes the answer's IPv4 header at the start of `b`: from `f`'s
/// destination to its source, carrying `payload` bytes of `proto`,
/// checksum included.
#[inline(always)]
fn ipv4_header(f: &Flow, proto: u8, payload: usize, b: &mut Scratch) -> Result<(), ()> {
    let tot = ((IPV4_LEN + payload) as u16).to_be_bytes();
    b[0] = IPV4_VIHL_PLAIN;
    b[IPV4_TOT_LEN] = tot[0];
    b[IPV4_TOT_LEN + 1] = tot[1];
    b[IPV4_TTL] = REPLY_TTL;
    b[IPV4_PROTO] = proto;
    for i in 0..4 {
        b[IPV4_SADDR + i] = f.daddr.0[MAPPED_V4 + i];
        b[IPV4_DADDR + i] = f.saddr.0[MAPPED_V4 + i];
    }
    let c = csum::finish(csum::sum_raw(b.as_mut_ptr(), IPV4_LEN as u32, 0)?);
    b[IPV4_CHECK] = c[0];
    b[IPV4_CHECK + 1] = c[1];
    Ok(())
}

/// Writes the answer's IPv6 header at the start of `b`: from `f`'s
/// destination to its source, carrying `payload` bytes of `proto`.
#[inline(always)]
fn ipv6_header(f: &Flow, proto: u8, payload: usize, b: &mut Scratch) {
    let plen = (payload as u16).to_be_bytes();
    b[0] = IPV6_VERSION;
    b[IPV6_PAYLOAD_LEN] = plen[0];
    b[IPV6_PAYLOAD_LEN + 1] = plen[1];
    b[IPV6_NEXT_HDR] = proto;
    b[IPV6_HOP_LIMIT] = REPLY_TTL;
    for i in 0..16 {
        b[IPV6_SADDR + i] = f.daddr.0[i];
        b[IPV6_DADDR + i] = f.saddr.0[i];
    }
}

/// Unfolded sum, in native byte order as `csum::sum` makes it, of the
/// pseudo-header of an answer to `f` (addresses, protocol and `len` bytes
/// of L4), IPv4 or IPv6. The sum does not depend on the order of the
/// addresses, nor on how the words are grouped.
#[inline(always)]
fn pseudo_sum(f: &Flow, proto: u8, len: usize) -> u32 {
    let l = (len as u16).to_be_bytes();
    let first = if f.v6 { 0 } else { MAPPED_V4 };
    let mut s: u64 = 0;
    for i in 0..4 {
        if 4 * i >= first {
            s += u64::from(word(&f.saddr.0, 4 * i)) + u64::from(word(&f.daddr.0, 4 * i));
        }
    }
    // The words [0, 0, len_hi, len_lo] and [0, 0, 0, proto] (IPv6), or
    // [0, proto, len_hi, len_lo] (IPv4): the same sum either way.
    s += u64::from(u32::from_ne_bytes([0, proto, l[0], l[1]]));
    let s = (s & 0xffff_ffff) + (s >> 32);
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}

#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

/// Builds in `b` the ICMP (type 3, code 3) or ICMPv6 (type 1, code 4) port
/// unreachable that answers UDP datagram `f`, quoting its IP and UDP
/// headers read from the packet: `UNREACH4_LEN` or `UNREACH6_LEN` bytes
/// from the new IP header on. `Err` for IPv4 options or IPv6 extension
/// headers (not quoted: such a datagram is dropped unanswered).
#[inline(always)]
pub fn unreach<P: Packet>(ctx: &P, f: &Flow, b: &mut Scratch) -> Result<(), ()> {
    if f.v6 {
        if f.l4 != f.l3 + IPV6_LEN {
            return Err(());
        }
        if !ctx.load_into(f.l3, at::<UNREACH6_ROOM, QUOTE6>(b)) {
            return Err(());
        }
        let icmp_len = ICMP_LEN + QUOTE6;
        ipv6_header(f, IPPROTO_ICMPV6, icmp_len, b);
        let icmp = at::<IPV6_LEN, { ICMP_LEN + QUOTE6 }>(b);
        icmp[ICMP_TYPE] = ICMPV6_DEST_UNREACH;
        icmp[ICMP_CODE] = ICMPV6_PORT_UNREACH;
        let seed = pseudo_sum(f, IPPROTO_ICMPV6, icmp_len);
        let c = csum::finish(csum::sum_raw(icmp.as_mut_ptr(), icmp_len as u32, seed)?);
        icmp[ICMP_CHECK] = c[0];
        icmp[ICMP_CHECK + 1] = c[1];
    } else {
        if f.l4 != f.l3 + IPV4_LEN {
            return Err(());
        }
        if !ctx.load_into(f.l3, at::<UNREACH4_ROOM, QUOTE4>(b)) {
            return Err(());
        }
        let icmp_len = ICMP_LEN + QUOTE4;
        ipv4_header(f, IPPROTO_ICMP, icmp_len, b)?;
        let icmp = at::<IPV4_LEN, { ICMP_LEN + QUOTE4 }>(b);
        icmp[ICMP_TYPE] = ICMP_DEST_UNREACH;
        icmp[ICMP_CODE] = ICMP_PORT_UNREACH;
        let c = csum::finish(csum::sum_raw(icmp.as_mut_ptr(), icmp_len as u32, 0)?);
        icmp[ICMP_CHECK] = c[0];
        icmp[ICMP_CHECK + 1] = c[1];
    }
    Ok(())
}

/// Builds in `b` the whole RST (IP header, then a TCP header without
/// options, checksums complete) that answers segment `f`, whose TCP header
/// is `o`: `RST4_LEN` or `RST6_LEN` bytes from the new IP header on.
#[inline(always)]
pub fn rst_packet(f: &Flow, o: &[u8; TCP_LEN], b: &mut Scratch) -> Result<(), ()> {
    let seed = pseudo_sum(f, PROTO_TCP, TCP_LEN);
    let tcp = if f.v6 {
        ipv6_header(f, PROTO_TCP, TCP_LEN, b);
        at::<IPV6_LEN, TCP_LEN>(b)
    } else {
        ipv4_header(f, PROTO_TCP, TCP_LEN, b)?;
        at::<IPV4_LEN, TCP_LEN>(b)
    };
    rst(o, f.l4_len(), tcp)?;
    let c = csum::finish(csum::sum_raw(tcp.as_mut_ptr(), TCP_LEN as u32, seed)?);
    tcp[TCP_CHECK] = c[0];
    tcp[TCP_CHECK + 1] = c[1];
    Ok(())
}

/// Stores the first `N` bytes of `b` at `off`.
#[inline(always)]
pub fn store<P: Packet, const N: usize>(ctx: &P, off: usize, b: &mut Scratch) -> bool {
    ctx.store(off, at::<0, N>(b))
}
