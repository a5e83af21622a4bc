//! A scenario file as written (TOML) and its validation into a
//! [`Scenario`]. Every mistake is reported as `FILE:LINE:COLUMN: what is
//! wrong`, the way the daemon config is (`config.rs`, `span.rs`): syntax,
//! unknown keys and wrong types at the TOML parser's own span, impossible
//! values at the line of their key, overlapping steps at the later step.
//!
//! A step is a rule as the daemon's API and config take it (the same keys:
//! `fault`, `port`, `dport`, `sport`, `proto`, `peer`, `pct`, `per`,
//! `direction`, `fragments`, `mark`, `mix`, `force`, `name`, and `for`, here
//! how long the step lasts, and `http`'s `status`, `retry_after`, `method`,
//! `path`, `when`, `delay_first_byte`, `side`, `cgroup`), plus `at`, when it
//! starts. An http step's port stands in for it in the overlap checks (its
//! TCP keys). The keys sit in the
//! step's own table rather than in a nested one, so a step reads like the
//! fault command it replaces:
//!
//! ```toml
//! name = "payments game day"     # default: the file name
//!
//! [target]                       # optional; default: where faultbpf runs
//! netns = "app"                  # an `ip netns` name or a path
//! # container = "api"            # or a docker/podman container (name or id)
//! # engine = "podman"            # which engine knows it (default: docker, then podman)
//! # interfaces = ["eth1"]        # default: every interface that is up
//!
//! [[step]]
//! name = "rabbitmq-outage"
//! at = "5s"                      # from the start of the run
//! for = "10s"
//! fault = "blackhole"
//! port = [5672]
//!
//! [random]                       # optional: Chaos Monkey
//! every = "15s"                  # one pick per period...
//! for = "5s"                     # ...lasting this long (at most `every`)
//! from = "40s"                   # default 0s
//! until = "2m"
//! seed = 42                      # same seed, same picks; default: a fresh one
//! [[random.pool]]
//! fault = "reset"
//! port = [6379]
//! ```

use std::{collections::HashSet, ops::Range, path::Path, time::Duration};

use faultbpf_common::{PROTO_TCP, PROTO_UDP, RuleKey, SIDE_FRAGMENT};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    rules::{Direction, Per, Proto, Rule},
    span::key_span,
    spec::{MAX_LASTS, Policy, PortSpec, RuleSpec, parse_bounded, parse_duration},
};

/// The longest a scenario may run: every time in a file must end by then.
pub const MAX_LENGTH: Duration = Duration::from_secs(24 * 3600);
/// The most random picks one run may make.
pub const MAX_PICKS: usize = 10_000;
/// The most steps in one file.
pub const MAX_STEPS: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<Spanned<String>>,
    target: Option<Spanned<RawTarget>>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
    random: Option<Spanned<RawRandom>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    netns: Option<Spanned<String>>,
    container: Option<Spanned<String>>,
    engine: Option<Spanned<String>>,
    interfaces: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRandom {
    every: Spanned<String>,
    #[serde(rename = "for")]
    lasts: Spanned<String>,
    from: Option<Spanned<String>>,
    until: Spanned<String>,
    seed: Option<Spanned<i64>>,
    #[serde(default)]
    pool: Vec<Spanned<RawStep>>,
}

/// A step or a pool entry: the keys of a `RuleSpec` (listed one by one,
/// since serde's `flatten` would lose `deny_unknown_fields` and the spans),
/// plus `at`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    at: Option<Spanned<String>>,
    #[serde(rename = "for")]
    lasts: Option<Spanned<String>>,
    #[serde(deserialize_with = "crate::spec::known_fault")]
    fault: String,
    #[serde(default)]
    port: Vec<PortSpec>,
    #[serde(default)]
    dport: Vec<PortSpec>,
    #[serde(default)]
    sport: Vec<PortSpec>,
    proto: Option<Proto>,
    #[serde(default)]
    peer: Vec<String>,
    pct: Option<f64>,
    per: Option<Per>,
    direction: Option<Direction>,
    #[serde(default)]
    fragments: bool,
    mark: Option<u32>,
    mix: Option<String>,
    delay_ms: Option<f64>,
    jitter: Option<String>,
    dist: Option<crate::faults::Dist>,
    #[serde(default)]
    reorder: bool,
    rate: Option<String>,
    burst: Option<String>,
    rcode: Option<crate::faults::Rcode>,
    #[serde(default)]
    domain: Vec<String>,
    #[serde(default, deserialize_with = "crate::spec::status_text")]
    status: Option<String>,
    retry_after: Option<String>,
    #[serde(default)]
    method: Vec<String>,
    #[serde(default)]
    path: Vec<String>,
    when: Option<crate::http::When>,
    delay_first_byte: Option<String>,
    side: Option<crate::http::Side>,
    cgroup: Option<String>,
    #[serde(default)]
    force: bool,
}

impl RawStep {
    /// The rule spec. No `..`: a field added to `RuleSpec` must be decided
    /// on here too.
    fn spec(&self, lasts: Duration) -> RuleSpec {
        RuleSpec {
            name: self.name.clone(),
            fault: self.fault.clone(),
            port: self.port.clone(),
            dport: self.dport.clone(),
            sport: self.sport.clone(),
            proto: self.proto,
            peer: self.peer.clone(),
            pct: self.pct,
            per: self.per,
            direction: self.direction,
            fragments: self.fragments,
            mark: self.mark,
            mix: self.mix.clone(),
            delay_ms: self.delay_ms,
            jitter: self.jitter.clone(),
            dist: self.dist,
            reorder: self.reorder,
            rate: self.rate.clone(),
            burst: self.burst.clone(),
            rcode: self.rcode,
            domain: self.domain.clone(),
            status: self.status.clone(),
            retry_after: self.retry_after.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            when: self.when,
            delay_first_byte: self.delay_first_byte.clone(),
            side: self.side,
            cgroup: self.cgroup.clone(),
            lasts: Some(humantime::format_duration(lasts).to_string()),
            force: self.force,
            owner_pid: None,
            container: None,
            engine: None,
        }
    }
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// `None`: the network namespace faultbpf runs in (or the daemon's).
    pub target: Option<ScenarioTarget>,
    /// In file order.
    pub steps: Vec<Step>,
    pub random: Option<RandomPool>,
}

/// `[target]`: where the faults go. Any target means in-process programs
/// (a daemon owns its own namespace and interfaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioTarget {
    /// Entered before anything else.
    pub netns: Option<String>,
    /// A container whose namespace is entered instead, and the engine
    /// that knows it (`None`: docker, then podman).
    pub container: Option<(String, Option<crate::target::Engine>)>,
    /// Empty: every interface that is up in that namespace.
    pub interfaces: Vec<String>,
}

/// One `[[step]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its `name`, or `step N` (1-based, in file order).
    pub name: String,
    /// From the start of the run.
    pub at: Duration,
    pub lasts: Duration,
    pub spec: RuleSpec,
    /// Checked, with counter slot 0 (the runner assigns slots).
    pub rule: Rule,
}

impl Step {
    pub fn end(&self) -> Duration {
        self.at + self.lasts
    }
}

/// `[random]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomPool {
    pub every: Duration,
    pub lasts: Duration,
    pub from: Duration,
    pub until: Duration,
    /// `None`: drawn when the run starts (and printed, for a replay).
    pub seed: Option<u64>,
    pub pool: Vec<PoolEntry>,
}

/// One `[[random.pool]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolEntry {
    pub name: Option<String>,
    /// Its own `for`, or the pool's.
    pub lasts: Duration,
    pub spec: RuleSpec,
    pub rule: Rule,
}

/// A mistake in the file, with its position.
pub type ScenarioError = crate::span::FileError;

/// Reads and checks `path`.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = crate::span::read(path)?;
    parse(&path.display().to_string(), &text)
}

/// Checks scenario `text`, naming it `file` in errors (and using its stem
/// as the scenario's name if the file gives none).
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let at = |span: Range<usize>, message: String| crate::span::at(file, text, span, message);
    let raw: RawScenario = crate::span::parse_toml(file, text)?;
    // A positive duration, at its value's span.
    let positive = |s: &Spanned<String>, what: &str| {
        parse_duration(s.get_ref()).map_err(|e| at(s.span(), format!("{what}: {e}")))
    };
    // A time from the start of the run: zero allowed.
    let offset = |s: &Spanned<String>, what: &str| {
        parse_bounded(s.get_ref(), MAX_LASTS).map_err(|e| at(s.span(), format!("{what}: {e}")))
    };
    let bounded = |d: Duration, span: Range<usize>, what: &str| {
        if d > MAX_LENGTH {
            Err(at(
                span,
                format!(
                    "{what} ends after {}; a scenario lasts at most {}",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_LENGTH)
                ),
            ))
        } else {
            Ok(d)
        }
    };

    let name = match &raw.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            return Err(at(n.span(), "name: give a non-empty name".into()));
        }
        Some(n) => n.get_ref().clone(),
        None => Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into()),
    };

    let target = match &raw.target {
        None => None,
        Some(t) => {
            let netns = match &t.get_ref().netns {
                Some(n) if n.get_ref().trim().is_empty() => {
                    return Err(at(n.span(), "target.netns: give a namespace name".into()));
                }
                n => n.as_ref().map(|n| n.get_ref().clone()),
            };
            let interfaces = match &t.get_ref().interfaces {
                Some(list)
                    if list.get_ref().is_empty()
                        || list.get_ref().iter().any(|i| i.trim().is_empty()) =>
                {
                    return Err(at(
                        list.span(),
                        "target.interfaces: list interface names, or leave the key out for every interface that is up".into(),
                    ));
                }
                list => list
                    .as_ref()
                    .map(|l| l.get_ref().clone())
                    .unwrap_or_default(),
            };
            let engine = match &t.get_ref().engine {
                Some(e) => Some(
                    e.get_ref()
                        .parse::<crate::target::Engine>()
                        .map_err(|m| at(e.span(), format!("target.engine: {m}")))?,
                ),
                None => None,
            };
            let container = match &t.get_ref().container {
                Some(c) if c.get_ref().trim().is_empty() => {
                    return Err(at(
                        c.span(),
                        "target.container: give a container name or id".into(),
                    ));
                }
                Some(c) if netns.is_some() => {
                    return Err(at(
                        c.span(),
                        "target.container: give `netns` or `container`, not both".into(),
                    ));
                }
                Some(c) => Some((c.get_ref().clone(), engine)),
                None => {
                    if let Some(e) = &t.get_ref().engine {
                        return Err(at(e.span(), "target.engine applies to `container`".into()));
                    }
                    None
                }
            };
            if netns.is_none() && container.is_none() && interfaces.is_empty() {
                return Err(at(
                    t.span(),
                    "[target] needs `netns = \"NAME\"`, `container = \"NAME\"` or `interfaces = [...]` (or leave it out)"
                        .into(),
                ));
            }
            Some(ScenarioTarget {
                netns,
                container,
                interfaces,
            })
        }
    };

    if raw.step.len() > MAX_STEPS {
        return Err(at(
            raw.step[MAX_STEPS].span(),
            format!("more than {MAX_STEPS} steps"),
        ));
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut step_spans = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.step.iter().enumerate() {
        let raw_step = r.get_ref();
        let label = match &raw_step.name {
            Some(n) => format!("step `{n}`"),
            None => format!("step #{}", i + 1),
        };
        let name = raw_step
            .name
            .clone()
            .unwrap_or_else(|| format!("step {}", i + 1));
        if !names.insert(name.clone()) {
            return Err(at(
                key_span(text, r.span(), "name").unwrap_or(r.span()),
                format!("{label}: another step has this name; names must be unique"),
            ));
        }
        let start = match &raw_step.at {
            Some(s) => offset(s, &format!("{label}: at"))?,
            None => {
                return Err(at(
                    r.span(),
                    format!(
                        "{label} needs `at`, its start from the beginning of the run (e.g. at = \"5s\")"
                    ),
                ));
            }
        };
        let lasts = match &raw_step.lasts {
            Some(s) => positive(s, &format!("{label}: for"))?,
            None => {
                return Err(at(
                    r.span(),
                    format!("{label} needs `for`, how long it lasts (e.g. for = \"10s\")"),
                ));
            }
        };
        bounded(start + lasts, r.span(), &label)?;
        let spec = raw_step.spec(lasts);
        let rule = checked_rule(&spec, text, r.span(), &label, &at)?;
        steps.push(Step {
            name,
            at: start,
            lasts,
            spec,
            rule,
        });
        step_spans.push(r.span());
    }

    // Two steps on one map key at the same time would overwrite each other.
    let keys: Vec<HashSet<RuleKey>> = steps.iter().map(|s| key_set(&s.rule)).collect();
    for j in 0..steps.len() {
        for i in 0..j {
            let (a, b) = (&steps[i], &steps[j]);
            if a.at < b.end()
                && b.at < a.end()
                && let Some(k) = shared_key(&keys[i], &keys[j])
            {
                return Err(at(
                    step_spans[j].clone(),
                    format!(
                        "step `{}` ({}) overlaps step `{}` ({}) on {}: one port takes one rule at a time; \
                         move one of them or split their ports",
                        b.name,
                        window(b.at, b.end()),
                        a.name,
                        window(a.at, a.end()),
                        key_text(&k)
                    ),
                ));
            }
        }
    }

    let random = match &raw.random {
        None => None,
        Some(r) => {
            let rr = r.get_ref();
            let every = positive(&rr.every, "random.every")?;
            let lasts = positive(&rr.lasts, "random.for")?;
            if lasts > every {
                return Err(at(
                    rr.lasts.span(),
                    format!(
                        "random.for ({}) is longer than random.every ({}): picks would overlap",
                        rr.lasts.get_ref(),
                        rr.every.get_ref()
                    ),
                ));
            }
            let from = match &rr.from {
                Some(s) => offset(s, "random.from")?,
                None => Duration::ZERO,
            };
            let until = bounded(
                offset(&rr.until, "random.until")?,
                rr.until.span(),
                "random.until",
            )?;
            if until <= from {
                return Err(at(
                    rr.until.span(),
                    format!(
                        "random.until ({}) must come after random.from ({})",
                        rr.until.get_ref(),
                        humantime::format_duration(from)
                    ),
                ));
            }
            let picks = (until - from).as_nanos().div_ceil(every.as_nanos());
            if picks > MAX_PICKS as u128 {
                return Err(at(
                    rr.every.span(),
                    format!(
                        "random would make {picks} picks, more than {MAX_PICKS}; raise `every` or bring `until` closer"
                    ),
                ));
            }
            let seed = match &rr.seed {
                Some(s) if *s.get_ref() < 0 => {
                    return Err(at(
                        s.span(),
                        format!("random.seed: {} is negative; give 0 or more", s.get_ref()),
                    ));
                }
                Some(s) => Some(*s.get_ref() as u64),
                None => None,
            };
            if rr.pool.is_empty() {
                return Err(at(
                    r.span(),
                    "[random] needs a pool: add [[random.pool]] tables, each a fault like a step's"
                        .into(),
                ));
            }
            let mut pool = Vec::new();
            for (i, p) in rr.pool.iter().enumerate() {
                let entry = p.get_ref();
                let label = match &entry.name {
                    Some(n) => format!("random.pool `{n}`"),
                    None => format!("random.pool #{}", i + 1),
                };
                if let Some(a) = &entry.at {
                    return Err(at(
                        a.span(),
                        format!(
                            "{label}: pool entries take no `at`; a pick starts every `random.every`"
                        ),
                    ));
                }
                let entry_lasts = match &entry.lasts {
                    Some(s) => {
                        let d = positive(s, &format!("{label}: for"))?;
                        if d > every {
                            return Err(at(
                                s.span(),
                                format!(
                                    "{label}: for ({}) is longer than random.every ({}): picks would overlap",
                                    s.get_ref(),
                                    rr.every.get_ref()
                                ),
                            ));
                        }
                        d
                    }
                    None => lasts,
                };
                let spec = entry.spec(entry_lasts);
                let rule = checked_rule(&spec, text, p.span(), &label, &at)?;
                pool.push(PoolEntry {
                    name: entry.name.clone(),
                    lasts: entry_lasts,
                    spec,
                    rule,
                });
            }
            Some(RandomPool {
                every,
                lasts,
                from,
                until,
                seed,
                pool,
            })
        }
    };

    if steps.is_empty() && random.is_none() {
        return Err(at(
            0..0,
            "the scenario has nothing to do: add [[step]] tables or a [random] pool".into(),
        ));
    }
    Ok(Scenario {
        name,
        target,
        steps,
        random,
    })
}

/// The spec checked into a rule; a bad value is reported at its key.
fn checked_rule(
    spec: &RuleSpec,
    text: &str,
    table: Range<usize>,
    label: &str,
    at: &impl Fn(Range<usize>, String) -> ScenarioError,
) -> Result<Rule, ScenarioError> {
    let refused = |e: crate::spec::SpecError| {
        let span = key_span(text, table.clone(), e.field).unwrap_or(table.clone());
        at(span, format!("{label}: {e}"))
    };
    if spec.fault == crate::http::rule::FAULT {
        // Its port's keys stand in for it in the overlap checks.
        return spec
            .http_rule(&Policy::default())
            .map(|h| h.stand_in(0))
            .map_err(refused);
    }
    spec.validate(0, &Policy::default()).map_err(refused)
}

/// The rule-map keys a rule holds (two rules sharing one cannot both be in
/// force).
pub(crate) fn key_set(rule: &Rule) -> HashSet<RuleKey> {
    rule.keys().into_iter().collect()
}

/// The first key (tcp before udp, lowest port) two key sets share, so
/// messages are the same from run to run.
pub(crate) fn shared_key(a: &HashSet<RuleKey>, b: &HashSet<RuleKey>) -> Option<RuleKey> {
    a.intersection(b)
        .min_by_key(|k| (k.proto, k.side, k.port()))
        .copied()
}

/// "tcp port 5432" for a rule-map key.
pub(crate) fn key_text(k: &RuleKey) -> String {
    let proto = match k.proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "ip",
    };
    if k.side == SIDE_FRAGMENT {
        format!("{proto} fragments")
    } else {
        format!("{proto} port {}", k.port())
    }
}

/// "5s-15s".
pub(crate) fn window(start: Duration, end: Duration) -> String {
    format!("{}-{}", secs(start), secs(end))
}

/// "5s", "1.5s", "2m": short, exact for whole seconds.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        humantime::format_duration(d).to_string().replace(' ', "")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;

    const GOOD: &str = r#"
name = "payments"
[target]
netns = "app"

[[step]]
name = "rabbit"
at = "5s"
for = "10s"
fault = "blackhole"
port = [5672]

[[step]]
at = "0s"
for = "1m"
fault = "chaos"
mix = "drop:20,reset:10"
dport = ["8000-8001"]
pct = 50
per = "flow"
proto = "tcp"
peer = ["10.200.0.0/24"]
direction = "egress"

[random]
every = "10s"
for = "5s"
from = "30s"
until = "1m"
seed = 7
[[random.pool]]
name = "redis"
fault = "reset"
port = [6379]
[[random.pool]]
fault = "hang"
port = [5432]
for = "2s"
"#;

    #[test]
    fn a_valid_file_is_read_whole() {
        let s = parse("g.toml", GOOD).unwrap();
        assert_eq!(s.name, "payments");
        assert_eq!(
            s.target,
            Some(ScenarioTarget {
                netns: Some("app".into()),
                container: None,
                interfaces: vec![]
            })
        );
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[0].name, "rabbit");
        assert_eq!(s.steps[0].at, Duration::from_secs(5));
        assert_eq!(s.steps[0].end(), Duration::from_secs(15));
        assert_eq!(s.steps[0].rule.fault, Fault::Blackhole);
        assert_eq!(s.steps[0].rule.lasts, Some(Duration::from_secs(10)));
        assert_eq!(s.steps[1].name, "step 2");
        assert_eq!(s.steps[1].rule.per, Per::Flow);
        assert_eq!(s.steps[1].rule.pct, 50.0);
        let r = s.random.unwrap();
        assert_eq!(
            (r.every, r.lasts, r.from, r.until, r.seed),
            (
                Duration::from_secs(10),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(60),
                Some(7)
            )
        );
        assert_eq!(r.pool.len(), 2);
        assert_eq!(r.pool[0].lasts, Duration::from_secs(5));
        assert_eq!(r.pool[1].lasts, Duration::from_secs(2));
        assert_eq!(r.pool[1].rule.fault, Fault::Hang);
    }

    #[test]
    fn the_name_defaults_to_the_file_stem() {
        let s = parse(
            "/x/outage.toml",
            "[[step]]\nat = \"0s\"\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\n",
        )
        .unwrap();
        assert_eq!(s.name, "outage");
        assert!(s.target.is_none() && s.random.is_none());
    }

    #[test]
    fn inline_steps_work_too() {
        let s = parse(
            "f.toml",
            "step = [{ at = \"1s\", for = \"2s\", fault = \"reset\", port = [80] }]\n",
        )
        .unwrap();
        assert_eq!(s.steps[0].rule.fault, Fault::Reset);
    }

    fn err(text: &str) -> String {
        parse("f.toml", text).unwrap_err().to_string()
    }

    const STEP: &str = "[[step]]\nat = \"0s\"\nfor = \"1s\"\nfault = \"blackhole\"\nport = [5]\n";

    #[test]
    fn a_container_target_takes_an_engine_and_excludes_netns() {
        let s = parse(
            "f.toml",
            &format!("[target]\ncontainer = \"api\"\nengine = \"podman\"\n{STEP}"),
        )
        .unwrap();
        assert_eq!(
            s.target.unwrap().container,
            Some(("api".into(), Some(crate::target::Engine::Podman)))
        );
        let e = err(&format!(
            "[target]\nnetns = \"a\"\ncontainer = \"api\"\n{STEP}"
        ));
        assert!(e.starts_with("f.toml:3:") && e.contains("not both"), "{e}");
        let e = err(&format!(
            "[target]\ncontainer = \"api\"\nengine = \"lxc\"\n{STEP}"
        ));
        assert!(e.starts_with("f.toml:3:") && e.contains("`lxc`"), "{e}");
        let e = err(&format!(
            "[target]\nnetns = \"a\"\nengine = \"docker\"\n{STEP}"
        ));
        assert!(e.contains("applies to `container`"), "{e}");
    }

    #[test]
    fn errors_point_at_the_line() {
        // Unknown key in a step, with the parser's span.
        let e = err(&format!("{STEP}prot = \"tcp\"\n"));
        assert!(e.starts_with("f.toml:6:1:"), "{e}");
        assert!(e.contains("prot"), "{e}");
        // Impossible value: at its key's line, naming the step.
        let e = err(&format!("{STEP}pct = 101\n"));
        assert!(e.starts_with("f.toml:6:1:"), "{e}");
        assert!(e.contains("step #1") && e.contains("101"), "{e}");
        // Wrong type.
        let e = err("[[step]]\nat = 5\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\n");
        assert!(e.starts_with("f.toml:2:"), "{e}");
        // Unknown fault.
        let e = err("[[step]]\nat = \"0s\"\nfor = \"1s\"\nfault = \"explode\"\nport = [1]\n");
        assert!(e.starts_with("f.toml:4:"), "{e}");
        // Bad durations, at the value.
        let e = err("[[step]]\nat = \"soon\"\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\n");
        assert!(e.starts_with("f.toml:2:6:") && e.contains("soon"), "{e}");
        let e = err("[[step]]\nat = \"1s\"\nfor = \"0s\"\nfault = \"hang\"\nport = [1]\n");
        assert!(e.starts_with("f.toml:3:7:") && e.contains("zero"), "{e}");
        // A typo in a top-level key.
        let e = err(&format!("nam = \"x\"\n{STEP}"));
        assert!(e.starts_with("f.toml:1:1:") && e.contains("nam"), "{e}");
        // A missing port is reported at the step.
        let e = err("[[step]]\nat = \"0s\"\nfor = \"1s\"\nfault = \"hang\"\n");
        assert!(e.starts_with("f.toml:1:") && e.contains("port"), "{e}");
    }

    #[test]
    fn steps_need_at_and_for() {
        let e = err("[[step]]\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\n");
        assert!(e.contains("needs `at`"), "{e}");
        let e = err("[[step]]\nat = \"1s\"\nfault = \"hang\"\nport = [1]\n");
        assert!(e.contains("needs `for`"), "{e}");
        let e = err(
            "[[step]]\nat = \"1s\"\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\nowner_pid = 4\n",
        );
        assert!(e.contains("owner_pid"), "{e}");
    }

    #[test]
    fn overlapping_steps_on_one_port_are_refused() {
        let text = "[[step]]\nname = \"a\"\nat = \"0s\"\nfor = \"10s\"\nfault = \"blackhole\"\nport = [5432]\n\
                    [[step]]\nname = \"b\"\nat = \"5s\"\nfor = \"10s\"\nfault = \"hang\"\ndport = [5432]\nproto = \"tcp\"\n";
        let e = err(text);
        assert!(e.starts_with("f.toml:7:"), "{e}");
        assert!(
            e.contains("`b` (5s-15s) overlaps step `a` (0s-10s) on tcp port 5432"),
            "{e}"
        );
        // Back to back is fine, and so are other ports at the same time.
        let ok = text.replace("at = \"5s\"", "at = \"10s\"");
        parse("f.toml", &ok).unwrap();
        let ok = text.replace("dport = [5432]", "dport = [5433]");
        parse("f.toml", &ok).unwrap();
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = err(
            "[[step]]\nname = \"a\"\nat = \"0s\"\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\n\
                     [[step]]\nname = \"a\"\nat = \"0s\"\nfor = \"1s\"\nfault = \"hang\"\nport = [2]\n",
        );
        assert!(e.starts_with("f.toml:8:1:") && e.contains("unique"), "{e}");
    }

    #[test]
    fn random_pool_errors() {
        let pool = "[[random.pool]]\nfault = \"reset\"\nport = [1]\n";
        let e = err(&format!(
            "[random]\nevery = \"5s\"\nfor = \"10s\"\nuntil = \"1m\"\n{pool}"
        ));
        assert!(e.starts_with("f.toml:3:7:") && e.contains("overlap"), "{e}");
        let e = err(&format!(
            "[random]\nevery = \"5s\"\nfor = \"1s\"\nfrom = \"1m\"\nuntil = \"1m\"\n{pool}"
        ));
        assert!(e.starts_with("f.toml:5:") && e.contains("after"), "{e}");
        let e = err("[random]\nevery = \"5s\"\nfor = \"1s\"\nuntil = \"1m\"\n");
        assert!(e.contains("needs a pool"), "{e}");
        let e = err(&format!(
            "[random]\nevery = \"5s\"\nfor = \"1s\"\nuntil = \"1m\"\nseed = -1\n{pool}"
        ));
        assert!(e.starts_with("f.toml:5:") && e.contains("negative"), "{e}");
        let e = err(&format!(
            "[random]\nevery = \"1ms\"\nfor = \"1ms\"\nuntil = \"1h\"\n{pool}"
        ));
        assert!(e.contains("picks"), "{e}");
        let e = err(&format!(
            "[random]\nevery = \"5s\"\nfor = \"1s\"\nuntil = \"1m\"\n{pool}at = \"3s\"\n"
        ));
        assert!(e.starts_with("f.toml:8:") && e.contains("no `at`"), "{e}");
        let e = err(&format!(
            "[random]\nevery = \"5s\"\nfor = \"1s\"\nuntil = \"1m\"\n{pool}pct = 200\n"
        ));
        assert!(
            e.starts_with("f.toml:8:1:") && e.contains("random.pool #1"),
            "{e}"
        );
        let e = err(
            "[random]\nevery = \"5s\"\nfor = \"1s\"\n[[random.pool]]\nfault = \"reset\"\nport = [1]\n",
        );
        assert!(e.contains("until"), "{e}");
    }

    #[test]
    fn target_and_limits() {
        let e = err(&format!("[target]\n{STEP}"));
        assert!(e.starts_with("f.toml:1:") && e.contains("netns"), "{e}");
        let e = err(&format!("[target]\ninterfaces = []\n{STEP}"));
        assert!(e.starts_with("f.toml:2:"), "{e}");
        let s = parse(
            "f.toml",
            &format!("[target]\ninterfaces = [\"veth-s\"]\n{STEP}"),
        )
        .unwrap();
        assert_eq!(s.target.unwrap().interfaces, ["veth-s"]);
        let e = err("[[step]]\nat = \"23h\"\nfor = \"2h\"\nfault = \"hang\"\nport = [1]\n");
        assert!(e.contains("at most 1day"), "{e}");
        let e = err("name = \"x\"\n");
        assert!(e.contains("nothing to do"), "{e}");
    }

    #[test]
    fn the_spec_keeps_every_rule_key() {
        // Every key a step takes reaches the rule spec, so a step means
        // what the same keys mean in the daemon's API.
        let s = parse("f.toml", GOOD).unwrap();
        let spec = &s.steps[1].spec;
        let json = serde_json::to_value(spec).unwrap();
        for key in [
            "fault",
            "mix",
            "dport",
            "pct",
            "per",
            "proto",
            "peer",
            "direction",
            "for",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["for"], "1m");
        assert!(spec.owner_pid.is_none());
    }
}
