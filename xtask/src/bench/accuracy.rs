//! Scenario 4, `--pct` accuracy: does `blackhole --pct P` drop P % of the
//! packets, each independently of the others? For P = 1, 10, 50 and 99 %,
//! trials of numbered UDP datagrams (100 000 each, 10 trials) go through a
//! faultbpf that drops P % of them; the receiver records which arrived. Per
//! trial, a chi-square test of the count (1 degree of freedom, alpha 0.05)
//! and a Wald-Wolfowitz runs test of the drop sequence (independence). The
//! goal: at most 1 trial in 10 failing. Delay accuracy is measured in the
//! VM lane (`delay_accuracy.rs`) and reported in this section.
//!
//! Loss anywhere else would bias the result, so the sender is flow
//! controlled (a marker datagram on an unmatched port follows each batch;
//! the receiver acknowledges it once it has drained everything before it),
//! and faultbpf's own counters must equal the drops the receiver saw.

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx, delay_accuracy,
    injector::{Faultbpf, Launch},
    report::{Goal, Section, Table, Verdict},
    stats,
    topo::{self, CLIENT_IP, SERVER_IF, SERVER_IP, Topology},
    traffic,
};

const PORT: u16 = 64_000;
const MARKER_PORT: u16 = 64_001;
const FROM: u16 = 64_010;
const PCTS: [f64; 4] = [1.0, 10.0, 50.0, 99.0];
/// Datagrams between two markers.
const BATCH: usize = 1000;
/// Batches the sender may be ahead of the receiver's acknowledgements.
const WINDOW: i64 = 4;
/// The longest any wait for the receiver may take before the trial fails.
const STALL: Duration = Duration::from_secs(5);

/// One trial's outcome.
struct Trial {
    packets: usize,
    dropped: usize,
    chi2: f64,
    runs_z: Option<f64>,
}

/// Scenario 4.
pub fn run(ctx: &Ctx) -> Result<Section> {
    let topo = Topology::new()?;
    let n = ctx.plan.accuracy_packets;
    let mut results: Vec<(f64, Vec<Trial>, Result<(), String>)> = Vec::new();
    for pct in PCTS {
        let args: Vec<String> = [
            "blackhole",
            "--proto",
            "udp",
            "--dport",
            &PORT.to_string(),
            "--pct",
            &pct.to_string(),
            "--iface",
            SERVER_IF,
            "--direction",
            "ingress",
        ]
        .map(String::from)
        .to_vec();
        let mut fb = Faultbpf::start(&ctx.bin, &topo.server, &args, Launch::IpNetnsExec)?;
        fb.wait_active(Duration::from_secs(60))?;
        let mut trials = Vec::new();
        for _ in 0..ctx.plan.accuracy_trials {
            topo::check_interrupted()?;
            let got = trial(ctx, &topo, n).with_context(|| format!("a --pct {pct} trial"))?;
            let dropped_seq: Vec<bool> = got.iter().map(|&g| !g).collect();
            let dropped = dropped_seq.iter().filter(|&&d| d).count();
            trials.push(Trial {
                packets: n,
                dropped,
                chi2: stats::chi_square(dropped as u64, n as u64, pct / 100.0),
                runs_z: stats::runs_z(&dropped_seq),
            });
        }
        let counters = fb.stop()?;
        let seen: u64 = trials.iter().map(|t| t.dropped as u64).sum();
        let sent = (n * trials.len()) as u64;
        let check = if counters.acted_packets != seen || counters.matched_packets != sent {
            Err(format!(
                "faultbpf matched {} and dropped {}, the receiver saw {sent} sent and {seen} lost",
                counters.matched_packets, counters.acted_packets
            ))
        } else {
            Ok(())
        };
        eprintln!(
            "bench: --pct {pct}: {} trials, lost {:.3} % on average{}",
            trials.len(),
            100.0 * seen as f64 / sent as f64,
            check
                .as_ref()
                .err()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
        results.push((pct, trials, check));
    }
    drop(topo);
    eprintln!("bench: delay accuracy, in the VM lane");
    let delay = delay_accuracy::run(ctx);
    if let Err(err) = &delay {
        eprintln!("bench: delay accuracy: {err:#}");
    }
    let mut section = analyze(ctx, &results);
    delay_accuracy::add_to(&delay, &mut section);
    Ok(section)
}

/// Sends `n` numbered datagrams through the fault; returns which arrived.
fn trial(ctx: &Ctx, topo: &Topology, n: usize) -> Result<Vec<bool>> {
    let acked = Arc::new(AtomicI64::new(-1));
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, r, s) = (Arc::clone(&acked), Arc::clone(&ready), Arc::clone(&stop));
    let receiver = topo
        .server
        .spawn("accuracy receiver", Some(ctx.server_cpu()), move || {
            let data = UdpSocket::bind(SocketAddr::new(SERVER_IP.into(), PORT))?;
            let marker = UdpSocket::bind(SocketAddr::new(SERVER_IP.into(), MARKER_PORT))?;
            traffic::force_rcvbuf(data.as_fd(), 32 << 20);
            data.set_nonblocking(true)?;
            marker.set_nonblocking(true)?;
            r.store(true, Ordering::SeqCst);
            let mut got = vec![false; n];
            let mut buf = [0u8; 64];
            let drain = |got: &mut Vec<bool>, buf: &mut [u8]| -> Result<()> {
                loop {
                    match data.recv(buf) {
                        Ok(len) if len >= 4 => {
                            let seq = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                            if let Some(g) = got.get_mut(seq as usize) {
                                *g = true;
                            }
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let start = Instant::now();
            while !s.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                traffic::readable(marker.as_fd(), 5);
                drain(&mut got, &mut buf)?;
                while let Ok(len) = marker.recv(&mut buf) {
                    if len >= 4 {
                        let k = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                        // Everything sent before this marker has been queued
                        // (or dropped) by now: drain it, then acknowledge.
                        drain(&mut got, &mut buf)?;
                        a.store(i64::from(k), Ordering::SeqCst);
                    }
                }
            }
            Ok(got)
        })?;
    let sent = topo.client.run(Some(ctx.client_cpu()), || {
        let wait = |cond: &dyn Fn() -> bool, what: &str| -> Result<()> {
            let end = Instant::now() + STALL;
            while !cond() {
                if Instant::now() > end {
                    bail!("the receiver stalled ({what})");
                }
                std::thread::yield_now();
            }
            Ok(())
        };
        wait(&|| ready.load(Ordering::SeqCst), "never bound")?;
        let sock = UdpSocket::bind(SocketAddr::new(CLIENT_IP.into(), FROM))?;
        let data = SocketAddr::new(SERVER_IP.into(), PORT);
        let marker = SocketAddr::new(SERVER_IP.into(), MARKER_PORT);
        let batches = n.div_ceil(BATCH);
        let mut payload = [0u8; traffic::SMALL_UDP];
        for b in 0..batches {
            wait(
                &|| acked.load(Ordering::SeqCst) >= b as i64 - WINDOW,
                "window",
            )?;
            for seq in b * BATCH..((b + 1) * BATCH).min(n) {
                payload[..4].copy_from_slice(&(seq as u32).to_le_bytes());
                send(&sock, &payload, data)?;
            }
            send(&sock, &(b as u32).to_le_bytes(), marker)?;
        }
        wait(
            &|| acked.load(Ordering::SeqCst) == batches as i64 - 1,
            "last marker",
        )
    });
    stop.store(true, Ordering::SeqCst);
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the accuracy receiver panicked"))?;
    sent?;
    got
}

/// Sends one datagram, retrying while the path is momentarily full (a send
/// that fails would otherwise read as a drop).
fn send(sock: &UdpSocket, payload: &[u8], to: SocketAddr) -> Result<()> {
    for _ in 0..10_000 {
        match sock.send_to(payload, to) {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN)) => {
                std::thread::yield_now()
            }
            Err(e) => return Err(e).context("sending a numbered datagram"),
        }
    }
    bail!("could not send a datagram after 10000 tries")
}

fn analyze(ctx: &Ctx, results: &[(f64, Vec<Trial>, Result<(), String>)]) -> Section {
    let mut section = Section::new("--pct accuracy");
    section.notes.push(format!(
        "`faultbpf blackhole --proto udp --dport {PORT} --pct P --direction ingress` on the \
         server veth; {} trials of {} numbered 60-byte UDP datagrams per P, sent in batches of \
         {BATCH} with flow control so that only faultbpf can lose them (checked: its counters \
         must equal what the receiver missed). Per trial: chi-square of the number dropped \
         against P (1 df, fails above {:.3}), and the runs test on the drop sequence (fails at \
         |z| > {:.2}). The goal allows 1 failing trial in 10 for each test (at alpha 0.05, 2 or \
         more of 10 happens by chance 9 % of the time). The pooled chi-square (every trial's \
         packets together) is shown to expose a small bias no single trial can; it is not part \
         of the goal.",
        ctx.plan.accuracy_trials,
        ctx.plan.accuracy_packets,
        stats::CHI2_1DF_05,
        stats::Z_05
    ));
    let mut table = Table::new(
        "",
        &[
            "--pct",
            "Trials",
            "Dropped, mean",
            "chi-square fails",
            "Largest chi-square",
            "Runs test fails",
            "Largest |z|",
            "Pooled chi-square (all trials)",
            "Counters match",
        ],
    );
    let mut csv = Table::new(
        "",
        &[
            "pct",
            "trial",
            "packets",
            "dropped",
            "dropped_pct",
            "chi2",
            "runs_z",
        ],
    );
    for (pct, trials, check) in results {
        let n = trials.len();
        let chi_fails = trials
            .iter()
            .filter(|t| t.chi2 > stats::CHI2_1DF_05)
            .count();
        let runs_fails = trials
            .iter()
            .filter(|t| t.runs_z.is_none_or(|z| z.abs() > stats::Z_05))
            .count();
        let mean = trials
            .iter()
            .map(|t| 100.0 * t.dropped as f64 / t.packets as f64)
            .sum::<f64>()
            / n.max(1) as f64;
        let max_chi = trials.iter().map(|t| t.chi2).fold(0.0, f64::max);
        let max_z = trials
            .iter()
            .filter_map(|t| t.runs_z)
            .map(f64::abs)
            .fold(0.0, f64::max);
        table.row(vec![
            format!("{pct} %"),
            n.to_string(),
            format!("{mean:.3} %"),
            format!("{chi_fails}/{n}"),
            format!("{max_chi:.2}"),
            format!("{runs_fails}/{n}"),
            format!("{max_z:.2}"),
            {
                let hits: u64 = trials.iter().map(|t| t.dropped as u64).sum();
                let all: u64 = trials.iter().map(|t| t.packets as u64).sum();
                let chi = stats::chi_square(hits, all, pct / 100.0);
                format!(
                    "{chi:.2}{}",
                    if chi > stats::CHI2_1DF_05 {
                        " (> 3.841)"
                    } else {
                        ""
                    }
                )
            },
            match check {
                Ok(()) => "yes".into(),
                Err(e) => format!("no: {e}"),
            },
        ]);
        for (i, t) in trials.iter().enumerate() {
            csv.row(vec![
                pct.to_string(),
                (i + 1).to_string(),
                t.packets.to_string(),
                t.dropped.to_string(),
                format!("{:.4}", 100.0 * t.dropped as f64 / t.packets as f64),
                format!("{:.3}", t.chi2),
                t.runs_z.map_or(String::new(), |z| format!("{z:.3}")),
            ]);
        }
        // 1 in 10 allowed; with fewer trials (--quick) still 1.
        let allowed = (n / 10).max(1);
        section.goals.push(Goal::new(
            &format!("--pct {pct}: chi-square / runs-test failures"),
            &format!("<= {allowed} of {n} each"),
            format!(
                "{chi_fails}/{n} and {runs_fails}/{n}, mean {mean:.3} %{}",
                if check.is_ok() {
                    ""
                } else {
                    ", counters differ"
                }
            ),
            Verdict::check(chi_fails <= allowed && runs_fails <= allowed && check.is_ok()),
        ));
    }
    section.tables.push(table);
    section.csvs.push(("accuracy-trials.csv".into(), csv));
    section
}
