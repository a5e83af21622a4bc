//! The fault kinds, one file each, and the registry that lists them.
//!
//! Each `faults/<kind>.rs` declares everything about its fault once, in a
//! [`FaultDef`]: the wire name (the same in the CLI, the API, TOML, JSON
//! output and metric labels), the kernel action, the rule fields it takes
//! with their units, the verb of its counter line, whether the XDP program
//! can do it, its name in a chaos mix, and its help text. [`REGISTRY`]
//! collects them; the CLI's subcommands, the API's `fault` values, chaos's
//! mix names, the XDP refusals, the guard's constructors and the OpenAPI
//! enum are derived from it or checked against it by tests.
//!
//! Adding a fault: a file here with its `DEF` and a `Fault` variant, a line
//! in `REGISTRY`, a subcommand in `cli.rs`, its `FaultKind` in
//! `faultbpf-common` and its kernel action in `faultbpf-ebpf`; the tests
//! (`registry_*` here, in `cli.rs` and in `docs/openapi.yaml`'s check) point
//! at whatever else is missing.

pub mod blackhole;
pub mod chaos;
pub mod corrupt;
pub mod delay;
pub mod dns;
pub mod duplicate;
pub mod hang;
pub mod mark;
pub mod reset;
pub mod throttle;

use faultbpf_common::{FaultKind, MIX_LEN, MixEntry, threshold_from_pct};

pub use chaos::Mix;
pub use delay::{DelayParams, Dist};
pub use dns::{DnsParams, Rcode};
pub use throttle::ThrottleParams;

use crate::spec::{RuleSpec, SpecError};

/// A rule field that only some faults take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// The field's name in the API, TOML and scenario files.
    pub field: &'static str,
    /// Its unit or form, for help and errors.
    pub unit: &'static str,
}

/// Everything about one fault; see the module docs.
#[derive(Debug)]
pub struct FaultDef {
    /// Wire name: `fault` in the API and TOML, metric label, JSON `fault`.
    pub name: &'static str,
    /// How the CLI spells it (`mark --ecn` for `ecn`).
    pub command: &'static str,
    /// One line: what the application sees (`-h`).
    pub about: &'static str,
    /// The paragraph `--help` adds: what the application sees, exactly.
    pub long_about: &'static str,
    /// `--help`'s examples, one per line, each with what it does.
    pub examples: &'static str,
    /// Past tense for counter lines: "dropped 12 packets".
    pub verb: &'static str,
    /// The kernel action.
    pub kind: FaultKind,
    /// Whether the XDP ingress program can apply it; `xdp_refusal` says
    /// why not where it cannot.
    pub xdp: bool,
    pub xdp_refusal: &'static str,
    /// Whether it acts on UDP at all (`hang` only stalls TCP payload).
    pub udp: bool,
    /// The fault's own rule fields, beyond those every rule has.
    pub params: &'static [Param],
    /// Its action name inside a chaos mix, if it can be one.
    pub mix_action: Option<&'static str>,
    /// Builds the fault from a rule spec's own fields (`params`).
    pub build: fn(&RuleSpec) -> Result<Fault, SpecError>,
}

/// Every fault, in the order help and docs list them.
pub static REGISTRY: &[&FaultDef] = &[
    &blackhole::DEF,
    &reset::DEF,
    &hang::DEF,
    &corrupt::DEF,
    &mark::DEF,
    &mark::ECN_DEF,
    &chaos::DEF,
    &delay::DEF,
    &duplicate::DEF,
    &throttle::DEF,
    &dns::DEF,
];

/// The fault named `name` on the wire.
pub fn lookup(name: &str) -> Option<&'static FaultDef> {
    REGISTRY.iter().copied().find(|d| d.name == name)
}

/// Wire names, for error messages: "blackhole, reset, ...".
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fault whose mix action is `action` (`drop` is `blackhole`).
pub fn by_mix_action(action: &str) -> Option<&'static FaultDef> {
    REGISTRY
        .iter()
        .copied()
        .find(|d| d.mix_action == Some(action))
}

/// A fault a rule applies to the packets it matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// See `blackhole.rs`.
    Blackhole,
    /// See `reset.rs`.
    Reset,
    /// See `hang.rs`.
    Hang,
    /// See `corrupt.rs`.
    Corrupt,
    /// See `mark.rs`: set this `skb->mark`.
    Mark { value: u32 },
    /// See `mark.rs`: set ECN CE.
    Ecn,
    /// See `chaos.rs`.
    Chaos(Mix),
    /// See `delay.rs`.
    Delay(DelayParams),
    /// See `duplicate.rs`.
    Duplicate,
    /// See `throttle.rs`.
    Throttle(ThrottleParams),
    /// See `dns.rs`.
    Dns(DnsParams),
}

impl Fault {
    /// Its registry entry.
    pub fn def(&self) -> &'static FaultDef {
        match self {
            Self::Blackhole => &blackhole::DEF,
            Self::Reset => &reset::DEF,
            Self::Hang => &hang::DEF,
            Self::Corrupt => &corrupt::DEF,
            Self::Mark { .. } => &mark::DEF,
            Self::Ecn => &mark::ECN_DEF,
            Self::Chaos(_) => &chaos::DEF,
            Self::Delay(_) => &delay::DEF,
            Self::Duplicate => &duplicate::DEF,
            Self::Throttle(_) => &throttle::DEF,
            Self::Dns(_) => &dns::DEF,
        }
    }

    /// The wire name.
    pub fn name(&self) -> &'static str {
        self.def().name
    }

    /// What the kernel programs do with a packet the rule acts on.
    pub fn kind(&self) -> FaultKind {
        self.def().kind
    }

    /// Past tense for reports: "dropped 12 packets".
    pub fn verb(&self) -> &'static str {
        match self.throttle() {
            Some(t) if t.shape => "held or dropped over the rate",
            _ => self.def().verb,
        }
    }

    /// The faults it applies: itself, or a mix's entries.
    pub fn parts(&self) -> Vec<&'static FaultDef> {
        match self {
            Self::Chaos(m) => m.entries().iter().map(|(d, _)| *d).collect(),
            f => vec![f.def()],
        }
    }

    /// `RuleValue::mark`.
    pub fn mark(&self) -> u32 {
        match self {
            Self::Mark { value } => *value,
            _ => 0,
        }
    }

    /// The delay this fault applies, if any (itself, or a mix's entry).
    pub fn delay(&self) -> Option<DelayParams> {
        match self {
            Self::Delay(d) => Some(*d),
            Self::Chaos(m) if m.delays() => m.delay,
            _ => None,
        }
    }

    /// The rate limit this fault applies, if any.
    pub fn throttle(&self) -> Option<ThrottleParams> {
        match self {
            Self::Throttle(t) => Some(*t),
            _ => None,
        }
    }

    /// The DNS answer this fault gives, if it is `dns`.
    pub fn dns(&self) -> Option<&DnsParams> {
        match self {
            Self::Dns(d) => Some(d),
            _ => None,
        }
    }

    /// Writes the fault's own fields into `spec` (the inverse of its
    /// `FaultDef::build`).
    pub fn write_params(&self, spec: &mut RuleSpec) {
        if let Self::Mark { value } = self {
            spec.mark = Some(*value);
        }
        if let Self::Chaos(m) = self {
            spec.mix = Some(m.to_string());
        }
        if let Some(d) = self.delay() {
            d.write_params(spec);
        }
        if let Some(t) = self.throttle() {
            t.write_params(spec);
        }
        if let Some(d) = self.dns() {
            d.write_params(spec);
        }
    }

    /// `RuleValue::mix`: cumulative thresholds, so one draw picks one entry.
    pub fn mix(&self) -> [MixEntry; MIX_LEN] {
        let mut out = [MixEntry::default(); MIX_LEN];
        if let Self::Chaos(mix) = self {
            let mut cumulative = 0.0;
            for (slot, (def, pct)) in out.iter_mut().zip(mix.entries()) {
                cumulative += pct;
                *slot = MixEntry {
                    action: def.kind.as_u8(),
                    _pad: [0; 3],
                    upto: threshold_from_pct(cumulative),
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_each_def_builds_its_own_fault() {
        let mut names: Vec<_> = REGISTRY.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        for def in REGISTRY {
            assert!(std::ptr::eq(lookup(def.name).unwrap(), *def));
            let mut spec = RuleSpec::new(def.name);
            spec.mark = (def.name == "mark").then_some(1);
            spec.mix = (def.name == "chaos").then(|| "drop:5".to_string());
            spec.delay_ms = (def.name == "delay").then_some(5.0);
            spec.rate = (def.name == "throttle").then(|| "1mbit".to_string());
            let f = (def.build)(&spec).unwrap_or_else(|e| panic!("{}: {e}", def.name));
            assert!(
                std::ptr::eq(f.def(), *def),
                "{} builds {}",
                def.name,
                f.name()
            );
        }
    }

    #[test]
    fn registry_is_the_openapi_fault_enum() {
        let doc = include_str!("../../../docs/openapi.yaml");
        let start = doc.find("    FaultName:").expect("FaultName schema");
        let line = doc[start..]
            .lines()
            .find(|l| l.trim_start().starts_with("enum:"))
            .unwrap();
        let listed: Vec<&str> = line
            .trim()
            .trim_start_matches("enum:")
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(str::trim)
            .collect();
        let mut names: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
        names.push(crate::http::rule::FAULT);
        assert_eq!(
            listed, names,
            "docs/openapi.yaml FaultName vs faults::REGISTRY and http"
        );
        for field in crate::http::rule::FIELDS {
            assert!(doc.contains(&format!("        {field}:\n")), "{field}");
        }
        // Every fault's own fields are RuleSpec properties there.
        for def in REGISTRY {
            for p in def.params {
                assert!(
                    doc.contains(&format!("        {}:\n", p.field)),
                    "{}",
                    p.field
                );
            }
        }
    }

    #[test]
    fn registry_xdp_support_is_what_the_kernel_side_says() {
        for def in REGISTRY {
            assert_eq!(def.xdp, def.kind.on_xdp(), "{}", def.name);
            assert_eq!(def.xdp, def.xdp_refusal.is_empty(), "{}", def.name);
        }
    }

    #[test]
    fn registry_params_are_the_spec_fields_beyond_the_common_ones() {
        // Every field a spec can carry for one fault only is some fault's
        // param, and every param is a field the spec serialises.
        let mut spec = RuleSpec::new("chaos");
        spec.mark = Some(1);
        spec.mix = Some("drop:1".into());
        spec.delay_ms = Some(1.0);
        spec.jitter = Some("1ms".into());
        spec.dist = Some(Dist::Normal);
        spec.reorder = true;
        spec.rate = Some("1mbit".into());
        spec.burst = Some("64kb".into());
        spec.rcode = Some(Rcode::Refused);
        spec.domain = vec!["example.com".into()];
        // And `http`'s own, which no registry fault takes.
        spec.status = Some("503".into());
        spec.retry_after = Some("1s".into());
        spec.method = vec!["GET".into()];
        spec.path = vec!["/".into()];
        spec.when = Some(crate::http::When::After);
        spec.delay_first_byte = Some("1s".into());
        spec.side = Some(crate::http::Side::Client);
        spec.cgroup = Some("/".into());
        let v = serde_json::to_value(&spec).unwrap();
        let mut fields: Vec<&str> = v
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| !crate::spec::COMMON_FIELDS.contains(k))
            .collect();
        fields.sort();
        let mut params: Vec<&str> = REGISTRY
            .iter()
            .flat_map(|d| d.params.iter().map(|p| p.field))
            .collect();
        params.extend_from_slice(crate::http::rule::FIELDS);
        params.sort();
        params.dedup();
        assert_eq!(fields, params);
    }
}
