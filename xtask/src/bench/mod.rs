//! `cargo xtask bench`: measures what faultbpf costs next to no injector and
//! next to nftables, on this machine, in one run, and writes the evidence to
//! `target/bench/` (report.md, summary.md, one CSV per scenario, and
//! throughput-vs-rules.png).
//!
//! Method, shared by every scenario: two network namespaces joined by a veth
//! pair (client and server), the injector on the server side, conditions
//! interleaved round by round, and each condition reported as the median of
//! its per-round ratio to the reference of the same round, with min and max.
//! The machines this runs on are noisy (other jobs share the two CPUs), so
//! nothing here asserts an absolute time; the report only compares.
//!
//! Safety: everything happens inside namespaces created here, with addresses
//! from 10.200.0.0/16 only; processes are killed by PID and namespaces deleted
//! by guards (also on errors and Ctrl-C); every loop is bounded in count and
//! time.

mod accuracy;
mod apply_time;
mod cost;
mod daemon;
pub mod delay_accuracy;
mod drop_capacity;
mod floor;
mod http;
mod http_cost;
mod injector;
mod new_faults;
mod plot;
mod prog_stats;
mod report;
mod stats;
mod throughput;
mod topo;
mod traffic;

use std::{
    env, fs,
    path::PathBuf,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, cmd, setup};

/// The scenarios, in the order they run and appear in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Unmatched-traffic overhead vs rule count (iperf3, latency, conn/s, UDP pps)
    Overhead,
    /// Drop capacity with every packet matching (trafgen flood)
    Drop,
    /// Time to apply and to heal a fault
    Apply,
    /// --pct accuracy: chi-square and runs tests
    Accuracy,
    /// Program size, map memory, process RSS
    Cost,
    /// Issue 15's faults: DNS answers/s, cost per matched packet, throttle vs tbf
    Faults,
    /// Issue 16's `faultbpf http`: latency it adds to unfaulted requests, steered or not
    Http,
}

impl Scenario {
    /// The name `--only` takes, also the summary's first column.
    fn name(self) -> &'static str {
        match self {
            Self::Overhead => "overhead",
            Self::Drop => "drop",
            Self::Apply => "apply",
            Self::Accuracy => "accuracy",
            Self::Cost => "cost",
            Self::Faults => "faults",
            Self::Http => "http",
        }
    }

    const ALL: [Self; 7] = [
        Self::Overhead,
        Self::Drop,
        Self::Apply,
        Self::Accuracy,
        Self::Cost,
        Self::Faults,
        Self::Http,
    ];
}

/// The flags of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Fewer rounds, fewer rule counts, shorter runs (a few minutes; for development)
    #[arg(long)]
    pub quick: bool,
    /// Rounds of interleaved conditions (default 7, 3 with --quick; http: 30, 10)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: Option<u32>,
    /// Run only these scenarios (comma-separated; default: all)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub only: Vec<Scenario>,
}

/// How much of everything a run does, from the options.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    /// Rule counts of the overhead scenario (0 = nftables' empty chain only).
    pub rule_counts: Vec<usize>,
    /// `iperf3 -t`, in whole seconds (iperf3 takes no fractions).
    pub iperf_secs: u32,
    /// Length of each latency, conn/s and UDP pps measurement.
    pub probe_for: Duration,
    /// The window over which a flood's rate is counted.
    pub flood_window: Duration,
    pub accuracy_trials: usize,
    pub accuracy_packets: usize,
    /// A scenario's round loop stops early (with a note) once past this.
    pub scenario_budget: Duration,
    /// The window the DNS query loop counts answers over.
    pub dns_window: Duration,
    /// `iperf3 -t` and `-O` through a 10 Mbit/s limit.
    pub throttle_secs: u32,
    pub throttle_omit: u32,
    /// Rounds of the http scenario, whose windows take under a second: more
    /// than the others, for a steadier ratio (`--rounds` sets both).
    pub http_rounds: usize,
    /// Counted GETs per window on one keep-alive connection (http).
    pub http_requests: usize,
    /// New connections per window, one GET each (http). Kept so that a run
    /// opens fewer than ~14 000 steered connections a minute: the
    /// responder's own connection to the server takes its port with
    /// bind(0), which draws from the odd half of the ephemeral range, and
    /// holds it in TIME_WAIT for 60 s; past that each new steered
    /// connection spends ~1.4 ms finding a port (seen from round 28 with
    /// 500 a window): a limit of the responder, reported apart, not the
    /// per-connection cost this row measures.
    pub http_connections: usize,
}

impl Plan {
    pub fn new(opts: &Options) -> Self {
        let quick = opts.quick;
        let rounds = opts
            .rounds
            .map(|r| r as usize)
            .unwrap_or(if quick { 3 } else { 7 });
        Self {
            quick,
            rounds,
            rule_counts: if quick {
                vec![1, 100, 10_000]
            } else {
                vec![0, 1, 100, 1_000, 10_000, 65_536]
            },
            iperf_secs: 1,
            probe_for: Duration::from_millis(if quick { 300 } else { 400 }),
            flood_window: Duration::from_millis(if quick { 500 } else { 1000 }),
            accuracy_trials: if quick { 3 } else { 10 },
            accuracy_packets: if quick { 20_000 } else { 100_000 },
            scenario_budget: Duration::from_secs(if quick { 240 } else { 600 }),
            dns_window: Duration::from_millis(if quick { 1000 } else { 2000 }),
            throttle_secs: if quick { 3 } else { 10 },
            throttle_omit: if quick { 1 } else { 2 },
            http_rounds: opts
                .rounds
                .map(|r| r as usize)
                .unwrap_or(if quick { 10 } else { 30 }),
            http_requests: if quick { 3_000 } else { 5_000 },
            http_connections: if quick { 200 } else { 300 },
        }
    }
}

/// What every scenario needs.
pub struct Ctx {
    /// The faultbpf binary under test: a copy of [`Ctx::built`] taken at
    /// the start.
    pub bin: PathBuf,
    /// The binary that was built (or given as `FAULTBPF_BIN`).
    pub built: PathBuf,
    /// `target/bench/`.
    pub out: PathBuf,
    pub plan: Plan,
    /// CPUs the kernel reports online; load generators are pinned within.
    pub cpus: usize,
}

impl Ctx {
    /// The CPU of the client side (load generators, senders).
    pub fn client_cpu(&self) -> usize {
        0
    }

    /// The CPU of the server side (sinks, echo servers), distinct from the
    /// client's when there are two or more.
    pub fn server_cpu(&self) -> usize {
        1.min(self.cpus.saturating_sub(1))
    }
}

/// `cargo xtask bench`.
pub fn run(opts: &Options) -> Result<()> {
    if !cmd::is_root()? {
        bail!(
            "`cargo xtask bench` must run as root: it creates network namespaces, loads BPF \
             programs and nftables rules"
        );
    }
    let started = Instant::now();
    setup::run(setup::Scope::Test)?;
    let built = match env::var_os("FAULTBPF_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            eprintln!("bench: using FAULTBPF_BIN={} (not rebuilt)", bin.display());
            bin
        }
        None => build::build_faultbpf_release()?,
    };
    ctrlc::set_handler(|| topo::INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let out = cmd::workspace_root().join("target").join("bench");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Measure a copy: a rebuild of target/release/faultbpf in the middle of
    // the run (another cargo command) must not change what is measured, nor
    // break the helper processes faultbpf starts from its own executable.
    let snapshot = out.join("faultbpf");
    // (Copying a file onto itself would empty it.)
    let same = matches!(
        (fs::canonicalize(&built), fs::canonicalize(&snapshot)),
        (Ok(a), Ok(b)) if a == b
    );
    if !same {
        fs::copy(&built, &snapshot)
            .with_context(|| format!("copying {} to {}", built.display(), snapshot.display()))?;
    }
    let plan = Plan::new(opts);
    let ctx = Ctx {
        bin: snapshot,
        built,
        out,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        plan,
    };
    let wanted: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| opts.only.is_empty() || opts.only.contains(s))
        .collect();
    eprintln!(
        "bench: {} mode, {} rounds, scenarios {:?}; writing to {}",
        if ctx.plan.quick { "quick" } else { "full" },
        ctx.plan.rounds,
        wanted,
        ctx.out.display()
    );
    let machine = report::Machine::probe(&ctx);

    let mut sections = Vec::new();
    let mut failed = Vec::new();
    for scenario in wanted {
        let t = Instant::now();
        eprintln!("bench: == {scenario:?} ==");
        let result = match scenario {
            Scenario::Overhead => throughput::run(&ctx),
            Scenario::Drop => drop_capacity::run(&ctx),
            Scenario::Apply => apply_time::run(&ctx),
            Scenario::Accuracy => accuracy::run(&ctx),
            Scenario::Cost => cost::run(&ctx),
            Scenario::Faults => new_faults::run(&ctx),
            Scenario::Http => http_cost::run(&ctx),
        };
        topo::check_interrupted()?;
        eprintln!("bench: {scenario:?} took {:.0}s", t.elapsed().as_secs_f64());
        match result {
            Ok(mut section) => {
                section.short = scenario.name().into();
                sections.push(section);
            }
            Err(err) => {
                eprintln!("bench: {scenario:?} failed: {err:#}");
                failed.push(format!("{scenario:?}"));
                sections.push(report::Section::failed(scenario, &err));
            }
        }
    }
    let paths = report::write(&ctx, &machine, &sections, started.elapsed())?;
    for path in paths {
        eprintln!("bench: wrote {}", path.display());
    }
    eprintln!("bench: done in {:.0}s", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!(
            "scenarios that could not run: {} (see the report)",
            failed.join(", ")
        );
    }
    Ok(())
}
