//! Ethernet > [802.1ad/802.1Q, up to two tags] > IPv4/IPv6 (+ up to
//! `IPV6_MAX_EXT` extension headers) > TCP/UDP, down to the ports and
//! addresses. A packet whose headers or length fields do not hold up
//! (truncated, a length past the frame, a length of 0 on a packet that is
//! not BIG TCP, too many tags or extension headers) is not parsed: it
//! passes untouched on every hook.
//!
//! One parser for both hooks: it reads through the [`Packet`] trait
//! (`packet.rs`), so tc and XDP match exactly the same packets. Offsets and
//! sizes come from `hdr.rs`.

use core::mem::{MaybeUninit, offset_of, size_of};

use faultbpf_common::{PROTO_TCP, PROTO_UDP};
use network_types::{eth::EtherType, ip::Ipv4Hdr};

use crate::{
    flow::{Addr, Flow},
    hdr::{
        ETH_LEN, ETH_MACS_LEN, IPV4_DADDR, IPV4_FRAG, IPV4_FRAG_OFFSET_MASK, IPV4_LEN, IPV4_PROTO,
        IPV4_SADDR, IPV4_TOT_LEN, IPV4_VIHL_PLAIN, IPV6_DADDR, IPV6_FIXED_LEN,
        IPV6_FRAG_OFFSET_MASK, IPV6_LEN, IPV6_NEXT_HDR, IPV6_PAYLOAD_LEN, IPV6_SADDR, NH_AUTH,
        NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, NH_ROUTING, PORTS_LEN, TCP_DOFF, TCP_LEN,
        UDP_LEN, VLAN_LEN,
    },
    packet::Packet,
};

/// IPv6 extension headers walked before TCP/UDP; a packet with more is not
/// matched (it passes, as everything not parsed completely does). RFC 8200
/// lists seven kinds, each once but destination options twice: 8 covers
/// any packet that follows it. Same on every hook (README: what is not
/// matched).
pub const IPV6_MAX_EXT: usize = 8;
/// VLAN tags read (802.1Q, 802.1ad): QinQ. A frame with more passes.
pub const VLAN_MAX: usize = 2;

/// The flow of a TCP or UDP packet (or of a non-first fragment of one);
/// `None` for anything else, including truncated headers.
#[inline(always)]
pub fn flow<P: Packet>(ctx: &P) -> Option<Flow> {
    // The common case in one copy: every helper call is a good share of
    // what a packet costs here (~40 ns each, measured with bpf_stats). When
    // the hook already says IPv4 (tc: skb->protocol), the copy skips the
    // Ethernet header; from a packet whose headers are not in the linear
    // part that is one piece to copy instead of two (~30 ns). Any other
    // hint is not trusted: the EtherType is read from the packet.
    let mut ether_type = if ctx.ether_type_hint() == Some(EtherType::Ipv4 as u16) {
        if let Some(ip) = ctx.load::<FastIp>(ETH_LEN)
            && let Some(decided) = fast_ipv4(ctx, &ip)
        {
            return decided;
        }
        EtherType::Ipv4 as u16
    } else {
        let mut head = MaybeUninit::<FastHead>::uninit();
        let p = head.as_mut_ptr();
        // SAFETY: `p` is valid for writes of a `FastHead`; the copy fills
        // the `FAST_LEN` bytes after `_pad` (written here), so on success
        // every field is initialised.
        let head = unsafe {
            (*p)._pad = [0; 2];
            let bytes = &mut *core::ptr::addr_of_mut!((*p).eth).cast::<[u8; FAST_LEN]>();
            ctx.load_into(0, bytes).then(|| head.assume_init())
        };
        match head {
            Some(h) => {
                if h.ether_type == EtherType::Ipv4 as u16
                    && let Some(decided) = fast_ipv4(ctx, &h.ip)
                {
                    return decided;
                }
                h.ether_type
            }
            None => ctx.load::<network_types::eth::EthHdr>(0)?.ether_type,
        }
    };
    // VLAN tags, 802.1Q or 802.1ad (QinQ), up to VLAN_MAX counting the one
    // the stack may already have taken out of the data: tc ingress sees a
    // QinQ frame with its outer tag in skb->vlan_tci, egress and XDP see
    // both tags in the data, and all must match the same frames.
    let mut l3 = ETH_LEN;
    let mut tags = ctx.offloaded_vlan_tag();
    for _ in 0..VLAN_MAX {
        if ether_type != EtherType::Ieee8021q as u16 && ether_type != EtherType::Ieee8021ad as u16 {
            break;
        }
        tags += 1;
        if tags > VLAN_MAX {
            return None;
        }
        let vlan: network_types::vlan::VlanHdr = ctx.load(l3)?;
        ether_type = vlan.ether_type;
        l3 += VLAN_LEN;
    }
    let mut f = if ether_type == EtherType::Ipv4 as u16 {
        ipv4(ctx, l3)?
    } else if ether_type == EtherType::Ipv6 as u16 {
        ipv6(ctx, l3)?
    } else {
        return None;
    };
    let need = match f.proto {
        PROTO_TCP => TCP_LEN,
        PROTO_UDP => UDP_LEN,
        _ => return None,
    };
    if f.fragment {
        // Not one of ours if its length did not hold up (`end`).
        return (f.l3_end != 0).then_some(f);
    }
    if f.l4 + need > f.l3_end {
        return None;
    }
    let ports: [u8; 4] = ctx.load(f.l4)?;
    f.sport_be = u16::from_ne_bytes([ports[0], ports[1]]);
    f.dport_be = u16::from_ne_bytes([ports[2], ports[3]]);
    Some(f)
}

/// Ethernet + IPv4 without options + the L4 ports.
const FAST_LEN: usize = ETH_LEN + IPV4_LEN + PORTS_LEN;

/// The first `FAST_LEN` bytes as fields, placed so each is aligned to its
/// size: the compiler then reads words, where from a byte array it read
/// and shifted one byte at a time.
#[repr(C, align(8))]
struct FastHead {
    _pad: [u8; 2],
    eth: [u8; 12],
    ether_type: u16,
    ip: FastIp,
}
const _: () = assert!(size_of::<FastHead>() == 2 + FAST_LEN);

/// An IPv4 header without options and the L4 ports, as fields.
#[repr(C, align(4))]
struct FastIp {
    ver_ihl: u8,
    _tos: u8,
    tot_len_be: u16,
    _id: u16,
    frag_off_be: u16,
    _ttl: u8,
    proto: u8,
    _check: u16,
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport_be: u16,
    dport_be: u16,
}
const _: () = assert!(size_of::<FastIp>() == IPV4_LEN + PORTS_LEN);
// The same places as in `Ipv4Hdr` (hdr.rs), then the ports.
const _: () = assert!(
    offset_of!(FastIp, tot_len_be) == IPV4_TOT_LEN
        && offset_of!(FastIp, frag_off_be) == IPV4_FRAG
        && offset_of!(FastIp, proto) == IPV4_PROTO
        && offset_of!(FastIp, saddr) == IPV4_SADDR
        && offset_of!(FastIp, daddr) == IPV4_DADDR
        && offset_of!(FastIp, sport_be) == IPV4_LEN
);
const _: () = assert!(offset_of!(FastHead, ether_type) - 2 == ETH_MACS_LEN);

/// The flow of an untagged IPv4 packet without options from its IP header
/// and ports: `Some(answer)` when this is such a packet, `None` to take the
/// general path (IP options, fragments, other protocols, ...).
#[inline(always)]
fn fast_ipv4<P: Packet>(ctx: &P, h: &FastIp) -> Option<Option<Flow>> {
    const L3: usize = ETH_LEN;
    const L4: usize = L3 + IPV4_LEN;
    let proto = h.proto;
    if h.ver_ihl != IPV4_VIHL_PLAIN
        || u16::from_be(h.frag_off_be) & IPV4_FRAG_OFFSET_MASK != 0
        || (proto != PROTO_TCP && proto != PROTO_UDP)
    {
        return None;
    }
    let l3_end = end(ctx, L3, usize::from(u16::from_be(h.tot_len_be)));
    let need = if proto == PROTO_TCP { TCP_LEN } else { UDP_LEN };
    if L4 + need > l3_end {
        return Some(None);
    }
    Some(Some(Flow {
        proto,
        v6: false,
        fragment: false,
        sport_be: h.sport_be,
        dport_be: h.dport_be,
        saddr: Addr::mapped(h.saddr),
        daddr: Addr::mapped(h.daddr),
        l3: L3,
        l4: L4,
        l3_end,
    }))
}

#[inline(always)]
fn ipv4<P: Packet>(ctx: &P, l3: usize) -> Option<Flow> {
    // One copy of the whole fixed header: every helper call counts on the
    // drop path.
    let ip: Ipv4Hdr = ctx.load(l3)?;
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < IPV4_LEN {
        return None;
    }
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    Some(Flow {
        proto: ip.proto,
        v6: false,
        fragment: u16::from_be_bytes(ip.frags) & IPV4_FRAG_OFFSET_MASK != 0,
        sport_be: 0,
        dport_be: 0,
        saddr: Addr::mapped(ip.src_addr),
        daddr: Addr::mapped(ip.dst_addr),
        l3,
        l4: l3 + ihl,
        l3_end: end(ctx, l3, tot_len),
    })
}

/// The fields of an IPv6 header before the addresses (`Ipv6Hdr`'s first
/// 8 bytes: the addresses are read straight into the flow's aligned ones).
#[repr(C)]
struct Ipv6Fixed {
    vcf: [u8; 4],
    payload_len: [u8; 2],
    next_hdr: u8,
    _hop_limit: u8,
}
const _: () = assert!(
    size_of::<Ipv6Fixed>() == IPV6_FIXED_LEN
        && offset_of!(Ipv6Fixed, payload_len) == IPV6_PAYLOAD_LEN
        && offset_of!(Ipv6Fixed, next_hdr) == IPV6_NEXT_HDR
);

#[inline(always)]
fn ipv6<P: Packet>(ctx: &P, l3: usize) -> Option<Flow> {
    let ip: Ipv6Fixed = ctx.load(l3)?;
    if ip.vcf[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes(ip.payload_len));
    let mut nh = ip.next_hdr;
    let mut l4 = l3 + IPV6_LEN;
    let mut fragment = false;
    for _ in 0..IPV6_MAX_EXT {
        match nh {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                let h: [u8; 2] = ctx.load(l4)?;
                nh = h[0];
                l4 += (usize::from(h[1]) + 1) * 8;
            }
            NH_AUTH => {
                let h: [u8; 2] = ctx.load(l4)?;
                nh = h[0];
                l4 += (usize::from(h[1]) + 2) * 4;
            }
            NH_FRAGMENT => {
                let h: [u8; 4] = ctx.load(l4)?;
                nh = h[0];
                l4 += 8;
                if u16::from_be_bytes([h[2], h[3]]) & IPV6_FRAG_OFFSET_MASK != 0 {
                    fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    let mut saddr = Addr([0; 16]);
    let mut daddr = Addr([0; 16]);
    if !ctx.load_into(l3 + IPV6_SADDR, &mut saddr.0)
        || !ctx.load_into(l3 + IPV6_DADDR, &mut daddr.0)
    {
        return None;
    }
    Some(Flow {
        proto: nh,
        v6: true,
        fragment,
        sport_be: 0,
        dport_be: 0,
        saddr,
        daddr,
        l3,
        l4,
        l3_end: end(ctx, l3 + IPV6_LEN, payload_len),
    })
}

/// End of the IP packet whose length field says `len` bytes from `start`;
/// 0 (which every caller's bounds check refuses) when the packet does not
/// hold that many: a length past the frame is malformed, and what is not
/// parsed completely passes. A length of 0 is a GSO super-packet over
/// 64 KiB (BIG TCP, the only packets that carry it), bounded by the skb; on
/// anything shorter it is malformed too. A plain value rather than an
/// `Option`: the extra branches cost the verifier twice the instructions.
#[inline(always)]
fn end<P: Packet>(ctx: &P, start: usize, len: usize) -> usize {
    let total = ctx.len();
    if len == 0 {
        if total > start + usize::from(u16::MAX) {
            total
        } else {
            0
        }
    } else if start + len > total {
        0
    } else {
        start + len
    }
}

/// Payload bytes of a TCP segment (after the header and its options).
#[inline(always)]
pub fn tcp_payload_len<P: Packet>(ctx: &P, f: &Flow) -> Option<usize> {
    if f.proto != PROTO_TCP || f.fragment {
        return None;
    }
    let b: u8 = ctx.load(f.l4 + TCP_DOFF)?;
    f.l4_len().checked_sub(usize::from(b >> 4) * 4)
}
