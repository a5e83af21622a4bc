//! The daemon's HTTP/JSON API as Rust types: what every route takes and
//! answers (documented in `docs/openapi.yaml`, checked against these types
//! by the e2e tests), and a typed client for it.
//!
//! The daemon serialises these types and the client deserialises the same
//! ones, so the CLI, `faultbpf run`, the library guard and scenarios have no
//! private copies of the daemon's replies.

pub mod client;

use std::collections::BTreeMap;

use faultbpf_common::RuleCounters;
use serde::{Deserialize, Serialize};

pub use client::{Client, ClientError, DEFAULT_SOCKET};

use crate::{Fault, Rule, spec::RuleSpec};

/// Where a rule came from: the API, or the config file (replaced on
/// reload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Api,
    Config,
}

/// A rule, as `POST /v1/rules`, `GET /v1/rules[/{id}]` and `DELETE
/// /v1/rules/{id}` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInfo {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The fault's wire name.
    pub fault: String,
    /// One line for humans: "blackhole tcp+udp port 5672 (100%)".
    pub description: String,
    pub origin: Origin,
    /// Seconds until the kernel stops applying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<f64>,
    /// Rules with a `container`: where the rule acts ("container srv (pid
    /// 4242, network namespace net:[4026532890], on eth0, lo)"), or why it
    /// acts nowhere now ("container srv is not running; waiting for it").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The rule as it was written.
    pub spec: RuleSpec,
}

/// A rule's counters, as `GET /v1/stats` answers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleStats {
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub fault: String,
    /// "port 5432", "dport 8000-8100", ...
    pub ports: Vec<String>,
    pub description: String,
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub acted_packets: u64,
    pub acted_bytes: u64,
    /// `chaos`: packets each mix action acted on, e.g. {"drop": 20,
    /// "reset": 10}; absent for other faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<BTreeMap<String, u64>>,
    /// `http`: connections steered, requests seen, requests faulted (the
    /// latter two are also `matched_packets` and `acted_packets`); absent
    /// for other faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::http::CounterValues>,
}

impl RuleStats {
    /// The counters of `rule` (the rule this entry is about: a chaos rule's
    /// `actions` go back into its mix's order).
    pub fn counters(&self, rule: &Rule) -> RuleCounters {
        let mut c = RuleCounters {
            matched_packets: self.matched_packets,
            matched_bytes: self.matched_bytes,
            acted_packets: self.acted_packets,
            acted_bytes: self.acted_bytes,
            ..Default::default()
        };
        if let (Some(actions), Fault::Chaos(mix)) = (&self.actions, &rule.fault) {
            for (slot, (def, _)) in c.mix_packets.iter_mut().zip(mix.entries()) {
                *slot = actions
                    .get(def.mix_action.unwrap_or(def.name))
                    .copied()
                    .unwrap_or(0);
            }
        }
        c
    }
}

/// `{"rules": [...]}`: the body of `GET /v1/rules` and `GET /v1/stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleList<T> {
    pub rules: Vec<T>,
}

/// `DELETE /v1/rules`: how many rules went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    pub removed: usize,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    /// `tcx` or `netlink`.
    pub attach: String,
    pub interfaces: Vec<String>,
    /// How many rules the daemon holds.
    pub rules: usize,
}

/// An RFC 9457 problem body: every error answer of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_types_round_trip() {
        let spec: RuleSpec = serde_json::from_str(r#"{"fault":"reset","port":[5432]}"#).unwrap();
        let info = RuleInfo {
            id: 3,
            name: Some("pg".into()),
            fault: "reset".into(),
            description: "reset tcp+udp port 5432 (100%)".into(),
            origin: Origin::Api,
            expires_in_seconds: Some(599.5),
            target: None,
            spec,
        };
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<RuleInfo>(&text).unwrap(), info);
        let list: RuleList<RuleInfo> =
            serde_json::from_str(&format!(r#"{{"rules":[{text}]}}"#)).unwrap();
        assert_eq!(list.rules, vec![info]);
    }
}
