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

use crate::{
    AttachMode, Direction, Hooks, Proto, Rule,
    api::{Client, ClientError, DEFAULT_SOCKET},
    faults::Dist,
    iface,
    rules::Per,
    session::{Handle, Placement, StartError},
    spec::{Policy, PortSpec, RuleSpec},
};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A builder value is invalid, or a guard rail refused the rule.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Kernel(#[from] crate::Error),
    #[error(transparent)]
    Daemon(#[from] ClientError),
}

impl From<StartError> for GuardError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Invalid(e) => Self::Invalid(e.to_string()),
            StartError::Kernel(e) => Self::Kernel(e),
            StartError::Daemon(e) => Self::Daemon(e),
            StartError::Claimed(e) => Self::Invalid(e.to_string()),
            StartError::Http(e) => Self::Invalid(crate::error::chain(&e)),
        }
    }
}

/// Builds one fault; see the module docs.
#[derive(Debug, Clone)]
pub struct FaultBuilder {
    spec: RuleSpec,
    ifaces: Vec<String>,
    socket: Option<PathBuf>,
    standalone: bool,
}

impl FaultBuilder {
    /// A fault by its wire name (`faults::REGISTRY`); the constructors
    /// below are shorthands.
    pub fn new(fault: &str) -> Self {
        Self {
            spec: RuleSpec::new(fault),
            ifaces: Vec::new(),
            socket: None,
            standalone: false,
        }
    }

    /// Packets vanish (see `faults/blackhole.rs`).
    pub fn blackhole() -> Self {
        Self::new("blackhole")
    }

    /// ECONNREFUSED / ECONNRESET (see `faults/reset.rs`).
    pub fn reset() -> Self {
        Self::new("reset")
    }

    /// Connections open, data never arrives (see `faults/hang.rs`).
    pub fn hang() -> Self {
        Self::new("hang")
    }

    /// Delivered bytes are wrong (see `faults/corrupt.rs`).
    pub fn corrupt() -> Self {
        Self::new("corrupt")
    }

    /// Packets arrive twice (see `faults/duplicate.rs`).
    pub fn duplicate() -> Self {
        Self::new("duplicate")
    }

    /// Traffic limited to `rate`, as tc writes it: `"10mbit"` (see
    /// `faults/throttle.rs`).
    pub fn throttle(rate: &str) -> Self {
        let mut b = Self::new("throttle");
        b.spec.rate = Some(rate.to_string());
        b
    }

    /// DNS queries answered with `rcode` from the kernel, or dropped with
    /// `None` (see `faults/dns.rs`); narrow it with [`FaultBuilder::domain`].
    pub fn dns(rcode: Option<crate::faults::Rcode>) -> Self {
        let mut b = Self::new("dns");
        b.spec.rcode = rcode;
        b
    }

    /// `dns`: only this name and the names under it; repeatable.
    pub fn domain(mut self, name: &str) -> Self {
        self.spec.domain.push(name.to_string());
        self
    }

    /// Sets `skb->mark` (see `faults/mark.rs`).
    pub fn mark(value: u32) -> Self {
        let mut b = Self::new("mark");
        b.spec.mark = Some(value);
        b
    }

    /// Sets ECN CE (see `faults/mark.rs`).
    pub fn ecn() -> Self {
        Self::new("ecn")
    }

    /// A mix such as `"drop:20,reset:10"` (see `faults/chaos.rs`).
    pub fn chaos(mix: &str) -> Self {
        let mut b = Self::new("chaos");
        b.spec.mix = Some(mix.to_string());
        b
    }

    /// Packets arrive `ms` milliseconds late (see `faults/delay.rs`).
    pub fn delay(ms: f64) -> Self {
        let mut b = Self::new("delay");
        b.spec.delay_ms = Some(ms);
        b
    }

    /// Delay jitter, uniform by default.
    pub fn jitter(mut self, jitter: Duration, dist: Dist) -> Self {
        self.spec.jitter = Some(humantime::format_duration(jitter).to_string());
        self.spec.dist = Some(dist);
        self
    }

    /// Destination or source port.
    pub fn port(mut self, port: u16) -> Self {
        self.spec.port.push(PortSpec::Number(port.into()));
        self
    }

    /// Destination or source ports, `"8000-8100"`.
    pub fn ports(mut self, range: &str) -> Self {
        self.spec.port.push(PortSpec::Text(range.into()));
        self
    }

    /// Destination port only.
    pub fn dport(mut self, port: u16) -> Self {
        self.spec.dport.push(PortSpec::Number(port.into()));
        self
    }

    /// Source port only.
    pub fn sport(mut self, port: u16) -> Self {
        self.spec.sport.push(PortSpec::Number(port.into()));
        self
    }

    pub fn proto(mut self, proto: Proto) -> Self {
        self.spec.proto = Some(proto);
        self
    }

    /// Percent of packets (or flows) hit, 0 to 100.
    pub fn pct(mut self, pct: f64) -> Self {
        self.spec.pct = Some(pct);
        self
    }

    /// Decide per connection instead of per packet.
    pub fn per_flow(mut self) -> Self {
        self.spec.per = Some(Per::Flow);
        self
    }

    /// Only traffic to or from this host or prefix.
    pub fn peer(mut self, cidr: &str) -> Self {
        self.spec.peer.push(cidr.to_string());
        self
    }

    pub fn direction(mut self, d: Direction) -> Self {
        self.spec.direction = Some(d);
        self
    }

    /// The kernel lifts the fault after this long even if the guard lives on.
    pub fn lasting(mut self, d: Duration) -> Self {
        self.spec.lasts = Some(humantime::format_duration(d).to_string());
        self
    }

    /// Allow what the guard rails refuse (port 22, most of the port space).
    pub fn force(mut self) -> Self {
        self.spec.force = true;
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
        self.spec.name = Some(name.to_string());
        self
    }

    /// The rule this builder describes, checked as every caller's rules
    /// are (`RuleSpec::validate`).
    pub fn rule(&self) -> Result<Rule, GuardError> {
        self.spec
            .validate(0, &Policy::default())
            .map_err(|e| GuardError::Invalid(e.to_string()))
    }

    /// Puts the fault in force until the guard is dropped.
    pub fn apply(self) -> Result<FaultGuard, GuardError> {
        self.rule()?;
        let socket = self.socket.clone().unwrap_or_else(|| {
            std::env::var_os("FAULTBPF_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
        });
        let client = Client::new(socket);
        let mut placement = if !self.standalone && client.is_up() {
            Placement::daemon(client)
        } else {
            let ifaces = if self.ifaces.is_empty() {
                iface::up()?
            } else {
                self.ifaces.clone()
            };
            Placement::here(&ifaces, Hooks::tc(AttachMode::Auto))?
        };
        let handle = placement.start(&self.spec, true)?;
        Ok(FaultGuard {
            placement,
            handle: Some(handle),
        })
    }
}

/// A fault in force; dropping it lifts the fault.
pub struct FaultGuard {
    placement: Placement,
    /// Taken by `Drop`.
    handle: Option<Handle>,
}

impl FaultGuard {
    /// Counters so far.
    pub fn counters(&self) -> Result<RuleCounters, GuardError> {
        let h = self.handle.as_ref().expect("only Drop takes the handle");
        self.placement
            .counters(h)
            .map_err(GuardError::Invalid)?
            .ok_or_else(|| GuardError::Invalid(format!("rule {} is gone", h.id())))
    }

    /// The rule's id: its daemon id, or its counter slot in this process.
    pub fn id(&self) -> u32 {
        self.handle.as_ref().map_or(0, Handle::id)
    }

    /// Whether the fault is in a daemon (else in this process).
    pub fn in_daemon(&self) -> bool {
        matches!(self.placement, Placement::Daemon(_))
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.placement.stop(h);
        }
        // In this process, the Injector's own Drop then detaches everything.
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
        assert_eq!(r.fault, crate::Fault::Reset);
        assert_eq!(r.ports.len(), 3);
        assert_eq!((r.pct, r.per), (30.0, Per::Flow));
        assert_eq!(r.peers.len(), 1);
    }

    #[test]
    fn every_registered_fault_has_a_guard_constructor() {
        for def in crate::faults::REGISTRY {
            let b = match def.name {
                "blackhole" => FaultBuilder::blackhole(),
                "reset" => FaultBuilder::reset(),
                "hang" => FaultBuilder::hang(),
                "corrupt" => FaultBuilder::corrupt(),
                "mark" => FaultBuilder::mark(7),
                "ecn" => FaultBuilder::ecn(),
                "chaos" => FaultBuilder::chaos("drop:5"),
                "delay" => FaultBuilder::delay(5.0),
                "duplicate" => FaultBuilder::duplicate(),
                "throttle" => FaultBuilder::throttle("10mbit"),
                "dns" => FaultBuilder::dns(None).domain("example.com"),
                other => panic!("no guard constructor for `{other}`: add one to FaultBuilder"),
            };
            let r = b.port(5).rule().unwrap();
            assert_eq!(r.fault.name(), def.name);
        }
    }

    #[test]
    fn builder_errors_name_the_value() {
        for (b, needle) in [
            (FaultBuilder::blackhole(), "give at least one of `port`"),
            (FaultBuilder::blackhole().port(22), "port 22"),
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
