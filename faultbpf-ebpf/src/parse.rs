//! Ethernet > [802.1Q] > IPv4/IPv6 (+ up to `IPV6_MAX_EXT` extension
//! headers) > TCP/UDP, down to the ports and addresses.
//!
//! Every read goes through `TcContext::load` (`bpf_skb_load_bytes`), which
//! bounds-checks against the whole skb, linear part or not. Direct packet
//! access alone would miss skbs whose headers are not in the linear part
//! (AF_PACKET senders such as trafgen): those would pass unmatched. We do
//! not use `bpf_skb_pull_data` either: on a cloned skb (every TCP segment
//! at egress) it copies the head just to be read.

use aya_ebpf::programs::TcContext;
use faultbpf_common::{PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
    vlan::VlanHdr,
};

/// What the matcher and the actions need of a packet. Ports stay in
/// network byte order; IPv4 addresses are IPv4-mapped IPv6.
pub struct Flow {
    pub proto: u8,
    pub v6: bool,
    /// A non-first fragment: no L4 header, ports are 0.
    pub fragment: bool,
    pub sport_be: u16,
    pub dport_be: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Where the IP packet ends by its own length field, so Ethernet
    /// padding is never taken for data.
    pub l3_end: usize,
}

impl Flow {
    /// Bytes from the L4 header to the end of the IP packet.
    #[inline(always)]
    pub fn l4_len(&self) -> usize {
        self.l3_end.saturating_sub(self.l4)
    }
}

pub const TCP_HDR_LEN: usize = 20;
pub const UDP_HDR_LEN: usize = 8;
/// IPv4 fragment offset bits; a non-first fragment carries no ports.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Extension headers walked before giving up (as cilium's IPV6_MAX_HEADERS).
const IPV6_MAX_EXT: usize = 6;
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AUTH: u8 = 51;
const NH_DEST_OPTS: u8 = 60;

/// The flow of a TCP or UDP packet (or of a non-first fragment of one);
/// `None` for anything else, including truncated headers.
#[inline(always)]
pub fn flow(ctx: &TcContext) -> Option<Flow> {
    let eth: EthHdr = ctx.load(0).ok()?;
    let mut ether_type = eth.ether_type;
    let mut l3 = EthHdr::LEN;
    if ether_type == EtherType::Ieee8021q as u16 {
        let vlan: VlanHdr = ctx.load(l3).ok()?;
        ether_type = vlan.ether_type;
        l3 += VlanHdr::LEN;
    }
    let mut f = if ether_type == EtherType::Ipv4 as u16 {
        ipv4(ctx, l3)?
    } else if ether_type == EtherType::Ipv6 as u16 {
        ipv6(ctx, l3)?
    } else {
        return None;
    };
    let need = match f.proto {
        PROTO_TCP => TCP_HDR_LEN,
        PROTO_UDP => UDP_HDR_LEN,
        _ => return None,
    };
    if f.fragment {
        return Some(f);
    }
    if f.l4 + need > f.l3_end {
        return None;
    }
    let ports: [u8; 4] = ctx.load(f.l4).ok()?;
    f.sport_be = u16::from_ne_bytes([ports[0], ports[1]]);
    f.dport_be = u16::from_ne_bytes([ports[2], ports[3]]);
    Some(f)
}

#[inline(always)]
fn ipv4(ctx: &TcContext, l3: usize) -> Option<Flow> {
    let ip: Ipv4Hdr = ctx.load(l3).ok()?;
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return None;
    }
    let tot_len = usize::from(u16::from_be_bytes(ip.tot_len));
    Some(Flow {
        proto: ip.proto,
        v6: false,
        fragment: u16::from_be_bytes(ip.frags) & IPV4_FRAG_OFFSET_MASK != 0,
        sport_be: 0,
        dport_be: 0,
        saddr: mapped(ip.src_addr),
        daddr: mapped(ip.dst_addr),
        l3,
        l4: l3 + ihl,
        l3_end: end(ctx, l3, tot_len),
    })
}

#[inline(always)]
fn ipv6(ctx: &TcContext, l3: usize) -> Option<Flow> {
    let ip: Ipv6Hdr = ctx.load(l3).ok()?;
    if ip.vcf[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes(ip.payload_len));
    let mut nh = ip.next_hdr;
    let mut l4 = l3 + Ipv6Hdr::LEN;
    let mut fragment = false;
    for _ in 0..IPV6_MAX_EXT {
        match nh {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                let h: [u8; 2] = ctx.load(l4).ok()?;
                nh = h[0];
                l4 += (usize::from(h[1]) + 1) * 8;
            }
            NH_AUTH => {
                let h: [u8; 2] = ctx.load(l4).ok()?;
                nh = h[0];
                l4 += (usize::from(h[1]) + 2) * 4;
            }
            NH_FRAGMENT => {
                let h: [u8; 4] = ctx.load(l4).ok()?;
                nh = h[0];
                l4 += 8;
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    Some(Flow {
        proto: nh,
        v6: true,
        fragment,
        sport_be: 0,
        dport_be: 0,
        saddr: ip.src_addr,
        daddr: ip.dst_addr,
        l3,
        l4,
        l3_end: end(ctx, l3 + Ipv6Hdr::LEN, payload_len),
    })
}

/// End of the IP packet: `start + len`, except that a length of 0 is a GSO
/// super-packet over 64 KiB (BIG TCP), bounded only by the skb.
#[inline(always)]
fn end(ctx: &TcContext, start: usize, len: usize) -> usize {
    if len == 0 {
        ctx.len() as usize
    } else {
        start + len
    }
}

/// `::ffff:a.b.c.d`
#[inline(always)]
fn mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// Payload bytes of a TCP segment (after the header and its options).
#[inline(always)]
pub fn tcp_payload_len(ctx: &TcContext, f: &Flow) -> Option<usize> {
    if f.proto != PROTO_TCP || f.fragment {
        return None;
    }
    let b: u8 = ctx.load(f.l4 + 12).ok()?;
    f.l4_len().checked_sub(usize::from(b >> 4) * 4)
}
