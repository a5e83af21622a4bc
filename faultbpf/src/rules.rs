//! A validated rule and its translation into the map entries the kernel
//! programs read (`faultbpf_common::RuleKey` / `RuleValue`).

use std::time::Duration;

use faultbpf_common::{
    DIR_EGRESS, DIR_INGRESS, PROTO_TCP, PROTO_UDP, RuleKey, RuleValue, threshold_from_pct,
};
use serde::Serialize;

use crate::faults::Fault;

/// Which L4 protocol a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
    /// TCP and UDP.
    All,
}

impl Proto {
    fn numbers(self) -> &'static [u8] {
        match self {
            Self::Tcp => &[PROTO_TCP],
            Self::Udp => &[PROTO_UDP],
            Self::All => &[PROTO_TCP, PROTO_UDP],
        }
    }

    /// For humans: "tcp", "udp", "tcp+udp".
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::All => "tcp+udp",
        }
    }
}

/// The hooks a rule acts on, seen from the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Packets arriving on the interface.
    Ingress,
    /// Packets leaving through the interface.
    Egress,
    /// Both.
    Both,
}

impl Direction {
    fn bits(self) -> u8 {
        match self {
            Self::Ingress => DIR_INGRESS,
            Self::Egress => DIR_EGRESS,
            Self::Both => DIR_INGRESS | DIR_EGRESS,
        }
    }
}

/// One fault on one port.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Counter slot, also the rule's id in reports.
    pub id: u32,
    pub fault: Fault,
    /// Matched as destination or source port.
    pub port: u16,
    pub proto: Proto,
    /// Percent of matched packets acted on, 0..=100.
    pub pct: f64,
    pub direction: Direction,
    /// How long the rule lasts from the moment it is inserted; enforced by
    /// the kernel, so it ends even if faultbpf does not.
    pub lasts: Option<Duration>,
}

impl Rule {
    /// The map entries for this rule, with expiry counted from `now_ns`
    /// (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`).
    pub fn entries(&self, now_ns: u64) -> Vec<(RuleKey, RuleValue)> {
        let expires_ns = self.lasts.map_or(0, |d| {
            now_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        });
        let value = RuleValue {
            slot: self.id,
            action: self.fault.kind().as_u8(),
            directions: self.direction.bits(),
            _pad: [0; 2],
            threshold: threshold_from_pct(self.pct),
            _pad2: 0,
            expires_ns,
        };
        self.proto
            .numbers()
            .iter()
            .map(|&p| (RuleKey::new(p, self.port), value))
            .collect()
    }

    /// One line for humans: "blackhole tcp+udp port 5672 (100%)".
    pub fn describe(&self) -> String {
        format!(
            "{} {} port {} ({}%{})",
            self.fault.name(),
            self.proto.label(),
            self.port,
            self.pct,
            match self.direction {
                Direction::Both => "",
                Direction::Ingress => ", ingress only",
                Direction::Egress => ", egress only",
            }
        )
    }
}

/// Now on CLOCK_MONOTONIC in ns, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use faultbpf_common::{FaultKind, THRESHOLD_ALWAYS};

    use super::*;

    fn rule() -> Rule {
        Rule {
            id: 3,
            fault: Fault::Blackhole,
            port: 5672,
            proto: Proto::All,
            pct: 100.0,
            direction: Direction::Both,
            lasts: None,
        }
    }

    #[test]
    fn all_gives_one_entry_per_protocol() {
        let e = rule().entries(1);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, RuleKey::new(PROTO_TCP, 5672));
        assert_eq!(e[1].0, RuleKey::new(PROTO_UDP, 5672));
        let v = e[0].1;
        assert_eq!(v.slot, 3);
        assert_eq!(v.action, FaultKind::Drop.as_u8());
        assert_eq!(v.directions, DIR_INGRESS | DIR_EGRESS);
        assert_eq!(v.threshold, THRESHOLD_ALWAYS);
        assert_eq!(v.expires_ns, 0);
    }

    #[test]
    fn expiry_counts_from_now() {
        let r = Rule {
            lasts: Some(Duration::from_secs(2)),
            proto: Proto::Udp,
            direction: Direction::Egress,
            ..rule()
        };
        let e = r.entries(1_000);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].1.expires_ns, 2_000_001_000);
        assert_eq!(e[0].1.directions, DIR_EGRESS);
    }

    #[test]
    fn clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
