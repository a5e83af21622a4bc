//! The daemon's rule table: which rules exist, who owns which map keys,
//! and the one place where rules go into and out of the kernel maps.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use faultbpf_common::{MAX_SLOTS, RuleCounters, RuleKey};
use serde::Serialize;

use crate::{
    Injector,
    config::Config,
    rules::Rule,
    spec::{RuleSpec, SpecError},
};

/// Where a rule came from: the API, or the config file (replaced on
/// reload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Api,
    Config,
}

/// A rule in the table.
pub struct Entry {
    pub rule: Rule,
    pub spec: RuleSpec,
    pub origin: Origin,
    pub expires_at: Option<Instant>,
}

/// What the API shows of a rule.
#[derive(Debug, Serialize)]
pub struct RuleInfo {
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub fault: &'static str,
    pub description: String,
    pub origin: Origin,
    /// Seconds until the kernel stops applying it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<f64>,
    pub spec: RuleSpec,
}

/// A rule's counters, as `/v1/stats` shows them.
#[derive(Debug, Serialize)]
pub struct RuleStats {
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub fault: &'static str,
    pub ports: Vec<String>,
    pub description: String,
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub acted_packets: u64,
    pub acted_bytes: u64,
}

/// Why a change was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// 400: the spec is invalid.
    #[error("{0}")]
    Invalid(#[from] SpecError),
    /// 403: a guard rail; `force` overrides.
    #[error("{0}")]
    Guarded(String),
    /// 404.
    #[error("no rule {0}")]
    NotFound(u32),
    /// 409: another rule already holds a key.
    #[error("{0}")]
    Conflict(String),
    /// 507: every counter slot is in use.
    #[error("all {MAX_SLOTS} rule slots are in use; remove rules first")]
    Full,
    /// 500: the kernel refused.
    #[error(transparent)]
    Kernel(#[from] crate::Error),
}

pub struct State {
    pub inj: Injector,
    rules: BTreeMap<u32, Entry>,
    owners: HashMap<RuleKey, u32>,
    next_id: u32,
    /// Ports no rule may cut without `force`: ssh and our own TCP API.
    guarded: Vec<(u16, &'static str)>,
    default_ttl: Duration,
}

impl State {
    pub fn new(inj: Injector, api_port: Option<u16>, default_ttl: Duration) -> Self {
        let mut guarded = vec![(22, "it would cut ssh to this host")];
        if let Some(p) = api_port {
            guarded.push((p, "it would cut the daemon's own TCP API"));
        }
        Self {
            inj,
            rules: BTreeMap::new(),
            owners: HashMap::new(),
            next_id: 0,
            guarded,
            default_ttl,
        }
    }

    /// Validates and inserts a rule; returns its id.
    pub fn add(&mut self, spec: RuleSpec, origin: Origin) -> Result<u32, StateError> {
        let id = self.free_id().ok_or(StateError::Full)?;
        let rule = spec.to_rule(id, Some(self.default_ttl))?;
        self.check(&rule, spec.force, &[])?;
        self.insert(rule, spec, origin)?;
        Ok(id)
    }

    /// The guard rails and key conflicts; rules in `replacing` are about to
    /// go and do not conflict.
    fn check(&self, rule: &Rule, force: bool, replacing: &[u32]) -> Result<(), StateError> {
        if !force {
            for (port, why) in &self.guarded {
                if rule.ports.iter().any(|r| (r.first..=r.last).contains(port)) {
                    return Err(StateError::Guarded(format!(
                        "refusing to fault port {port}: {why}; add \"force\": true (--force) if you mean it"
                    )));
                }
            }
        }
        for k in rule.keys() {
            if let Some(other) = self.owners.get(&k)
                && !replacing.contains(other)
            {
                return Err(StateError::Conflict(format!(
                    "port {} is already faulted by rule {other}; remove it first",
                    k.port()
                )));
            }
        }
        crate::claims::check(&rule.keys(), force).map_err(|e| StateError::Conflict(e.to_string()))
    }

    fn insert(&mut self, rule: Rule, spec: RuleSpec, origin: Origin) -> Result<(), StateError> {
        if let Err(e) = self.inj.insert(&rule) {
            let _ = self.inj.remove(&rule);
            return Err(e.into());
        }
        for k in rule.keys() {
            self.owners.insert(k, rule.id);
        }
        let expires_at = rule.lasts.map(|d| Instant::now() + d);
        self.next_id = (rule.id + 1) % MAX_SLOTS;
        self.rules.insert(
            rule.id,
            Entry {
                rule,
                spec,
                origin,
                expires_at,
            },
        );
        Ok(())
    }

    /// Ids go up and wrap, skipping live rules, so a just-deleted id is not
    /// handed out again at once.
    fn free_id(&self) -> Option<u32> {
        (0..MAX_SLOTS)
            .map(|i| (self.next_id + i) % MAX_SLOTS)
            .find(|id| !self.rules.contains_key(id))
    }

    pub fn remove(&mut self, id: u32) -> Result<Entry, StateError> {
        let e = self.rules.remove(&id).ok_or(StateError::NotFound(id))?;
        for k in e.rule.keys() {
            if self.owners.get(&k) == Some(&id) {
                self.owners.remove(&k);
            }
        }
        self.inj.remove(&e.rule)?;
        Ok(e)
    }

    /// Removes every rule of `origin` (or all with `None`); returns how many.
    pub fn remove_all(&mut self, origin: Option<Origin>) -> usize {
        let ids: Vec<u32> = self
            .rules
            .iter()
            .filter(|(_, e)| origin.is_none_or(|o| e.origin == o))
            .map(|(id, _)| *id)
            .collect();
        ids.iter().filter(|id| self.remove(**id).is_ok()).count()
    }

    /// Drops rules whose time is up (the kernel already ignores them) or
    /// whose owner process is gone; returns their ids and why.
    pub fn sweep(&mut self, now: Instant) -> Vec<(u32, &'static str)> {
        let done: Vec<(u32, &'static str)> = self
            .rules
            .iter()
            .filter_map(|(id, e)| {
                if e.expires_at.is_some_and(|t| t <= now) {
                    Some((*id, "expired"))
                } else if e.spec.owner_pid.is_some_and(|p| !process_alive(p)) {
                    Some((*id, "removed: its owner process is gone"))
                } else {
                    None
                }
            })
            .collect();
        for (id, _) in &done {
            let _ = self.remove(*id);
        }
        done
    }

    /// Replaces the config's rules with `config`'s, all or nothing: rules
    /// whose spec is unchanged keep their id and counters. Returns (added,
    /// removed, kept).
    pub fn reload(&mut self, config: &Config) -> Result<(usize, usize, usize), StateError> {
        let current: HashMap<String, u32> = self
            .rules
            .iter()
            .filter(|(_, e)| e.origin == Origin::Config)
            .filter_map(|(id, e)| e.spec.name.clone().map(|n| (n, *id)))
            .collect();
        let keep: Vec<u32> = config
            .rules
            .iter()
            .filter_map(|nr| {
                let id = current.get(&nr.name)?;
                (self.rules[id].spec == nr.spec).then_some(*id)
            })
            .collect();
        let going: Vec<u32> = current
            .values()
            .filter(|id| !keep.contains(id))
            .copied()
            .collect();
        let coming: Vec<&RuleSpec> = config
            .rules
            .iter()
            .filter(|nr| !current.get(&nr.name).is_some_and(|id| keep.contains(id)))
            .map(|nr| &nr.spec)
            .collect();

        // Check everything before touching the maps.
        let mut planned = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        let mut keys = HashMap::new();
        for spec in &coming {
            let id = (0..MAX_SLOTS)
                .map(|i| (self.next_id + i) % MAX_SLOTS)
                .find(|id| {
                    (!self.rules.contains_key(id) || going.contains(id)) && !ids.contains(id)
                })
                .ok_or(StateError::Full)?;
            let rule = spec.to_rule(id, Some(self.default_ttl))?;
            self.check(&rule, spec.force, &going)?;
            for k in rule.keys() {
                if let Some(other) = keys.insert(k, id) {
                    return Err(StateError::Conflict(format!(
                        "port {} appears in two config rules ({other} and {id})",
                        k.port()
                    )));
                }
            }
            ids.push(id);
            planned.push((rule, (*spec).clone()));
        }
        for id in &going {
            self.remove(*id)?;
        }
        for (rule, spec) in planned {
            self.insert(rule, spec, Origin::Config)?;
        }
        Ok((coming.len(), going.len(), keep.len()))
    }

    pub fn info(&self, id: u32) -> Option<RuleInfo> {
        let e = self.rules.get(&id)?;
        Some(RuleInfo {
            id,
            name: e.spec.name.clone(),
            fault: e.rule.fault.name(),
            description: e.rule.describe(),
            origin: e.origin,
            expires_in_seconds: e
                .expires_at
                .map(|t| t.saturating_duration_since(Instant::now()).as_secs_f64()),
            spec: e.spec.clone(),
        })
    }

    pub fn list(&self) -> Vec<RuleInfo> {
        self.rules.keys().filter_map(|id| self.info(*id)).collect()
    }

    pub fn counters(&self, id: u32) -> Result<RuleCounters, crate::Error> {
        self.inj.counters(id)
    }

    pub fn stats(&self) -> Vec<RuleStats> {
        self.rules
            .iter()
            .map(|(id, e)| {
                let c = self.inj.counters(*id).unwrap_or_default();
                RuleStats {
                    id: *id,
                    name: e.spec.name.clone(),
                    fault: e.rule.fault.name(),
                    ports: e.rule.ports_text(),
                    description: e.rule.describe(),
                    matched_packets: c.matched_packets,
                    matched_bytes: c.matched_bytes,
                    acted_packets: c.acted_packets,
                    acted_bytes: c.acted_bytes,
                }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Whether `pid` exists (signal 0 checks without sending anything).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
