//! The fault kinds, one file each. A fault's wire name (`blackhole`,
//! `reset`, ...) is the same in the CLI, the JSON output and metric labels.

pub mod blackhole;
pub mod chaos;
pub mod corrupt;
pub mod delay;
pub mod hang;
pub mod mark;
pub mod reset;

use faultbpf_common::{FaultKind, MIX_LEN, MixEntry, threshold_from_pct};

pub use chaos::Mix;
pub use delay::{DelayParams, Dist};

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
}

impl Fault {
    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Blackhole => "blackhole",
            Self::Reset => "reset",
            Self::Hang => "hang",
            Self::Corrupt => "corrupt",
            Self::Mark { .. } => "mark",
            Self::Ecn => "ecn",
            Self::Chaos(_) => "chaos",
            Self::Delay(_) => "delay",
        }
    }

    /// What the kernel programs do with a packet the rule acts on.
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::Blackhole => blackhole::KIND,
            Self::Reset => reset::KIND,
            Self::Hang => hang::KIND,
            Self::Corrupt => corrupt::KIND,
            Self::Mark { .. } => mark::KIND,
            Self::Ecn => mark::ECN_KIND,
            Self::Chaos(_) => chaos::KIND,
            Self::Delay(_) => delay::KIND,
        }
    }

    /// Past tense for reports: "dropped 12 packets".
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Blackhole | Self::Hang => "dropped",
            Self::Reset => "reset",
            Self::Corrupt => "corrupted",
            Self::Mark { .. } | Self::Ecn => "marked",
            Self::Chaos(_) => "hit",
            Self::Delay(_) => "delayed",
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

    /// `RuleValue::mix`: cumulative thresholds, so one draw picks one entry.
    pub fn mix(&self) -> [MixEntry; MIX_LEN] {
        let mut out = [MixEntry::default(); MIX_LEN];
        if let Self::Chaos(mix) = self {
            let mut cumulative = 0.0;
            for (slot, (kind, pct)) in out.iter_mut().zip(mix.entries()) {
                cumulative += pct;
                *slot = MixEntry {
                    action: kind.as_u8(),
                    _pad: [0; 3],
                    upto: threshold_from_pct(cumulative),
                };
            }
        }
        out
    }
}
