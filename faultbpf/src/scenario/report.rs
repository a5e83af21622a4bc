//! What a scenario run did, per step: when it was active and the counters
//! it collected, as a text table for people and one JSON document for
//! programs (`--json`). A run cut short by Ctrl-C reports the same way,
//! with the steps it never reached marked `not_run`.

use std::time::Duration;

use faultbpf_common::RuleCounters;
use serde::Serialize;

use super::{
    file::secs,
    plan::{Activity, Origin},
};

/// How a step's run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran its whole window.
    Done,
    /// Started, and the run ended (Ctrl-C, SIGTERM, a failure) before it did.
    CutShort,
    /// The run ended before its start.
    NotRun,
    /// A random pick with no eligible pool entry.
    Skipped,
    /// Could not be applied (the reason is in `detail`).
    Failed,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::CutShort => "cut short",
            Self::NotRun => "not run",
            Self::Skipped => "skipped",
            Self::Failed => "FAILED",
        }
    }
}

/// How the whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step had its time.
    Completed,
    /// Ctrl-C or SIGTERM: everything was lifted early.
    Interrupted,
    /// A failure stopped the run (an interface vanished, the daemon went).
    Aborted,
}

/// One step's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    /// `step` or `random`.
    pub kind: &'static str,
    /// Random picks: the pool entry, 1-based as in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_entry: Option<usize>,
    pub fault: &'static str,
    pub description: String,
    pub planned_start_seconds: f64,
    pub planned_end_seconds: f64,
    /// When it was put in force, from the start of the run.
    pub started_seconds: Option<f64>,
    /// When it was lifted.
    pub ended_seconds: Option<f64>,
    pub status: Status,
    /// Why it failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The daemon's rule id (runs through a daemon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<u32>,
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub acted_packets: u64,
    pub acted_bytes: u64,
}

impl StepReport {
    /// A step not (yet) run.
    pub fn planned(a: &Activity) -> Self {
        let (kind, pool_entry) = match a.origin {
            Origin::Step { .. } => ("step", None),
            Origin::Random { entry, .. } => ("random", Some(entry + 1)),
        };
        Self {
            name: a.label.clone(),
            kind,
            pool_entry,
            fault: a.fault(),
            description: a.describe(),
            planned_start_seconds: a.start.as_secs_f64(),
            planned_end_seconds: a.end.as_secs_f64(),
            started_seconds: None,
            ended_seconds: None,
            status: if a.skipped.is_some() {
                Status::Skipped
            } else {
                Status::NotRun
            },
            detail: a.skipped.clone(),
            rule_id: None,
            matched_packets: 0,
            matched_bytes: 0,
            acted_packets: 0,
            acted_bytes: 0,
        }
    }

    pub fn set_counters(&mut self, c: &RuleCounters) {
        self.matched_packets = c.matched_packets;
        self.matched_bytes = c.matched_bytes;
        self.acted_packets = c.acted_packets;
        self.acted_bytes = c.acted_bytes;
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub file: String,
    /// `tcx`, `netlink` (programs loaded by this run) or `daemon`.
    pub via: String,
    /// Interfaces the programs were attached to (empty through a daemon).
    pub interfaces: Vec<String>,
    /// The network namespace of `[target]`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The random pool's seed: put it in the file to replay the same picks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub outcome: Outcome,
    /// Why the run was aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub elapsed_seconds: f64,
    /// In timeline order.
    pub steps: Vec<StepReport>,
}

impl ScenarioReport {
    /// Steps that could not be applied.
    pub fn failed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.status == Status::Failed)
            .count()
    }

    /// The text table.
    pub fn text(&self) -> String {
        let outcome = match self.outcome {
            Outcome::Completed => "completed",
            Outcome::Interrupted => "interrupted",
            Outcome::Aborted => "aborted",
        };
        let mut out = format!(
            "scenario `{}` ({}): {outcome} after {}, via {}",
            self.scenario,
            self.file,
            secs(round_tenth(self.elapsed_seconds)),
            self.via
        );
        if !self.interfaces.is_empty() {
            out += &format!(" on {}", self.interfaces.join(", "));
        }
        if let Some(n) = &self.netns {
            out += &format!(" in netns {n}");
        }
        if let Some(s) = self.seed {
            out += &format!(", seed {s}");
        }
        out.push('\n');
        if let Some(d) = &self.detail {
            out += &format!("  {d}\n");
        }
        let rows: Vec<[String; 6]> = self
            .steps
            .iter()
            .map(|s| {
                let active = match (s.started_seconds, s.ended_seconds) {
                    (Some(a), Some(b)) => format!("{a:.1}s-{b:.1}s"),
                    (Some(a), None) => format!("{a:.1}s-"),
                    _ => "-".into(),
                };
                let ran = s.started_seconds.is_some();
                let what = match (&s.detail, s.status) {
                    (Some(d), Status::Failed | Status::Skipped) => d.clone(),
                    _ => s.description.clone(),
                };
                [
                    s.name.clone(),
                    active,
                    s.status.text().to_string(),
                    if ran {
                        s.matched_packets.to_string()
                    } else {
                        "-".into()
                    },
                    if ran {
                        s.acted_packets.to_string()
                    } else {
                        "-".into()
                    },
                    what,
                ]
            })
            .collect();
        let head = ["STEP", "ACTIVE", "STATUS", "MATCHED", "ACTED", "FAULT"];
        let mut width = head.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            format!(
                "  {:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}\n",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                w0 = width[0],
                w1 = width[1],
                w2 = width[2],
                w3 = width[3],
                w4 = width[4],
            )
        };
        out += &line(head);
        for r in &rows {
            out += &line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
        }
        out
    }
}

fn round_tenth(s: f64) -> Duration {
    Duration::from_millis(((s * 10.0).round() as u64) * 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{file::parse, plan::build};

    fn report() -> ScenarioReport {
        let s = parse(
            "g.toml",
            "[[step]]\nname = \"rabbit\"\nat = \"1s\"\nfor = \"2s\"\nfault = \"blackhole\"\nport = [5672]\n\
             [[step]]\nname = \"pg\"\nat = \"4s\"\nfor = \"2s\"\nfault = \"hang\"\nport = [5432]\n",
        )
        .unwrap();
        let plan = build(&s, 0);
        let mut steps: Vec<StepReport> = plan.activities.iter().map(StepReport::planned).collect();
        steps[0].started_seconds = Some(1.0);
        steps[0].ended_seconds = Some(3.01);
        steps[0].status = Status::Done;
        steps[0].set_counters(&RuleCounters {
            matched_packets: 38,
            matched_bytes: 2812,
            acted_packets: 38,
            acted_bytes: 2812,
            ..Default::default()
        });
        ScenarioReport {
            scenario: s.name,
            file: "g.toml".into(),
            via: "tcx".into(),
            interfaces: vec!["veth-s".into(), "lo".into()],
            netns: None,
            seed: None,
            outcome: Outcome::Interrupted,
            detail: None,
            elapsed_seconds: 3.54,
            steps,
        }
    }

    #[test]
    fn text_table_has_a_line_per_step() {
        let t = report().text();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert_eq!(
            lines[0],
            "scenario `g` (g.toml): interrupted after 3.5s, via tcx on veth-s, lo"
        );
        assert!(lines[1].trim_start().starts_with("STEP"), "{t}");
        assert!(
            lines[2].contains("rabbit") && lines[2].contains("1.0s-3.0s"),
            "{t}"
        );
        assert!(lines[2].contains("done") && lines[2].contains("38"), "{t}");
        assert!(
            lines[3].contains("not run") && lines[3].contains("hang"),
            "{t}"
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v = serde_json::to_value(report()).unwrap();
        assert_eq!(v["outcome"], "interrupted");
        assert_eq!(v["via"], "tcx");
        let s0 = &v["steps"][0];
        assert_eq!(s0["name"], "rabbit");
        assert_eq!(s0["kind"], "step");
        assert_eq!(s0["fault"], "blackhole");
        assert_eq!(s0["status"], "done");
        assert_eq!(s0["planned_start_seconds"], 1.0);
        assert_eq!(s0["acted_packets"], 38);
        assert_eq!(v["steps"][1]["status"], "not_run");
        assert!(v["steps"][1]["started_seconds"].is_null());
        assert!(v.get("seed").is_none());
    }
}
