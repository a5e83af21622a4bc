//! Header sizes and field offsets, every one computed from the
//! `network-types` structs (`size_of`, `offset_of!`), so no code says
//! `l3 + 12` and a wrong number cannot hide in one file's copy of it.
//!
//! Offsets are relative to the start of their header; the parser records
//! where each header starts (`Flow::l3`, `Flow::l4`). Protocol numbers and
//! flag bits that no struct carries are here too, once.

use core::mem::{offset_of, size_of};

use network_types::{
    eth::EthHdr,
    icmp::{Icmpv4Hdr, Icmpv6Hdr},
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

/// Ethernet header without a VLAN tag.
pub const ETH_LEN: usize = size_of::<EthHdr>();
/// Both MAC addresses: destination then source.
pub const ETH_MACS_LEN: usize = offset_of!(EthHdr, ether_type);
/// One MAC address.
pub const MAC_LEN: usize = offset_of!(EthHdr, src_addr);
/// One 802.1Q / 802.1ad tag.
pub const VLAN_LEN: usize = size_of::<VlanHdr>();

pub const IPV4_LEN: usize = size_of::<Ipv4Hdr>();
pub const IPV4_TOT_LEN: usize = offset_of!(Ipv4Hdr, tot_len);
pub const IPV4_FRAG: usize = offset_of!(Ipv4Hdr, frags);
pub const IPV4_TTL: usize = offset_of!(Ipv4Hdr, ttl);
pub const IPV4_PROTO: usize = offset_of!(Ipv4Hdr, proto);
pub const IPV4_CHECK: usize = offset_of!(Ipv4Hdr, check);
pub const IPV4_SADDR: usize = offset_of!(Ipv4Hdr, src_addr);
pub const IPV4_DADDR: usize = offset_of!(Ipv4Hdr, dst_addr);
/// Both addresses, source then destination.
pub const IPV4_ADDRS_LEN: usize = IPV4_LEN - IPV4_SADDR;
/// Where the TOS byte (DSCP and the ECN bits) sits.
pub const IPV4_TOS: usize = offset_of!(Ipv4Hdr, tos);
/// Fragment offset bits of `frags`; a non-first fragment carries no ports.
pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

pub const IPV6_LEN: usize = size_of::<Ipv6Hdr>();
pub const IPV6_PAYLOAD_LEN: usize = offset_of!(Ipv6Hdr, payload_len);
pub const IPV6_NEXT_HDR: usize = offset_of!(Ipv6Hdr, next_hdr);
pub const IPV6_HOP_LIMIT: usize = offset_of!(Ipv6Hdr, hop_limit);
pub const IPV6_SADDR: usize = offset_of!(Ipv6Hdr, src_addr);
pub const IPV6_DADDR: usize = offset_of!(Ipv6Hdr, dst_addr);
/// Both addresses, source then destination.
pub const IPV6_ADDRS_LEN: usize = IPV6_LEN - IPV6_SADDR;
/// The first 8 bytes: version, traffic class, flow label, payload length,
/// next header and hop limit.
pub const IPV6_FIXED_LEN: usize = IPV6_SADDR;
/// Byte 1 of the header holds the low half of the traffic class, whose
/// ECN bits are bits 4-5 of that byte.
pub const IPV6_TCLASS_LO: usize = 1;

pub const TCP_LEN: usize = size_of::<TcpHdr>();
pub const TCP_SEQ: usize = offset_of!(TcpHdr, seq);
pub const TCP_ACK_SEQ: usize = offset_of!(TcpHdr, ack_seq);
/// The data offset nibble (and reserved bits): first byte of the bitfield.
pub const TCP_DOFF: usize = offset_of!(TcpHdr, _bitfield_1);
/// The flags byte: second byte of the bitfield.
pub const TCP_FLAGS: usize = TCP_DOFF + 1;
pub const TCP_CHECK: usize = offset_of!(TcpHdr, check);
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const UDP_LEN: usize = size_of::<UdpHdr>();
pub const UDP_CHECK: usize = offset_of!(UdpHdr, check);

/// Both ports, source then destination, at the start of TCP and UDP.
pub const PORTS_LEN: usize = offset_of!(UdpHdr, len);
const _: () = assert!(offset_of!(TcpHdr, seq) == PORTS_LEN);

pub const ICMP_LEN: usize = size_of::<Icmpv4Hdr>();
pub const ICMP_TYPE: usize = offset_of!(Icmpv4Hdr, type_);
pub const ICMP_CODE: usize = offset_of!(Icmpv4Hdr, code);
pub const ICMP_CHECK: usize = offset_of!(Icmpv4Hdr, check);
const _: () = assert!(size_of::<Icmpv6Hdr>() == ICMP_LEN);
const _: () = assert!(offset_of!(Icmpv6Hdr, check) == ICMP_CHECK);
/// ICMP destination unreachable, code port unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_PORT_UNREACH: u8 = 3;
/// ICMPv6 destination unreachable, code port unreachable.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PORT_UNREACH: u8 = 4;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// (TCP and UDP are `faultbpf_common::PROTO_TCP`/`PROTO_UDP`.)
/// IPv6 extension headers the parser walks.
pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_AUTH: u8 = 51;
pub const NH_DEST_OPTS: u8 = 60;
/// Fragment offset bits of an IPv6 fragment header's third and fourth byte.
pub const IPV6_FRAG_OFFSET_MASK: u16 = 0xfff8;

/// Version nibble and IHL of an IPv4 header without options.
pub const IPV4_VIHL_PLAIN: u8 = 0x45;
/// Version nibble of an IPv6 header, in place.
pub const IPV6_VERSION: u8 = 0x60;
/// TTL / hop limit of the answers faultbpf builds.
pub const REPLY_TTL: u8 = 64;

const _: () = assert!(ETH_LEN == 14 && VLAN_LEN == 4 && IPV4_LEN == 20 && IPV6_LEN == 40);
const _: () = assert!(TCP_LEN == 20 && UDP_LEN == 8 && ICMP_LEN == 8 && TCP_FLAGS == 13);
