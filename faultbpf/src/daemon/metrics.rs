//! Counters in the Prometheus text exposition format (version 0.0.4), one
//! series per rule and counter, labelled by rule id, name, fault and ports.

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
        };
        let text = render(&[s]);
        assert!(text.contains(
            "faultbpf_acted_packets_total{id=\"3\",name=\"a \\\"b\\\"\\\\\",fault=\"blackhole\",port=\"port 5672\"} 9"
        ));
        assert!(text.contains("# TYPE faultbpf_matched_bytes_total counter"));
        assert!(text.ends_with("faultbpf_rules 1\n"));
    }
}
