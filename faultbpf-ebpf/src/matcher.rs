//! Flow -> rule: at most two lookups (destination port, then source port),
//! each two array reads (`RULE_INDEX`, then `RULES`) and only when the port
//! filter says some rule has that port, never a loop over rules, so the
//! cost is the same with 1 or 65 536 rules. A rule found by one port that does not apply to this
//! packet (wrong hook, expired, other peer) lets the other port's rule try.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use faultbpf_common::{
    FLAG_PEERS, PEER_SLOT_BITS, RuleKey, RuleValue, SIDE_DST, SIDE_FRAGMENT, SIDE_SRC,
    peer_key_data, port_bit,
    trace_reason::{EXPIRED, LEASE_STALE, NO_RULE, OTHER_DIRECTION, OTHER_PEER},
};

use crate::{
    flow::Flow,
    hook::Hook,
    maps::{LEASE, PEERS, PORTS, RULE_INDEX, RULES},
};

#[inline(always)]
pub fn rule_for(flow: &Flow, hook: Hook) -> Option<&'static RuleValue> {
    if flow.fragment {
        return lookup(flow, hook, SIDE_FRAGMENT, 0);
    }
    lookup(flow, hook, SIDE_DST, flow.dport_be)
        .or_else(|| lookup(flow, hook, SIDE_SRC, flow.sport_be))
}

#[inline(always)]
fn lookup(flow: &Flow, hook: Hook, side: u8, port_be: u16) -> Option<&'static RuleValue> {
    if let Some((word, mask)) = port_bit(side, port_be)
        && PORTS.get(word).is_some_and(|w| w & mask == 0)
    {
        return None;
    }
    let key = RuleKey {
        proto: flow.proto,
        side,
        port_be,
    };
    let (word, shift) = key.index_bits()?;
    let slot = (*RULE_INDEX.get(word)? >> shift) & 0xffff;
    if slot == 0 {
        return None;
    }
    // A concurrent update can at worst show one packet a mix of the old and
    // new rule; user space writes the rule before its index entries.
    let rule = RULES.get(slot as u32 - 1)?;
    applies(rule, flow, hook).then_some(rule)
}

/// Hook, expiry, lease and peers: everything but the probability draw.
#[inline(always)]
fn applies(rule: &RuleValue, flow: &Flow, hook: Hook) -> bool {
    if rule.directions & hook.dir_bit() == 0 {
        return false;
    }
    if expired(rule) {
        return false;
    }
    if rule.flags & FLAG_PEERS != 0 {
        // The remote end: where an ingress packet comes from, where an
        // egress packet goes.
        let remote = match hook {
            Hook::Ingress => &flow.saddr.0,
            Hook::Egress => &flow.daddr.0,
        };
        let key = Key::new(PEER_SLOT_BITS + 128, peer_key_data(rule.slot, remote));
        if PEERS.get(&key).is_none() {
            return false;
        }
    }
    true
}

/// True when the rule's expiry passed, or an owner set a lease and stopped
/// renewing it. The clock is read only when there is one or the other (one
/// helper call less per packet for a CLI fault without `--for`), and it is
/// the coarse one: CLOCK_MONOTONIC as of the last tick, so an expiry acts up
/// to a tick (1-4 ms) late, but no TSC read, which is slow in a VM (about
/// 15 ns less per dropped packet here, by bpf_stats).
#[inline(always)]
fn expired(rule: &RuleValue) -> bool {
    let (heartbeat, lease) = match LEASE.get(0) {
        Some(l) => (l.heartbeat_ns, l.lease_ns),
        None => (0, 0),
    };
    if rule.expires_ns == 0 && lease == 0 {
        return false;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    (rule.expires_ns != 0 && now >= rule.expires_ns)
        || (lease != 0 && now > heartbeat.saturating_add(lease))
}

/// Why no rule applies to a packet (a `trace_reason`), and the rule that
/// did not apply (`u32::MAX`: none has its ports), for `faultbpf trace`.
#[derive(Clone, Copy)]
pub struct Miss {
    pub reason: u8,
    pub slot: u32,
}

/// No rule has this port.
const NONE: Miss = Miss {
    reason: NO_RULE,
    slot: u32::MAX,
};

/// For a packet [`rule_for`] found no rule for: why. Only a tracer pays
/// for this second look; the answer is the same lookups', reason by
/// reason (the more telling of the two ports': a rule that did not apply
/// over no rule at all).
#[inline(always)]
pub fn explain(flow: &Flow, hook: Hook) -> Miss {
    if flow.fragment {
        return explain_side(flow, hook, SIDE_FRAGMENT, 0);
    }
    let dst = explain_side(flow, hook, SIDE_DST, flow.dport_be);
    if dst.reason != NO_RULE {
        return dst;
    }
    explain_side(flow, hook, SIDE_SRC, flow.sport_be)
}

#[inline(always)]
fn explain_side(flow: &Flow, hook: Hook, side: u8, port_be: u16) -> Miss {
    let key = RuleKey {
        proto: flow.proto,
        side,
        port_be,
    };
    let Some((word, shift)) = key.index_bits() else {
        return NONE;
    };
    let Some(w) = RULE_INDEX.get(word) else {
        return NONE;
    };
    let slot = (*w >> shift) & 0xffff;
    if slot == 0 {
        return NONE;
    }
    let Some(rule) = RULES.get(slot as u32 - 1) else {
        return NONE;
    };
    let reason = if rule.directions & hook.dir_bit() == 0 {
        OTHER_DIRECTION
    } else if rule.expires_ns != 0 && now() >= rule.expires_ns {
        EXPIRED
    } else if expired(rule) {
        LEASE_STALE
    } else if rule.flags & FLAG_PEERS != 0 {
        OTHER_PEER
    } else {
        NO_RULE
    };
    Miss {
        reason,
        slot: rule.slot,
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}
