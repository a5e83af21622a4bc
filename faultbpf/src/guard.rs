//! Faults scoped to a block of test code: a typed builder whose `apply()`
//! returns a guard that lifts the fault when dropped.
//!
//! With a daemon listening on the socket (default `/run/faultbpf.sock`,
//! or `FAULTBPF_SOCKET`) the rule goes there, owned by this process;
//! otherwise the programs are loaded in-process on the calling thread's
//! network namespace (a test can `setns` a thread into its namespace first).
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use faultbpf::guard::FaultBuilder;
//!
//! let _outage = FaultBuilder::blackhole()
//!     .port(5672)
//!     .lasting(Duration::from_secs(30))
//!     .apply()?;
//! // ... exercise the reconnect logic; the fault lifts at the end of scope.
//! # Ok::<(), faultbpf::guard::GuardError>(())
//! ```

use std::{path::PathBuf, time::Duration};

use faultbpf_common::RuleCounters;
use serde::Deserialize;

use crate::{
    AttachMode, Direction, Fault, Injector, Proto, Rule,
    client::{Client, ClientError, DEFAULT_SOCKET},
    faults::Mix,
    iface,
    rules::{Peer, Per, PortRange, Side},
    spec::RuleSpec,
};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A builder value is invalid.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Kernel(#[from] crate::Error),
    #[error(transparent)]
    Daemon(#[from] ClientError),
}

/// Builds one fault; see the module docs.
#[derive(Debug, Clone)]
pub struct FaultBuilder {
    rule: Rule,
    errors: Vec<String>,
    ifaces: Vec<String>,
    socket: Option<PathBuf>,
    standalone: bool,
    name: Option<String>,
}

impl FaultBuilder {
    pub fn new(fault: Fault) -> Self {
        Self {
            rule: Rule::new(0, fault, Vec::new()),
            errors: Vec::new(),
            ifaces: Vec::new(),
            socket: None,
            standalone: false,
            name: None,
        }
    }

    /// Packets vanish (see `faults/blackhole.rs`).
    pub fn blackhole() -> Self {
        Self::new(Fault::Blackhole)
    }

    /// ECONNREFUSED / ECONNRESET (see `faults/reset.rs`).
    pub fn reset() -> Self {
        Self::new(Fault::Reset)
    }

    /// Connections open, data never arrives (see `faults/hang.rs`).
    pub fn hang() -> Self {
        Self::new(Fault::Hang)
    }

    /// Delivered bytes are wrong (see `faults/corrupt.rs`).
    pub fn corrupt() -> Self {
        Self::new(Fault::Corrupt)
    }

    /// A mix such as `"drop:20,reset:10"` (see `faults/chaos.rs`).
    pub fn chaos(mix: &str) -> Self {
        match mix.parse::<Mix>() {
            Ok(m) => Self::new(Fault::Chaos(m)),
            Err(e) => {
                let mut b = Self::blackhole();
                b.errors.push(format!("mix: {e}"));
                b
            }
        }
    }

    /// Destination or source port.
    pub fn port(self, port: u16) -> Self {
        self.range(Side::Either, &port.to_string())
    }

    /// Destination or source ports, `"8000-8100"`.
    pub fn ports(self, range: &str) -> Self {
        self.range(Side::Either, range)
    }

    /// Destination port only.
    pub fn dport(self, port: u16) -> Self {
        self.range(Side::Dst, &port.to_string())
    }

    /// Source port only.
    pub fn sport(self, port: u16) -> Self {
        self.range(Side::Src, &port.to_string())
    }

    fn range(mut self, side: Side, s: &str) -> Self {
        match PortRange::parse(side, s) {
            Ok(r) => self.rule.ports.push(r),
            Err(e) => self.errors.push(format!("port: {e}")),
        }
        self
    }

    pub fn proto(mut self, proto: Proto) -> Self {
        self.rule.proto = proto;
        self
    }

    /// Percent of packets (or flows) hit, 0 to 100.
    pub fn pct(mut self, pct: f64) -> Self {
        if !(0.0..=100.0).contains(&pct) {
            self.errors
                .push(format!("pct: {pct} is out of range (0 to 100)"));
        }
        self.rule.pct = pct;
        self
    }

    /// Decide per connection instead of per packet.
    pub fn per_flow(mut self) -> Self {
        self.rule.per = Per::Flow;
        self
    }

    /// Only traffic to or from this host or prefix.
    pub fn peer(mut self, cidr: &str) -> Self {
        match cidr.parse::<Peer>() {
            Ok(p) => self.rule.peers.push(p),
            Err(e) => self.errors.push(format!("peer: {e}")),
        }
        self
    }

    pub fn direction(mut self, d: Direction) -> Self {
        self.rule.direction = d;
        self
    }

    /// The kernel lifts the fault after this long even if the guard lives on.
    pub fn lasting(mut self, d: Duration) -> Self {
        self.rule.lasts = Some(d);
        self
    }

    /// In-process mode: attach to this interface (default: all that are up).
    pub fn iface(mut self, name: &str) -> Self {
        self.ifaces.push(name.to_string());
        self
    }

    /// The daemon's socket (default `FAULTBPF_SOCKET` or `/run/faultbpf.sock`).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Never use a daemon: load the programs in this process.
    pub fn standalone(mut self) -> Self {
        self.standalone = true;
        self
    }

    /// A name for the daemon's lists and metrics.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The rule this builder describes, checked.
    pub fn rule(&self) -> Result<Rule, GuardError> {
        if let Some(e) = self.errors.first() {
            return Err(GuardError::Invalid(e.clone()));
        }
        if self.rule.ports.is_empty() {
            return Err(GuardError::Invalid(
                "port: give at least one port (port, ports, dport or sport)".into(),
            ));
        }
        Ok(self.rule.clone())
    }

    /// Puts the fault in force until the guard is dropped.
    pub fn apply(self) -> Result<FaultGuard, GuardError> {
        let rule = self.rule()?;
        let socket = self.socket.clone().unwrap_or_else(|| {
            std::env::var_os("FAULTBPF_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
        });
        let client = Client::new(socket);
        if !self.standalone && client.is_up() {
            let mut spec = RuleSpec::from_rule(&rule, self.name.clone(), false);
            spec.owner_pid = Some(std::process::id());
            let body = serde_json::to_value(&spec)
                .map_err(|e| GuardError::Invalid(format!("could not encode the rule: {e}")))?;
            #[derive(Deserialize)]
            struct Added {
                id: u32,
            }
            let added: Added = client.call("POST", "/v1/rules", Some(&body))?;
            return Ok(FaultGuard::Daemon {
                client,
                id: added.id,
            });
        }
        let ifaces = if self.ifaces.is_empty() {
            iface::up()?
        } else {
            self.ifaces.clone()
        };
        let mut inj = Injector::attach(&ifaces, AttachMode::Auto)?;
        inj.insert(&rule)?;
        Ok(FaultGuard::Local {
            inj: Box::new(inj),
            id: rule.id,
        })
    }
}

/// A fault in force; dropping it lifts the fault.
pub enum FaultGuard {
    /// Programs loaded by this process.
    Local { inj: Box<Injector>, id: u32 },
    /// A rule in a daemon.
    Daemon { client: Client, id: u32 },
}

impl FaultGuard {
    /// Counters so far.
    pub fn counters(&self) -> Result<RuleCounters, GuardError> {
        match self {
            Self::Local { inj, id } => Ok(inj.counters(*id)?),
            Self::Daemon { client, id } => {
                #[derive(Deserialize)]
                struct Stats {
                    rules: Vec<RuleCounters2>,
                }
                #[derive(Deserialize)]
                struct RuleCounters2 {
                    id: u32,
                    matched_packets: u64,
                    matched_bytes: u64,
                    acted_packets: u64,
                    acted_bytes: u64,
                }
                let s: Stats = client.call("GET", "/v1/stats", None)?;
                let r = s
                    .rules
                    .into_iter()
                    .find(|r| r.id == *id)
                    .ok_or_else(|| GuardError::Invalid(format!("rule {id} is gone")))?;
                Ok(RuleCounters {
                    matched_packets: r.matched_packets,
                    matched_bytes: r.matched_bytes,
                    acted_packets: r.acted_packets,
                    acted_bytes: r.acted_bytes,
                    ..Default::default()
                })
            }
        }
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if let Self::Daemon { client, id } = self {
            let _ = client.request("DELETE", &format!("/v1/rules/{id}"), None);
        }
        // Local: the Injector's own Drop detaches everything.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_makes_the_rule() {
        let r = FaultBuilder::reset()
            .port(5432)
            .ports("8000-8001")
            .dport(9)
            .proto(Proto::Tcp)
            .pct(30.0)
            .per_flow()
            .peer("10.200.0.0/24")
            .lasting(Duration::from_secs(5))
            .rule()
            .unwrap();
        assert_eq!(r.fault, Fault::Reset);
        assert_eq!(r.ports.len(), 3);
        assert_eq!((r.pct, r.per), (30.0, Per::Flow));
        assert_eq!(r.peers.len(), 1);
    }

    #[test]
    fn builder_errors_name_the_value() {
        for (b, needle) in [
            (FaultBuilder::blackhole(), "give at least one port"),
            (FaultBuilder::blackhole().port(0), "port 0"),
            (FaultBuilder::blackhole().port(1).pct(101.0), "101"),
            (FaultBuilder::blackhole().port(1).peer("x"), "`x`"),
            (FaultBuilder::chaos("boom:1").port(1), "boom"),
        ] {
            let e = b.rule().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
