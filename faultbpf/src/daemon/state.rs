//! The daemon's rule table: which rules exist, who owns which map keys,
//! and the one place where rules go into and out of the kernel maps.
//!
//! The order of every change is: compute everything that can fail (id,
//! keys, guard rails, conflicts, expiry with checked arithmetic, what the
//! kernel must be able to do), then write the kernel, then record. A panic
//! between the write and the record removes what was written ([`Undo`]),
//! so the kernel never holds a rule the API cannot see.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use faultbpf_common::{MAX_SLOTS, RuleCounters, RuleKey};

pub use crate::api::{Origin, RuleStats};
use crate::{
    Injector,
    api::RuleInfo,
    config::Config,
    rules::Rule,
    spec::{Guards, Policy, RuleSpec, SpecError},
};

/// A rule in the table.
pub struct Entry {
    pub rule: Rule,
    pub spec: RuleSpec,
    pub origin: Origin,
    pub expires_at: Option<Instant>,
}

/// Why a change was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// 400: the spec is invalid (403 when a guard rail refused it).
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
    /// 400: a duration the clock cannot count to.
    #[error(
        "a rule lasting {0} would end beyond what the clock can count; use a shorter `for`/`ttl`"
    )]
    TooLong(String),
    /// 400: a config rule that cannot be applied, named.
    #[error("rule `{name}`: {}", crate::error::chain(error.as_ref()))]
    InRule {
        name: String,
        error: Box<StateError>,
    },
    /// 500: the kernel refused.
    #[error(transparent)]
    Kernel(#[from] crate::Error),
}

pub struct State {
    pub inj: Injector,
    rules: BTreeMap<u32, Entry>,
    owners: HashMap<RuleKey, u32>,
    next_id: u32,
    /// Default expiry and guard rails (ssh, our own TCP API and metrics).
    policy: Policy,
}

impl State {
    pub fn new(
        inj: Injector,
        api_port: Option<u16>,
        metrics_port: Option<u16>,
        default_ttl: Duration,
    ) -> Self {
        let mut guards = Guards::default();
        if let Some(p) = api_port {
            guards = guards.with_port(p, "it would cut the daemon's own TCP API");
        }
        if let Some(p) = metrics_port {
            guards = guards.with_port(p, "it would cut the daemon's own metrics endpoint");
        }
        Self {
            inj,
            rules: BTreeMap::new(),
            owners: HashMap::new(),
            next_id: 0,
            policy: Policy {
                default_ttl: Some(default_ttl),
                guards,
            },
        }
    }

    /// Validates and inserts a rule; returns its id.
    pub fn add(&mut self, spec: RuleSpec, origin: Origin) -> Result<u32, StateError> {
        let id = self.free_id().ok_or(StateError::Full)?;
        let rule = self.validate(&spec, id)?;
        self.check(&rule, spec.force, &[])?;
        let expires_at = expiry(&rule, Instant::now())?;
        self.insert(rule, spec, origin, expires_at)?;
        Ok(id)
    }

    /// The shared validation (`RuleSpec::validate`) with this daemon's
    /// policy; a guard rail's refusal is `Guarded`.
    fn validate(&self, spec: &RuleSpec, id: u32) -> Result<Rule, StateError> {
        let mut rule = spec.validate(id, &self.policy).map_err(|e| {
            if e.guarded {
                StateError::Guarded(e.message)
            } else {
                StateError::Invalid(e)
            }
        })?;
        rule.seed = crate::rules::random_seed();
        Ok(rule)
    }

    /// Key conflicts, with our own rules (those in `replacing` are about to
    /// go and do not conflict) and with standalone processes' claims
    /// (`claims.rs`; `force` lets both act).
    fn check(&self, rule: &Rule, force: bool, replacing: &[u32]) -> Result<(), StateError> {
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

    /// Writes a checked rule into the kernel, then records it. Nothing may
    /// fail after the kernel write; should anything panic there, `Undo`
    /// takes the rule out of the kernel again while unwinding.
    fn insert(
        &mut self,
        mut rule: Rule,
        spec: RuleSpec,
        origin: Origin,
        expires_at: Option<Instant>,
    ) -> Result<(), StateError> {
        if let Err(e) = self.inj.insert(&mut rule) {
            let _ = self.inj.remove(&rule);
            return Err(e.into());
        }
        let undo = Undo {
            inj: &mut self.inj,
            rule: &rule,
        };
        #[cfg(debug_assertions)]
        if std::env::var_os(PANIC_AFTER_WRITE).is_some() {
            panic!("{PANIC_AFTER_WRITE} is set: panicking between the kernel write and the record");
        }
        std::mem::forget(undo);
        for k in rule.keys() {
            self.owners.insert(k, rule.id);
        }
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

    /// Replaces the config's rules with `config`'s, all or nothing: every
    /// new rule is built and checked (ids, guard rails, conflicts, expiry,
    /// and what this kernel can do: a delay rule needs its device) before
    /// the first change; then the old rules go and the new ones come in,
    /// and if the kernel refuses one, everything is put back as it was.
    /// Rules whose spec is unchanged keep their id and counters.
    pub fn reload(&mut self, config: &Config) -> Result<Reloaded, StateError> {
        let current: BTreeMap<String, u32> = self
            .rules
            .iter()
            .filter(|(_, e)| e.origin == Origin::Config)
            .filter_map(|(id, e)| e.spec.name.clone().map(|n| (n, *id)))
            .collect();
        let mut report = Reloaded::default();
        let mut going: Vec<u32> = Vec::new();
        let mut coming: Vec<(&str, &RuleSpec)> = Vec::new();
        for nr in &config.rules {
            match current.get(&nr.name) {
                Some(id) if self.rules[id].spec == nr.spec => report.kept.push(nr.name.clone()),
                Some(id) => {
                    report.changed.push(nr.name.clone());
                    going.push(*id);
                    coming.push((&nr.name, &nr.spec));
                }
                None => {
                    report.added.push(nr.name.clone());
                    coming.push((&nr.name, &nr.spec));
                }
            }
        }
        for (name, id) in &current {
            if !config.rules.iter().any(|nr| &nr.name == name) {
                report.removed.push(name.clone());
                going.push(*id);
            }
        }

        // Check everything before touching the maps. New rules take free
        // ids only, so the old ones can be put back in their slots.
        let now = Instant::now();
        let mut planned = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        let mut keys = HashMap::new();
        let mut delay_max = None;
        for (name, spec) in &coming {
            let named = |e: StateError| StateError::InRule {
                name: name.to_string(),
                error: Box::new(e),
            };
            let id = (0..MAX_SLOTS)
                .map(|i| (self.next_id + i) % MAX_SLOTS)
                .find(|id| !self.rules.contains_key(id) && !ids.contains(id))
                .ok_or(StateError::Full)?;
            let rule = self.validate(spec, id).map_err(named)?;
            self.check(&rule, spec.force, &going).map_err(named)?;
            let expires_at = expiry(&rule, now).map_err(named)?;
            for k in rule.keys() {
                if let Some(other) = keys.insert(k, *name) {
                    return Err(StateError::Conflict(format!(
                        "port {} appears in two config rules (`{other}` and `{name}`)",
                        k.port()
                    )));
                }
            }
            if let Some(d) = rule.fault.delay() {
                delay_max = delay_max.max(Some(d.max()));
            }
            ids.push(id);
            planned.push((*name, rule, (*spec).clone(), expires_at));
        }
        if let Some(max) = delay_max {
            // Makes the delay device now (or finds it there): the one
            // thing a rule can need that this kernel may lack.
            self.inj.prepare_delay(max).map_err(|e| {
                let name = coming
                    .iter()
                    .zip(&planned)
                    .find(|(_, (_, r, _, _))| r.fault.delay().is_some())
                    .map_or("?", |((n, _), _)| *n);
                StateError::InRule {
                    name: name.to_string(),
                    error: Box::new(StateError::Kernel(e)),
                }
            })?;
        }

        // Apply: out with the old, in with the new; on a refusal, back.
        let mut removed: Vec<Entry> = Vec::new();
        for id in &going {
            match self.remove(*id) {
                Ok(e) => removed.push(e),
                Err(e) => {
                    self.restore(Vec::new(), removed);
                    return Err(e);
                }
            }
        }
        let mut inserted = Vec::new();
        for (name, rule, spec, expires_at) in planned {
            let id = rule.id;
            if let Err(e) = self.insert(rule, spec, Origin::Config, expires_at) {
                self.restore(inserted, removed);
                return Err(StateError::InRule {
                    name: name.to_string(),
                    error: Box::new(e),
                });
            }
            inserted.push(id);
        }
        Ok(report)
    }

    /// Undoes a reload half-way: lifts `inserted`, puts `removed` back in
    /// their slots with the time they had left.
    fn restore(&mut self, inserted: Vec<u32>, removed: Vec<Entry>) {
        for id in inserted {
            let _ = self.remove(id);
        }
        let now = Instant::now();
        for mut e in removed {
            if e.expires_at.is_some_and(|t| t <= now) {
                continue;
            }
            e.rule.lasts = e.expires_at.map(|t| t.saturating_duration_since(now));
            let expires_at = e.expires_at;
            if let Err(err) = self.insert(e.rule, e.spec, e.origin, expires_at) {
                super::log(&format!(
                    "could not put a rule back while undoing a reload: {err}"
                ));
            }
        }
    }

    pub fn info(&self, id: u32) -> Option<RuleInfo> {
        let e = self.rules.get(&id)?;
        Some(RuleInfo {
            id,
            name: e.spec.name.clone(),
            fault: e.rule.fault.name().to_string(),
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
                    fault: e.rule.fault.name().to_string(),
                    ports: e.rule.ports_text(),
                    description: e.rule.describe(),
                    matched_packets: c.matched_packets,
                    matched_bytes: c.matched_bytes,
                    acted_packets: c.acted_packets,
                    acted_bytes: c.acted_bytes,
                    actions: crate::report::action_map(&e.rule, &c)
                        .map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
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

/// What a reload did, by rule name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub kept: Vec<String>,
    pub removed: Vec<String>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        // A changed rule is replaced: one in, one out.
        write!(
            f,
            "{} rule(s) added, {} removed, {} unchanged (added {}; changed {}; kept {}; removed {})",
            self.added.len() + self.changed.len(),
            self.removed.len() + self.changed.len(),
            self.kept.len(),
            list(&self.added),
            list(&self.changed),
            list(&self.kept),
            list(&self.removed)
        )
    }
}

/// Debug builds only: panic in [`State::insert`] right after the kernel
/// write, so a test can show that the write is undone.
#[cfg(debug_assertions)]
pub const PANIC_AFTER_WRITE: &str = "FAULTBPF_TEST_PANIC_AFTER_KERNEL_WRITE";

/// Takes a rule back out of the kernel unless forgotten.
struct Undo<'a> {
    inj: &'a mut Injector,
    rule: &'a Rule,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        let _ = self.inj.remove(self.rule);
    }
}

/// When `rule` ends if inserted at `now`; refused if the clock cannot
/// count that far (`for: 300000000000y`).
fn expiry(rule: &Rule, now: Instant) -> Result<Option<Instant>, StateError> {
    match rule.lasts {
        None => Ok(None),
        Some(d) => now
            .checked_add(d)
            // The kernel counts in u64 nanoseconds of CLOCK_MONOTONIC.
            .filter(|_| u64::try_from(d.as_nanos()).is_ok_and(|n| n < u64::MAX / 2))
            .map(Some)
            .ok_or_else(|| StateError::TooLong(humantime::format_duration(d).to_string())),
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
