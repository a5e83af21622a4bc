//! Hand-built Ethernet/IP/UDP frames, for traffic no socket API can produce:
//! packets with IP options or IPv6 extension headers, truncated headers and
//! runt frames (sent with [`crate::PacketSocket`] or trafgen).

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet II frame.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 packet with a correct header checksum. `options` must be a
/// multiple of 4 bytes (IHL = 5 + options/4); `frag` is the flags and
/// fragment-offset field (0 = a whole datagram). The total length covers
/// exactly `payload`.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    options: &[u8],
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "IPv4 options pad to 4 bytes");
    let header_len = 20 + options.len();
    let total = u16::try_from(header_len + payload.len()).unwrap();
    let mut packet = vec![
        0x40 | (header_len / 4) as u8, // version 4, IHL
        0,                             // DSCP/ECN
    ];
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
    packet.extend_from_slice(&frag.to_be_bytes());
    packet.extend_from_slice(&[64, protocol, 0, 0]); // TTL, protocol, checksum
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(options);
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// A UDP datagram for IPv4 with checksum 0 ("none", allowed over IPv4).
pub fn udp4(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    udp_header(src_port, dst_port, 0, payload)
}

/// A UDP datagram for IPv6 (where the checksum is mandatory), computed over
/// the pseudo-header of the final source and destination.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let datagram = udp_header(src_port, dst_port, 0, payload);
    let mut pseudo = Vec::with_capacity(40 + datagram.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&u32::try_from(datagram.len()).unwrap().to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&datagram);
    let sum = match checksum(&pseudo) {
        0 => 0xffff, // 0 means "no checksum", which IPv6 forbids
        sum => sum,
    };
    udp_header(src_port, dst_port, sum, payload)
}

fn udp_header(src_port: u16, dst_port: u16, sum: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).unwrap();
    let mut datagram = Vec::with_capacity(usize::from(len));
    datagram.extend_from_slice(&src_port.to_be_bytes());
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(&len.to_be_bytes());
    datagram.extend_from_slice(&sum.to_be_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

/// An IPv6 packet; `payload` starts with the header named by `next_header`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0];
    packet.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(&[next_header, 64]); // next header, hop limit
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    packet
}
