//! What the parser, the matcher and the answer builders need of a hook's
//! context, and its two implementations: the tc `TcContext` (an skb) and
//! the `XdpContext` (a driver buffer), as cilium's `overloadable.h` hides
//! the skb/xdp differences behind one set of names.
//!
//! Every read and write is a bounds-checked copy (`bpf_skb_load_bytes`,
//! `bpf_xdp_load_bytes`, and their `store` twins) that sees the whole
//! packet, linear part or not. Direct packet access alone would miss skbs
//! whose headers are not in the linear part (AF_PACKET senders such as
//! trafgen): those would pass unmatched. We do not use `bpf_skb_pull_data`
//! either: on a cloned skb (every TCP segment at egress) it copies the head
//! just to be read.
//!
//! # Minimum kernel version
//!
//! 5.18 for the XDP side (`bpf_xdp_load_bytes` / `bpf_xdp_store_bytes` /
//! `bpf_xdp_get_buff_len`), which need no verifier reasoning about
//! variable packet offsets (IPv6 extension headers).

use core::mem::{MaybeUninit, size_of};

use aya_ebpf::{
    helpers::{
        bpf_skb_load_bytes, bpf_skb_store_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    programs::{TcContext, XdpContext},
};

/// A hook's packet, read and written by offset from the Ethernet header.
pub trait Packet {
    /// Copies the `size_of::<T>()` bytes at `off` into `dst`; false past
    /// the end (`dst` is then unspecified).
    fn load_into<T>(&self, off: usize, dst: &mut T) -> bool;
    /// Writes the `size_of::<T>()` bytes of `v` at `off`; false past the
    /// end. `T` is plain bytes or integers at every call site.
    fn store<T>(&self, off: usize, v: &T) -> bool;
    /// Length of the whole packet, from the Ethernet header on.
    fn len(&self) -> usize;
    /// The EtherType the hook already knows (network byte order), if any:
    /// when it is IPv4 the fast path reads no Ethernet header.
    fn ether_type_hint(&self) -> Option<u16> {
        None
    }
    /// 1 when the hook already took a VLAN tag out of the data (tc ingress:
    /// `skb_vlan_untag` moved it to skb->vlan_tci), else 0.
    fn offloaded_vlan_tag(&self) -> usize {
        0
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
    fn store<T>(&self, off: usize, v: &T) -> bool {
        // SAFETY: `v` is a live, initialised value of size_of::<T>() bytes;
        // the helper only reads it and checks the packet range. Flags 0:
        // no checksum update, the callers fix checksums themselves.
        let r = unsafe {
            bpf_skb_store_bytes(
                self.skb.skb.cast(),
                off as u32,
                (v as *const T).cast(),
                size_of::<T>() as u32,
                0,
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

    #[inline(always)]
    fn offloaded_vlan_tag(&self) -> usize {
        // SAFETY: `skb` is this run's context; `vlan_present` is readable by
        // tc (0 or 1).
        usize::from(unsafe { (*self.skb.skb).vlan_present } != 0)
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn load_into<T>(&self, off: usize, dst: &mut T) -> bool {
        // SAFETY: `ctx` is this run's context and `dst` is writable for
        // size_of::<T>() bytes; the helper checks the range against the
        // buffer, so the verifier needs no bound on `off`. The length is a
        // constant, as it requires.
        let r = unsafe {
            bpf_xdp_load_bytes(
                self.ctx,
                off as u32,
                (dst as *mut T).cast(),
                size_of::<T>() as u32,
            )
        };
        r == 0
    }

    #[inline(always)]
    fn store<T>(&self, off: usize, v: &T) -> bool {
        // SAFETY: `v` is a live, initialised value of size_of::<T>() bytes;
        // the helper only reads it and checks the packet range.
        let r = unsafe {
            bpf_xdp_store_bytes(
                self.ctx,
                off as u32,
                (v as *const T).cast_mut().cast(),
                size_of::<T>() as u32,
            )
        };
        r == 0
    }

    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: helper without preconditions on a valid context. Used
        // rather than `data_end - data`: pointer subtraction needs
        // CAP_PERFMON from the verifier.
        unsafe { bpf_xdp_get_buff_len(self.ctx) as usize }
    }
}
