//! Parses the daemon's `/metrics` with the reference Prometheus client's own
//! parser (Debian's python3-prometheus-client), so a test fails on any text
//! a real scraper would reject, not only on what a hand-written parser
//! happens to check.

use std::{collections::BTreeMap, process::Command, time::Duration};

use serde_json::Value;

use crate::process::run_with_input;

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric family's type as declared by `# TYPE`.
    pub family_type: String,
    /// The sample's own name (with `_total` for counters).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Debian's interpreter, where python3-prometheus-client installs (a
/// pyenv or venv `python3` earlier on PATH would not see it).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

const PARSE_SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        out.append({"type": f.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// Parses a Prometheus text exposition with the reference client library's
/// parser (`prometheus_client.parser.text_string_to_metric_families`, from
/// Debian's python3-prometheus-client); panics if it does not parse.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let out = run_with_input(
        Command::new(SYSTEM_PYTHON).args(["-c", PARSE_SCRIPT]),
        text.as_bytes(),
        Duration::from_secs(30),
    );
    let stderr = &out.stderr;
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "{SYSTEM_PYTHON} has no prometheus_client: apt-get install python3-prometheus-client"
    );
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics ({}): {stderr}\n--- text ---\n{text}",
        out.status
    );
    let list: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    list.into_iter()
        .map(|s| Sample {
            family_type: s["type"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of sample `name` whose label `label` is `value`, if any.
pub fn sample_value(samples: &[Sample], name: &str, label: &str, value: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get(label).map(String::as_str) == Some(value))
        .map(|s| s.value)
}
