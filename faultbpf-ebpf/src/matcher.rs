//! Flow -> rule: at most two hash lookups (destination port, then source
//! port), never a loop over rules, so the cost is the same with 1 or 65 536
//! rules.

use faultbpf_common::{RuleKey, RuleValue};

use crate::{maps::RULES, parse::Flow};

#[inline(always)]
pub fn rule_for(flow: &Flow) -> Option<&'static RuleValue> {
    let by_dst = RuleKey {
        proto: flow.proto,
        _pad: 0,
        port_be: flow.dport_be,
    };
    // SAFETY: the map holds `RuleValue`s written whole by user space; a
    // concurrent update replaces the value atomically per field width,
    // which at worst makes one packet see a mix of old and new rule.
    if let Some(rule) = unsafe { RULES.get(&by_dst) } {
        return Some(rule);
    }
    let by_src = RuleKey {
        port_be: flow.sport_be,
        ..by_dst
    };
    // SAFETY: as above.
    unsafe { RULES.get(&by_src) }
}
