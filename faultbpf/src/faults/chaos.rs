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
//! delay (which takes its delay from `--ms`/`--jitter`);
//! shares add up to 100 at most; at most 4 entries.

use std::str::FromStr;

use faultbpf_common::{FaultKind, MIX_LEN};

pub const KIND: FaultKind = FaultKind::Mix;

/// A validated mix: at most `MIX_LEN` entries, shares summing to <= 100;
/// a `delay` entry uses `delay` (set from the chaos command's `--ms`).
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    entries: Vec<(FaultKind, f64)>,
    pub delay: Option<super::delay::DelayParams>,
}

impl Mix {
    pub fn entries(&self) -> &[(FaultKind, f64)] {
        &self.entries
    }

    /// Whether an entry delays (and so needs `delay`).
    pub fn delays(&self) -> bool {
        self.entries.iter().any(|(k, _)| *k == FaultKind::Delay)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, p)) in self.entries.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}:{p}", action_name(*k))?;
        }
        Ok(())
    }
}

/// An action's name in `--mix`, in reports and in the `action` metric label.
pub fn action_name(k: FaultKind) -> &'static str {
    match k {
        FaultKind::Drop => "drop",
        FaultKind::Reset => "reset",
        FaultKind::Hang => "hang",
        FaultKind::Corrupt => "corrupt",
        FaultKind::Delay => "delay",
        _ => "?",
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
            let kind = match name.trim() {
                "drop" => FaultKind::Drop,
                "reset" => FaultKind::Reset,
                "hang" => FaultKind::Hang,
                "corrupt" => FaultKind::Corrupt,
                "delay" => FaultKind::Delay,
                other => {
                    return Err(format!(
                        "`{other}` is not a mix action (expected drop, reset, hang, corrupt or delay)"
                    ));
                }
            };
            let pct: f64 = pct
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: `{pct}` is not a percentage"))?;
            if !(0.0..=100.0).contains(&pct) {
                return Err(format!(
                    "`{part}`: {pct} is out of range (expected 0 to 100)"
                ));
            }
            if out.iter().any(|(k, _)| *k == kind) {
                return Err(format!("`{name}` appears twice in the mix"));
            }
            total += pct;
            out.push((kind, pct));
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
