//! Running a plan: each activity goes into force at its start and is
//! lifted at its end, the timeline is shown on stderr as it happens, and
//! the report comes at the end.
//!
//! Two ways to apply the faults, as for the other commands:
//! - through the daemon when one listens (and the file names no
//!   `[target]`): each activity is a daemon rule owned by this process
//!   (`owner_pid`), deleted at its end after its counters are read, so a
//!   killed run leaves nothing there either;
//! - otherwise in this process: one `Injector` on the target's interfaces,
//!   each activity a rule in its own counter slot, renewed by the lease
//!   heartbeat; everything goes when the run ends, however it ends.
//!
//! Every activity also carries its duration to the kernel (the rule's
//! expiry), so a frozen faultbpf does not stretch a fault.

use std::{path::Path, time::Duration};

use anyhow::Context;
use faultbpf_common::{MAX_SLOTS, RuleCounters};
use serde::Deserialize;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::Instant,
};

use super::{
    file::{Scenario, secs},
    plan::{Activity, Plan},
    random::fresh_seed,
    report::{Outcome, ScenarioReport, Status, StepReport},
};
use crate::{AttachMode, Injector, Rule, client::Client, error::chain, iface, target::Target};

/// Standalone lease, as in the foreground mode: a frozen run heals the
/// host after this.
const LEASE: Duration = Duration::from_secs(3);
/// Heartbeat period.
const TICK: Duration = Duration::from_secs(1);
/// A daemon rule lasts this much longer than its activity, so its counters
/// can still be read at the end; we delete it ourselves then.
const DAEMON_MARGIN: Duration = Duration::from_secs(5);
/// Exit codes after Ctrl-C and SIGTERM: the shell's 128 + signal.
pub const EXIT_SIGINT: u8 = 130;
pub const EXIT_SIGTERM: u8 = 143;
const INTERRUPTED_INT: &str = "interrupted by SIGINT; every fault was lifted";
const INTERRUPTED_TERM: &str = "interrupted by SIGTERM; every fault was lifted";

/// `faultbpf scenario run FILE [--json]`; returns the exit code.
pub fn run(file: &Path, json: bool, client: &Client) -> anyhow::Result<u8> {
    let scenario = super::file::load(file)?;
    // The namespace first: the programs, the interface list and the
    // reaper all belong there.
    if let Some(t) = &scenario.target
        && let Some(n) = &t.netns
    {
        Target::Netns(n.clone()).enter()?;
    }
    // 63 bits: a seed the report prints must fit a TOML integer (i64).
    let plan = super::plan::build(&scenario, fresh_seed() >> 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let report = rt.block_on(execute(file, &scenario, &plan, client))?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).context("could not encode the report")?
        );
    } else {
        print!("{}", report.text());
    }
    let failed = report.failed();
    match report.outcome {
        Outcome::Interrupted => Ok(if report.detail.as_deref() == Some(INTERRUPTED_TERM) {
            EXIT_SIGTERM
        } else {
            EXIT_SIGINT
        }),
        Outcome::Aborted => anyhow::bail!(
            "the scenario stopped early: {}",
            report.detail.unwrap_or_default()
        ),
        Outcome::Completed if failed > 0 => anyhow::bail!(
            "{failed} of {} step(s) could not be applied; see the report",
            report.steps.len()
        ),
        Outcome::Completed => Ok(0),
    }
}

async fn execute(
    file: &Path,
    scenario: &Scenario,
    plan: &Plan,
    client: &Client,
) -> anyhow::Result<ScenarioReport> {
    // Watched before anything is applied, so a Ctrl-C at any time after
    // this point is a clean, reported end.
    let mut sigint = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;

    let mut backend = match &scenario.target {
        None if client.is_up() => Backend::Daemon { client },
        target => {
            let named = target
                .as_ref()
                .map(|t| t.interfaces.clone())
                .unwrap_or_default();
            let ifaces = if named.is_empty() {
                let up = iface::up()?;
                anyhow::ensure!(
                    !up.is_empty(),
                    "no interface is up in this network namespace; list some in [target] interfaces"
                );
                up
            } else {
                named
            };
            let mut inj = Injector::attach(&ifaces, AttachMode::Auto)?;
            inj.renew_lease(LEASE)?;
            Backend::Local {
                inj: Box::new(inj),
                free: Vec::new(),
                next: 0,
            }
        }
    };
    let netns = scenario.target.as_ref().and_then(|t| t.netns.clone());
    eprintln!(
        "faultbpf: scenario `{}`: {} step(s){}, {} in all; via {}",
        scenario.name,
        plan.steps(),
        match plan.seed {
            Some(s) if scenario.random.as_ref().is_some_and(|r| r.seed.is_none()) => format!(
                ", {} random pick(s) with seed {s} (drawn now: `seed = {s}` in [random] replays them)",
                plan.picks()
            ),
            Some(s) => format!(", {} random pick(s) with seed {s}", plan.picks()),
            None => String::new(),
        },
        secs(plan.length),
        backend.where_text(netns.as_deref()),
    );

    let mut reports: Vec<StepReport> = plan.activities.iter().map(StepReport::planned).collect();
    // Start and end events; at one instant, ends first (a port freed by
    // one step can be taken by the next), then in plan order.
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, a) in plan.activities.iter().enumerate() {
        events.push((a.start, true, i));
        if a.skipped.is_none() {
            events.push((a.end, false, i));
        }
    }
    events.sort_by_key(|&(t, is_start, i)| (t, is_start, i));

    let t0 = Instant::now();
    let elapsed = || t0.elapsed().as_secs_f64();
    let stamp = |t: f64| format!("[{t:>7.1}s]");
    let mut active: Vec<(usize, Handle)> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    let mut next = 0;
    let (outcome, detail) = loop {
        let Some(&(at, is_start, i)) = events.get(next) else {
            break (Outcome::Completed, None);
        };
        tokio::select! {
            _ = tokio::time::sleep_until(t0 + at) => {
                next += 1;
                let a = &plan.activities[i];
                let r = &mut reports[i];
                if is_start {
                    if let Some(why) = &a.skipped {
                        eprintln!("{} skip  {}: {why}", stamp(elapsed()), a.label);
                        continue;
                    }
                    match backend.start(a) {
                        Ok(h) => {
                            r.started_seconds = Some(elapsed());
                            r.status = Status::CutShort;
                            r.rule_id = h.daemon_id();
                            eprintln!(
                                "{} start {}: {}, for {}",
                                stamp(elapsed()),
                                a.label,
                                h.description(a),
                                secs(a.end - a.start)
                            );
                            active.push((i, h));
                        }
                        Err(e) => {
                            eprintln!("{} FAILED {}: {e}", stamp(elapsed()), a.label);
                            r.status = Status::Failed;
                            r.detail = Some(e);
                        }
                    }
                } else if let Some(pos) = active.iter().position(|(j, _)| *j == i) {
                    let (_, h) = active.remove(pos);
                    let (c, err) = backend.stop(h);
                    r.ended_seconds = Some(elapsed());
                    r.status = Status::Done;
                    finish(r, c, err);
                    eprintln!("{} end   {}: {}", stamp(elapsed()), a.label, counts(a, r));
                }
            }
            _ = sigint.recv() => break (Outcome::Interrupted, Some(INTERRUPTED_INT.to_string())),
            _ = sigterm.recv() => break (Outcome::Interrupted, Some(INTERRUPTED_TERM.to_string())),
            _ = tick.tick() => {
                if let Err(e) = backend.heartbeat() {
                    break (Outcome::Aborted, Some(e));
                }
            }
        }
    };

    if outcome != Outcome::Completed {
        eprintln!(
            "{} {}: lifting {} active fault(s)",
            stamp(elapsed()),
            match outcome {
                Outcome::Interrupted => "interrupted",
                _ => "stopping",
            },
            active.len()
        );
    }
    for (i, h) in active.drain(..) {
        let (c, err) = backend.stop(h);
        let r = &mut reports[i];
        r.ended_seconds = Some(elapsed());
        finish(r, c, err);
        eprintln!(
            "{} end   {} (cut short): {}",
            stamp(elapsed()),
            plan.activities[i].label,
            counts(&plan.activities[i], r)
        );
    }
    let (via, interfaces) = (backend.via(), backend.interfaces());
    // Detach before the report is printed: the report says it is over.
    drop(backend);
    Ok(ScenarioReport {
        scenario: scenario.name.clone(),
        file: file.display().to_string(),
        via,
        interfaces,
        netns,
        seed: plan.seed,
        outcome,
        detail,
        elapsed_seconds: elapsed(),
        steps: reports,
    })
}

/// Records what `stop` read; a failure to read keeps the status and notes why.
fn finish(r: &mut StepReport, c: Option<RuleCounters>, err: Option<String>) {
    if let Some(c) = c {
        r.set_counters(&c);
    }
    if let Some(e) = err {
        r.detail = Some(e);
    }
}

/// "matched 38 packets, dropped 38".
fn counts(a: &Activity, r: &StepReport) -> String {
    let mut s = format!(
        "matched {} packets, {} {}",
        r.matched_packets,
        a.rule.fault.verb(),
        r.acted_packets
    );
    if let Some(d) = &r.detail {
        s += &format!(" ({d})");
    }
    s
}

/// A fault in force.
enum Handle {
    /// In-process: the rule as inserted (its id is its counter slot).
    Local(Rule),
    /// A daemon rule.
    Daemon { id: u32, description: String },
}

impl Handle {
    fn daemon_id(&self) -> Option<u32> {
        match self {
            Self::Local(_) => None,
            Self::Daemon { id, .. } => Some(*id),
        }
    }

    fn description(&self, a: &Activity) -> String {
        match self {
            Self::Local(_) => a.rule.describe(),
            Self::Daemon { id, description } => format!("rule {id} {description}"),
        }
    }
}

enum Backend<'a> {
    Local {
        inj: Box<Injector>,
        /// Counter slots given back by finished activities.
        free: Vec<u32>,
        /// The next never-used slot.
        next: u32,
    },
    Daemon {
        client: &'a Client,
    },
}

#[derive(Deserialize)]
struct Added {
    id: u32,
    description: String,
}

#[derive(Deserialize)]
struct Stats {
    rules: Vec<StatsRule>,
}

#[derive(Deserialize)]
struct StatsRule {
    id: u32,
    matched_packets: u64,
    matched_bytes: u64,
    acted_packets: u64,
    acted_bytes: u64,
}

impl Backend<'_> {
    fn via(&self) -> String {
        match self {
            Self::Local { inj, .. } => inj.mode().name().into(),
            Self::Daemon { .. } => "daemon".into(),
        }
    }

    fn interfaces(&self) -> Vec<String> {
        match self {
            Self::Local { inj, .. } => inj.interfaces().to_vec(),
            Self::Daemon { .. } => Vec::new(),
        }
    }

    fn where_text(&self, netns: Option<&str>) -> String {
        match self {
            Self::Local { inj, .. } => format!(
                "{} on {}{}",
                inj.mode().name(),
                inj.interfaces().join(", "),
                netns.map(|n| format!(" in netns {n}")).unwrap_or_default()
            ),
            Self::Daemon { client } => format!("the daemon at {}", client.path().display()),
        }
    }

    /// Puts `a` in force.
    fn start(&mut self, a: &Activity) -> Result<Handle, String> {
        match self {
            Self::Local { inj, free, next } => {
                let slot = match free.pop() {
                    Some(s) => s,
                    None if *next < MAX_SLOTS => {
                        *next += 1;
                        *next - 1
                    }
                    None => return Err(format!("all {MAX_SLOTS} counter slots are in use")),
                };
                let mut rule = a.rule.clone();
                rule.id = slot;
                rule.lasts = Some(a.end - a.start);
                rule.seed = fresh_seed() as u32;
                if let Err(e) = inj.insert(&rule) {
                    let _ = inj.remove(&rule);
                    free.push(slot);
                    return Err(chain(&e));
                }
                Ok(Handle::Local(rule))
            }
            Self::Daemon { client } => {
                let mut spec = a.spec.clone();
                spec.name = Some(a.label.chars().take(64).collect());
                spec.owner_pid = Some(std::process::id());
                spec.lasts =
                    Some(humantime::format_duration(a.end - a.start + DAEMON_MARGIN).to_string());
                let body = serde_json::to_value(&spec).map_err(|e| e.to_string())?;
                let added: Added = client
                    .call("POST", "/v1/rules", Some(&body))
                    .map_err(|e| chain(&e))?;
                Ok(Handle::Daemon {
                    id: added.id,
                    description: added.description,
                })
            }
        }
    }

    /// Lifts a fault; returns its counters (if they could be read) and
    /// what went wrong (if anything did).
    fn stop(&mut self, h: Handle) -> (Option<RuleCounters>, Option<String>) {
        match (self, h) {
            (Self::Local { inj, free, .. }, Handle::Local(rule)) => {
                // Counters first: a reused slot is zeroed on insert.
                let c = inj.counters(rule.id);
                let removed = inj.remove(&rule);
                free.push(rule.id);
                let err = match (&c, removed) {
                    (Err(e), _) => Some(format!("could not read counters: {}", chain(e))),
                    (_, Err(e)) => Some(format!("could not remove the rule: {}", chain(&e))),
                    _ => None,
                };
                (c.ok(), err)
            }
            (Self::Daemon { client }, Handle::Daemon { id, .. }) => {
                let c = client
                    .call::<Stats>("GET", "/v1/stats", None)
                    .map_err(|e| chain(&e))
                    .and_then(|s| {
                        s.rules
                            .into_iter()
                            .find(|r| r.id == id)
                            .ok_or_else(|| format!("the daemon no longer has rule {id}"))
                    })
                    .map(|r| RuleCounters {
                        matched_packets: r.matched_packets,
                        matched_bytes: r.matched_bytes,
                        acted_packets: r.acted_packets,
                        acted_bytes: r.acted_bytes,
                        ..Default::default()
                    });
                let deleted = client.request("DELETE", &format!("/v1/rules/{id}"), None);
                let err = match (&c, deleted) {
                    (Err(e), _) => Some(e.clone()),
                    (_, Err(e)) => Some(format!("could not delete rule {id}: {}", chain(&e))),
                    (_, Ok((status, _))) if !(200..300).contains(&status) && status != 404 => {
                        Some(format!("deleting rule {id}: the daemon said {status}"))
                    }
                    _ => None,
                };
                (c.ok(), err)
            }
            (_, _) => (
                None,
                Some("internal error: handle of another backend".into()),
            ),
        }
    }

    /// The lease heartbeat (in-process); an error ends the run.
    fn heartbeat(&mut self) -> Result<(), String> {
        match self {
            Self::Local { inj, .. } => {
                if let Some(gone) = inj.vanished_interface() {
                    return Err(format!(
                        "interface `{gone}` vanished; every fault is lifted on the others too"
                    ));
                }
                inj.renew_lease(LEASE).map_err(|e| chain(&e))
            }
            Self::Daemon { .. } => Ok(()),
        }
    }
}
