//! Counters in the Prometheus text exposition format (version 0.0.4), one
//! series per rule and counter, labelled by rule id, name, fault and ports;
//! chaos rules add one `faultbpf_action_packets_total` series per mix
//! action, labelled `action` too.

use std::fmt::Write;

use super::state::RuleStats;

/// The content type Prometheus expects.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const SERIES: [(&str, &str); 4] = [
    (
        "faultbpf_matched_packets_total",
        "Packets that matched the rule.",
    ),
    (
        "faultbpf_matched_bytes_total",
        "Bytes of packets that matched the rule.",
    ),
    (
        "faultbpf_acted_packets_total",
        "Packets the rule acted on (dropped, reset, ...).",
    ),
    (
        "faultbpf_acted_bytes_total",
        "Bytes of packets the rule acted on.",
    ),
];

/// Per-action packets of chaos rules (its `action` label: drop, reset, ...).
const ACTION_METRIC: &str = "faultbpf_action_packets_total";

pub fn render(stats: &[RuleStats]) -> String {
    let mut out = String::new();
    for (i, (metric, help)) in SERIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} counter");
        for s in stats {
            let value = [
                s.matched_packets,
                s.matched_bytes,
                s.acted_packets,
                s.acted_bytes,
            ][i];
            let _ = writeln!(
                out,
                "{metric}{{id=\"{}\",name=\"{}\",fault=\"{}\",port=\"{}\"}} {value}",
                s.id,
                escape(s.name.as_deref().unwrap_or("")),
                s.fault,
                escape(&s.ports.join(",")),
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP {ACTION_METRIC} Packets each action of a chaos mix acted on."
    );
    let _ = writeln!(out, "# TYPE {ACTION_METRIC} counter");
    for s in stats {
        for (action, n) in s.actions.iter().flatten() {
            let _ = writeln!(
                out,
                "{ACTION_METRIC}{{id=\"{}\",name=\"{}\",fault=\"{}\",port=\"{}\",action=\"{action}\"}} {n}",
                s.id,
                escape(s.name.as_deref().unwrap_or("")),
                s.fault,
                escape(&s.ports.join(",")),
            );
        }
    }
    let _ = writeln!(out, "# HELP faultbpf_rules Rules in force.");
    let _ = writeln!(out, "# TYPE faultbpf_rules gauge");
    let _ = writeln!(out, "faultbpf_rules {}", stats.len());
    out
}

/// Label values escape backslash, double quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_values() {
        let s = RuleStats {
            id: 3,
            name: Some("a \"b\"\\".into()),
            fault: "blackhole".into(),
            ports: vec!["port 5672".into()],
            description: String::new(),
            matched_packets: 10,
            matched_bytes: 700,
            acted_packets: 9,
            acted_bytes: 630,
            actions: None,
            requests: None,
        };
        let text = render(&[s]);
        assert!(text.contains(
            "faultbpf_acted_packets_total{id=\"3\",name=\"a \\\"b\\\"\\\\\",fault=\"blackhole\",port=\"port 5672\"} 9"
        ));
        assert!(text.contains("# TYPE faultbpf_matched_bytes_total counter"));
        assert!(text.ends_with("faultbpf_rules 1\n"));
        assert!(!text.contains("faultbpf_action_packets_total{"), "{text}");
    }

    #[test]
    fn chaos_rules_get_a_series_per_action() {
        let s = RuleStats {
            id: 4,
            name: None,
            fault: "chaos".into(),
            ports: vec!["port 7000".into()],
            description: String::new(),
            matched_packets: 100,
            matched_bytes: 7000,
            acted_packets: 30,
            acted_bytes: 2100,
            requests: None,
            actions: Some(
                [("drop".into(), 20), ("reset".into(), 10)]
                    .into_iter()
                    .collect(),
            ),
        };
        let text = render(&[s]);
        assert!(text.contains(
            "faultbpf_action_packets_total{id=\"4\",name=\"\",fault=\"chaos\",port=\"port 7000\",action=\"drop\"} 20"
        ), "{text}");
        assert!(text.contains("action=\"reset\"} 10"), "{text}");
        assert!(text.contains(
            "faultbpf_acted_packets_total{id=\"4\",name=\"\",fault=\"chaos\",port=\"port 7000\"} 30"
        ));
    }
}
