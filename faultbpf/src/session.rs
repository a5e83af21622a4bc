//! The one lifecycle of a rule, for every caller: the CLI's fault commands,
//! `faultbpf run`, the library guard and scenarios (the daemon shares its
//! validation, `RuleSpec::validate`, and writes the kernel through the same
//! `Injector`).
//!
//! A rule goes: written form ([`RuleSpec`]) → validated completely
//! (bounds, merged ranges, the fault's own fields, guard rails) → only then
//! written to the kernel → kept alive (lease heartbeat, or the daemon's
//! owner check) → counters → removed. Where it is put in force is the
//! [`Placement`]: programs loaded by this process ([`Placement::here`]), or
//! a daemon's table ([`Placement::daemon`]); nothing else differs.
//!
//! In this process, a rule lives at most as long as the process: the links
//! die with it, the kernel enforces the rule's expiry, and the programs stop
//! acting `LEASE` after the last heartbeat (a frozen caller heals the host).
//! In a daemon, a rule `owned` by this process names our pid, so the daemon
//! removes it within a second of our death, however we die.

use std::time::Duration;

use faultbpf_common::{MAX_SLOTS, RuleCounters};

use crate::{
    Hooks, Injector, Rule,
    api::{Client, ClientError},
    claims::{self, ClaimError, ClaimGuard},
    error::chain,
    rules::random_seed,
    spec::{Policy, RuleSpec, SpecError},
};

/// How long rules in this process keep acting without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often callers should call [`Placement::heartbeat`].
pub const TICK: Duration = Duration::from_secs(1);

/// Why a rule could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The rule is invalid or a guard rail refused it (exit 2); nothing was
    /// written anywhere.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// The kernel refused; nothing of the rule is left in force.
    #[error(transparent)]
    Kernel(#[from] crate::Error),
    /// The daemon refused or could not be reached.
    #[error(transparent)]
    Daemon(#[from] ClientError),
    /// Another standalone faultbpf process holds one of the rule's ports
    /// (`force` lets both act).
    #[error(transparent)]
    Claimed(#[from] ClaimError),
    /// An `http` rule's responder could not start (no server on its port,
    /// a TLS server, programs refused).
    #[error(transparent)]
    Http(crate::http::StartError),
}

impl StartError {
    /// Whether the caller's input is to blame (usage, exit 2) rather than
    /// the system (exit 1): invalid here, or a 400/403/409 from the daemon.
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Invalid(_) => true,
            Self::Daemon(ClientError::Api { status, .. }) => {
                matches!(status, 400 | 403 | 409 | 422)
            }
            _ => false,
        }
    }
}

/// A rule in force.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The validated rule; `id` is the daemon's id for daemon rules.
    pub rule: Rule,
    /// "blackhole tcp+udp port 5672 (100%)" (the daemon's words for its
    /// rules).
    pub description: String,
    /// Seconds until the daemon's expiry, for daemon rules.
    pub expires_in_seconds: Option<f64>,
}

impl Handle {
    pub fn id(&self) -> u32 {
        self.rule.id
    }
}

/// Where rules are put in force; see the module docs.
pub enum Placement {
    /// Programs loaded by this process.
    Here(Box<Here>),
    /// Rules in the daemon behind this client.
    Daemon(Client),
}

/// The programs of this process and the counter slots its rules use.
pub struct Here {
    inj: Injector,
    /// Each rule's claim on its ports (`claims.rs`), by slot: another
    /// standalone process refuses them while we hold them.
    claims: Vec<(u32, ClaimGuard)>,
    /// Slots given back by removed rules.
    free: Vec<u32>,
    /// The next never-used slot.
    next: u32,
    /// `http` rules' responders, by slot; dropped before their runtime.
    http: std::collections::BTreeMap<u32, crate::http::Running>,
    responders: crate::http::Responders,
}

impl Here {
    /// A free counter slot: one given back, else the next never used.
    fn take_slot(&mut self) -> Result<u32, SpecError> {
        match self.free.pop() {
            Some(s) => Ok(s),
            None if self.next < MAX_SLOTS => {
                self.next += 1;
                Ok(self.next - 1)
            }
            None => Err(SpecError::new(
                "port",
                format!("all {MAX_SLOTS} counter slots are in use"),
            )),
        }
    }
}

impl Placement {
    /// Loads and attaches the programs on `ifaces` (nothing acts until a
    /// rule starts) and arms the lease.
    pub fn here(ifaces: &[String], hooks: Hooks) -> Result<Self, crate::Error> {
        let mut inj = Injector::attach_hooks(ifaces, hooks)?;
        inj.renew_lease(LEASE)?;
        Ok(Self::Here(Box::new(Here {
            inj,
            claims: Vec::new(),
            free: Vec::new(),
            next: 0,
            http: Default::default(),
            responders: Default::default(),
        })))
    }

    /// Rules go to the daemon behind `client`.
    pub fn daemon(client: Client) -> Self {
        Self::Daemon(client)
    }

    /// How the rules are applied: `tcx`, `netlink`, `xdp-native+tcx`, or
    /// `daemon`.
    pub fn via(&self) -> String {
        match self {
            Self::Here(h) => h.inj.attach_name(),
            Self::Daemon(_) => "daemon".into(),
        }
    }

    /// The interfaces the programs are attached to (empty for a daemon:
    /// it owns its own).
    pub fn interfaces(&self) -> Vec<String> {
        match self {
            Self::Here(h) => h.inj.interfaces().to_vec(),
            Self::Daemon(_) => Vec::new(),
        }
    }

    /// "tcx on veth0, lo" or "the daemon at /run/faultbpf.sock".
    pub fn where_text(&self) -> String {
        match self {
            Self::Here(h) => format!("{} via {}", h.inj.interfaces().join(", "), self.via()),
            Self::Daemon(c) => format!("the daemon at {}", c.path().display()),
        }
    }

    /// The injector, for callers that need more than rules (in this
    /// process only).
    pub fn injector(&self) -> Option<&Injector> {
        match self {
            Self::Here(h) => Some(&h.inj),
            Self::Daemon(_) => None,
        }
    }

    /// Validates `spec` completely, then puts it in force. `owned`: a daemon
    /// rule names this process as its owner and goes when it dies (rules in
    /// this process always do).
    pub fn start(&mut self, spec: &RuleSpec, owned: bool) -> Result<Handle, StartError> {
        // Validated here in every placement, so the errors (and the guard
        // rails) are the same with or without a daemon; the daemon checks
        // again with its own ports guarded.
        // `http` is a responder, not a map entry: its port's keys stand in
        // for it where a rule is needed (ids, the daemon's answer).
        let http = (spec.fault == crate::http::rule::FAULT)
            .then(|| spec.http_rule(&Policy::default()))
            .transpose()?;
        let mut rule = match &http {
            Some(h) => h.stand_in(0),
            None => spec.validate(0, &Policy::default())?,
        };
        match self {
            Self::Here(h) if http.is_some() => {
                let opts = http.expect("matched").options;
                let slot = h.take_slot()?;
                match h.responders.start(opts) {
                    Ok(running) => {
                        let description = running.description.clone();
                        h.http.insert(slot, running);
                        rule.id = slot;
                        Ok(Handle {
                            rule,
                            description,
                            expires_in_seconds: None,
                        })
                    }
                    Err(e) => {
                        h.free.push(slot);
                        Err(StartError::Http(e))
                    }
                }
            }
            Self::Here(h) => {
                let slot = h.take_slot()?;
                rule.id = slot;
                rule.seed = random_seed();
                // Before the claim, which shows the description to others.
                h.inj.settle(&mut rule);
                let claim = match claims::claim(&rule.keys(), &rule.describe(), spec.force) {
                    Ok(c) => c,
                    Err(e) => {
                        h.free.push(slot);
                        return Err(e.into());
                    }
                };
                if let Err(e) = h.inj.insert(&mut rule) {
                    let _ = h.inj.remove(&rule);
                    h.free.push(slot);
                    return Err(e.into());
                }
                h.claims.push((slot, claim));
                Ok(Handle {
                    description: rule.describe(),
                    rule,
                    expires_in_seconds: None,
                })
            }
            Self::Daemon(client) => {
                let mut spec = spec.clone();
                if owned {
                    spec.owner_pid = Some(std::process::id());
                }
                let info = client.add(&spec)?;
                rule.id = info.id;
                Ok(Handle {
                    rule,
                    description: info.description,
                    expires_in_seconds: info.expires_in_seconds,
                })
            }
        }
    }

    /// The rule's counters so far; `None` when the daemon no longer has it
    /// (expired or removed).
    pub fn counters(&self, h: &Handle) -> Result<Option<RuleCounters>, String> {
        match self {
            Self::Here(here) => match here.http.get(&h.id()) {
                Some(r) => Ok(Some(r.counters().as_rule_counters())),
                None => here.inj.counters(h.id()).map(Some).map_err(|e| chain(&e)),
            },
            Self::Daemon(client) => client
                .stats_of(h.id())
                .map(|s| s.map(|s| s.counters(&h.rule)))
                .map_err(|e| chain(&e)),
        }
    }

    /// Lifts a rule; returns its final counters (if they could be read) and
    /// what went wrong (if anything did).
    pub fn stop(&mut self, h: Handle) -> (Option<RuleCounters>, Option<String>) {
        // Counters first: a reused slot is zeroed on insert, a daemon rule
        // is gone after the delete.
        let c = self.counters(&h);
        let removed = match self {
            Self::Here(here) if here.http.contains_key(&h.id()) => {
                // Dropped: the programs detach, new connections go direct.
                here.http.remove(&h.id());
                here.free.push(h.id());
                Ok(())
            }
            Self::Here(here) => {
                let r = here.inj.remove(&h.rule).map_err(|e| chain(&e));
                here.claims.retain(|(slot, _)| *slot != h.id());
                here.free.push(h.id());
                r
            }
            Self::Daemon(client) => match client.remove(h.id()) {
                Ok(_) | Err(ClientError::Api { status: 404, .. }) => Ok(()),
                Err(e) => Err(chain(&e)),
            },
        };
        let err = match (&c, removed) {
            (Err(e), _) => Some(format!("could not read counters: {e}")),
            (Ok(None), _) => Some(format!(
                "the daemon no longer has rule {} (expired or removed)",
                h.id()
            )),
            (_, Err(e)) => Some(format!("could not remove rule {}: {e}", h.id())),
            _ => None,
        };
        (c.ok().flatten(), err)
    }

    /// Keeps rules in this process alive (the lease); an error means the
    /// faults can no longer be held and the caller should stop.
    pub fn heartbeat(&mut self) -> Result<(), String> {
        match self {
            Self::Here(h) => {
                if let Some(gone) = h.inj.vanished_interface() {
                    return Err(format!(
                        "interface `{gone}` vanished; every fault is lifted on the others too"
                    ));
                }
                h.inj.renew_lease(LEASE).map_err(|e| chain(&e))
            }
            Self::Daemon(_) => Ok(()),
        }
    }
}
