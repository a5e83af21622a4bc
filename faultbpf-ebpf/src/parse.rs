//! Ethernet > [802.1Q] > IPv4/IPv6 > TCP/UDP, down to the ports.
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

/// What the matcher needs of a packet. Ports stay in network byte order.
pub struct Flow {
    pub proto: u8,
    pub sport_be: u16,
    pub dport_be: u16,
}

const TCP_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;
/// IPv4 fragment offset bits; a non-first fragment carries no ports.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

/// The flow of a complete TCP or UDP packet; `None` for anything else
/// (other protocols, non-first fragments, truncated headers).
#[inline(always)]
pub fn flow(ctx: &TcContext) -> Option<Flow> {
    let eth: EthHdr = ctx.load(0).ok()?;
    let mut ether_type = eth.ether_type;
    let mut off = EthHdr::LEN;
    if ether_type == EtherType::Ieee8021q as u16 {
        let vlan: VlanHdr = ctx.load(off).ok()?;
        ether_type = vlan.ether_type;
        off += VlanHdr::LEN;
    }

    // `l3_end`: where the IP packet ends by its own length field, so that
    // Ethernet padding is never taken for a header.
    let (proto, l4, l3_end) = if ether_type == EtherType::Ipv4 as u16 {
        let ip: Ipv4Hdr = ctx.load(off).ok()?;
        let ihl = usize::from(ip.vihl & 0x0f) * 4;
        if ihl < Ipv4Hdr::LEN || u16::from_be_bytes(ip.frags) & IPV4_FRAG_OFFSET_MASK != 0 {
            return None;
        }
        (ip.proto, off + ihl, off + usize::from(u16::from_be_bytes(ip.tot_len)))
    } else if ether_type == EtherType::Ipv6 as u16 {
        // Fixed header only: an extension header means "not ours".
        let ip: Ipv6Hdr = ctx.load(off).ok()?;
        let end = off + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes(ip.payload_len));
        (ip.next_hdr, off + Ipv6Hdr::LEN, end)
    } else {
        return None;
    };

    let need = match proto {
        PROTO_TCP => TCP_HDR_LEN,
        PROTO_UDP => UDP_HDR_LEN,
        _ => return None,
    };
    // A length field of 0 is a GSO super-packet over 64 KiB (BIG TCP):
    // then only the skb's own length bounds the header.
    let end = if l3_end == off { ctx.len() as usize } else { l3_end };
    if l4 + need > end {
        return None;
    }
    let ports: [u8; 4] = ctx.load(l4).ok()?;
    Some(Flow {
        proto,
        sport_be: u16::from_ne_bytes([ports[0], ports[1]]),
        dport_be: u16::from_ne_bytes([ports[2], ports[3]]),
    })
}
