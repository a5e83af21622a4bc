//! Scenario 4, second half: does `faultbpf delay --ms D` add D? Measured in
//! the VM lane (Debian's 6.1 kernel under qemu), because delay needs the
//! kernel's sch_fq and sch_netem and this machine's kernel may have neither.
//!
//! In the guest (`xtask bench-delay-guest`, started by [`run`]): the bench
//! topology, a UDP echo server, and sequential 18-byte pings from the
//! client. For each target D of 0.1, 1, 5 and 20 ms and each round, three
//! conditions one after the other: nothing, faultbpf delaying the pings at
//! the server's ingress (`--direction ingress`: one way, so the round trip
//! grows by D), and netem delaying the echoes at the server's egress (`tc
//! qdisc ... netem delay D`, the same one-way D) as the reference. Each
//! prints one `FBDELAY` line; the host reads them off the serial console.
//! Added delay = median RTT under the condition minus the median with
//! nothing, in the same round. The guest is emulated (TCG), so its own
//! timing noise shows in both faultbpf's and netem's rows: compare them.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx,
    injector::{Faultbpf, Launch},
    report::{Goal, Section, Table, Verdict},
    stats,
    topo::{self, SERVER_IF, SERVER_IP, Topology},
};
use crate::vm;

/// Targets, in milliseconds.
pub const TARGETS_MS: [f64; 4] = [0.1, 1.0, 5.0, 20.0];
const ECHO_PORT: u16 = 62_100;
const CONDITIONS: [&str; 3] = ["none", "faultbpf", "netem"];
/// The marker of a result line on the guest's console.
const MARKER: &str = "FBDELAY";
/// How long the whole guest run may take, boot included.
const VM_LIMIT: Duration = Duration::from_secs(420);

/// One condition's median in one round, as the guest printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub round: usize,
    pub target_ms: f64,
    pub condition: String,
    pub p50_us: f64,
    pub lost: usize,
}

/// Per target: the added delay of faultbpf and of netem, median [min, max]
/// over rounds.
pub struct Accuracy {
    pub target_ms: f64,
    pub faultbpf: Option<stats::Spread>,
    pub netem: Option<stats::Spread>,
    pub baseline_us: Option<f64>,
    pub lost: usize,
}

/// Host side: boots the VM, runs the guest half, and sums it up.
pub fn run(ctx: &Ctx) -> Result<Vec<Accuracy>> {
    let xtask = std::env::current_exe().context("locating the running xtask binary")?;
    let rounds = ctx.plan.rounds.min(5);
    let samples = if ctx.plan.quick { 60 } else { 150 };
    let command = [
        xtask.to_string_lossy().into_owned(),
        "bench-delay-guest".into(),
        "--bin".into(),
        ctx.bin.to_string_lossy().into_owned(),
        "--rounds".into(),
        rounds.to_string(),
        "--samples".into(),
        samples.to_string(),
    ];
    let serial = vm::capture(&command, VM_LIMIT)?;
    let samples: Vec<Sample> = serial.iter().filter_map(|l| parse(l)).collect();
    if samples.is_empty() {
        bail!("the guest printed no {MARKER} line (console in target/vm/serial.log)");
    }
    Ok(summarize(&samples))
}

/// The delay table, notes and goals for [`run`]'s result.
pub fn add_to(result: &Result<Vec<Accuracy>>, section: &mut Section) {
    const MEASURE: &str = "delay accuracy at 0.1, 1, 5, 20 ms";
    let list = match result {
        Ok(list) => list,
        Err(err) => {
            section.goals.push(Goal::na(
                MEASURE,
                "(VM lane)",
                &format!("n/a (the VM lane did not run: {err:#})"),
            ));
            return;
        }
    };
    section.notes.push(format!(
        "Delay, in the VM lane (Debian's 6.1 kernel under qemu TCG, 2 vCPUs): sequential \
         UDP pings from the client to an echo server; per round and target D, the median RTT \
         with nothing, with `faultbpf delay --ms D --port {ECHO_PORT} --direction ingress` on \
         the server veth (one way: the RTT grows by D), and with netem `delay D` on the \
         server's egress (the same one way) as the reference. Added = median under the \
         condition minus the median with nothing in the same round. No figure in the issue: \
         faultbpf passes when its error is at most netem's on the same guest plus 10 % of D \
         plus 50 µs (emulation noise)."
    ));
    let mut table = Table::new(
        "Delay added, ms, median [min, max] over rounds:",
        &[
            "Target",
            "faultbpf adds",
            "netem adds",
            "Baseline RTT (µs)",
            "Pings lost",
        ],
    );
    let show = |s: &Option<stats::Spread>| {
        s.as_ref().map_or("-".into(), |s| {
            format!("{:.3} [{:.3}, {:.3}]", s.median, s.min, s.max)
        })
    };
    for a in list {
        table.row(vec![
            format!("{} ms", a.target_ms),
            show(&a.faultbpf),
            show(&a.netem),
            a.baseline_us.map_or("-".into(), |b| format!("{b:.0}")),
            a.lost.to_string(),
        ]);
        let err = |s: &Option<stats::Spread>| s.as_ref().map(|s| (s.median - a.target_ms).abs());
        let verdict = match (err(&a.faultbpf), err(&a.netem)) {
            (Some(f), Some(n)) => Verdict::check(f <= n + 0.1 * a.target_ms + 0.05),
            _ => Verdict::Na("n/a (no measurement)".into()),
        };
        section.goals.push(Goal::new(
            &format!("delay {} ms added (VM lane)", a.target_ms),
            "error <= netem's + 10 % + 50 µs",
            format!(
                "faultbpf {} ms, netem {} ms",
                show(&a.faultbpf),
                show(&a.netem)
            ),
            verdict,
        ));
    }
    section.tables.push(table);
}

fn summarize(samples: &[Sample]) -> Vec<Accuracy> {
    let mut by_target: BTreeMap<u64, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_target
            .entry((s.target_ms * 1000.0) as u64)
            .or_default()
            .push(s);
    }
    by_target
        .into_values()
        .map(|list| {
            let target_ms = list[0].target_ms;
            let find = |round: usize, cond: &str| {
                list.iter()
                    .find(|s| s.round == round && s.condition == cond)
                    .map(|s| s.p50_us)
            };
            let rounds: Vec<usize> = {
                let mut r: Vec<usize> = list.iter().map(|s| s.round).collect();
                r.sort_unstable();
                r.dedup();
                r
            };
            let added = |cond: &str| {
                let v: Vec<f64> = rounds
                    .iter()
                    .filter_map(|&r| Some((find(r, cond)? - find(r, "none")?) / 1000.0))
                    .collect();
                stats::spread(&v)
            };
            let base: Vec<f64> = rounds.iter().filter_map(|&r| find(r, "none")).collect();
            Accuracy {
                target_ms,
                faultbpf: added("faultbpf"),
                netem: added("netem"),
                baseline_us: stats::spread(&base).map(|s| s.median),
                lost: list.iter().map(|s| s.lost).sum(),
            }
        })
        .collect()
}

/// `FBDELAY round=1 target_ms=5 condition=netem p50_us=5123.4 lost=0`.
fn parse(line: &str) -> Option<Sample> {
    let rest = line.trim().strip_prefix(MARKER)?;
    let mut fields = BTreeMap::new();
    for word in rest.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        fields.insert(k, v);
    }
    Some(Sample {
        round: fields.get("round")?.parse().ok()?,
        target_ms: fields.get("target_ms")?.parse().ok()?,
        condition: fields.get("condition")?.to_string(),
        p50_us: fields.get("p50_us")?.parse().ok()?,
        lost: fields.get("lost")?.parse().ok()?,
    })
}

/// Guest side (`xtask bench-delay-guest`): prints one [`MARKER`] line per
/// round, target and condition.
pub fn guest(bin: &Path, rounds: usize, samples: usize) -> Result<()> {
    let topo = Topology::new()?;
    let echo = topo.server.spawn("udp echo", None, || {
        let socket = UdpSocket::bind((SERVER_IP, ECHO_PORT))?;
        socket.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = [0u8; 64];
        // Ends when no ping came for 30 s (the namespace goes first).
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            socket.send_to(&buf[..n], from)?;
        }
        Ok(())
    })?;
    for round in 1..=rounds {
        for target in TARGETS_MS {
            for (i, _) in CONDITIONS.iter().enumerate() {
                // Rotate the order each round, as the other scenarios do.
                let condition = CONDITIONS[(i + round) % CONDITIONS.len()];
                let (p50, lost) = measure(bin, &topo, condition, target, samples)?;
                println!(
                    "{MARKER} round={round} target_ms={target} condition={condition} \
                     p50_us={p50:.1} lost={lost}"
                );
            }
        }
    }
    drop(topo);
    drop(echo);
    Ok(())
}

/// Median RTT (µs) of `samples` pings under `condition`, and pings lost.
fn measure(
    bin: &Path,
    topo: &Topology,
    condition: &str,
    target_ms: f64,
    samples: usize,
) -> Result<(f64, usize)> {
    let mut fb = None;
    match condition {
        "faultbpf" => {
            let args: Vec<String> = [
                "delay",
                "--ms",
                &target_ms.to_string(),
                "--port",
                &ECHO_PORT.to_string(),
                "--direction",
                "ingress",
                "--iface",
                SERVER_IF,
            ]
            .map(String::from)
            .to_vec();
            let mut f = Faultbpf::start(bin, &topo.server, &args, Launch::Setns)?;
            f.wait_active(Duration::from_secs(60))?;
            fb = Some(f);
        }
        "netem" => netem(topo, Some(target_ms))?,
        _ => {}
    }
    let result = pings(topo, samples, target_ms);
    if let Some(f) = fb {
        f.stop()?;
    }
    if condition == "netem" {
        netem(topo, None)?;
    }
    let mut rtts = result?;
    let lost = samples - rtts.len();
    rtts.sort_unstable();
    let p50 = stats::percentile(&rtts, 50.0).context("no ping came back")?;
    Ok((p50 as f64 / 1000.0, lost))
}

/// netem delay on the server's egress (`Some(ms)`), or none.
fn netem(topo: &Topology, ms: Option<f64>) -> Result<()> {
    let mut cmd = topo.server.exec("tc");
    match ms {
        Some(ms) => cmd.args([
            "qdisc",
            "replace",
            "dev",
            SERVER_IF,
            "root",
            "netem",
            "delay",
            &format!("{}us", (ms * 1000.0).round()),
        ]),
        None => cmd.args(["qdisc", "del", "dev", SERVER_IF, "root"]),
    };
    topo::output_within(&mut cmd, None, Duration::from_secs(10)).map(|_| ())
}

/// Sequential pings from the client, each waiting for its echo (at most
/// 1 s + the target); RTTs in ns.
fn pings(topo: &Topology, samples: usize, target_ms: f64) -> Result<Vec<u64>> {
    topo.client.run(None, || {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.connect(SocketAddr::new(SERVER_IP.into(), ECHO_PORT))?;
        let wait = Duration::from_secs(1) + Duration::from_secs_f64(target_ms / 1000.0);
        socket.set_read_timeout(Some(wait))?;
        let mut rtts = Vec::with_capacity(samples);
        let mut buf = [0u8; 64];
        for seq in 0..samples as u64 {
            topo::check_interrupted()?;
            let msg = seq.to_le_bytes();
            let t = Instant::now();
            socket.send(&msg)?;
            // Skip late echoes of earlier pings.
            loop {
                match socket.recv(&mut buf) {
                    Ok(8) if buf[..8] == msg => {
                        rtts.push(t.elapsed().as_nanos() as u64);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
                if t.elapsed() > wait {
                    break;
                }
            }
        }
        Ok(rtts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_marker_lines() {
        let s = parse("FBDELAY round=2 target_ms=0.1 condition=netem p50_us=812.5 lost=1").unwrap();
        assert_eq!(s.round, 2);
        assert_eq!(s.target_ms, 0.1);
        assert_eq!(s.condition, "netem");
        assert_eq!(s.p50_us, 812.5);
        assert_eq!(s.lost, 1);
        assert!(parse("test delay ... ok").is_none());
        assert!(parse("FBDELAY round=x").is_none());
    }

    #[test]
    fn added_delay_is_against_the_same_rounds_baseline() {
        let line = |round, cond: &str, p50| Sample {
            round,
            target_ms: 5.0,
            condition: cond.into(),
            p50_us: p50,
            lost: 0,
        };
        let samples = vec![
            line(1, "none", 100.0),
            line(1, "faultbpf", 5_200.0),
            line(1, "netem", 5_100.0),
            line(2, "none", 300.0),
            line(2, "faultbpf", 5_300.0),
            line(2, "netem", 5_400.0),
        ];
        let acc = summarize(&samples);
        assert_eq!(acc.len(), 1);
        let f = acc[0].faultbpf.as_ref().unwrap();
        assert!((f.min - 5.0).abs() < 1e-9 && (f.max - 5.1).abs() < 1e-9);
        let n = acc[0].netem.as_ref().unwrap();
        assert!((n.min - 5.0).abs() < 1e-9 && (n.max - 5.1).abs() < 1e-9);
    }
}
