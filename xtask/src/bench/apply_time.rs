//! Scenario 3, time to apply and to heal: from the moment a user starts
//! `faultbpf blackhole` to the moment the fault is in force on the wire
//! (load + attach + rule), and from SIGTERM to the traffic flowing again;
//! next to a rule added to (and deleted from) a running faultbpf daemon, and
//! `nft add rule` / `nft flush chain` on a chain that already exists. Goals:
//! CLI <= 150 ms, daemon <= 1 ms.
//!
//! The wire is watched by a probe: the client sends a numbered UDP request to
//! the server's echo port every ~0.1 ms and records which got an answer. The
//! fault became active between the last request answered and the first one
//! lost after the command started; it healed between the last lost and the
//! first answered after the heal command. Both ends of each bracket are
//! reported, so the probe's own resolution is visible.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx,
    daemon::Daemon,
    injector::{self, Faultbpf, Launch, Unavailable},
    report::{Goal, Section, Table, Verdict},
    stats::{self, Spread},
    topo::{self, CLIENT_IP, Netns, SERVER_IF, SERVER_IP, Topology},
    traffic::{ECHO_FROM, ECHO_PORT, Servers},
};

const NFT_TABLE: &str = "fba";
/// Pause between probe requests (the kernel adds its timer slack).
const PROBE_GAP: Duration = Duration::from_micros(100);
/// Quiet time around each command, so the probe sees both states clearly.
const SETTLE: Duration = Duration::from_millis(150);
/// A probe never runs longer than this, whatever happens.
const PROBE_MAX: Duration = Duration::from_secs(60);

/// The client's request loop; see the module doc.
struct Probe {
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<Result<Vec<Instant>>>>,
    receiver: Option<JoinHandle<Result<Vec<u32>>>>,
}

impl Probe {
    fn start(ns: &Netns, cpu: usize) -> Result<Self> {
        let sock = ns.run(None, || {
            let sock = UdpSocket::bind(SocketAddr::new(CLIENT_IP.into(), ECHO_FROM))?;
            sock.connect(SocketAddr::new(SERVER_IP.into(), ECHO_PORT))?;
            sock.set_read_timeout(Some(Duration::from_millis(20)))?;
            Ok(sock)
        })?;
        let rx = sock.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let sender = ns.spawn("probe sender", Some(cpu), move || {
            let mut sent = Vec::with_capacity(200_000);
            let start = Instant::now();
            while !s.load(Ordering::Relaxed) && start.elapsed() < PROBE_MAX {
                let seq = sent.len() as u32;
                sent.push(Instant::now());
                // A lost send is a lost request: the probe records it so.
                let _ = sock.send(&seq.to_le_bytes());
                std::thread::sleep(PROBE_GAP);
            }
            Ok(sent)
        })?;
        let s = Arc::clone(&stop);
        let receiver = ns.spawn("probe receiver", Some(cpu), move || {
            let mut got = Vec::with_capacity(200_000);
            let mut buf = [0u8; 64];
            let mut stopped_at: Option<Instant> = None;
            let start = Instant::now();
            // After stop, keep reading briefly for late answers.
            while stopped_at.is_none_or(|t| t.elapsed() < Duration::from_millis(200))
                && start.elapsed() < PROBE_MAX + Duration::from_secs(1)
            {
                if stopped_at.is_none() && s.load(Ordering::Relaxed) {
                    stopped_at = Some(Instant::now());
                }
                if let Ok(4) = rx.recv(&mut buf) {
                    got.push(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
                }
            }
            Ok(got)
        })?;
        Ok(Self {
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// Stops and returns every request as (sent at, answered).
    fn finish(mut self) -> Result<Vec<(Instant, bool)>> {
        self.stop.store(true, Ordering::SeqCst);
        fn join<T>(h: Option<JoinHandle<Result<T>>>) -> Result<T> {
            h.context("joined twice")?
                .join()
                .map_err(|_| anyhow::anyhow!("a probe thread panicked"))?
        }
        let sent: Vec<Instant> = join(self.sender.take())?;
        let got: Vec<u32> = join(self.receiver.take())?;
        let mut answered = vec![false; sent.len()];
        for seq in got {
            if let Some(a) = answered.get_mut(seq as usize) {
                *a = true;
            }
        }
        Ok(sent.into_iter().zip(answered).collect())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
    }
}

/// When a state change happened, in ms after the command started: between
/// `lower` (last request still in the old state) and `upper` (first request
/// in the new state).
#[derive(Debug, Clone, Copy)]
struct Bracket {
    lower_ms: f64,
    upper_ms: f64,
}

/// The change to `to` (answered = true) after `from`, looking only at
/// requests sent in [from, until).
fn change(events: &[(Instant, bool)], from: Instant, until: Instant, to: bool) -> Option<Bracket> {
    let window: Vec<(Instant, bool)> = events
        .iter()
        .copied()
        .filter(|&(t, _)| t >= from && t < until)
        .collect();
    let ms = |t: Instant| (t - from).as_secs_f64() * 1000.0;
    if to {
        // Healing: the first answered request.
        let k = window.iter().position(|&(_, ok)| ok)?;
        Some(Bracket {
            lower_ms: if k == 0 { 0.0 } else { ms(window[k - 1].0) },
            upper_ms: ms(window[k].0),
        })
    } else {
        // Applying: the first loss after the last answered request (the
        // fault stays until `until`, so earlier losses were noise).
        let last_ok = window.iter().rposition(|&(_, ok)| ok);
        let first_lost = last_ok.map_or(0, |j| j + 1);
        let &(t, ok) = window.get(first_lost)?;
        debug_assert!(!ok);
        Some(Bracket {
            lower_ms: last_ok.map_or(0.0, |j| ms(window[j].0)),
            upper_ms: ms(t),
        })
    }
}

/// One round's timings, in ms.
#[derive(Debug, Clone, Default)]
struct Round {
    cli_apply: Option<Bracket>,
    cli_line_ms: Option<f64>,
    cli_heal: Option<Bracket>,
    cli_exit_ms: Option<f64>,
    nft_apply: Option<Bracket>,
    nft_cmd_ms: Option<f64>,
    nft_heal: Option<Bracket>,
    daemon_apply: Option<Bracket>,
    daemon_api_ms: Option<f64>,
    daemon_heal: Option<Bracket>,
    /// How the CLI attached (`tcx`, `netlink`), from its JSON.
    attach: String,
}

/// The three ways to apply a fault, each measured once per round.
#[derive(Debug, Clone, Copy)]
enum Way {
    Cli,
    Nft,
    Daemon,
}

/// Scenario 3.
pub fn run(ctx: &Ctx) -> Result<Section> {
    let topo = Topology::new()?;
    let _servers = Servers::start(&topo.server, ctx.server_cpu())?;
    injector::nft(
        &topo.server,
        &format!(
            "table netdev {NFT_TABLE} {{\n chain in {{\n  type filter hook ingress device \
             \"{SERVER_IF}\" priority 0; policy accept;\n }}\n}}\n"
        ),
        Duration::from_secs(30),
    )?;
    // The daemon is started once, untimed (like nft's table and chain): what
    // is timed is a rule added to it.
    let daemon = Daemon::start(&ctx.bin, &topo.server, SERVER_IF).map_err(|err| {
        eprintln!("bench: no daemon rows: {err:#}");
        Unavailable(format!("n/a (the daemon did not start: {err:#})"))
    });
    // The probe must work before anything is measured.
    let probe = Probe::start(&topo.client, ctx.client_cpu())?;
    topo::sleep(Duration::from_millis(200))?;
    let events = probe.finish()?;
    let answered = events.iter().filter(|e| e.1).count();
    if answered * 10 < events.len() * 9 {
        bail!(
            "the probe got {answered} answers to {} requests with no fault: the echo path is \
             broken",
            events.len()
        );
    }

    let ways = [Way::Cli, Way::Nft, Way::Daemon];
    let mut rounds = Vec::new();
    for round in 0..ctx.plan.rounds {
        topo::check_interrupted()?;
        let mut r = Round::default();
        // Rotate which goes first.
        for i in 0..ways.len() {
            match ways[(i + round) % ways.len()] {
                Way::Cli => cli(ctx, &topo, &mut r)?,
                Way::Nft => nft(ctx, &topo, &mut r)?,
                Way::Daemon => {
                    if let Ok(d) = &daemon {
                        via_daemon(ctx, &topo, d, &mut r)?;
                    }
                }
            }
        }
        eprintln!(
            "bench: apply round {}: CLI {:?} ms, nft {:?} ms, daemon {:?} ms",
            round + 1,
            r.cli_apply.map(|b| b.upper_ms),
            r.nft_apply.map(|b| b.upper_ms),
            r.daemon_apply.map(|b| b.upper_ms)
        );
        rounds.push(r);
    }
    let daemon = match daemon {
        Ok(d) => {
            d.stop()?;
            Ok(())
        }
        Err(why) => Err(why),
    };
    Ok(analyze(ctx, &rounds, daemon))
}

/// A rule added to the running daemon over its API (`POST /v1/rules`),
/// healed by deleting it.
fn via_daemon(ctx: &Ctx, topo: &Topology, daemon: &Daemon, r: &mut Round) -> Result<()> {
    let probe = Probe::start(&topo.client, ctx.client_cpu())?;
    topo::sleep(SETTLE)?;
    let t0 = Instant::now();
    let id = daemon.add_rule(&format!(r#"{{"fault":"blackhole","port":[{ECHO_PORT}]}}"#))?;
    let api_ms = t0.elapsed().as_secs_f64() * 1000.0;
    topo::sleep(SETTLE)?;
    let t_heal = Instant::now();
    daemon.delete_rule(id)?;
    topo::sleep(SETTLE)?;
    let events = probe.finish()?;
    r.daemon_apply = change(&events, t0, t_heal, false);
    r.daemon_api_ms = Some(api_ms);
    r.daemon_heal = change(&events, t_heal, Instant::now(), true);
    Ok(())
}

fn cli(ctx: &Ctx, topo: &Topology, r: &mut Round) -> Result<()> {
    let probe = Probe::start(&topo.client, ctx.client_cpu())?;
    topo::sleep(SETTLE)?;
    let args: Vec<String> = [
        "blackhole",
        "--port",
        &ECHO_PORT.to_string(),
        "--iface",
        SERVER_IF,
    ]
    .map(String::from)
    .to_vec();
    let mut fb = Faultbpf::start(&ctx.bin, &topo.server, &args, Launch::Setns)?;
    let t0 = fb.spawned_at;
    let line = fb.wait_active(Duration::from_secs(30))?;
    topo::sleep(SETTLE)?;
    let t_heal = Instant::now();
    let counters = fb.stop()?;
    let t_exit = Instant::now();
    topo::sleep(SETTLE)?;
    let events = probe.finish()?;
    if counters.acted_packets == 0 {
        bail!("faultbpf dropped no probe packet: the probe does not see the fault");
    }
    r.cli_apply = change(&events, t0, t_heal, false);
    r.cli_line_ms = Some((line - t0).as_secs_f64() * 1000.0);
    r.cli_heal = change(&events, t_heal, Instant::now(), true);
    r.cli_exit_ms = Some((t_exit - t_heal).as_secs_f64() * 1000.0);
    r.attach = counters.attach;
    Ok(())
}

/// Runs one nft command from a thread inside the server namespace (no `ip
/// netns exec` in the timing); returns when it started and how long it ran.
fn nft_timed(ns: &Netns, args: &[&str]) -> Result<(Instant, f64)> {
    ns.run(None, || {
        let t = Instant::now();
        topo::output_within(
            crate::cmd::command("nft").args(args),
            None,
            Duration::from_secs(30),
        )?;
        Ok((t, t.elapsed().as_secs_f64() * 1000.0))
    })
}

fn nft(ctx: &Ctx, topo: &Topology, r: &mut Round) -> Result<()> {
    let probe = Probe::start(&topo.client, ctx.client_cpu())?;
    topo::sleep(SETTLE)?;
    let port = ECHO_PORT.to_string();
    let (t0, took) = nft_timed(
        &topo.server,
        &[
            "add", "rule", "netdev", NFT_TABLE, "in", "udp", "dport", &port, "drop",
        ],
    )?;
    topo::sleep(SETTLE)?;
    let (t_heal, _) = nft_timed(&topo.server, &["flush", "chain", "netdev", NFT_TABLE, "in"])?;
    topo::sleep(SETTLE)?;
    let events = probe.finish()?;
    r.nft_apply = change(&events, t0, t_heal, false);
    r.nft_cmd_ms = Some(took);
    r.nft_heal = change(&events, t_heal, Instant::now(), true);
    Ok(())
}

fn analyze(ctx: &Ctx, rounds: &[Round], daemon: Result<(), Unavailable>) -> Section {
    let sp = |f: &dyn Fn(&Round) -> Option<f64>| -> Option<Spread> {
        stats::spread(&rounds.iter().filter_map(f).collect::<Vec<_>>())
    };
    let cell = |s: Option<Spread>| {
        s.map_or("-".into(), |s| {
            format!("{:.2} [{:.2}, {:.2}]", s.median, s.min, s.max)
        })
    };
    let mut section = Section::new("Time to apply and to heal");
    section.notes.push(format!(
        "A probe sends a numbered UDP request to the server's echo port every ~{:?} (plus \
         timer slack) and records which were answered. Applied = first request lost after the \
         command started (the bracket's other end, the last request answered, is shown too); \
         healed = first request answered after the heal command. faultbpf CLI: `faultbpf \
         blackhole --port {ECHO_PORT} --iface {SERVER_IF}` spawned directly in the server \
         namespace (setns, no `ip netns exec`), healed by SIGTERM; it attached via {}. Daemon: `faultbpf daemon \
         --iface {SERVER_IF}` started once beforehand (untimed), then `POST /v1/rules \
         {{\"fault\":\"blackhole\",\"port\":[{ECHO_PORT}]}}` on its Unix socket, healed by \
         `DELETE /v1/rules/ID`. nftables: `nft add rule netdev {NFT_TABLE} in udp dport \
         {ECHO_PORT} drop` on an existing netdev ingress chain, healed by `nft flush chain`. \
         {} rounds, the order rotating. The faultbpf binary is `{}` (a debug build: its \
         user-space part is slower than a release build's).",
        PROBE_GAP,
        {
            let mut a: Vec<&str> = rounds.iter().map(|r| r.attach.as_str()).collect();
            a.sort_unstable();
            a.dedup();
            a.join(", ")
        },
        rounds.len(),
        ctx.bin.display()
    ));
    let mut t = Table::new(
        "Milliseconds after the command started, median [min, max] over rounds:",
        &[
            "What",
            "Fault active / healed (first request lost / answered)",
            "Lower bound (last request in the old state)",
        ],
    );
    let up = |f: fn(&Round) -> Option<Bracket>| sp(&|r| f(r).map(|b| b.upper_ms));
    let low = |f: fn(&Round) -> Option<Bracket>| sp(&|r| f(r).map(|b| b.lower_ms));
    let na = |c: String| match &daemon {
        Ok(()) => c,
        Err(why) => why.0.clone(),
    };
    let rows: [(&str, String, String); 10] = [
        (
            "faultbpf CLI start -> fault active",
            cell(up(|r| r.cli_apply)),
            cell(low(|r| r.cli_apply)),
        ),
        (
            "faultbpf CLI start -> `faultbpf: active:` printed",
            cell(sp(&|r| r.cli_line_ms)),
            "-".into(),
        ),
        (
            "daemon POST /v1/rules -> fault active",
            na(cell(up(|r| r.daemon_apply))),
            na(cell(low(|r| r.daemon_apply))),
        ),
        (
            "daemon POST /v1/rules: the API call's own time",
            na(cell(sp(&|r| r.daemon_api_ms))),
            "-".into(),
        ),
        (
            "nft add rule -> fault active",
            cell(up(|r| r.nft_apply)),
            cell(low(|r| r.nft_apply)),
        ),
        (
            "nft add rule: the command's own run time",
            cell(sp(&|r| r.nft_cmd_ms)),
            "-".into(),
        ),
        (
            "faultbpf CLI SIGTERM -> healed",
            cell(up(|r| r.cli_heal)),
            cell(low(|r| r.cli_heal)),
        ),
        (
            "faultbpf CLI SIGTERM -> process exited",
            cell(sp(&|r| r.cli_exit_ms)),
            "-".into(),
        ),
        (
            "daemon DELETE /v1/rules/ID -> healed",
            na(cell(up(|r| r.daemon_heal))),
            na(cell(low(|r| r.daemon_heal))),
        ),
        (
            "nft flush chain -> healed",
            cell(up(|r| r.nft_heal)),
            cell(low(|r| r.nft_heal)),
        ),
    ];
    for (what, a, b) in rows {
        t.row(vec![what.into(), a, b]);
    }
    let mut csv = Table::new(
        "",
        &[
            "round",
            "cli_apply_ms",
            "cli_apply_lower_ms",
            "cli_active_line_ms",
            "cli_heal_ms",
            "cli_exit_ms",
            "daemon_apply_ms",
            "daemon_apply_lower_ms",
            "daemon_api_ms",
            "daemon_heal_ms",
            "nft_apply_ms",
            "nft_apply_lower_ms",
            "nft_cmd_ms",
            "nft_heal_ms",
        ],
    );
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for (i, r) in rounds.iter().enumerate() {
        csv.row(vec![
            (i + 1).to_string(),
            f(r.cli_apply.map(|b| b.upper_ms)),
            f(r.cli_apply.map(|b| b.lower_ms)),
            f(r.cli_line_ms),
            f(r.cli_heal.map(|b| b.upper_ms)),
            f(r.cli_exit_ms),
            f(r.daemon_apply.map(|b| b.upper_ms)),
            f(r.daemon_apply.map(|b| b.lower_ms)),
            f(r.daemon_api_ms),
            f(r.daemon_heal.map(|b| b.upper_ms)),
            f(r.nft_apply.map(|b| b.upper_ms)),
            f(r.nft_apply.map(|b| b.lower_ms)),
            f(r.nft_cmd_ms),
            f(r.nft_heal.map(|b| b.upper_ms)),
        ]);
    }
    section.tables.push(t);
    section.csvs.push(("apply-time-rounds.csv".into(), csv));

    let goal = |measure: &str, goal: &str, limit: f64, s: Option<Spread>, unit: &str| match s {
        Some(s) => Goal::new(
            measure,
            goal,
            format!("{:.2} {unit} [{:.2}, {:.2}]", s.median, s.min, s.max),
            Verdict::check(s.median <= limit),
        ),
        None => Goal::new(measure, goal, "never seen".into(), Verdict::Fail),
    };
    section.goals.push(goal(
        "CLI start -> fault active",
        "<= 150 ms",
        150.0,
        up(|r| r.cli_apply),
        "ms",
    ));
    section.goals.push(match &daemon {
        Ok(()) => goal(
            "daemon rule add -> fault active",
            "<= 1 ms",
            1.0,
            up(|r| r.daemon_apply),
            "ms",
        ),
        Err(why) => Goal::na("daemon rule add -> fault active", "<= 1 ms", &why.0),
    });
    for (measure, s) in [
        ("nft add rule -> fault active", up(|r| r.nft_apply)),
        ("faultbpf CLI SIGTERM -> healed", up(|r| r.cli_heal)),
        ("daemon rule delete -> healed", up(|r| r.daemon_heal)),
    ] {
        if let Some(s) = s {
            section.goals.push(Goal::new(
                measure,
                "(reference)",
                format!("{:.2} ms [{:.2}, {:.2}]", s.median, s.min, s.max),
                Verdict::Info,
            ));
        }
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_from_request_outcomes() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // ok at 1, 2, a stray loss at 3, ok at 4, then lost from 5 on.
        let ev: Vec<(Instant, bool)> = [
            (1, true),
            (2, true),
            (3, false),
            (4, true),
            (5, false),
            (6, false),
        ]
        .into_iter()
        .map(|(ms, ok)| (at(ms), ok))
        .collect();
        let b = change(&ev, t0, at(10), false).unwrap();
        assert_eq!((b.lower_ms.round(), b.upper_ms.round()), (4.0, 5.0));
        let heal = [(7, false), (8, false), (9, true), (10, true)]
            .into_iter()
            .map(|(ms, ok)| (at(ms), ok))
            .collect::<Vec<_>>();
        let b = change(&heal, at(6), at(20), true).unwrap();
        assert_eq!((b.lower_ms.round(), b.upper_ms.round()), (2.0, 3.0));
        // Never applied: no loss after the last answer.
        assert!(change(&ev[..2], t0, at(10), false).is_none());
    }
}
