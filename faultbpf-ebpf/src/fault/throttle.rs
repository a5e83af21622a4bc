//! `throttle`: hold a rule's traffic to a rate, as a token bucket would.
//! tc only. Two ways, chosen by user space per rule (`FLAG_SHAPE`):
//! - Policing (tc's `police`): a packet over the rate is dropped, and TCP
//!   slows down to the rate by itself. Works on every kernel.
//! - Shaping (tc's `tbf`, Toxiproxy's `bandwidth` without the proxy): a
//!   packet over the rate waits on faultbpf's delay device until its
//!   departure time (EDT, the same detour as `delay`, `fault/delay.rs`), so
//!   nothing is lost unless it would wait longer than [`MAX_WAIT_NS`], as
//!   a full queue would drop it. Needs sch_fq and sch_netem for the
//!   device; user space falls back to policing where they are missing and
//!   says which it does where the rule is shown.
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

/// The longest a shaped packet waits: one that would wait longer is
/// dropped, as by a full queue (tbf's `latency`). 200 ms at the rate is a
/// common buffer size; TCP keeps the queue short of it once it has seen
/// the rate.
pub const MAX_WAIT_NS: u64 = 200_000_000;

/// A bucket idle this long (its `tat` that far behind now) has nothing of
/// the rule's left on the delay device, so its next packet may skip the
/// detour without overtaking one still held (fq's timer slack is tens of
/// microseconds).
const IDLE_NS: u64 = 1_000_000;

/// The rule's bucket for this direction.
#[inline(always)]
fn bucket(rule: &RuleValue, hook: Hook) -> Option<*mut u64> {
    let i = rule.slot * 2
        + match hook {
            Hook::Ingress => 0,
            Hook::Egress => 1,
        };
    THROTTLE.get_ptr_mut(i)
}

/// What shaping does with a packet.
pub enum Shaped {
    /// The bucket was idle: the packet goes at once, without the detour.
    Now,
    /// It leaves at this time (`bpf_ktime_get_ns()`), through the delay
    /// device; a time already past keeps it behind those still held.
    At(u64),
    /// It would wait longer than [`MAX_WAIT_NS`]: dropped.
    Over,
}

/// Shaping: the packet's departure time under the rule's rate.
#[inline(always)]
pub fn departure(ctx: &TcContext, rule: &RuleValue, hook: Hook) -> Shaped {
    if rule.rate_bytes == 0 {
        return Shaped::Now;
    }
    let Some(p) = bucket(rule, hook) else {
        return Shaped::Now;
    };
    let cost = u64::from(ctx.len()) * 1_000_000_000 / rule.rate_bytes;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    for _ in 0..TRIES {
        // SAFETY: as in `over_rate`.
        let old = unsafe { core::ptr::read_volatile(p) };
        let start = if old > now { old } else { now };
        // The burst may leave at once; beyond it, one packet after another
        // at the rate.
        let leave = start.saturating_sub(rule.burst_ns).max(now);
        if leave - now > MAX_WAIT_NS {
            return Shaped::Over;
        }
        if cmpxchg(p, old, start + cost) == old {
            return if old.saturating_add(IDLE_NS) <= now {
                Shaped::Now
            } else {
                Shaped::At(leave)
            };
        }
    }
    Shaped::Over
}

/// Policing: true when the packet is over the rate and must be dropped.
#[inline(always)]
pub fn over_rate(ctx: &TcContext, rule: &RuleValue, hook: Hook) -> bool {
    if rule.rate_bytes == 0 {
        return false;
    }
    let Some(p) = bucket(rule, hook) else {
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
