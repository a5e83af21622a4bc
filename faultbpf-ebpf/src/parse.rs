//! Ethernet > [802.1Q] > IPv4/IPv6 (+ up to `IPV6_MAX_EXT` extension
//! headers) > TCP/UDP, down to the ports and addresses.
//!
//! One parser for both hooks: it reads through the [`Packet`] trait, which
//! the tc context implements here and the XDP context in `xdp.rs` (as
//! cilium's `overloadable.h` hides the skb/xdp differences).
//!
//! Every read is a bounds-checked copy (`bpf_skb_load_bytes`,
//! `bpf_xdp_load_bytes`) that sees the whole packet, linear part or not.
//! Direct packet access alone would miss skbs whose headers are not in the
//! linear part (AF_PACKET senders such as trafgen): those would pass
//! unmatched. We do not use `bpf_skb_pull_data` either: on a cloned skb
//! (every TCP segment at egress) it copies the head just to be read.

use core::mem::{MaybeUninit, size_of};

use crate::maps::FLOW_COPY;
use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::TcContext};
use faultbpf_common::{PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::{EthHdr, EtherType},
    vlan::VlanHdr,
};

/// What the matcher and the actions need of a packet. Ports stay in
/// network byte order; IPv4 addresses are IPv4-mapped IPv6.
#[derive(Clone)]
pub struct Flow {
    pub proto: u8,
    pub v6: bool,
    /// A non-first fragment: no L4 header, ports are 0.
    pub fragment: bool,
    pub sport_be: u16,
    pub dport_be: u16,
    pub saddr: Addr,
    pub daddr: Addr,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Where the IP packet ends by its own length field, so Ethernet
    /// padding is never taken for data.
    pub l3_end: usize,
}

/// An IPv6 address (IPv4 as IPv4-mapped). Aligned so the compiler moves it
/// in words: as a plain byte array every copy of a flow went byte by byte,
/// some 100 instructions per packet.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Addr(pub [u8; 16]);

impl Addr {
    /// `::ffff:a.b.c.d`, built as words.
    #[inline(always)]
    fn mapped(v4: [u8; 4]) -> Self {
        let words = [
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes(v4),
        ];
        // SAFETY: [u32; 4] and [u8; 16] have the same size, and any bytes
        // are a valid [u8; 16].
        Self(unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) })
    }
}

impl Flow {
    /// The same flow, read back from a per-CPU map, so the verifier knows
    /// nothing of its values. It walks the code after this once per
    /// distinct state that code is reached in, and the parser hands over
    /// many (IPv4 or IPv6, VLAN or not, each extension-header path leaves
    /// other known offsets). For the answer builders of `reset` that was
    /// 94 k of the 102 k instructions checked per tc program, and most of
    /// faultbpf's start-up time; from unknown values every path after the
    /// first is pruned. The code using it checks every offset anyway.
    #[inline(always)]
    pub fn opaque(&self) -> Option<&'static Flow> {
        let p = FLOW_COPY.get_ptr_mut(0)?;
        // SAFETY: a per-CPU value is only touched by this CPU, and a
        // program run is not preempted by another run of itself on the
        // same CPU.
        unsafe { core::ptr::write_volatile(p, self.clone()) };
        // A second lookup, so the compiler cannot hand the values on.
        let p = FLOW_COPY.get_ptr(0)?;
        // SAFETY: as above; written just now.
        Some(unsafe { &*p })
    }

    /// Bytes from the L4 header to the end of the IP packet.
    #[inline(always)]
    pub fn l4_len(&self) -> usize {
        self.l3_end.saturating_sub(self.l4)
    }
}

/// What the parser needs of a hook's context.
pub trait Packet {
    /// Copies the `size_of::<T>()` bytes at `off` into `dst`; false past
    /// the end (`dst` is then unspecified).
    fn load_into<T>(&self, off: usize, dst: &mut T) -> bool;
    /// Length of the whole packet, from the Ethernet header on.
    fn len(&self) -> usize;
    /// The EtherType the hook already knows (network byte order), if any:
    /// when it is IPv4 the fast path reads no Ethernet header.
    fn ether_type_hint(&self) -> Option<u16> {
        None
    }

    /// A copy of the `size_of::<T>()` bytes at `off`; `None` past the end.
    /// `T` is plain bytes or integers at every call site.
    #[inline(always)]
    fn load<T>(&self, off: usize) -> Option<T> {
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: `load_into` only writes bytes into `v` (never reads it),
        // and on success has written all of it; every `T` read from a
        // packet is plain bytes or integers, valid for any bit pattern.
        unsafe {
            if !self.load_into(off, &mut *v.as_mut_ptr()) {
                return None;
            }
            Some(v.assume_init())
        }
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn load_into<T>(&self, off: usize, dst: &mut T) -> bool {
        // SAFETY: `skb` is this run's context and `dst` is writable for
        // size_of::<T>() bytes; the helper checks the range against the
        // whole skb. The length is a constant, as it requires.
        let r = unsafe {
            bpf_skb_load_bytes(
                self.skb.skb.cast(),
                off as u32,
                (dst as *mut T).cast(),
                size_of::<T>() as u32,
            )
        };
        r == 0
    }

    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }

    /// skb->protocol. At ingress the stack set it from the frame and took a
    /// VLAN tag out of the data (`skb_vlan_untag`); at egress a tag in the
    /// data shows as 802.1Q here. So when this says IPv4, offset 14 holds
    /// the IP header (`fast_ipv4` still checks its version and length).
    #[inline(always)]
    fn ether_type_hint(&self) -> Option<u16> {
        // SAFETY: `skb` is this run's context; `protocol` is readable by tc.
        Some(unsafe { (*self.skb.skb).protocol } as u16)
    }
}

pub const TCP_HDR_LEN: usize = 20;
pub const UDP_HDR_LEN: usize = 8;
/// IPv4 fragment offset bits; a non-first fragment carries no ports.
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Extension headers walked before giving up (as cilium's IPV6_MAX_HEADERS).
const IPV6_MAX_EXT: usize = 6;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
/// Offsets of the addresses in the IPv4 and IPv6 headers.
const IPV4_SADDR_OFF: usize = 12;
const IPV4_DADDR_OFF: usize = 16;
const IPV6_SADDR_OFF: usize = 8;
const IPV6_DADDR_OFF: usize = 24;
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AUTH: u8 = 51;
const NH_DEST_OPTS: u8 = 60;

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
        if let Some(ip) = ctx.load::<FastIp>(EthHdr::LEN)
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
            None => ctx.load::<EthHdr>(0)?.ether_type,
        }
    };
    let mut l3 = EthHdr::LEN;
    if ether_type == EtherType::Ieee8021q as u16 {
        let vlan: VlanHdr = ctx.load(l3)?;
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
    let ports: [u8; 4] = ctx.load(f.l4)?;
    f.sport_be = u16::from_ne_bytes([ports[0], ports[1]]);
    f.dport_be = u16::from_ne_bytes([ports[2], ports[3]]);
    Some(f)
}

/// Ethernet + IPv4 without options + the L4 ports.
const FAST_LEN: usize = EthHdr::LEN + IPV4_HDR_LEN + 4;

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
const _: () = assert!(size_of::<FastIp>() == IPV4_HDR_LEN + 4);

/// The flow of an untagged IPv4 packet without options from its IP header
/// and ports: `Some(answer)` when this is such a packet, `None` to take the
/// general path (IP options, fragments, other protocols, ...).
#[inline(always)]
fn fast_ipv4<P: Packet>(ctx: &P, h: &FastIp) -> Option<Option<Flow>> {
    const L3: usize = EthHdr::LEN;
    const L4: usize = L3 + IPV4_HDR_LEN;
    let proto = h.proto;
    if h.ver_ihl != 0x45
        || u16::from_be(h.frag_off_be) & IPV4_FRAG_OFFSET_MASK != 0
        || (proto != PROTO_TCP && proto != PROTO_UDP)
    {
        return None;
    }
    let l3_end = end(ctx, L3, usize::from(u16::from_be(h.tot_len_be)));
    let need = if proto == PROTO_TCP {
        TCP_HDR_LEN
    } else {
        UDP_HDR_LEN
    };
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

/// The addresses of an IPv4 header as IPv4-mapped IPv6.
#[inline(always)]
fn mapped_addrs(ip: &[u8; IPV4_HDR_LEN]) -> (Addr, Addr) {
    let v4 = |off: usize| [ip[off], ip[off + 1], ip[off + 2], ip[off + 3]];
    (
        Addr::mapped(v4(IPV4_SADDR_OFF)),
        Addr::mapped(v4(IPV4_DADDR_OFF)),
    )
}

#[inline(always)]
fn ipv4<P: Packet>(ctx: &P, l3: usize) -> Option<Flow> {
    // One copy of the whole fixed header: every helper call counts on the
    // drop path.
    let ip: [u8; IPV4_HDR_LEN] = ctx.load(l3)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_HDR_LEN {
        return None;
    }
    let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let (saddr, daddr) = mapped_addrs(&ip);
    Some(Flow {
        proto: ip[9],
        v6: false,
        fragment: u16::from_be_bytes([ip[6], ip[7]]) & IPV4_FRAG_OFFSET_MASK != 0,
        sport_be: 0,
        dport_be: 0,
        saddr,
        daddr,
        l3,
        l4: l3 + ihl,
        l3_end: end(ctx, l3, tot_len),
    })
}

#[inline(always)]
fn ipv6<P: Packet>(ctx: &P, l3: usize) -> Option<Flow> {
    let ip: [u8; 8] = ctx.load(l3)?;
    if ip[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let mut nh = ip[6];
    let mut l4 = l3 + IPV6_HDR_LEN;
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
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    fragment = true;
                    break;
                }
            }
            _ => break,
        }
    }
    let mut saddr = Addr([0; 16]);
    let mut daddr = Addr([0; 16]);
    if !ctx.load_into(l3 + IPV6_SADDR_OFF, &mut saddr.0)
        || !ctx.load_into(l3 + IPV6_DADDR_OFF, &mut daddr.0)
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
        l3_end: end(ctx, l3 + IPV6_HDR_LEN, payload_len),
    })
}

/// End of the IP packet: `start + len`, except that a length of 0 is a GSO
/// super-packet over 64 KiB (BIG TCP), bounded only by the skb.
#[inline(always)]
fn end<P: Packet>(ctx: &P, start: usize, len: usize) -> usize {
    if len == 0 { ctx.len() } else { start + len }
}

/// Payload bytes of a TCP segment (after the header and its options).
#[inline(always)]
pub fn tcp_payload_len<P: Packet>(ctx: &P, f: &Flow) -> Option<usize> {
    if f.proto != PROTO_TCP || f.fragment {
        return None;
    }
    let b: u8 = ctx.load(f.l4 + 12)?;
    f.l4_len().checked_sub(usize::from(b >> 4) * 4)
}
