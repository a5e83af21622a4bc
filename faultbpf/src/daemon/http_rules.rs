//! The daemon's `http` rules: each one a responder and its steering
//! programs (`crate::http`), running on a runtime of their own so that a
//! steered flood never competes with the API's. Ids come from the same
//! space as the packet rules; list, stats, expiry, removal and the config
//! reload treat both alike.
//!
//! A rule is in force from its start to its drop: the steering programs'
//! links belong to this process, so a killed daemon leaves nothing behind
//! (new connections go straight to the server again), like `faultbpf http`.
//!
//! The daemon takes rules from any caller of its API, so on the clients'
//! side it steers only a named cgroup's connects, never every process of
//! the host (`cgroup: "/"` is refused).

use std::{collections::BTreeMap, time::Instant};

use super::state::StateError;
use crate::{
    api::{Origin, RuleInfo, RuleStats},
    http::{self, DEFAULT_CGROUP, Side, rule::HttpRule},
    spec::RuleSpec,
};

/// A stopped rule's spec, origin and expiry, to start it again.
pub type Stopped = (RuleSpec, Origin, Option<Instant>);

/// One rule in force.
pub struct HttpEntry {
    running: http::Running,
    port: u16,
    pub spec: RuleSpec,
    pub origin: Origin,
    pub expires_at: Option<Instant>,
}

#[derive(Default)]
pub struct HttpRules {
    // Declared first, dropped first: the responders (their drop detaches
    // the programs), then their runtime.
    rules: BTreeMap<u32, HttpEntry>,
    responders: http::Responders,
}

impl HttpEntry {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it; what it was, to start it again.
    pub fn into_parts(self) -> Stopped {
        (self.spec.clone(), self.origin, self.expires_at)
    }
}

impl HttpRules {
    pub fn contains(&self, id: u32) -> bool {
        self.rules.contains_key(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.rules.keys().copied()
    }

    pub fn get(&self, id: u32) -> Option<&HttpEntry> {
        self.rules.get(&id)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Starts `rule` as rule `id`: refused if another http rule has its
    /// port, or if it would steer the whole host's connects.
    pub fn start(
        &mut self,
        id: u32,
        rule: HttpRule,
        spec: RuleSpec,
        origin: Origin,
        now: Instant,
    ) -> Result<(), StateError> {
        let opts = rule.options;
        if let Some((other, _)) = self.rules.iter().find(|(_, e)| e.port == opts.port) {
            return Err(StateError::Conflict(format!(
                "port {} is already steered by http rule {other}; remove it first",
                opts.port
            )));
        }
        if opts.side != Side::Server && opts.cgroup == DEFAULT_CGROUP {
            let listens = http::listener_addr(opts.port).is_ok();
            if opts.side == Side::Client || !listens {
                return Err(StateError::Invalid(crate::spec::SpecError::new(
                    "cgroup",
                    format!(
                        "{}the daemon steers the clients' side only for a named cgroup (a \
                         pod's or a service's, e.g. /system.slice/app.service), never every \
                         process of the host: give `cgroup`",
                        if listens {
                            String::new()
                        } else {
                            format!(
                                "no server listens on port {} in the daemon's namespace; ",
                                opts.port
                            )
                        }
                    ),
                )));
            }
        }
        let expires_at =
            match rule.lasts {
                None => None,
                Some(d) => Some(now.checked_add(d).ok_or_else(|| {
                    StateError::TooLong(humantime::format_duration(d).to_string())
                })?),
            };
        let port = opts.port;
        let running = self.responders.start(opts).map_err(StateError::Http)?;
        self.rules.insert(
            id,
            HttpEntry {
                running,
                port,
                spec,
                origin,
                expires_at,
            },
        );
        Ok(())
    }

    /// Stops rule `id`: new connections go straight to the server.
    pub fn remove(&mut self, id: u32) -> Option<HttpEntry> {
        self.rules.remove(&id)
    }

    pub fn info(&self, id: u32) -> Option<RuleInfo> {
        let e = self.rules.get(&id)?;
        Some(RuleInfo {
            id,
            name: e.spec.name.clone(),
            fault: http::rule::FAULT.into(),
            description: e.running.description.clone(),
            origin: e.origin,
            expires_in_seconds: e
                .expires_at
                .map(|t| t.saturating_duration_since(Instant::now()).as_secs_f64()),
            target: None,
            spec: e.spec.clone(),
        })
    }

    /// Requests seen count as matched, requests faulted as acted (no
    /// bytes); `requests` has the three counters by name.
    pub fn stats(&self, id: u32) -> Option<RuleStats> {
        let e = self.rules.get(&id)?;
        let c = e.running.counters();
        let rc = c.as_rule_counters();
        Some(RuleStats {
            id,
            name: e.spec.name.clone(),
            fault: http::rule::FAULT.into(),
            ports: vec![format!("port {}", e.port)],
            description: e.running.description.clone(),
            matched_packets: rc.matched_packets,
            matched_bytes: rc.matched_bytes,
            acted_packets: rc.acted_packets,
            acted_bytes: rc.acted_bytes,
            actions: None,
            requests: Some(c),
        })
    }
}
