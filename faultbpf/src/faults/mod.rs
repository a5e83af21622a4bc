//! The fault kinds, one file each. A fault's wire name (`blackhole`) is the
//! same in the CLI, the JSON output and (later) the API and metric labels.

pub mod blackhole;

use faultbpf_common::FaultKind;
use serde::Serialize;

/// A fault a rule applies to the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// See `blackhole.rs`.
    Blackhole,
}

impl Fault {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blackhole => "blackhole",
        }
    }

    /// What the kernel programs do with a packet the rule acts on.
    pub fn kind(self) -> FaultKind {
        match self {
            Self::Blackhole => blackhole::KIND,
        }
    }

    /// Past tense for reports: "dropped 12 packets".
    pub fn verb(self) -> &'static str {
        match self {
            Self::Blackhole => "dropped",
        }
    }
}
