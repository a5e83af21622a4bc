//! `Flow`: what the parser hands the matcher and the faults, and the
//! per-CPU map (`FLOW_COPY`) through which it is made opaque to the
//! verifier. The two live together because `Flow::opaque` is the only user
//! of that map and the map's value type is `Flow`.

use aya_ebpf::{macros::map, maps::PerCpuArray};

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

/// Where an IPv4 address sits in an IPv4-mapped one.
pub const MAPPED_V4: usize = 12;

impl Addr {
    /// `::ffff:a.b.c.d`, built as words.
    #[inline(always)]
    pub fn mapped(v4: [u8; 4]) -> Self {
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

/// A flow passed through memory the verifier cannot see into
/// (`Flow::opaque`).
#[map]
pub static FLOW_COPY: PerCpuArray<Flow> = PerCpuArray::with_max_entries(1, 0);

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
