//! Counters for people and for programs: the live status line, the final
//! one-line-per-rule summary and its JSON twin.

use faultbpf_common::RuleCounters;
use serde::Serialize;

use crate::rules::{Direction, Proto, Rule};

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
}

impl RuleReport {
    pub fn new(rule: &Rule, c: &RuleCounters) -> Self {
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
/// dropped 12 packets (840 bytes)"
pub fn summary_line(rule: &Rule, c: &RuleCounters) -> String {
    format!(
        "rule {} {} {} {}: matched {} packets ({} bytes), {} {} packets ({} bytes)",
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
        }
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
