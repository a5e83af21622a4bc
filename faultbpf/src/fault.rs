//! The fault commands (`faultbpf blackhole ...`) and `faultbpf run`: flags
//! become a rule spec, the library's lifecycle (`faultbpf::session`) puts
//! it in force here or in a daemon, and this file only shows it: the
//! `active:` line, the live status, the final counters (text or `--json`).

use std::{
    io::{IsTerminal, Write},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use faultbpf::{
    Rule,
    api::{Client, client::Probe},
    iface,
    report::{self, Report, RuleReport},
    session::{Handle, Placement, StartError, TICK},
    spec::{Policy, RuleSpec},
    target::{Target, TargetError},
};
use faultbpf_common::RuleCounters;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{FaultArgs, FaultCommand};

/// How a command failed: bad input (exit 2) or anything else (exit 1).
pub enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Runtime(e.into())
    }
}

impl Failure {
    /// A namespace that cannot be entered: a bad name (usage, exit 2) or
    /// an engine or kernel that cannot answer (exit 1).
    pub fn target(e: TargetError) -> Self {
        if e.is_usage() {
            Self::Usage(e.to_string())
        } else {
            Self::Runtime(e.into())
        }
    }

    fn start(e: StartError) -> Self {
        if e.is_usage() {
            Self::Usage(e.to_string())
        } else {
            Self::Runtime(e.into())
        }
    }
}

/// The spec and the rule it validates to, or the usage error naming the
/// bad value; checked before anything is attached or sent.
fn checked(fc: FaultCommand) -> Result<(RuleSpec, Rule, FaultArgs), Failure> {
    let (spec, args) = fc.into_spec();
    let rule = spec
        .validate(0, &Policy::default())
        .map_err(|e| Failure::Usage(e.to_string()))?;
    Ok((spec, rule, args))
}

/// A fault command: a daemon rule when a daemon listens, else in this
/// process until a signal or `--for`.
pub fn fault(fc: FaultCommand, client: &Client) -> Result<(), Failure> {
    let (mut spec, rule, args) = checked(fc)?;
    if !args.command.is_empty() {
        return Err(Failure::Usage(format!(
            "a command after `--` needs `faultbpf run`: faultbpf run {} ... -- {}",
            rule.fault.def().command,
            args.command.join(" ")
        )));
    }
    let mut placement = place(&args, &rule, client)?;
    let daemon = matches!(placement, Placement::Daemon(_));
    if daemon {
        target_in_daemon(&mut spec, &args);
    }
    let rt = runtime()?;
    // Watched before the fault is in force: a signal the moment the
    // `active:` line is out must heal, not kill us with the default action.
    let signals = rt.block_on(async { Signals::watch() })?;
    let handle = placement
        .start(&spec, daemon && args.wait)
        .map_err(Failure::start)?;
    if daemon && !args.wait {
        return print_added(&handle, &args, client);
    }
    eprintln!(
        "faultbpf: active: {}; {}",
        active_text(&placement, &handle),
        match rule.lasts {
            Some(d) => format!("heals in {}", humantime::format_duration(d)),
            None => "Ctrl-C to heal".into(),
        }
    );
    let held = rt.block_on(hold(&mut placement, &handle, rule.lasts, signals));
    let (counters, err) = placement.stop(handle.clone());
    if let Some(e) = err {
        eprintln!("faultbpf: {e}");
    }
    let counters = counters.or(held.last).unwrap_or_default();
    let text = final_report(&placement, &handle, &counters, args.json)?;
    drop(placement);
    println!("{text}");
    held.outcome
}

/// `faultbpf run FAULT ... -- CMD`: the fault lives exactly as long as the
/// command; returns the command's exit code (128 + signal if killed).
pub fn run(fc: FaultCommand, client: &Client) -> Result<u8, Failure> {
    let (mut spec, rule, args) = checked(fc)?;
    let Some((program, rest)) = args.command.split_first() else {
        return Err(Failure::Usage(
            "faultbpf run needs a command after `--`, e.g. faultbpf run blackhole --port 5672 -- pytest"
                .into(),
        ));
    };
    // A command that cannot run fails before anything is attached, with
    // the shell's code (127 not found, 126 not executable).
    let path = match faultbpf::child::resolve(program) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("faultbpf: error: {e}");
            return Ok(e.exit_code());
        }
    };
    let mut placement = place(&args, &rule, client)?;
    let daemon = matches!(placement, Placement::Daemon(_));
    if daemon {
        target_in_daemon(&mut spec, &args);
    }
    let rt = runtime()?;
    let signals = rt.block_on(async { Signals::watch() })?;
    let handle = placement.start(&spec, true).map_err(Failure::start)?;
    eprintln!(
        "faultbpf: active: {}; running {program}",
        active_text(&placement, &handle)
    );
    // The command dies with us (PR_SET_PDEATHSIG): a killed faultbpf must
    // not leave it running unfaulted.
    let mut cmd = faultbpf::child::command(&path, program, rest);
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let code = rt.block_on(supervise(&mut cmd, program, &mut placement, signals));
    let (counters, err) = placement.stop(handle.clone());
    if let Some(e) = err {
        eprintln!("faultbpf: {e}");
    }
    let text = final_report(
        &placement,
        &handle,
        &counters.unwrap_or_default(),
        args.json,
    )?;
    drop(placement);
    // stdout belongs to the command.
    if args.json {
        eprintln!("{text}");
    } else {
        eprintln!("faultbpf: {text}");
    }
    if daemon {
        eprintln!("faultbpf: rule {} removed", handle.id());
    }
    code
}

/// A daemon rule on `--container`: the daemon finds the container (through
/// its own engine settings) and acts in its namespace.
fn target_in_daemon(spec: &mut RuleSpec, args: &FaultArgs) {
    spec.container = args.container.clone();
    spec.engine = args.engine;
}

/// Where the rule goes: inside `--netns` or `--pid` (always in this
/// process: a daemon owns its own namespace), in this process with
/// `--standalone` or `--xdp` or when no daemon listens, else in the daemon
/// (with `--container`, as the rule's `container`: the daemon enters it).
fn place(args: &FaultArgs, rule: &Rule, client: &Client) -> Result<Placement, Failure> {
    let target = Target::from_flags(
        args.netns.clone(),
        args.pid,
        args.container.clone(),
        args.engine,
    );
    let daemon_may =
        !args.standalone && !args.xdp && matches!(target, None | Some(Target::Container { .. }));
    if daemon_may {
        match client.probe() {
            Probe::Up => {
                if !args.ifaces.is_empty() || args.attach != faultbpf::AttachMode::Auto {
                    return Err(Failure::Usage(format!(
                        "--iface and --attach do not apply: the daemon at {} owns the \
                         interfaces; drop them, or add --standalone to run without the daemon",
                        client.path().display()
                    )));
                }
                return Ok(Placement::daemon(client.clone()));
            }
            Probe::Refused(e) => {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "the daemon's socket {} refuses you ({e}): add yourself to its group \
                     (e.g. `sudo usermod -aG faultbpf $USER`, then log in again), or run as \
                     root with --standalone",
                    client.path().display()
                )));
            }
            Probe::Absent => {}
        }
    }
    if let Some(t) = target {
        t.enter().map_err(Failure::target)?;
    }
    let hooks = args.hooks(&rule.fault).map_err(Failure::Usage)?;
    let ifaces = interfaces(&args.ifaces)?;
    faultbpf::load::set_traceable(args.traceable);
    Ok(Placement::here(&ifaces, hooks)?)
}

/// The interfaces to attach to: the ones named (each must exist), or every
/// interface that is up.
fn interfaces(named: &[String]) -> Result<Vec<String>, Failure> {
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

/// After `active:`: "blackhole ... on veth0, lo via tcx", or "rule 3
/// blackhole ... via the daemon at /run/faultbpf.sock, expires in 10m".
fn active_text(placement: &Placement, h: &Handle) -> String {
    match placement {
        Placement::Here(_) => format!("{} on {}", h.description, placement.where_text()),
        Placement::Daemon(_) => format!(
            "rule {} {} via {}{}",
            h.id(),
            h.description,
            placement.where_text(),
            expiry_text(h.expires_in_seconds)
        ),
    }
}

fn expiry_text(secs: Option<f64>) -> String {
    match secs {
        Some(s) => format!(
            ", expires in {}",
            humantime::format_duration(Duration::from_secs(s.round() as u64))
        ),
        None => String::new(),
    }
}

/// A daemon rule added without `--wait`: say so (or print it as JSON) and
/// leave it there.
fn print_added(h: &Handle, args: &FaultArgs, client: &Client) -> Result<(), Failure> {
    if args.json {
        let info = client.get(h.id())?;
        println!("{}", serde_json::to_string(&info)?);
    } else {
        println!(
            "rule {} added: {}{}; remove it with: faultbpf rm {}",
            h.id(),
            h.description,
            expiry_text(h.expires_in_seconds),
            h.id()
        );
    }
    Ok(())
}

/// The final counters: one text line, or the one line of JSON.
fn final_report(
    placement: &Placement,
    h: &Handle,
    c: &RuleCounters,
    json: bool,
) -> Result<String, Failure> {
    Ok(if json {
        let interfaces = placement.interfaces();
        let r = Report {
            attach: &placement.via(),
            interfaces: &interfaces,
            rules: vec![RuleReport::new(&h.rule, c)],
        };
        serde_json::to_string(&r).context("could not encode the report")?
    } else {
        report::summary_line(&h.rule, c)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?)
}

/// SIGINT and SIGTERM, watched from before a fault is in force until it is
/// lifted.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must run inside the runtime.
    fn watch() -> Result<Self, Failure> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("could not watch SIGINT")?,
            term: signal(SignalKind::terminate()).context("could not watch SIGTERM")?,
        })
    }
}

/// How holding a rule ended, and its last counters seen.
struct Held {
    outcome: Result<(), Failure>,
    last: Option<RuleCounters>,
}

/// Keeps the rule in force until SIGINT, SIGTERM, `lasts`, or the rule
/// goes away (a daemon rule expired or removed); heartbeats every tick and
/// shows the live status on a terminal.
async fn hold(
    placement: &mut Placement,
    h: &Handle,
    lasts: Option<Duration>,
    mut signals: Signals,
) -> Held {
    let mut held = Held {
        outcome: Ok(()),
        last: None,
    };
    let started = Instant::now();
    let deadline = lasts.map(|d| tokio::time::Instant::now() + d);
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = signals.int.recv() => break,
            _ = signals.term.recv() => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
            _ = tick.tick() => {
                if let Err(e) = placement.heartbeat() {
                    held.outcome = Err(Failure::Runtime(anyhow::anyhow!(e)));
                    break;
                }
                match placement.counters(h) {
                    Ok(Some(c)) => {
                        if tty {
                            eprint!(
                                "\r{}\x1b[K",
                                report::status_line(started.elapsed().as_secs(), &h.rule, &c)
                            );
                            let _ = std::io::stderr().flush();
                        }
                        held.last = Some(c);
                    }
                    Ok(None) => {
                        eprintln!("faultbpf: rule {} is gone (expired or removed)", h.id());
                        break;
                    }
                    Err(e) => {
                        held.outcome = Err(Failure::Runtime(anyhow::anyhow!(e)));
                        break;
                    }
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    held
}

/// Starts the command and waits for it, heartbeating each tick; SIGTERM
/// and SIGINT are passed on to it (a terminal's Ctrl-C reaches it anyway),
/// and we wait for it to finish.
async fn supervise(
    cmd: &mut tokio::process::Command,
    program: &str,
    placement: &mut Placement,
    mut signals: Signals,
) -> Result<u8, Failure> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{program}`"))?;
    let pid = child.id().and_then(|p| libc::pid_t::try_from(p).ok());
    let mut tick = tokio::time::interval(TICK);
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.with_context(|| format!("could not wait for `{program}`"))?,
            _ = signals.int.recv() => forward(pid, libc::SIGINT),
            _ = signals.term.recv() => forward(pid, libc::SIGTERM),
            _ = tick.tick() => placement.heartbeat().map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?,
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    })
}

fn forward(pid: Option<libc::pid_t>, sig: libc::c_int) {
    if let Some(pid) = pid {
        // SAFETY: plain kill(2) to our own child.
        unsafe { libc::kill(pid, sig) };
    }
}
