//! `dns`: a matched DNS query is answered from the kernel with the rule's
//! response code (NXDOMAIN, SERVFAIL, REFUSED), or vanishes when the rule
//! has none. The query becomes its own answer, the way `reset` turns a
//! segment into its RST: QR and RA set, the response code written, the
//! question (and an EDNS0 OPT record) kept, so the counts stay right; the
//! UDP checksum is updated for the one changed word; addresses, ports and
//! MACs are swapped, and the answer goes back where the query came from
//! (`reset::send_back`). The resolver never sees the query. tc only.
//!
//! Only a plain query is touched: UDP, QR 0, opcode QUERY, one question,
//! no answer or authority records, at most one additional record (EDNS0).
//! Anything else on the port (answers, including ours crossing the other
//! hook, TCP, malformed payloads: a truncated header, a compression
//! pointer or a label running past the end in the question) passes
//! untouched and is not counted as acted.
//!
//! `--domain`: the query name is read once forward (at most
//! `DNS_MAX_NAME` bytes, one per helper call, marking where labels start)
//! and once backward, hashing (`dns_hash_step`) every suffix that starts
//! at a label; one `DNS_SUFFIXES` lookup per label says whether the name
//! is a listed domain or under one. Both walks are `bpf_loop` callbacks
//! (kernel >= 5.17).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_MARK_MANGLED_0},
    helpers::{bpf_loop, bpf_skb_load_bytes},
    macros::map,
    maps::HashMap,
    programs::TcContext,
};
use faultbpf_common::{
    DNS_MAX_NAME, DnsKey, MAX_DNS_SUFFIXES, PROTO_UDP, RuleValue, dns_hash_step,
};

use crate::{
    fault::reset::{swap_addrs, swap_macs},
    flow::Flow,
    hdr::{PORTS_LEN, UDP_CHECK, UDP_LEN},
    packet::Packet,
};

/// `DnsKey` -> 1 for each `--domain` suffix of each rule.
#[map]
pub static DNS_SUFFIXES: HashMap<DnsKey, u8> = HashMap::with_max_entries(MAX_DNS_SUFFIXES, 0);

/// The fixed DNS header.
const DNS_HDR: usize = 12;
const DNS_FLAGS: usize = 2;
/// QR (response), opcode, TC, RCODE in the flags word (host order).
const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
/// Longest label.
const MAX_LABEL: u8 = 63;

/// What `dns` did with a packet.
pub enum Outcome {
    /// The packet is now its answer: send it back.
    Answered,
    /// Drop it (a rule without a response code).
    Drop,
    /// Not a query the rule takes: let it through untouched.
    Pass,
}

#[inline(always)]
pub fn act(ctx: &TcContext, f: &Flow, rule: &RuleValue) -> Outcome {
    match query(ctx, f, rule) {
        Ok(true) => {}
        Ok(false) | Err(()) => return Outcome::Pass,
    }
    if rule.dns_rcode == 0 {
        return Outcome::Drop;
    }
    match answer(ctx, f, rule.dns_rcode) {
        Ok(()) => Outcome::Answered,
        // Half rewritten: it must not reach the resolver either.
        Err(()) => Outcome::Drop,
    }
}

/// True for a plain query whose name the rule takes.
#[inline(always)]
fn query(ctx: &TcContext, f: &Flow, rule: &RuleValue) -> Result<bool, ()> {
    if f.proto != PROTO_UDP || f.fragment {
        return Ok(false);
    }
    let dns = f.l4 + UDP_LEN;
    let end = f.l3_end;
    let h: [u8; DNS_HDR] = Packet::load(ctx, dns).ok_or(())?;
    if dns + DNS_HDR > end {
        return Err(());
    }
    let flags = u16::from_be_bytes([h[2], h[3]]);
    let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    if flags & (QR | OPCODE) != 0
        || count(4) != 1
        || count(6) != 0
        || count(8) != 0
        || count(10) > 1
    {
        return Ok(false);
    }
    let mut w = Walk {
        skb: ctx.skb.skb,
        starts: [0; 4],
        hash: 0,
        name: (dns + DNS_HDR) as u32,
        end: end as u32,
        next: 0,
        len: 0,
        slot: rule.slot,
        hit: 0,
    };
    // Forward: where each label starts, and where the name ends.
    w.run(forward);
    // No final 0 within DNS_MAX_NAME, a bad label, or no room for QTYPE
    // and QCLASS.
    if w.hit != 0 || w.len == 0 || w.name + w.len + 4 > w.end {
        return Err(());
    }
    if rule.dns_domains == 0 {
        return Ok(true);
    }
    // Backward: the hash of every suffix, looked up where a label starts.
    w.run(backward);
    Ok(w.hit != 0)
}

/// The state of a walk over the query name, shared with the `bpf_loop`
/// callbacks. A loop the verifier walks itself ran past its 1 M
/// instruction budget (every iteration a new state); a callback is checked
/// once.
#[repr(C)]
struct Walk {
    skb: *mut __sk_buff,
    /// Bit i: a label starts at name byte i.
    starts: [u64; 4],
    hash: u64,
    /// Offsets of the name and of the end of the IP packet.
    name: u32,
    end: u32,
    /// Where the next label starts (forward).
    next: u32,
    /// The name's length with its final 0; 0 until found.
    len: u32,
    slot: u32,
    /// Forward: the name is malformed. Backward: a suffix matched.
    hit: u32,
}

impl Walk {
    #[inline(always)]
    fn run(&mut self, step: extern "C" fn(u64, *mut c_void) -> i64) {
        // SAFETY: `step` is a BPF function of the signature bpf_loop
        // calls, and `self` outlives the call.
        unsafe {
            bpf_loop(
                DNS_MAX_NAME as u32,
                step as usize as *mut c_void,
                (self as *mut Self).cast(),
                0,
            )
        };
    }

    /// Name byte `i`; `None` past the packet.
    #[inline(always)]
    fn byte(&self, i: u32) -> Option<u8> {
        let off = self.name + i;
        if off >= self.end {
            return None;
        }
        let mut b = 0u8;
        // SAFETY: `skb` is the program's context; one byte into `b`.
        let r = unsafe {
            bpf_skb_load_bytes(
                self.skb as *const c_void,
                off,
                (&mut b as *mut u8).cast(),
                1,
            )
        };
        (r == 0).then_some(b)
    }
}

/// Forward step `i`: marks label starts, stops at the final 0 or at a
/// malformed label (a compression pointer or a length over 63 here, or one
/// running past the packet).
extern "C" fn forward(i: u64, w: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the `Walk` `run` passed.
    let w = unsafe { &mut *w.cast::<Walk>() };
    let i = i as u32;
    let Some(b) = w.byte(i) else {
        w.hit = 1;
        return 1;
    };
    if i == w.next {
        if b == 0 {
            w.len = i + 1;
            return 1;
        }
        if b > MAX_LABEL {
            w.hit = 1;
            return 1;
        }
        w.starts[((i >> 6) & 3) as usize] |= 1 << (i & 63);
        w.next = i + 1 + u32::from(b);
    }
    0
}

/// Backward step `k` (name byte `len - 1 - k`): hashes the suffix that
/// starts there, and at a label start looks it up.
extern "C" fn backward(k: u64, w: *mut c_void) -> i64 {
    // SAFETY: as in `forward`.
    let w = unsafe { &mut *w.cast::<Walk>() };
    let k = k as u32;
    if k >= w.len {
        return 1;
    }
    let i = w.len - 1 - k;
    let Some(b) = w.byte(i) else {
        return 1;
    };
    w.hash = dns_hash_step(w.hash, b);
    if w.starts[((i >> 6) & 3) as usize] & (1 << (i & 63)) != 0 {
        let key = DnsKey {
            hash: w.hash,
            slot: w.slot,
            _pad: 0,
        };
        // SAFETY: plain map value read.
        if unsafe { DNS_SUFFIXES.get(&key) }.is_some() {
            w.hit = 1;
            return 1;
        }
    }
    0
}

/// Rewrites the query into its answer in place.
#[inline(always)]
fn answer(ctx: &TcContext, f: &Flow, rcode: u8) -> Result<(), ()> {
    let off = f.l4 + UDP_LEN + DNS_FLAGS;
    let old: u16 = Packet::load(ctx, off).ok_or(())?;
    let flags = u16::from_be(old);
    let new = ((flags & RD) | QR | RA | u16::from(rcode & 0xf)).to_be();
    if !Packet::store(ctx, off, &new) {
        return Err(());
    }
    // A UDP checksum of 0 means "none" (IPv4): MARK_MANGLED_0 keeps it so.
    ctx.l4_csum_replace(
        f.l4 + UDP_CHECK,
        u64::from(old),
        u64::from(new),
        u64::from(BPF_F_MARK_MANGLED_0) | 2,
    )
    .map_err(|_| ())?;
    // Swapping ports and addresses leaves every checksum as it is.
    let p: [u8; PORTS_LEN] = Packet::load(ctx, f.l4).ok_or(())?;
    let swapped = [p[2], p[3], p[0], p[1]];
    if !Packet::store(ctx, f.l4, &swapped) {
        return Err(());
    }
    swap_addrs(ctx, f)?;
    swap_macs(ctx)
}
