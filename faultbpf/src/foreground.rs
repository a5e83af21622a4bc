//! Standalone mode: apply one fault, show live counters, heal on Ctrl-C,
//! SIGTERM or `--for`, and print the final counters.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::Context;
use faultbpf::{
    Fault, Hooks, Injector, Rule, iface,
    report::{self, Report, RuleReport},
};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{FaultArgs, Fragments};

/// How long the rules keep acting without a heartbeat from us. A frozen
/// (SIGSTOPped) faultbpf heals the host after this.
const LEASE: Duration = Duration::from_secs(3);
/// Heartbeat and status refresh period.
const TICK: Duration = Duration::from_secs(1);

pub enum Failure {
    /// Bad input: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Runtime(e.into())
    }
}

/// The rule the flags describe, with counter slot 0.
pub fn rule_from(fault: Fault, args: &FaultArgs) -> Rule {
    Rule {
        proto: args.proto,
        peers: args.peers.clone(),
        pct: args.pct,
        per: args.per,
        direction: args.direction,
        fragments: args.fragments == Fragments::Drop,
        lasts: args.lasts,
        seed: random_seed(),
        ..Rule::new(0, fault, args.port_ranges())
    }
}

pub fn run(fault: Fault, args: FaultArgs) -> Result<(), Failure> {
    let hooks = args.hooks(&fault).map_err(Failure::Usage)?;
    let ifaces = interfaces(&args.ifaces)?;
    let rule = rule_from(fault, &args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(serve(rule, ifaces, hooks, &args))
}

/// The interfaces to attach to: the ones named (each must exist), or every
/// interface that is up.
pub fn interfaces(named: &[String]) -> Result<Vec<String>, Failure> {
    let here = iface::all()?;
    if named.is_empty() {
        let up = iface::up()?;
        if up.is_empty() {
            return Err(Failure::Usage(
                "no interface is up in this network namespace; name one with --iface".into(),
            ));
        }
        return Ok(up);
    }
    let mut out: Vec<String> = Vec::new();
    for n in named {
        if !here.contains(n) {
            return Err(Failure::Usage(format!(
                "unknown interface `{n}` (this network namespace has: {})",
                here.join(", ")
            )));
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    Ok(out)
}

async fn serve(
    rule: Rule,
    ifaces: Vec<String>,
    hooks: Hooks,
    args: &FaultArgs,
) -> Result<(), Failure> {
    let mut sigint = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;

    let _claim = faultbpf::claims::claim(&rule.keys(), &rule.describe(), args.force)?;
    let mut inj = Injector::attach_hooks(&ifaces, hooks)?;
    inj.renew_lease(LEASE)?;
    inj.insert(&rule)?;
    let started = Instant::now();
    eprintln!(
        "faultbpf: active: {} on {} via {}; {}",
        rule.describe(),
        ifaces.join(", "),
        inj.attach_name(),
        match rule.lasts {
            Some(d) => format!("heals in {}", humantime::format_duration(d)),
            None => "Ctrl-C to heal".into(),
        }
    );

    let tty = std::io::stderr().is_terminal();
    let deadline = rule.lasts.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(TICK);
    let outcome: Result<(), Failure> = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = sleep_until(deadline) => break Ok(()),
            _ = tick.tick() => {
                if let Some(gone) = inj.vanished_interface() {
                    break Err(Failure::Runtime(anyhow::anyhow!(
                        "interface `{gone}` vanished; the fault is lifted on the others too"
                    )));
                }
                if let Err(e) = inj.renew_lease(LEASE) {
                    break Err(e.into());
                }
                if tty {
                    let c = inj.counters(rule.id)?;
                    eprint!("\r{}\x1b[K", report::status_line(started.elapsed().as_secs(), &rule, &c));
                    let _ = std::io::stderr().flush();
                }
            }
        }
    };
    if tty {
        eprintln!();
    }

    // Read the counters before detaching: they die with the maps.
    let counters = inj.counters(rule.id)?;
    let mode = inj.attach_name();
    drop(inj);
    if args.json {
        let r = Report {
            attach: &mode,
            interfaces: &ifaces,
            rules: vec![RuleReport::new(&rule, &counters)],
        };
        println!(
            "{}",
            serde_json::to_string(&r).context("could not encode the report")?
        );
    } else {
        println!("{}", report::summary_line(&rule, &counters));
    }
    outcome
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A per-run seed for the per-flow hash, so each run picks other flows.
fn random_seed() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        // No entropy syscall: the clock is random enough to pick flows.
        faultbpf::rules::monotonic_ns() as u32
    }
}
