//! `chaos`: one rule, several faults, drawn per packet (Vaurien's
//! `--behavior 20:delay,10:errors`).
//!
//! What the application sees: a mix, e.g. `--mix drop:20,reset:10,corrupt:5`
//! loses 20 % of the packets, resets on 10 % and corrupts 5 %; the other
//! 65 % pass. One random number per packet picks at most one action, so the
//! shares are exact in expectation and never overlap. With `--per flow` the
//! draw is per connection: each connection gets one fate.
//!
//! Knobs: `--mix ACTION:PCT,...` with actions drop, reset, hang, corrupt,
//! duplicate, delay (which takes its delay from `--ms`/`--jitter`);
//! shares add up to 100 at most; at most 4 entries.

use std::str::FromStr;

use faultbpf_common::{FaultKind, MIX_LEN};

use super::{Fault, FaultDef, Param, REGISTRY, by_mix_action};
use crate::spec::{RuleSpec, SpecError};

pub static DEF: FaultDef = FaultDef {
    name: "chaos",
    command: "chaos",
    about: "Apply a mix of faults to one port, drawn per packet (or per flow)",
    long_about: "Apply a mix of faults to one port, drawn per packet (or per flow)\n\n\
        --mix drop:20,reset:10,corrupt:5 drops 20 % of the packets, resets 10 % and \
        corrupts 5 %; the other 65 % pass. One random draw per packet picks at most one \
        action. With --per flow every connection gets one fate.",
    examples: "Examples:\n  \
        faultbpf chaos --port 5672 --mix drop:20,reset:10\n  \
        faultbpf chaos --port 8080 --mix reset:30,hang:20 --per flow\n  \
        faultbpf chaos --port 5432 --mix drop:5,delay:20 --ms 200",
    verb: "hit",
    kind: FaultKind::Mix,
    xdp: true,
    xdp_refusal: "",
    udp: true,
    params: &[
        Param {
            field: "mix",
            unit: "ACTION:PCT,... (drop, reset, hang, corrupt, delay, duplicate)",
        },
        // A mix's `delay` entries take the delay fault's fields.
        Param {
            field: "delay_ms",
            unit: "milliseconds",
        },
        Param {
            field: "jitter",
            unit: "a duration",
        },
        Param {
            field: "dist",
            unit: "uniform or normal",
        },
        Param {
            field: "reorder",
            unit: "true or false",
        },
    ],
    mix_action: None,
    build,
};

fn build(spec: &RuleSpec) -> Result<Fault, SpecError> {
    let mix = spec
        .mix
        .as_deref()
        .ok_or_else(|| SpecError::new("mix", "the chaos fault needs a `mix`, e.g. \"drop:20\""))?;
    let mut mix = mix.parse::<Mix>().map_err(|e| SpecError::new("mix", e))?;
    if mix.delays() {
        mix.delay = Some(super::delay::params(spec)?);
    } else if let Some(field) = super::delay::fields_given(spec) {
        return Err(SpecError::new(
            field,
            format!("`{field}` applies to a mix's `delay` entries, and `{mix}` has none"),
        ));
    }
    Ok(Fault::Chaos(mix))
}

/// A validated mix: at most `MIX_LEN` entries, shares summing to <= 100;
/// a `delay` entry uses `delay` (set from the chaos command's `--ms`).
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    entries: Vec<(&'static FaultDef, f64)>,
    pub delay: Option<super::delay::DelayParams>,
}

impl Mix {
    pub fn entries(&self) -> &[(&'static FaultDef, f64)] {
        &self.entries
    }

    /// Whether an entry delays (and so needs `delay`).
    pub fn delays(&self) -> bool {
        self.entries.iter().any(|(d, _)| d.kind == FaultKind::Delay)
    }
}

impl PartialEq for FaultDef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (d, p)) in self.entries.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}:{p}", d.mix_action.unwrap_or(d.name))?;
        }
        Ok(())
    }
}

/// "drop, reset, hang, corrupt or delay", from the registry.
fn actions() -> String {
    let names: Vec<&str> = REGISTRY.iter().filter_map(|d| d.mix_action).collect();
    match names.split_last() {
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut total = 0.0;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, pct) = part
                .split_once(':')
                .ok_or_else(|| format!("`{part}`: expected ACTION:PCT, e.g. drop:20"))?;
            let def = by_mix_action(name.trim()).ok_or_else(|| {
                format!(
                    "`{}` is not a mix action (expected {})",
                    name.trim(),
                    actions()
                )
            })?;
            let pct: f64 = pct
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: `{pct}` is not a percentage"))?;
            if !(0.0..=100.0).contains(&pct) {
                return Err(format!(
                    "`{part}`: {pct} is out of range (expected 0 to 100)"
                ));
            }
            if out
                .iter()
                .any(|(d, _): &(&FaultDef, f64)| std::ptr::eq(*d, def))
            {
                return Err(format!("`{}` appears twice in the mix", name.trim()));
            }
            total += pct;
            out.push((def, pct));
        }
        if out.is_empty() {
            return Err(format!("`{s}` has no entries; e.g. drop:20,reset:10"));
        }
        if out.len() > MIX_LEN {
            return Err(format!(
                "`{s}` has {} entries; at most {MIX_LEN}",
                out.len()
            ));
        }
        if total > 100.0 + 1e-9 {
            return Err(format!("`{s}` adds up to {total} %; at most 100"));
        }
        Ok(Self {
            entries: out,
            delay: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: Mix = "drop:20, reset:10,corrupt:5".parse().unwrap();
        assert_eq!(m.entries().len(), 3);
        assert_eq!(m.to_string(), "drop:20,reset:10,corrupt:5");
    }

    #[test]
    fn rejects_nonsense_and_names_it() {
        for (s, needle) in [
            ("drop", "ACTION:PCT"),
            ("explode:10", "explode"),
            ("drop:x", "x"),
            ("drop:60,reset:50", "110"),
            ("drop:10,drop:5", "twice"),
            ("drop:1,reset:1,hang:1,corrupt:1,drop:1", "twice"),
            ("", "no entries"),
        ] {
            let e = s.parse::<Mix>().unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }
}
