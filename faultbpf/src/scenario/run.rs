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
use faultbpf_common::RuleCounters;
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
use crate::{
    AttachMode, Hooks,
    client::Client,
    error::chain,
    iface,
    session::{Handle, Placement, TICK},
    target::Target,
};
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
    if let Some(t) = &scenario.target {
        if let Some(n) = &t.netns {
            Target::Netns(n.clone()).enter()?;
        } else if let Some((name, engine)) = &t.container {
            Target::Container {
                name: name.clone(),
                engine: *engine,
            }
            .enter()?;
        }
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

    let mut placement = match &scenario.target {
        None if client.is_up() => Placement::daemon(client.clone()),
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
            Placement::here(&ifaces, Hooks::tc(AttachMode::Auto))?
        }
    };
    let netns = scenario.target.as_ref().and_then(|t| {
        t.netns.clone().or_else(|| {
            t.container
                .as_ref()
                .map(|(c, _)| format!("of container {c}"))
        })
    });
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
        match &netns {
            Some(n) => format!("{} in netns {n}", placement.where_text()),
            None => placement.where_text(),
        },
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
                    match start(&mut placement, a) {
                        Ok(h) => {
                            r.started_seconds = Some(elapsed());
                            r.status = Status::CutShort;
                            let daemon = matches!(placement, Placement::Daemon(_));
                            r.rule_id = daemon.then_some(h.id());
                            eprintln!(
                                "{} start {}: {}, for {}",
                                stamp(elapsed()),
                                a.label,
                                if daemon {
                                    format!("rule {} {}", h.id(), h.description)
                                } else {
                                    h.description.clone()
                                },
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
                    let (c, err) = placement.stop(h);
                    r.ended_seconds = Some(elapsed());
                    r.status = Status::Done;
                    finish(r, c, err);
                    eprintln!("{} end   {}: {}", stamp(elapsed()), a.label, counts(a, r));
                }
            }
            _ = sigint.recv() => break (Outcome::Interrupted, Some(INTERRUPTED_INT.to_string())),
            _ = sigterm.recv() => break (Outcome::Interrupted, Some(INTERRUPTED_TERM.to_string())),
            _ = tick.tick() => {
                if let Err(e) = placement.heartbeat() {
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
        let (c, err) = placement.stop(h);
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
    let (via, interfaces) = (placement.via(), placement.interfaces());
    // Detach before the report is printed: the report says it is over.
    drop(placement);
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
    let mut s = if a.is_http() {
        format!(
            "saw {} requests, faulted {}",
            r.matched_packets, r.acted_packets
        )
    } else {
        format!(
            "matched {} packets, {} {}",
            r.matched_packets,
            a.verb(),
            r.acted_packets
        )
    };
    if let Some(d) = &r.detail {
        s += &format!(" ({d})");
    }
    s
}

/// Puts `a` in force; in a daemon it carries the step's label as its name
/// and lasts `DAEMON_MARGIN` longer, so its counters can still be read at
/// its end (we delete it ourselves then).
fn start(placement: &mut Placement, a: &Activity) -> Result<Handle, String> {
    let mut spec = a.spec.clone();
    let mut lasts = a.end - a.start;
    if let Placement::Daemon(_) = placement {
        spec.name = Some(a.label.chars().take(64).collect());
        lasts += DAEMON_MARGIN;
    }
    spec.lasts = Some(humantime::format_duration(lasts).to_string());
    placement.start(&spec, true).map_err(|e| chain(&e))
}
