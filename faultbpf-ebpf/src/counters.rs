//! Per-CPU, per-rule counters. Only matched packets touch them.

use faultbpf_common::RuleCounters;

use crate::maps::COUNTERS;

/// Adds a matched packet of `segs` segments and `bytes` bytes to `slot`;
/// returns the counters so the caller can add the verdict.
#[inline(always)]
pub fn matched(slot: u32, segs: u64, bytes: u64) -> Option<&'static mut RuleCounters> {
    let c = COUNTERS.get_ptr_mut(slot)?;
    // SAFETY: a per-CPU array value is only ever touched by this CPU, and
    // the program cannot be preempted mid-run by itself on the same CPU.
    let c = unsafe { &mut *c };
    c.matched_packets += segs;
    c.matched_bytes += bytes;
    Some(c)
}

/// Adds an acted packet; `entry` is the mix entry that acted (`MIX_LEN`
/// or more for a rule's own action, which has no per-entry counter).
#[inline(always)]
pub fn acted(c: Option<&'static mut RuleCounters>, entry: usize, segs: u64, bytes: u64) {
    if let Some(c) = c {
        c.acted_packets += segs;
        c.acted_bytes += bytes;
        if let Some(m) = c.mix_packets.get_mut(entry) {
            *m += segs;
        }
    }
}
