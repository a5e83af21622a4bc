//! `throttle`: police a rule's traffic to a rate, as a token bucket would
//! (tc's `police`, Toxiproxy's `bandwidth` without the proxy): a packet
//! over the rate is dropped, and TCP slows down to the rate by itself. tc
//! only. Shaping (making packets wait instead) needs a qdisc that honours
//! departure times (sch_fq), which this machine's kernel does not have;
//! user space says "policing" where the rule is shown.
//!
//! Each direction of a rule has its own bucket, as each direction of a
//! link has its own capacity: one shared bucket let the data exhaust it and
//! then dropped the ACKs coming back, and TCP through `--rate 10mbit` ran
//! at 1 Mbit/s.
//!
//! The bucket is GCRA (the "virtual scheduling" form of a token bucket):
//! one `u64` per rule and hook in [`THROTTLE`], the theoretical arrival time `tat`
//! of the next packet. A packet of `len` bytes conforms while `tat` lies at
//! most `burst_ns` in the future, and then moves `tat` on by the time the
//! rate takes to send it. The update is a compare-and-exchange, so CPUs
//! racing on one rule never let more through than the rate; a packet that
//! loses [`TRIES`] races in a row is dropped (the rate is held over
//! fairness). User space zeroes a slot's buckets before it puts a
//! throttle rule there, so each rule starts with a full bucket.

use core::arch::asm;

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::map, maps::Array, programs::TcContext};
use faultbpf_common::{MAX_SLOTS, RuleValue};

use crate::hook::Hook;

/// `THROTTLE_MAP`: (slot, hook) -> `tat`, in `bpf_ktime_get_ns()` nanoseconds: entry
/// `2 * slot` for ingress, `2 * slot + 1` for egress.
#[map]
pub static THROTTLE: Array<u64> = Array::with_max_entries(2 * MAX_SLOTS, 0);

/// Compare-and-exchange attempts before a packet is dropped.
const TRIES: usize = 4;

/// True when the packet is over the rate and must be dropped.
#[inline(always)]
pub fn over_rate(ctx: &TcContext, rule: &RuleValue, hook: Hook) -> bool {
    if rule.rate_bytes == 0 {
        return false;
    }
    let bucket = rule.slot * 2
        + match hook {
            Hook::Ingress => 0,
            Hook::Egress => 1,
        };
    let Some(p) = THROTTLE.get_ptr_mut(bucket) else {
        return false;
    };
    let cost = u64::from(ctx.len()) * 1_000_000_000 / rule.rate_bytes;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    for _ in 0..TRIES {
        // SAFETY: an array value is 8-byte aligned and lives as long as the
        // map; an aligned 8-byte load is atomic on BPF.
        let old = unsafe { core::ptr::read_volatile(p) };
        let start = if old > now { old } else { now };
        if start - now > rule.burst_ns {
            return true;
        }
        if cmpxchg(p, old, start + cost) == old {
            return false;
        }
    }
    true
}

/// BPF_CMPXCHG (kernel >= 5.12): stores `new` at `p` if it holds `old`;
/// returns what it held. Written out because core offers no
/// compare-and-exchange on the BPF target, and the object is built for
/// `--cpu generic`, whose code generator selects no atomic but XADD.
#[inline(always)]
fn cmpxchg(p: *mut u64, old: u64, new: u64) -> u64 {
    let prev: u64;
    // SAFETY: `p` points to an aligned `u64` in a map value (the caller's
    // lookup succeeded); the instruction reads and writes only those 8
    // bytes, and r0 is declared as both input and output.
    unsafe {
        asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {new})",
            p = in(reg) p,
            new = in(reg) new,
            inout("r0") old => prev,
            options(nostack),
        );
    }
    prev
}
