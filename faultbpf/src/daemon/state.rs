//! The daemon's rule table: which rules exist, who owns which map keys,
//! and the one place where rules go into and out of the kernel maps.
//!
//! The order of every change is: compute everything that can fail (id,
//! keys, guard rails, conflicts, expiry with checked arithmetic, what the
//! kernel must be able to do), then write the kernel, then record. A panic
//! between the write and the record removes what was written ([`Undo`]),
//! so the kernel never holds a rule the API cannot see.
//!
//! A rule with a `container` lives in an injector inside that container's
//! network namespace ([`super::netns`]), found before the lock is taken
//! ([`Found`]). The daemon checks its containers every second
//! ([`State::follow`]): a container that restarted (a new namespace) gets
//! its rules again there, under the same ids (their counters start again
//! at zero); one that stopped keeps its rules, waiting, and says so in
//! their `target`.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    time::{Duration, Instant},
};

use faultbpf_common::{MAX_SLOTS, RuleCounters, RuleKey};

use super::{
    http_rules::HttpRules,
    netns::{Leases, NetnsInjector, NsId},
};
pub use crate::api::{Origin, RuleStats};
use crate::{
    AttachMode, Injector,
    api::RuleInfo,
    config::Config,
    http::rule::HttpRule,
    rules::Rule,
    spec::{Guards, Policy, RuleSpec, SpecError},
    target::{Engine, Running, TargetError},
};

/// A rule in the table.
pub struct Entry {
    pub rule: Rule,
    pub spec: RuleSpec,
    pub origin: Origin,
    pub expires_at: Option<Instant>,
    /// Rules with a `container`: where the rule acts now.
    pub target: Option<Targeted>,
}

/// Where a container rule acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targeted {
    /// The namespace whose injector holds it; `None` while it waits for
    /// its container.
    pub netns: Option<NsId>,
    /// What `RuleInfo::target` says: where it acts, or why it does not.
    pub status: String,
}

/// A container found for a rule (by [`find`], without the rule lock):
/// the engine's answer and its network namespace, held open.
#[derive(Debug)]
pub struct Found {
    pub name: String,
    pub running: Running,
    pub ns: File,
    pub id: NsId,
}

/// Asks the engine for container `name` and opens its network namespace.
/// Slow (an engine's CLI): call it without the rule lock.
pub fn find(name: &str, engine: Option<Engine>) -> Result<Found, TargetError> {
    let running = crate::target::find_container(name, engine)?;
    let target = crate::target::Target::Pid(running.pid);
    // The process may have ended since the engine answered: that is a
    // container that is not running.
    let stopped = |_| TargetError::NotRunning {
        engine: running.engine.name(),
        name: name.to_string(),
    };
    let ns = target.open().map_err(stopped)?;
    let id = NsId::of(&ns).map_err(|e| stopped(TargetError::NoPid(running.pid, e)))?;
    Ok(Found {
        name: name.to_string(),
        running,
        ns,
        id,
    })
}

/// The ports a rule owns are per namespace: the daemon's own (`None`) or
/// a container's, by the name its rules give.
type Scope = Option<String>;

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
    /// 422: the rule's container is unknown or not running, or its engine
    /// could not be asked (as a kernel without a fault's module is: this
    /// daemon cannot do it here).
    #[error("{0}")]
    Target(#[from] TargetError),
    /// 422: an `http` rule could not start here (no server on its port, a
    /// TLS server, a cgroup that does not exist, programs refused).
    #[error(transparent)]
    Http(crate::http::StartError),
    /// 422: the container shares the daemon's own network namespace.
    #[error(
        "container `{0}` shares the daemon's network namespace (--network host): add the rule \
         without `container`, it acts there already"
    )]
    HostNetwork(String),
}

pub struct State {
    pub inj: Injector,
    /// Injectors in containers' namespaces, one per namespace, each
    /// dropped with its last rule.
    netns: BTreeMap<NsId, NetnsInjector>,
    /// How those attach, and their leases (renewed by the heartbeat).
    others: Others,
    rules: BTreeMap<u32, Entry>,
    owners: HashMap<(Scope, RuleKey), u32>,
    next_id: u32,
    /// Default expiry and guard rails (ssh, our own TCP API and metrics).
    policy: Policy,
    /// `http` rules: responders, not map entries; ids from the same space.
    http: HttpRules,
}

/// What injectors in other namespaces need from the daemon.
pub struct Others {
    pub attach: AttachMode,
    pub lease: Duration,
    pub leases: Leases,
    /// The daemon's own namespace, which no container rule may target.
    pub home: Option<NsId>,
}

impl Others {
    /// For unit tests and daemons that never target containers.
    pub fn new(attach: AttachMode, lease: Duration, leases: Leases) -> Self {
        let home = File::open("/proc/self/ns/net")
            .and_then(|f| NsId::of(&f))
            .ok();
        Self {
            attach,
            lease,
            leases,
            home,
        }
    }
}

/// Where `insert` puts a rule.
enum Place<'a> {
    /// The daemon's own namespace.
    Home,
    /// A container found just now.
    In(&'a Found),
    /// Nowhere yet, for this reason (its `target` status).
    Waiting(String),
}

impl State {
    pub fn new(
        inj: Injector,
        others: Others,
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
            netns: BTreeMap::new(),
            others,
            rules: BTreeMap::new(),
            owners: HashMap::new(),
            next_id: 0,
            policy: Policy {
                default_ttl: Some(default_ttl),
                guards,
            },
            http: HttpRules::default(),
        }
    }

    /// Validates and inserts a rule; returns its id. A rule with a
    /// `container` goes into the namespace `found` (the caller found the
    /// container without the lock); without `found` it waits for the next
    /// check.
    pub fn add(
        &mut self,
        spec: RuleSpec,
        origin: Origin,
        found: Option<&Found>,
    ) -> Result<u32, StateError> {
        let id = self.free_id().ok_or(StateError::Full)?;
        if spec.fault == crate::http::rule::FAULT {
            let rule = self.validate_http(&spec)?;
            self.http.start(id, rule, spec, origin, Instant::now())?;
            self.next_id = (id + 1) % MAX_SLOTS;
            return Ok(id);
        }
        let rule = self.validate(&spec, id)?;
        self.check(&rule, &spec, &[])?;
        let expires_at = expiry(&rule, Instant::now())?;
        let place = match (&spec.container, found) {
            (None, _) => Place::Home,
            (Some(_), Some(f)) => {
                if self.others.home == Some(f.id) {
                    return Err(StateError::HostNetwork(f.name.clone()));
                }
                self.check_netns(&rule, &spec, f)?;
                Place::In(f)
            }
            (Some(c), None) => Place::Waiting(format!("looking for container {c}")),
        };
        self.insert(rule, spec, origin, expires_at, place)?;
        Ok(id)
    }

    /// `RuleSpec::http_rule` with this daemon's policy; a guard rail's
    /// refusal is `Guarded`.
    fn validate_http(&self, spec: &RuleSpec) -> Result<HttpRule, StateError> {
        spec.http_rule(&self.policy).map_err(|e| {
            if e.guarded {
                StateError::Guarded(e.message)
            } else {
                StateError::Invalid(e)
            }
        })
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

    /// Key conflicts, with our own rules in the same namespace (those in
    /// `replacing` are about to go and do not conflict) and with
    /// standalone processes' claims in ours (`claims.rs`; `force` lets both
    /// act). A container's claims are checked when it is found
    /// ([`State::check_netns`]).
    fn check(&self, rule: &Rule, spec: &RuleSpec, replacing: &[u32]) -> Result<(), StateError> {
        let scope: Scope = spec.container.clone();
        for k in rule.keys() {
            if let Some(other) = self.owners.get(&(scope.clone(), k))
                && !replacing.contains(other)
            {
                return Err(StateError::Conflict(format!(
                    "port {} is already faulted by rule {other}{}; remove it first",
                    k.port(),
                    in_container(&scope)
                )));
            }
        }
        if scope.is_some() {
            return Ok(());
        }
        crate::claims::check(&rule.keys(), spec.force)
            .map_err(|e| StateError::Conflict(e.to_string()))
    }

    /// Conflicts in the namespace `f` found: rules that reached it under
    /// another name (the container's id, say), and standalone processes'
    /// claims there.
    fn check_netns(&self, rule: &Rule, spec: &RuleSpec, f: &Found) -> Result<(), StateError> {
        let keys = rule.keys();
        for (id, e) in &self.rules {
            if e.spec.container == spec.container
                || e.target.as_ref().and_then(|t| t.netns) != Some(f.id)
            {
                continue;
            }
            let theirs = e.rule.keys();
            if let Some(k) = keys.iter().find(|k| theirs.contains(k)) {
                return Err(StateError::Conflict(format!(
                    "port {} is already faulted by rule {id} in the same network namespace \
                     (container {}); remove it first",
                    k.port(),
                    e.spec.container.as_deref().unwrap_or("?")
                )));
            }
        }
        let force = spec.force;
        super::netns::in_netns(&f.ns, || crate::claims::check(&keys, force))
            .map_err(|source| crate::Error::Io {
                what: format!("could not enter container {}'s network namespace", f.name),
                source,
            })?
            .map_err(|e| StateError::Conflict(e.to_string()))
    }

    /// The injector of `f`'s namespace, made (attached there) if there is
    /// none yet.
    fn injector_in(&mut self, f: &Found) -> Result<&mut NetnsInjector, crate::Error> {
        if !self.netns.contains_key(&f.id) {
            let ns = f.ns.try_clone().map_err(|source| crate::Error::Io {
                what: "could not duplicate a network namespace's file descriptor".into(),
                source,
            })?;
            let n = NetnsInjector::attach(
                ns,
                self.others.attach,
                self.others.lease,
                &self.others.leases,
            )?;
            super::log(&format!(
                "attached in container {}'s network namespace {} (pid {}) to {}",
                f.name,
                f.id,
                f.running.pid,
                n.interfaces().join(", ")
            ));
            self.netns.insert(f.id, n);
        }
        Ok(self.netns.get_mut(&f.id).expect("just made"))
    }

    /// Drops the injectors no rule uses any more.
    fn drop_unused(&mut self) {
        let used: Vec<NsId> = self
            .rules
            .values()
            .filter_map(|e| e.target.as_ref().and_then(|t| t.netns))
            .collect();
        let unused: Vec<NsId> = self
            .netns
            .keys()
            .filter(|id| !used.contains(id))
            .copied()
            .collect();
        for id in unused {
            self.netns.remove(&id);
            super::log(&format!(
                "detached from network namespace {id}: no rule acts there any more"
            ));
        }
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
        place: Place<'_>,
    ) -> Result<(), StateError> {
        let target = match place {
            Place::Home => {
                self.write(&mut rule)?;
                None
            }
            Place::In(f) => match self.write_in(&mut rule, f) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.drop_unused();
                    return Err(e);
                }
            },
            Place::Waiting(status) => Some(Targeted {
                netns: None,
                status,
            }),
        };
        for k in rule.keys() {
            self.owners.insert((spec.container.clone(), k), rule.id);
        }
        self.next_id = (rule.id + 1) % MAX_SLOTS;
        self.rules.insert(
            rule.id,
            Entry {
                rule,
                spec,
                origin,
                expires_at,
                target,
            },
        );
        Ok(())
    }

    /// Writes `rule` into the daemon's own injector (see [`State::insert`]).
    fn write(&mut self, rule: &mut Rule) -> Result<(), StateError> {
        if let Err(e) = self.inj.insert(rule) {
            let _ = self.inj.remove(rule);
            return Err(e.into());
        }
        armed(&mut self.inj, rule);
        Ok(())
    }

    /// Writes `rule` into the injector of `f`'s namespace (made if need
    /// be; entered, since a delay rule makes its device there).
    fn write_in(&mut self, rule: &mut Rule, f: &Found) -> Result<Targeted, StateError> {
        let n = self.injector_in(f)?;
        let written = n.with(|inj| {
            let r = inj.insert(rule);
            if r.is_err() {
                let _ = inj.remove(rule);
            }
            r
        });
        written?;
        armed(n.injector_mut(), rule);
        Ok(Targeted {
            netns: Some(f.id),
            status: self.acting(f),
        })
    }

    /// A container rule's status while it acts in `f`'s namespace.
    fn acting(&self, f: &Found) -> String {
        let ifaces = self
            .netns
            .get(&f.id)
            .map(|n| n.interfaces().join(", "))
            .unwrap_or_default();
        format!(
            "container {} (pid {}, network namespace {}, on {ifaces})",
            f.name, f.running.pid, f.id
        )
    }

    /// Lifts `e`'s rule from whichever injector holds it.
    fn lift(&mut self, e: &Entry) -> Result<(), crate::Error> {
        match &e.target {
            None => self.inj.remove(&e.rule),
            Some(Targeted {
                netns: Some(id), ..
            }) => match self.netns.get_mut(id) {
                Some(n) => n.injector_mut().remove(&e.rule),
                None => Ok(()),
            },
            Some(_) => Ok(()),
        }
    }

    /// The containers rules target, each once: what [`State::follow`] is
    /// given answers for.
    pub fn containers(&self) -> Vec<(String, Option<Engine>)> {
        let mut out: Vec<(String, Option<Engine>)> = Vec::new();
        for e in self.rules.values() {
            if let Some(c) = &e.spec.container {
                let t = (c.clone(), e.spec.engine);
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Brings the rules on container `name` (asked of `engine`) in line
    /// with what its engine said just now (`found`, asked without the
    /// lock): nothing while it runs in the same namespace; into the new
    /// namespace when it restarted (same ids, counters from zero); out of
    /// the kernel, waiting, while it is not running; left where they are
    /// when the engine could not be asked. Returns log lines, one per rule
    /// whose status changed.
    pub fn follow(
        &mut self,
        name: &str,
        engine: Option<Engine>,
        found: &Result<Found, TargetError>,
    ) -> Vec<String> {
        let ids: Vec<u32> = self
            .rules
            .iter()
            .filter(|(_, e)| e.spec.container.as_deref() == Some(name) && e.spec.engine == engine)
            .map(|(id, _)| *id)
            .collect();
        let mut said = Vec::new();
        let now = Instant::now();
        for id in ids {
            let Some(e) = self.rules.get(&id) else {
                continue;
            };
            let was = e.target.clone().unwrap_or(Targeted {
                netns: None,
                status: String::new(),
            });
            let (netns, status) = match found {
                Ok(f) if was.netns == Some(f.id) => (was.netns, self.acting(f)),
                Ok(f) if self.others.home == Some(f.id) => {
                    self.unplace(id);
                    (None, StateError::HostNetwork(name.to_string()).to_string())
                }
                Ok(f) => {
                    self.unplace(id);
                    match self.replace_in(id, f, now) {
                        Ok(t) => (t.netns, t.status),
                        Err(e) => (
                            None,
                            format!(
                                "could not act in container {name}: {}; trying again",
                                crate::error::chain(&e)
                            ),
                        ),
                    }
                }
                Err(e @ (TargetError::NotRunning { .. } | TargetError::NoContainer { .. })) => {
                    self.unplace(id);
                    let why = match e {
                        TargetError::NotRunning { .. } => "is not running",
                        _ => "does not exist (any more)",
                    };
                    (None, format!("container {name} {why}; waiting for it"))
                }
                Err(e) => (
                    was.netns,
                    format!(
                        "{}: {e}",
                        if was.netns.is_some() {
                            "still acting where it was"
                        } else {
                            "waiting"
                        }
                    ),
                ),
            };
            if let Some(e) = self.rules.get_mut(&id) {
                if status != was.status {
                    said.push(match (was.netns, netns) {
                        (Some(_), Some(_)) => format!(
                            "rule {id}: container {name} restarted; in force again in {status} \
                             (counters start again from zero)"
                        ),
                        (_, Some(_)) => format!("rule {id}: in force in {status}"),
                        _ => format!("rule {id}: {status}"),
                    });
                }
                e.target = Some(Targeted { netns, status });
            }
        }
        self.drop_unused();
        said
    }

    /// Takes rule `id` out of the namespace it acts in (if any); it stays
    /// in the table.
    fn unplace(&mut self, id: u32) {
        let Some(e) = self.rules.remove(&id) else {
            return;
        };
        let _ = self.lift(&e);
        let mut e = e;
        if let Some(t) = &mut e.target {
            t.netns = None;
        }
        self.rules.insert(id, e);
    }

    /// Puts rule `id` (in the table, acting nowhere) into `f`'s namespace
    /// with the time it has left.
    fn replace_in(&mut self, id: u32, f: &Found, now: Instant) -> Result<Targeted, StateError> {
        let e = self.rules.get(&id).ok_or(StateError::NotFound(id))?;
        let mut rule = e.rule.clone();
        if let Some(t) = e.expires_at {
            rule.lasts = Some(t.saturating_duration_since(now));
        }
        let spec = e.spec.clone();
        self.check_netns(&rule, &spec, f)?;
        let t = self.write_in(&mut rule, f)?;
        Ok(t)
    }

    /// Ids go up and wrap, skipping live rules, so a just-deleted id is not
    /// handed out again at once.
    fn free_id(&self) -> Option<u32> {
        (0..MAX_SLOTS)
            .map(|i| (self.next_id + i) % MAX_SLOTS)
            .find(|id| !self.rules.contains_key(id) && !self.http.contains(*id))
    }

    /// Removes rule `id`, of either kind.
    pub fn delete(&mut self, id: u32) -> Result<(), StateError> {
        if self.http.remove(id).is_some() {
            return Ok(());
        }
        self.remove(id).map(drop)
    }

    pub fn remove(&mut self, id: u32) -> Result<Entry, StateError> {
        let e = self.rules.remove(&id).ok_or(StateError::NotFound(id))?;
        for k in e.rule.keys() {
            let key = (e.spec.container.clone(), k);
            if self.owners.get(&key) == Some(&id) {
                self.owners.remove(&key);
            }
        }
        let lifted = self.lift(&e);
        if e.target.is_some() {
            self.drop_unused();
        }
        lifted?;
        Ok(e)
    }

    /// Removes every rule of `origin` (or all with `None`); returns how many.
    pub fn remove_all(&mut self, origin: Option<Origin>) -> usize {
        let mut ids: Vec<u32> = self
            .rules
            .iter()
            .filter(|(_, e)| origin.is_none_or(|o| e.origin == o))
            .map(|(id, _)| *id)
            .collect();
        ids.extend(self.http.ids().filter(|id| {
            self.http
                .get(*id)
                .is_some_and(|e| origin.is_none_or(|o| e.origin == o))
        }));
        ids.iter().filter(|id| self.delete(**id).is_ok()).count()
    }

    /// Drops rules whose time is up (the kernel already ignores them) or
    /// whose owner process is gone; returns their ids and why.
    pub fn sweep(&mut self, now: Instant) -> Vec<(u32, &'static str)> {
        let done: Vec<(u32, &'static str)> = self
            .ids()
            .filter_map(|id| {
                let (spec, _, expires_at) = self.parts_of(id)?;
                if expires_at.is_some_and(|t| t <= now) {
                    Some((id, "expired"))
                } else if spec.owner_pid.is_some_and(|p| !process_alive(p)) {
                    Some((id, "removed: its owner process is gone"))
                } else {
                    None
                }
            })
            .collect();
        for (id, _) in &done {
            let _ = self.delete(*id);
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
            .ids()
            .filter_map(|id| {
                let (spec, origin, _) = self.parts_of(id)?;
                (origin == Origin::Config)
                    .then(|| spec.name.clone().map(|n| (n, id)))
                    .flatten()
            })
            .collect();
        let mut report = Reloaded::default();
        let mut going: Vec<u32> = Vec::new();
        let mut coming: Vec<(&str, &RuleSpec)> = Vec::new();
        for nr in &config.rules {
            match current.get(&nr.name) {
                Some(id) if self.parts_of(*id).map(|(s, _, _)| s) == Some(&nr.spec) => {
                    report.kept.push(nr.name.clone())
                }
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
        let mut planned_http = Vec::new();
        let mut http_ports = HashMap::new();
        for (name, spec) in &coming {
            let named = |e: StateError| StateError::InRule {
                name: name.to_string(),
                error: Box::new(e),
            };
            let id = (0..MAX_SLOTS)
                .map(|i| (self.next_id + i) % MAX_SLOTS)
                .find(|id| {
                    !self.rules.contains_key(id) && !self.http.contains(*id) && !ids.contains(id)
                })
                .ok_or(StateError::Full)?;
            if spec.fault == crate::http::rule::FAULT {
                let rule = self.validate_http(spec).map_err(named)?;
                let port = rule.options.port;
                let staying = self.http.ids().find(|i| {
                    !going.contains(i) && self.http.get(*i).is_some_and(|e| e.port() == port)
                });
                if let Some(other) = http_ports.insert(port, name.to_string()) {
                    return Err(StateError::Conflict(format!(
                        "port {port} is steered by two config rules (`{other}` and `{name}`)"
                    )));
                }
                if let Some(other) = staying {
                    return Err(named(StateError::Conflict(format!(
                        "port {port} is already steered by http rule {other}"
                    ))));
                }
                ids.push(id);
                planned_http.push((*name, id, rule, (*spec).clone()));
                continue;
            }
            let rule = self.validate(spec, id).map_err(named)?;
            self.check(&rule, spec, &going).map_err(named)?;
            let expires_at = expiry(&rule, now).map_err(named)?;
            for k in rule.keys() {
                if let Some(other) = keys.insert((spec.container.clone(), k), *name) {
                    return Err(StateError::Conflict(format!(
                        "port {} appears in two config rules (`{other}` and `{name}`)",
                        k.port()
                    )));
                }
            }
            if let (Some(d), None) = (rule.fault.delay(), &spec.container) {
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
                    .find(|(_, (_, r, s, _))| r.fault.delay().is_some() && s.container.is_none())
                    .map_or("?", |((n, _), _)| *n);
                StateError::InRule {
                    name: name.to_string(),
                    error: Box::new(StateError::Kernel(e)),
                }
            })?;
        }

        // Apply: out with the old, in with the new; on a refusal, back.
        let mut removed = Removed::default();
        for id in &going {
            if let Some(e) = self.http.remove(*id) {
                removed.http.push((*id, e.into_parts()));
                continue;
            }
            match self.remove(*id) {
                Ok(e) => removed.rules.push(e),
                Err(e) => {
                    self.restore(Vec::new(), removed);
                    return Err(e);
                }
            }
        }
        let mut inserted = Vec::new();
        for (name, rule, spec, expires_at) in planned {
            let id = rule.id;
            let place = waiting_or_home(&spec);
            if let Err(e) = self.insert(rule, spec, Origin::Config, expires_at, place) {
                self.restore(inserted, removed);
                return Err(StateError::InRule {
                    name: name.to_string(),
                    error: Box::new(e),
                });
            }
            inserted.push(id);
        }
        // The responders last: starting one probes its server and may be
        // refused (nothing listens, TLS), and then everything goes back.
        for (name, id, rule, spec) in planned_http {
            if let Err(e) = self.http.start(id, rule, spec, Origin::Config, now) {
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

    /// A rule's spec, origin and expiry, of either kind.
    fn parts_of(&self, id: u32) -> Option<(&RuleSpec, Origin, Option<Instant>)> {
        match self.rules.get(&id) {
            Some(e) => Some((&e.spec, e.origin, e.expires_at)),
            None => self.http.get(id).map(|e| (&e.spec, e.origin, e.expires_at)),
        }
    }

    /// Undoes a reload half-way: lifts `inserted`, puts `removed` back in
    /// their slots with the time they had left.
    fn restore(&mut self, inserted: Vec<u32>, removed: Removed) {
        for id in inserted {
            let _ = self.delete(id);
        }
        let now = Instant::now();
        for (id, (spec, origin, expires_at)) in removed.http {
            if expires_at.is_some_and(|t| t <= now) {
                continue;
            }
            let mut spec_left = spec.clone();
            if let Some(t) = expires_at {
                let left = t
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                spec_left.lasts = Some(format!("{}ms", left.as_millis().max(1)));
            }
            let restarted = self
                .validate_http(&spec_left)
                .and_then(|rule| self.http.start(id, rule, spec, origin, now));
            if let Err(err) = restarted {
                super::log(&format!(
                    "could not put an http rule back while undoing a reload: {err}"
                ));
            }
        }
        let removed = removed.rules;
        for mut e in removed {
            if e.expires_at.is_some_and(|t| t <= now) {
                continue;
            }
            e.rule.lasts = e.expires_at.map(|t| t.saturating_duration_since(now));
            let expires_at = e.expires_at;
            let place = waiting_or_home(&e.spec);
            if let Err(err) = self.insert(e.rule, e.spec, e.origin, expires_at, place) {
                super::log(&format!(
                    "could not put a rule back while undoing a reload: {err}"
                ));
            }
        }
    }

    pub fn info(&self, id: u32) -> Option<RuleInfo> {
        let Some(e) = self.rules.get(&id) else {
            return self.http.info(id);
        };
        Some(RuleInfo {
            id,
            name: e.spec.name.clone(),
            fault: e.rule.fault.name().to_string(),
            description: e.rule.describe(),
            origin: e.origin,
            expires_in_seconds: e
                .expires_at
                .map(|t| t.saturating_duration_since(Instant::now()).as_secs_f64()),
            target: e.target.as_ref().map(|t| t.status.clone()),
            spec: e.spec.clone(),
        })
    }

    pub fn list(&self) -> Vec<RuleInfo> {
        self.ids().filter_map(|id| self.info(id)).collect()
    }

    /// Every rule's id, of both kinds, in order.
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        let mut ids: Vec<u32> = self.rules.keys().copied().chain(self.http.ids()).collect();
        ids.sort_unstable();
        ids.into_iter()
    }

    /// Rule `id`'s counters, from the injector that holds it (zero while
    /// a container rule waits).
    pub fn counters(&self, id: u32) -> Result<RuleCounters, crate::Error> {
        match self.rules.get(&id).and_then(|e| e.target.as_ref()) {
            None => self.inj.counters(id),
            Some(Targeted {
                netns: Some(ns), ..
            }) => match self.netns.get(ns) {
                Some(n) => n.injector().counters(id),
                None => Ok(RuleCounters::default()),
            },
            Some(_) => Ok(RuleCounters::default()),
        }
    }

    /// The injectors in containers' namespaces, for status lines.
    pub fn netns_count(&self) -> usize {
        self.netns.len()
    }

    pub fn stats(&self) -> Vec<RuleStats> {
        self.ids()
            .filter_map(|id| {
                let Some(e) = self.rules.get(&id) else {
                    return self.http.stats(id);
                };
                let c = self.counters(id).unwrap_or_default();
                Some(RuleStats {
                    id,
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
                    requests: None,
                })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.rules.len() + self.http.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a reload took out, to put back if it fails.
#[derive(Default)]
struct Removed {
    rules: Vec<Entry>,
    /// Http rules: id, spec, origin, expiry (restarted from the spec).
    http: Vec<(u32, super::http_rules::Stopped)>,
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

/// Where `insert` puts a rule of the config: a container rule waits for
/// the next check (finding a container asks its engine, which must not
/// happen under the rule lock).
fn waiting_or_home(spec: &RuleSpec) -> Place<'static> {
    match &spec.container {
        Some(c) => Place::Waiting(format!("looking for container {c}")),
        None => Place::Home,
    }
}

/// " in container srv" for a container scope, "" for the daemon's own.
fn in_container(scope: &Scope) -> String {
    scope
        .as_ref()
        .map_or_else(String::new, |c| format!(" in container {c}"))
}

/// The moment between a rule's kernel write and its record: a panic here
/// (only ever provoked by tests, [`PANIC_AFTER_WRITE`]) takes the rule
/// back out of `inj` while unwinding.
fn armed(inj: &mut Injector, rule: &Rule) {
    let undo = Undo { inj, rule };
    #[cfg(debug_assertions)]
    if std::env::var_os(PANIC_AFTER_WRITE).is_some() {
        panic!("{PANIC_AFTER_WRITE} is set: panicking between the kernel write and the record");
    }
    std::mem::forget(undo);
}

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
