//! A rule as users write it, in the daemon's JSON API and in the TOML
//! config: one serde type for both, so a field means the same everywhere.
//! `RuleSpec::to_rule` validates it into a `rules::Rule`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    faults::{DelayParams, Dist, Fault, Mix, delay},
    rules::{Direction, Peer, Per, PortRange, Proto, Rule, Side},
};

/// The fault's wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultName {
    Blackhole,
    Reset,
    Hang,
    Corrupt,
    Mark,
    Ecn,
    Chaos,
    Delay,
}

/// A port as written: `5432` or `"8000-8100"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(i64),
    Text(String),
}

/// A rule as written by a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Optional label, shown in lists and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub fault: FaultName,
    /// Destination or source ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dport: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sport: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<Per>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Also take non-first IP fragments.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fragments: bool,
    /// `mark`: the skb mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    /// `chaos`: `drop:20,reset:10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<String>,
    /// `delay` (and a chaos mix's `delay` entries): mean delay in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<f64>,
    /// `delay`: jitter, a duration (`20ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<String>,
    /// `delay`: `uniform` (default) or `normal` jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dist: Option<Dist>,
    /// `delay`: let jitter reorder a flow's packets.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reorder: bool,
    /// How long the rule lasts: `30s`, `10m` (the config calls it `ttl`).
    #[serde(
        default,
        rename = "for",
        alias = "ttl",
        skip_serializing_if = "Option::is_none"
    )]
    pub lasts: Option<String>,
    /// Allow a rule the guard rails refuse (port 22, our own API port).
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// The rule goes when this process does (`faultbpf run`, `--wait`), so
    /// a killed client leaves nothing behind. A pid of the daemon's pid
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A field that failed validation, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

impl RuleSpec {
    /// A spec for the CLI's own flags, so the CLI and the API share one
    /// validation path.
    pub fn from_rule(rule: &Rule, name: Option<String>, force: bool) -> Self {
        let mut spec = Self {
            name,
            fault: match &rule.fault {
                Fault::Blackhole => FaultName::Blackhole,
                Fault::Reset => FaultName::Reset,
                Fault::Hang => FaultName::Hang,
                Fault::Corrupt => FaultName::Corrupt,
                Fault::Mark { .. } => FaultName::Mark,
                Fault::Ecn => FaultName::Ecn,
                Fault::Chaos(_) => FaultName::Chaos,
                Fault::Delay(_) => FaultName::Delay,
            },
            port: Vec::new(),
            dport: Vec::new(),
            sport: Vec::new(),
            proto: Some(rule.proto),
            peer: rule.peers.iter().map(|p| p.to_string()).collect(),
            pct: Some(rule.pct),
            per: Some(rule.per),
            direction: Some(rule.direction),
            fragments: rule.fragments,
            mark: match rule.fault {
                Fault::Mark { value } => Some(value),
                _ => None,
            },
            mix: match &rule.fault {
                Fault::Chaos(m) => Some(m.to_string()),
                _ => None,
            },
            lasts: rule
                .lasts
                .map(|d| humantime::format_duration(d).to_string()),
            delay_ms: rule.fault.delay().map(|d| d.mean.as_secs_f64() * 1e3),
            jitter: rule
                .fault
                .delay()
                .filter(|d| !d.jitter.is_zero())
                .map(|d| humantime::format_duration(d.jitter).to_string()),
            dist: rule
                .fault
                .delay()
                .map(|d| d.dist)
                .filter(|d| *d != Dist::Uniform),
            reorder: rule.fault.delay().is_some_and(|d| d.reorder),
            force,
            owner_pid: None,
        };
        for r in &rule.ports {
            let text = if r.first == r.last {
                PortSpec::Number(r.first.into())
            } else {
                PortSpec::Text(format!("{}-{}", r.first, r.last))
            };
            match r.side {
                Side::Either => spec.port.push(text),
                Side::Dst => spec.dport.push(text),
                Side::Src => spec.sport.push(text),
            }
        }
        spec
    }

    /// Validates into a rule with counter slot `id`. `default_ttl` applies
    /// when the spec gives no `for`.
    pub fn to_rule(&self, id: u32, default_ttl: Option<Duration>) -> Result<Rule, SpecError> {
        let fault = match self.fault {
            FaultName::Blackhole => Fault::Blackhole,
            FaultName::Reset => Fault::Reset,
            FaultName::Hang => Fault::Hang,
            FaultName::Corrupt => Fault::Corrupt,
            FaultName::Ecn => Fault::Ecn,
            FaultName::Mark => Fault::Mark {
                value: self
                    .mark
                    .ok_or_else(|| bad("mark", "the mark fault needs a `mark` value"))?,
            },
            FaultName::Chaos => {
                let mix = self
                    .mix
                    .as_deref()
                    .ok_or_else(|| bad("mix", "the chaos fault needs a `mix`, e.g. \"drop:20\""))?;
                let mut mix = mix.parse::<Mix>().map_err(|e| bad("mix", e))?;
                if mix.delays() {
                    mix.delay = Some(self.delay_params()?);
                }
                Fault::Chaos(mix)
            }
            FaultName::Delay => Fault::Delay(self.delay_params()?),
        };
        let delays = matches!(self.fault, FaultName::Delay)
            || (self.fault == FaultName::Chaos
                && self.mix.as_deref().is_some_and(|m| m.contains("delay")));
        if !delays
            && (self.delay_ms.is_some()
                || self.jitter.is_some()
                || self.dist.is_some()
                || self.reorder)
        {
            return Err(bad(
                "delay_ms",
                "only delay (or a mix with delay) takes delay_ms, jitter, dist, reorder",
            ));
        }
        if self.mark.is_some() && self.fault != FaultName::Mark {
            return Err(bad("mark", "only the mark fault takes a `mark`"));
        }
        if self.mix.is_some() && self.fault != FaultName::Chaos {
            return Err(bad("mix", "only the chaos fault takes a `mix`"));
        }
        let mut ports = Vec::new();
        for (field, side, list) in [
            ("port", Side::Either, &self.port),
            ("dport", Side::Dst, &self.dport),
            ("sport", Side::Src, &self.sport),
        ] {
            for p in list {
                let text = match p {
                    PortSpec::Number(n) => n.to_string(),
                    PortSpec::Text(t) => t.clone(),
                };
                ports.push(PortRange::parse(side, &text).map_err(|e| bad(field, e))?);
            }
        }
        if ports.is_empty() {
            return Err(bad("port", "give at least one of `port`, `dport`, `sport`"));
        }
        let pct = self.pct.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&pct) {
            return Err(bad(
                "pct",
                format!("{pct} is out of range (expected 0 to 100)"),
            ));
        }
        let peers = self
            .peer
            .iter()
            .map(|p| p.parse::<Peer>().map_err(|e| bad("peer", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let lasts = match &self.lasts {
            Some(s) => Some(parse_duration(s).map_err(|e| bad("for", e))?),
            None => default_ttl,
        };
        if let Some(n) = &self.name
            && (n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()))
        {
            return Err(bad("name", "1 to 64 printable characters"));
        }
        Ok(Rule {
            proto: self.proto.unwrap_or(Proto::All),
            peers,
            pct,
            per: self.per.unwrap_or(Per::Packet),
            direction: self.direction.unwrap_or(Direction::Both),
            fragments: self.fragments,
            lasts,
            ..Rule::new(id, fault, ports)
        })
    }
}

impl RuleSpec {
    /// `delay_ms`, `jitter`, `dist`, `reorder`, checked.
    fn delay_params(&self) -> Result<DelayParams, SpecError> {
        let ms = self
            .delay_ms
            .ok_or_else(|| bad("delay_ms", "the delay fault needs `delay_ms`"))?;
        let mean = delay::ms(ms).map_err(|e| bad("delay_ms", e))?;
        let jitter = match &self.jitter {
            Some(j) => humantime::parse_duration(j.trim()).map_err(|e| {
                bad(
                    "jitter",
                    format!("`{j}` is not a duration ({e}); e.g. 20ms"),
                )
            })?,
            None => Duration::ZERO,
        };
        DelayParams::new(mean, jitter, self.dist.unwrap_or_default(), self.reorder)
            .map_err(|e| bad("delay_ms", e))
    }
}

/// `30s`, `10m`, `1h30m`; positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); examples: 30s, 5m, 1h30m"))?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero; give a positive duration"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> RuleSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn minimal_spec_gets_defaults_and_ttl() {
        let r = spec(r#"{"fault":"blackhole","port":[5672]}"#)
            .to_rule(4, Some(Duration::from_secs(600)))
            .unwrap();
        assert_eq!(r.id, 4);
        assert_eq!(r.fault, Fault::Blackhole);
        assert_eq!(r.pct, 100.0);
        assert_eq!(r.lasts, Some(Duration::from_secs(600)));
    }

    #[test]
    fn every_field() {
        let r = spec(
            r#"{"name":"x","fault":"chaos","mix":"drop:20,reset:10","port":[1,"8000-8100"],
                "dport":[9],"sport":["10"],"proto":"udp","peer":["10.200.0.0/24"],"pct":50,
                "per":"flow","direction":"egress","fragments":true,"for":"30s"}"#,
        )
        .to_rule(0, None)
        .unwrap();
        assert_eq!(r.ports.len(), 4);
        assert_eq!(r.proto, Proto::Udp);
        assert_eq!(r.per, Per::Flow);
        assert_eq!(r.lasts, Some(Duration::from_secs(30)));
        assert!(r.fragments);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (json, field) in [
            (r#"{"fault":"blackhole","port":[0]}"#, "port"),
            (r#"{"fault":"blackhole","port":[5],"pct":101}"#, "pct"),
            (r#"{"fault":"blackhole"}"#, "port"),
            (r#"{"fault":"mark","port":[5]}"#, "mark"),
            (r#"{"fault":"chaos","port":[5],"mix":"boom:1"}"#, "mix"),
            (r#"{"fault":"blackhole","port":[5],"for":"soon"}"#, "for"),
            (
                r#"{"fault":"blackhole","port":[5],"peer":["nope"]}"#,
                "peer",
            ),
            (r#"{"fault":"blackhole","dport":["9-1"]}"#, "dport"),
        ] {
            let e = spec(json).to_rule(0, None).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn unknown_fields_and_faults_are_rejected() {
        assert!(serde_json::from_str::<RuleSpec>(r#"{"fault":"blackhole","prot":1}"#).is_err());
        assert!(serde_json::from_str::<RuleSpec>(r#"{"fault":"explode"}"#).is_err());
    }

    #[test]
    fn round_trips_through_a_rule() {
        let r = spec(r#"{"fault":"reset","dport":["80-81"],"pct":30,"per":"flow"}"#)
            .to_rule(2, None)
            .unwrap();
        let back = RuleSpec::from_rule(&r, None, false)
            .to_rule(2, None)
            .unwrap();
        assert_eq!(back, r);
    }
}
