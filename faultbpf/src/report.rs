//! Counters for people and for programs: the live status line, the final
//! one-line-per-rule summary and its JSON twin.

use std::collections::BTreeMap;

use faultbpf_common::RuleCounters;
use serde::Serialize;

use crate::{
    faults::Fault,
    rules::{Direction, Proto, Rule},
};

/// One rule's final counters, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct RuleReport {
    pub id: u32,
    pub fault: &'static str,
    pub proto: Proto,
    /// "port 5432", "dport 8000-8100", ...
    pub ports: Vec<String>,
    pub pct: f64,
    pub direction: Direction,
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub acted_packets: u64,
    pub acted_bytes: u64,
    /// `chaos`: packets each mix action acted on, e.g. {"drop": 20,
    /// "reset": 10}; absent for other faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<BTreeMap<&'static str, u64>>,
    /// `throttle`: how the rate is held, `shaping` (over the rate waits,
    /// where the kernel has sch_fq and sch_netem) or `policing` (over the
    /// rate is dropped), and the rate and burst as tc writes them; absent
    /// for other faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<String>,
}

/// A chaos rule's acted packets per mix action, in the mix's order (an
/// action named twice is summed); `None` for other faults, and when the
/// counters carry no breakdown (read from a daemon that does not send it).
pub fn action_counts(rule: &Rule, c: &RuleCounters) -> Option<Vec<(&'static str, u64)>> {
    let Fault::Chaos(mix) = &rule.fault else {
        return None;
    };
    if c.acted_packets > 0 && c.mix_packets.iter().all(|&n| n == 0) {
        return None;
    }
    let mut out: Vec<(&'static str, u64)> = Vec::new();
    for ((def, _), &n) in mix.entries().iter().zip(&c.mix_packets) {
        let name = def.mix_action.unwrap_or(def.name);
        match out.iter_mut().find(|(a, _)| *a == name) {
            Some((_, sum)) => *sum += n,
            None => out.push((name, n)),
        }
    }
    Some(out)
}

/// [`action_counts`] as the JSON map of reports and `/v1/stats`.
pub fn action_map(rule: &Rule, c: &RuleCounters) -> Option<BTreeMap<&'static str, u64>> {
    action_counts(rule, c).map(|v| v.into_iter().collect())
}

impl RuleReport {
    pub fn new(rule: &Rule, c: &RuleCounters) -> Self {
        let mut limits = crate::spec::RuleSpec::new(rule.fault.name());
        if let Some(t) = rule.fault.throttle() {
            t.write_params(&mut limits);
        }
        Self {
            id: rule.id,
            fault: rule.fault.name(),
            proto: rule.proto,
            ports: rule.ports_text(),
            pct: rule.pct,
            direction: rule.direction,
            matched_packets: c.matched_packets,
            matched_bytes: c.matched_bytes,
            acted_packets: c.acted_packets,
            acted_bytes: c.acted_bytes,
            actions: action_map(rule, c),
            mode: rule.fault.throttle().map(|t| t.mode()),
            rate: limits.rate,
            burst: limits.burst,
        }
    }
}

/// Everything `--json` prints on exit, on one line.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// `tcx`, `netlink`, or with `--xdp` e.g. `xdp-native+tcx`
    /// (`Injector::attach_name`).
    pub attach: &'a str,
    pub interfaces: &'a [String],
    pub rules: Vec<RuleReport>,
}

/// "rule 0 blackhole tcp+udp port 5000: matched 12 packets (840 bytes),
/// dropped 12 packets (840 bytes)"; a chaos rule adds what each action did:
/// "..., hit 30 packets (2100 bytes): drop 20, reset 10".
pub fn summary_line(rule: &Rule, c: &RuleCounters) -> String {
    let actions = action_counts(rule, c)
        .map(|v| {
            let parts: Vec<String> = v.iter().map(|(a, n)| format!("{a} {n}")).collect();
            format!(": {}", parts.join(", "))
        })
        .unwrap_or_default();
    format!(
        "rule {} {} {} {}: matched {} packets ({} bytes), {} {} packets ({} bytes){actions}",
        rule.id,
        rule.fault.name(),
        rule.proto.label(),
        rule.ports_text().join(", "),
        c.matched_packets,
        c.matched_bytes,
        rule.fault.verb(),
        c.acted_packets,
        c.acted_bytes
    )
}

/// The status line refreshed on a terminal: "  12s  matched 40  dropped 40".
pub fn status_line(elapsed_secs: u64, rule: &Rule, c: &RuleCounters) -> String {
    format!(
        "{:>6}  matched {}  {} {}",
        format!("{elapsed_secs}s"),
        c.matched_packets,
        rule.fault.verb(),
        c.acted_packets
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        faults::Fault,
        rules::{PortRange, Side},
    };

    fn rule() -> Rule {
        let port = PortRange::parse(Side::Either, "5000").unwrap();
        Rule::new(0, Fault::Blackhole, vec![port])
    }

    fn counters() -> RuleCounters {
        RuleCounters {
            matched_packets: 12,
            matched_bytes: 840,
            acted_packets: 12,
            acted_bytes: 840,
            mix_packets: [0; 4],
        }
    }

    fn chaos_rule() -> Rule {
        let port = PortRange::parse(Side::Either, "5000").unwrap();
        let mix = "drop:20,reset:10".parse().unwrap();
        Rule::new(1, Fault::Chaos(mix), vec![port])
    }

    fn chaos_counters() -> RuleCounters {
        RuleCounters {
            matched_packets: 100,
            matched_bytes: 7000,
            acted_packets: 30,
            acted_bytes: 2100,
            mix_packets: [20, 10, 0, 0],
        }
    }

    #[test]
    fn chaos_summary_says_what_each_action_did() {
        assert_eq!(
            summary_line(&chaos_rule(), &chaos_counters()),
            "rule 1 chaos tcp+udp port 5000: matched 100 packets (7000 bytes), \
             hit 30 packets (2100 bytes): drop 20, reset 10"
        );
        // Other faults keep their line; counters without a breakdown (an
        // older daemon's) print none rather than zeros.
        assert!(!summary_line(&rule(), &counters()).contains(": drop"));
        let mut old = chaos_counters();
        old.mix_packets = [0; 4];
        assert!(summary_line(&chaos_rule(), &old).ends_with("(2100 bytes)"));
    }

    #[test]
    fn chaos_json_has_actions_and_others_do_not() {
        let v = serde_json::to_value(RuleReport::new(&chaos_rule(), &chaos_counters())).unwrap();
        assert_eq!(v["actions"]["drop"], 20);
        assert_eq!(v["actions"]["reset"], 10);
        assert_eq!(v["acted_packets"], 30);
        let v = serde_json::to_value(RuleReport::new(&rule(), &counters())).unwrap();
        assert!(v.get("actions").is_none(), "{v}");
    }

    #[test]
    fn summary_names_rule_and_counts() {
        assert_eq!(
            summary_line(&rule(), &counters()),
            "rule 0 blackhole tcp+udp port 5000: matched 12 packets (840 bytes), \
             dropped 12 packets (840 bytes)"
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let ifaces = vec!["veth0".to_string(), "lo".to_string()];
        let r = Report {
            attach: "tcx",
            interfaces: &ifaces,
            rules: vec![RuleReport::new(&rule(), &counters())],
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["attach"], "tcx");
        assert_eq!(v["interfaces"][1], "lo");
        let r0 = &v["rules"][0];
        assert_eq!(r0["fault"], "blackhole");
        assert_eq!(r0["proto"], "all");
        assert_eq!(r0["direction"], "both");
        assert_eq!(r0["ports"][0], "port 5000");
        assert_eq!(r0["acted_bytes"], 840);
    }
}
