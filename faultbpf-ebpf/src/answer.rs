//! The headers of a `reset` answer built from scratch: a RST, an ICMP or
//! ICMPv6 port unreachable header, and the IP header in front of them,
//! with complete checksums. The XDP path (`xdp_reset.rs`) writes them; the
//! rules (which RST, what is quoted) are those of the tc path in
//! `reset.rs`, which instead rewrites the skb in place with incremental
//! checksum updates because a locally sent skb may still be
//! CHECKSUM_PARTIAL there.
//!
//! Why from scratch on XDP: an XDP buffer has no checksum state, and the
//! frame XDP_TX sends is received as a plain packet, so every checksum in
//! it must be complete. On veth the original may still carry a partial
//! TCP checksum (the sender offloaded it), so an incremental update of it
//! would be wrong; a header-only answer with fresh checksums never is.
//!
//! Headers live in 4-byte aligned `Words` and are summed with
//! `bpf_csum_diff` (`csum.rs`, shared with the tc path) in native byte
//! order; only the pseudo-header is summed in plain arithmetic, from the
//! addresses the parser already holds. Summing byte pairs in BPF code
//! instead would unroll into hundreds of spilled registers.

use crate::{
    csum::{self, Words},
    parse::{Flow, TCP_HDR_LEN, UDP_HDR_LEN},
};

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
pub const IPV4_HDR_LEN: usize = 20;
pub const IPV6_HDR_LEN: usize = 40;
pub const ICMP_HDR_LEN: usize = 8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const REPLY_TTL: u8 = 64;

/// What an ICMP error quotes of an IPv4/UDP datagram: its IP header (no
/// options) and the 8-byte UDP header.
pub const QUOTE4: usize = IPV4_HDR_LEN + UDP_HDR_LEN;
/// The same for IPv6 (no extension headers).
pub const QUOTE6: usize = IPV6_HDR_LEN + UDP_HDR_LEN;

/// Multicast and broadcast destinations are never answered (IPv4
/// broadcast on the local subnet is not known here; 255.255.255.255 is
/// caught as >= 224).
#[inline(always)]
pub fn multicast(f: &Flow) -> bool {
    if f.v6 {
        f.daddr.0[0] == 0xff
    } else {
        f.daddr.0[12] >= 224
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
pub fn rst(o: &[u8; TCP_HDR_LEN], l4_len: usize, n: &mut [u8; TCP_HDR_LEN]) -> Result<(), ()> {
    let flags = o[13];
    if flags & TCP_RST != 0 {
        return Err(());
    }
    let doff = usize::from(o[12] >> 4) * 4;
    let payload = l4_len.checked_sub(doff).ok_or(())? as u32;
    n[0] = o[2];
    n[1] = o[3];
    n[2] = o[0];
    n[3] = o[1];
    if flags & TCP_ACK != 0 {
        n[4] = o[8];
        n[5] = o[9];
        n[6] = o[10];
        n[7] = o[11];
        n[13] = TCP_RST;
    } else {
        let seq = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
        let a = seq
            .wrapping_add(payload)
            .wrapping_add(u32::from(flags & TCP_SYN != 0))
            .wrapping_add(u32::from(flags & TCP_FIN != 0))
            .to_be_bytes();
        n[8] = a[0];
        n[9] = a[1];
        n[10] = a[2];
        n[11] = a[3];
        n[13] = TCP_RST | TCP_ACK;
    }
    n[12] = 5 << 4;
    Ok(())
}

/// Writes into `w` (zeroed by the caller) the IPv4 header of an answer
/// from `f`'s destination to its source, carrying `payload` bytes of
/// protocol `proto`, checksum included.
#[inline(always)]
pub fn ipv4_reply(
    f: &Flow,
    proto: u8,
    payload: usize,
    w: &mut Words<IPV4_HDR_LEN>,
) -> Result<(), ()> {
    let tot = ((IPV4_HDR_LEN + payload) as u16).to_be_bytes();
    w.0[0] = 0x45;
    w.0[2] = tot[0];
    w.0[3] = tot[1];
    w.0[8] = REPLY_TTL;
    w.0[9] = proto;
    for i in 0..4 {
        w.0[12 + i] = f.daddr.0[12 + i];
        w.0[16 + i] = f.saddr.0[12 + i];
    }
    let c = csum::finish(csum::sum(w, 0)?);
    w.0[10] = c[0];
    w.0[11] = c[1];
    Ok(())
}

/// Writes into `w` (zeroed by the caller) the IPv6 header of an answer
/// from `f`'s destination to its source, carrying `payload` bytes of
/// protocol `proto`.
#[inline(always)]
pub fn ipv6_reply(f: &Flow, proto: u8, payload: usize, w: &mut Words<IPV6_HDR_LEN>) {
    let plen = (payload as u16).to_be_bytes();
    w.0[0] = 0x60;
    w.0[4] = plen[0];
    w.0[5] = plen[1];
    w.0[6] = proto;
    w.0[7] = REPLY_TTL;
    w.0[8..24].copy_from_slice(&f.daddr.0);
    w.0[24..40].copy_from_slice(&f.saddr.0);
}

/// Unfolded sum, in native byte order as `csum::sum` makes it, of the
/// pseudo-header of an answer to `f` (addresses, protocol and `len` bytes
/// of L4), IPv4 or IPv6. The sum does not depend on the order of the
/// addresses, nor on how the words are grouped.
#[inline(always)]
pub fn pseudo_sum(f: &Flow, proto: u8, len: usize) -> u32 {
    let l = (len as u16).to_be_bytes();
    let first = if f.v6 { 0 } else { 12 };
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

/// ICMP (type 3, code 3) or ICMPv6 (type 1, code 4) port unreachable
/// header whose checksum covers `seed` (the ICMPv6 pseudo-header sum, 0
/// for ICMP) plus `quote`, the unfolded sum of the quoted bytes.
#[inline(always)]
pub fn unreach(v6: bool, seed: u32, quote: u32) -> Result<Words<ICMP_HDR_LEN>, ()> {
    let mut w = Words([0u8; ICMP_HDR_LEN]);
    if v6 {
        w.0[0] = 1;
        w.0[1] = 4;
    } else {
        w.0[0] = 3;
        w.0[1] = 3;
    }
    let c = csum::finish(csum::sum(&mut w, add(seed, quote))?);
    w.0[2] = c[0];
    w.0[3] = c[1];
    Ok(w)
}

/// One's complement addition of two unfolded sums.
#[inline(always)]
pub fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(u32::from(carry))
}
