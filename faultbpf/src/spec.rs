//! A rule as users write it — in the daemon's JSON API, the TOML config,
//! scenario files, and (built from flags) on the command line — and the one
//! place it is validated into a `rules::Rule`.
//!
//! Validation is complete before anything reaches the kernel: durations and
//! numbers are bounded (`MAX_LASTS`, the delay's 60 s), port ranges are
//! merged and capped (`MAX_RANGES`), the fault's own fields are checked
//! against its registry entry, and the guard rails ([`Guards`]: port 22,
//! the daemon's own ports, a cut of most of the port space) refuse unless
//! `force` is set. Every caller — CLI, `run`, the library guard, scenarios,
//! the daemon — goes through [`RuleSpec::validate`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    faults::{self, Dist},
    rules::{Direction, Peer, Per, PortRange, Proto, Rule, Side},
};

/// The longest `for` / `ttl` a rule (or a scenario time) may have: 30 days.
/// Longer is a typo, and would overflow clocks.
pub const MAX_LASTS: Duration = Duration::from_secs(30 * 24 * 3600);
/// Port entries a spec may list before merging.
pub const MAX_PORT_ENTRIES: usize = 1024;
/// Port ranges a rule may hold after overlapping and adjacent ones are
/// merged.
pub const MAX_RANGES: usize = 64;
/// A rule covering more ports than this cuts most of the host: it needs
/// `force`.
pub const WIDE_CUT: u32 = 32_768;

/// The fields every rule has, whatever its fault (the others belong to
/// one fault's `params`, see `faults::REGISTRY`).
pub const COMMON_FIELDS: &[&str] = &[
    "name",
    "fault",
    "port",
    "dport",
    "sport",
    "proto",
    "peer",
    "pct",
    "per",
    "direction",
    "fragments",
    "for",
    "force",
    "owner_pid",
    "container",
    "engine",
];

/// The longest container name or id a rule may give.
pub const MAX_CONTAINER_NAME: usize = 128;

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
    /// A wire name from `faults::REGISTRY`; another is refused while
    /// parsing, so TOML errors point at the value.
    #[serde(deserialize_with = "known_fault")]
    pub fault: String,
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
    /// `throttle`: the rate, as tc writes it (`10mbit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// `throttle`: the token bucket's depth, as tc writes it (`64kb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<String>,
    /// `dns`: the response code answered; none: queries vanish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<faults::Rcode>,
    /// `dns`: names whose queries (and those of names under them) the rule
    /// takes; none: every query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain: Vec<String>,
    /// `http`: what a faulted request gets, `503` (400-599) or `abort`; a
    /// number is taken too.
    #[serde(
        default,
        deserialize_with = "status_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<String>,
    /// `http`: `Retry-After` on the fault, a duration (whole seconds,
    /// rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// `http`: fault only these methods (default every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub method: Vec<String>,
    /// `http`: fault only paths under these prefixes (default every path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// `http`: `before` the server sees the request, or `after` it acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<crate::http::When>,
    /// `http`: wait this long before the faulted answer's first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_first_byte: Option<String>,
    /// `http`: the server's host or the clients' (`auto` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<crate::http::Side>,
    /// `http`, client side: the cgroup v2 whose connects are steered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
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
    /// A daemon rule only: the Docker or Podman container (name or id)
    /// whose network namespace the rule acts in, instead of the daemon's.
    /// Resolved when the rule is added (refused if it is not running),
    /// and followed when the container restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The engine that knows `container`: docker or podman (default:
    /// docker, then podman).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<crate::target::Engine>,
}

pub(crate) fn known_fault<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    match faults::lookup(&name) {
        Some(_) => Ok(name),
        None if name == crate::http::rule::FAULT => Ok(name),
        None => Err(serde::de::Error::custom(format!(
            "`{name}` is not a fault (expected one of {})",
            faults::names()
        ))),
    }
}

/// `status`: `503` or `"503"` or `"abort"`, kept as text.
pub(crate) fn status_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    Ok(Some(match Either::deserialize(d)? {
        Either::Number(n) => n.to_string(),
        Either::Text(t) => t,
    }))
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
    /// A guard rail refused it: `force` would let it through (the daemon
    /// answers 403 rather than 400).
    pub guarded: bool,
}

impl SpecError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
            guarded: false,
        }
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError::new(field, message)
}

/// Ports no rule may cut without `force`, and why: ssh, and the daemon's
/// own TCP API and metrics ports where there are some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guards {
    ports: Vec<(u16, String)>,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            ports: vec![(22, "it would cut ssh to this host".into())],
        }
    }
}

impl Guards {
    /// Also guards `port`, for `why`.
    pub fn with_port(mut self, port: u16, why: impl Into<String>) -> Self {
        self.ports.push((port, why.into()));
        self
    }

    /// The refusal for `rule`, if a guard rail applies.
    pub(crate) fn check(&self, rule: &Rule) -> Result<(), SpecError> {
        let guarded = |message: String| SpecError {
            field: "port",
            message: format!("{message}; add \"force\": true (--force) if you mean it"),
            guarded: true,
        };
        for (port, why) in &self.ports {
            if rule.ports.iter().any(|r| (r.first..=r.last).contains(port)) {
                return Err(guarded(format!("refusing to fault port {port}: {why}")));
            }
        }
        let covered = covered_ports(&rule.ports);
        if covered > WIDE_CUT {
            return Err(guarded(format!(
                "refusing to fault {covered} ports ({}): a cut that wide takes down most of \
                 this host's traffic",
                rule.ports_text().join(", ")
            )));
        }
        Ok(())
    }
}

/// How a spec becomes a rule: the expiry a rule without `for` gets, and
/// the guard rails.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub default_ttl: Option<Duration>,
    pub guards: Guards,
}

impl RuleSpec {
    /// A spec of `fault` with nothing else set.
    pub fn new(fault: &str) -> Self {
        Self {
            name: None,
            fault: fault.to_string(),
            port: Vec::new(),
            dport: Vec::new(),
            sport: Vec::new(),
            proto: None,
            peer: Vec::new(),
            pct: None,
            per: None,
            direction: None,
            fragments: false,
            mark: None,
            mix: None,
            delay_ms: None,
            jitter: None,
            dist: None,
            reorder: false,
            rate: None,
            burst: None,
            rcode: None,
            domain: Vec::new(),
            status: None,
            retry_after: None,
            method: Vec::new(),
            path: Vec::new(),
            when: None,
            delay_first_byte: None,
            side: None,
            cgroup: None,
            lasts: None,
            force: false,
            owner_pid: None,
            container: None,
            engine: None,
        }
    }

    /// The spec of a validated rule (the CLI's flags and the library
    /// guard's builder become a spec this way, so they share one
    /// validation path with the API).
    pub fn from_rule(rule: &Rule, name: Option<String>, force: bool) -> Self {
        let mut spec = Self {
            name,
            proto: Some(rule.proto),
            peer: rule.peers.iter().map(|p| p.to_string()).collect(),
            pct: Some(rule.pct),
            per: Some(rule.per),
            direction: Some(rule.direction),
            fragments: rule.fragments,
            lasts: rule
                .lasts
                .map(|d| humantime::format_duration(d).to_string()),
            force,
            ..Self::new(rule.fault.name())
        };
        rule.fault.write_params(&mut spec);
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

    /// Validates into a rule with counter slot `id`, completely: nothing
    /// about the rule is checked later, so a caller may write it to the
    /// kernel as soon as this returns `Ok`.
    pub fn validate(&self, id: u32, policy: &Policy) -> Result<Rule, SpecError> {
        let def = faults::lookup(&self.fault).ok_or_else(|| {
            bad(
                "fault",
                format!(
                    "`{}` is not a fault (expected one of {})",
                    self.fault,
                    faults::names()
                ),
            )
        })?;
        self.check_params(def)?;
        if let Some(per @ (Per::Request | Per::Connection)) = self.per {
            return Err(bad(
                "per",
                format!(
                    "`{}` is for the http fault; {} draws per packet or flow",
                    serde_json::to_value(per)
                        .unwrap_or_default()
                        .as_str()
                        .unwrap_or("?"),
                    def.name
                ),
            ));
        }
        let fault = (def.build)(self)?;
        let ports = if def.kind == faultbpf_common::FaultKind::Dns
            && self.port.is_empty()
            && self.dport.is_empty()
            && self.sport.is_empty()
        {
            // DNS queries go to port 53 unless the rule says otherwise.
            vec![PortRange {
                side: Side::Dst,
                first: faults::dns::DEFAULT_PORT,
                last: faults::dns::DEFAULT_PORT,
            }]
        } else {
            self.port_ranges()?
        };
        let pct = self.pct.unwrap_or(100.0);
        if !(0.0..=100.0).contains(&pct) {
            return Err(bad(
                "pct",
                format!("{pct} is out of range (expected 0 to 100)"),
            ));
        }
        let proto = self.proto.unwrap_or(Proto::All);
        if proto == Proto::Udp && !def.udp {
            return Err(bad(
                "proto",
                format!(
                    "{} has nothing to do on UDP (it stalls TCP payload after the handshake); \
                     use blackhole to lose UDP datagrams",
                    def.name
                ),
            ));
        }
        let peers = self
            .peer
            .iter()
            .map(|p| p.parse::<Peer>().map_err(|e| bad("peer", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let lasts = match &self.lasts {
            Some(s) => Some(parse_duration(s).map_err(|e| bad("for", e))?),
            None => policy.default_ttl,
        };
        if let Some(n) = &self.name
            && (n.is_empty() || n.chars().count() > 64 || n.chars().any(|c| c.is_control()))
        {
            return Err(bad("name", "1 to 64 printable characters"));
        }
        if let Some(pid) = self.owner_pid
            && !(1..=i32::MAX as u32).contains(&pid)
        {
            return Err(bad(
                "owner_pid",
                format!("{pid} is not a process id (expected 1 to {})", i32::MAX),
            ));
        }
        if let Some(c) = &self.container
            && !valid_container_name(c)
        {
            return Err(bad(
                "container",
                format!(
                    "`{c}` is not a container name or id (1 to {MAX_CONTAINER_NAME} of \
                     a-z A-Z 0-9 _ . -, starting with a letter or digit)"
                ),
            ));
        }
        if let (Some(e), None) = (self.engine, &self.container) {
            return Err(bad(
                "engine",
                format!("`{e}` applies to `container`; name the container too"),
            ));
        }
        let rule = Rule {
            proto,
            peers,
            pct,
            per: self.per.unwrap_or(Per::Packet),
            direction: self.direction.unwrap_or(Direction::Both),
            fragments: self.fragments,
            lasts,
            ..Rule::new(id, fault, ports)
        };
        if !self.force {
            policy.guards.check(&rule)?;
        }
        Ok(rule)
    }

    /// Refuses a field that belongs to another fault (`mark` on a
    /// blackhole): whatever the spec carries beyond `COMMON_FIELDS` must be
    /// one of this fault's `params`.
    fn check_params(&self, def: &faults::FaultDef) -> Result<(), SpecError> {
        let v = serde_json::to_value(self).map_err(|e| bad("fault", e.to_string()))?;
        let Some(fields) = v.as_object() else {
            return Ok(());
        };
        for field in fields.keys() {
            if COMMON_FIELDS.contains(&field.as_str())
                || def.params.iter().any(|p| p.field == field)
            {
                continue;
            }
            let owners: Vec<&str> = faults::REGISTRY
                .iter()
                .filter(|d| d.params.iter().any(|p| p.field == field))
                .map(|d| d.name)
                .collect();
            if let Some(f) = crate::http::rule::FIELDS.iter().find(|f| **f == field) {
                return Err(bad(
                    f,
                    format!("{} does not take `{field}` (only http does)", def.name),
                ));
            }
            let field = faults::REGISTRY
                .iter()
                .flat_map(|d| d.params)
                .find(|p| p.field == field)
                .map_or("fault", |p| p.field);
            return Err(bad(
                field,
                format!(
                    "{} does not take `{field}` (only {} do)",
                    def.name,
                    owners.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// `port`, `dport` and `sport` as ranges: at least one, overlapping and
    /// adjacent ranges of a side merged, at most `MAX_RANGES` left.
    fn port_ranges(&self) -> Result<Vec<PortRange>, SpecError> {
        let given = self.port.len() + self.dport.len() + self.sport.len();
        if given > MAX_PORT_ENTRIES {
            return Err(bad(
                "port",
                format!("{given} port entries; at most {MAX_PORT_ENTRIES} (write ranges as A-B)"),
            ));
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
        let ports = merge(ports);
        if ports.len() > MAX_RANGES {
            return Err(bad(
                "port",
                format!(
                    "{} separate port ranges after merging; at most {MAX_RANGES} per rule \
                     (use fewer, wider ranges, or several rules)",
                    ports.len()
                ),
            ));
        }
        Ok(ports)
    }
}

/// A name or id as Docker and Podman allow them: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`
/// (nothing else may reach an engine's command line or request path).
pub fn valid_container_name(name: &str) -> bool {
    name.len() <= MAX_CONTAINER_NAME
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Sorts ranges and merges the overlapping and adjacent ones of each side.
pub fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    let order = |s: Side| s as u8;
    ranges.sort_by_key(|r| (order(r.side), r.first, r.last));
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if prev.side == r.side && u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// How many distinct port numbers the ranges cover, whatever their side.
fn covered_ports(ranges: &[PortRange]) -> u32 {
    let mut spans: Vec<(u32, u32)> = ranges
        .iter()
        .map(|r| (u32::from(r.first), u32::from(r.last)))
        .collect();
    spans.sort();
    let mut total = 0;
    let mut reach = 0;
    for (first, last) in spans {
        let from = first.max(reach);
        if last >= from {
            total += last - from + 1;
            reach = last + 1;
        }
    }
    total
}

/// `30s`, `10m`, `1h30m`: positive and at most `MAX_LASTS`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_bounded(s, MAX_LASTS)?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero; give a positive duration"));
    }
    Ok(d)
}

/// A duration of at most `max` (zero allowed).
pub fn parse_bounded(s: &str, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); examples: 30s, 5m, 1h30m"))?;
    if d > max {
        return Err(format!(
            "`{s}` is longer than the maximum, {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fault;

    fn spec(json: &str) -> RuleSpec {
        serde_json::from_str(json).unwrap()
    }

    fn ttl(secs: u64) -> Policy {
        Policy {
            default_ttl: Some(Duration::from_secs(secs)),
            ..Policy::default()
        }
    }

    #[test]
    fn minimal_spec_gets_defaults_and_ttl() {
        let r = spec(r#"{"fault":"blackhole","port":[5672]}"#)
            .validate(4, &ttl(600))
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
        .validate(0, &Policy::default())
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
            (
                r#"{"fault":"blackhole","port":[5],"container":"-x"}"#,
                "container",
            ),
            (
                r#"{"fault":"blackhole","port":[5],"container":"a b"}"#,
                "container",
            ),
            (
                r#"{"fault":"blackhole","port":[5],"engine":"docker"}"#,
                "engine",
            ),
        ] {
            let e = spec(json).validate(0, &Policy::default()).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn unknown_fields_and_faults_are_rejected() {
        assert!(serde_json::from_str::<RuleSpec>(r#"{"fault":"blackhole","prot":1}"#).is_err());
        let e = serde_json::from_str::<RuleSpec>(r#"{"fault":"explode","port":[1]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`explode`") && e.contains("blackhole"), "{e}");
        let e = RuleSpec::new("explode")
            .validate(0, &Policy::default())
            .unwrap_err();
        assert_eq!(e.field, "fault");
    }

    #[test]
    fn huge_values_are_refused_naming_them() {
        for (json, field, needle) in [
            (
                r#"{"fault":"blackhole","port":[5],"for":"300000000000y"}"#,
                "for",
                "300000000000y",
            ),
            (
                r#"{"fault":"blackhole","port":[5],"for":"31days"}"#,
                "for",
                "31days",
            ),
            (
                r#"{"fault":"delay","port":[5],"delay_ms":1e300}"#,
                "delay_ms",
                "1e300",
            ),
            (
                r#"{"fault":"delay","port":[5],"delay_ms":5,"jitter":"300000000000y"}"#,
                "jitter",
                "300000000000y",
            ),
            (
                r#"{"fault":"delay","port":[5],"delay_ms":30000,"jitter":"11s","dist":"normal"}"#,
                "delay_ms",
                "normal",
            ),
            (
                r#"{"fault":"blackhole","port":[5],"owner_pid":0}"#,
                "owner_pid",
                "0",
            ),
            (
                r#"{"fault":"blackhole","port":[5],"owner_pid":4294967295}"#,
                "owner_pid",
                "4294967295",
            ),
            (
                r#"{"fault":"hang","port":[5],"proto":"udp"}"#,
                "proto",
                "blackhole",
            ),
            (
                r#"{"fault":"blackhole","port":[5],"mark":3}"#,
                "mark",
                "only mark",
            ),
            (
                r#"{"fault":"reset","port":[5],"delay_ms":3}"#,
                "delay_ms",
                "only chaos, delay",
            ),
            (
                r#"{"fault":"chaos","port":[5],"mix":"drop:5","delay_ms":3}"#,
                "delay_ms",
                "drop:5",
            ),
        ] {
            let e = spec(json).validate(0, &Policy::default()).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(e.message.contains(needle), "{json}: {e}");
        }
        // Still fine at the bounds.
        for json in [
            r#"{"fault":"blackhole","port":[5],"for":"30days"}"#,
            r#"{"fault":"delay","port":[5],"delay_ms":60000}"#,
            r#"{"fault":"hang","port":[5],"proto":"tcp"}"#,
        ] {
            spec(json).validate(0, &Policy::default()).unwrap();
        }
    }

    #[test]
    fn ranges_are_merged_and_capped() {
        let mut s = RuleSpec::new("blackhole");
        s.dport = vec![PortSpec::Text("9461-65535".into()); 100];
        s.dport.push(PortSpec::Number(9460));
        s.force = true;
        let r = s.validate(0, &Policy::default()).unwrap();
        assert_eq!(
            r.ports,
            vec![PortRange {
                side: Side::Dst,
                first: 9460,
                last: 65535
            }]
        );

        let mut s = RuleSpec::new("blackhole");
        s.port = (0..MAX_RANGES as i64 + 1)
            .map(|i| PortSpec::Number(1000 + 2 * i))
            .collect();
        let e = s.validate(0, &Policy::default()).unwrap_err();
        assert!(e.message.contains("65 separate port ranges"), "{e}");

        let mut s = RuleSpec::new("blackhole");
        s.port = vec![PortSpec::Number(80); MAX_PORT_ENTRIES + 1];
        let e = s.validate(0, &Policy::default()).unwrap_err();
        assert!(e.message.contains("1025 port entries"), "{e}");
    }

    #[test]
    fn guard_rails_refuse_without_force() {
        let guards = Guards::default().with_port(9464, "it would cut the daemon's metrics");
        let policy = Policy {
            default_ttl: None,
            guards,
        };
        for (json, needle) in [
            (r#"{"fault":"blackhole","port":[22]}"#, "port 22"),
            (r#"{"fault":"blackhole","sport":["1-65535"]}"#, "port 22"),
            (
                r#"{"fault":"blackhole","dport":["9000-9999"]}"#,
                "port 9464",
            ),
            (
                r#"{"fault":"blackhole","dport":["10000-50000"]}"#,
                "40001 ports",
            ),
        ] {
            let e = spec(json).validate(0, &policy).unwrap_err();
            assert!(e.guarded && e.message.contains(needle), "{json}: {e}");
            let mut forced = spec(json);
            forced.force = true;
            forced.validate(0, &policy).unwrap();
        }
        spec(r#"{"fault":"blackhole","dport":["23-9000"]}"#)
            .validate(0, &policy)
            .unwrap();
    }

    #[test]
    fn a_container_and_its_engine_are_fields_of_the_spec() {
        let s = spec(r#"{"fault":"blackhole","port":[5],"container":"srv","engine":"podman"}"#);
        assert_eq!(s.container.as_deref(), Some("srv"));
        assert_eq!(s.engine, Some(crate::target::Engine::Podman));
        s.validate(0, &Policy::default()).unwrap();
        assert!(
            serde_json::from_str::<RuleSpec>(
                r#"{"fault":"blackhole","port":[5],"container":"srv","engine":"lxc"}"#
            )
            .is_err()
        );
        let long = "a".repeat(MAX_CONTAINER_NAME + 1);
        let mut s = RuleSpec::new("blackhole");
        s.port = vec![PortSpec::Number(5)];
        s.container = Some(long);
        assert_eq!(
            s.validate(0, &Policy::default()).unwrap_err().field,
            "container"
        );
    }

    #[test]
    fn round_trips_through_a_rule() {
        let r = spec(r#"{"fault":"reset","dport":["80-81"],"pct":30,"per":"flow"}"#)
            .validate(2, &Policy::default())
            .unwrap();
        let back = RuleSpec::from_rule(&r, None, false)
            .validate(2, &Policy::default())
            .unwrap();
        assert_eq!(back, r);
    }
}
