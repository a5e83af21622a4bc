//! Scenario 1, unmatched-traffic overhead: what having faultbpf loaded costs
//! traffic it does not touch, as the rule count grows, next to nftables with
//! the same rules as a linear chain and as a set. Per condition and round it
//! measures single-stream TCP throughput (iperf3, offloads on and off),
//! 64-byte request/response latency p50/p99, new connections per second and
//! small-UDP packets per second, and compares each with the no-injector
//! baseline of the same round. The goal: faultbpf >= 0.97 of baseline and
//! <= +1 µs p50 at every rule count, flat as rules grow.

use std::{
    collections::{BTreeSet, HashMap},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use faultbpf_common::INGRESS_PROGRAM;

use super::{
    Ctx,
    daemon::Daemon,
    injector::{self, Faultbpf, Launch, RuleSet},
    plot,
    report::{self, Goal, Section, Table, Verdict},
    stats::{self, Spread},
    topo::{self, Proc, SERVER_IF, SERVER_IP, Topology},
    traffic::{self, Servers},
};

const IPERF_PORT: &str = "5201";
/// The nftables table (netdev family) that holds every rule set; only the
/// `entry` base chain is added and removed per condition.
const TABLE: &str = "fbb";
/// Pause between arming a condition and measuring it.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Baseline,
    Faultbpf,
    NftLinear,
    NftSet,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "no injector",
            Kind::Faultbpf => "faultbpf",
            Kind::NftLinear => "nft linear chain",
            Kind::NftSet => "nft set",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Cond {
    kind: Kind,
    rules: usize,
}

/// The metrics, in column order.
const METRICS: [Metric; 6] = [
    Metric {
        name: "TCP throughput, offloads on",
        csv: "tcp_offload_on_bps",
        unit: "bit/s",
        delta: false,
    },
    Metric {
        name: "TCP throughput, offloads off",
        csv: "tcp_offload_off_bps",
        unit: "bit/s",
        delta: false,
    },
    Metric {
        name: "64 B RR p50",
        csv: "rr_p50_us",
        unit: "µs",
        delta: true,
    },
    Metric {
        name: "64 B RR p99",
        csv: "rr_p99_us",
        unit: "µs",
        delta: true,
    },
    Metric {
        name: "new conn/s",
        csv: "conn_per_s",
        unit: "conn/s",
        delta: false,
    },
    Metric {
        name: "small UDP pps",
        csv: "udp_pps",
        unit: "pps",
        delta: false,
    },
];

struct Metric {
    name: &'static str,
    csv: &'static str,
    unit: &'static str,
    /// Reported as a difference to baseline (latency) rather than a ratio.
    delta: bool,
}

type Sample = [f64; 6];

/// `1 rule`, `100 rules`.
fn rules(n: usize) -> String {
    if n == 1 {
        "1 rule".into()
    } else {
        format!("{n} rules")
    }
}

/// Scenario 1.
pub fn run(ctx: &Ctx) -> Result<Section> {
    let plan = &ctx.plan;
    let topo = Topology::new()?;
    let _servers = Servers::start(&topo.server, ctx.server_cpu())?;
    let _iperf = Proc::spawn(
        "iperf3 server",
        topo.server
            .exec("iperf3")
            .args(["-s", "-B", &SERVER_IP.to_string(), "-p", IPERF_PORT])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let offloads = topo.offload_summary();

    let load_times = load_nft(&topo, &plan.rule_counts)?;

    let mut conds = vec![Cond {
        kind: Kind::Baseline,
        rules: 0,
    }];
    for &n in &plan.rule_counts {
        if n == 0 {
            // The hooks alone: a faultbpf daemon with no rule (the CLI
            // cannot run without one), an empty nftables base chain.
            for kind in [Kind::Faultbpf, Kind::NftLinear] {
                conds.push(Cond { kind, rules: 0 });
            }
        } else {
            for kind in [Kind::Faultbpf, Kind::NftLinear, Kind::NftSet] {
                conds.push(Cond { kind, rules: n });
            }
        }
    }

    // Warm-up: the iperf3 server needs a moment, and first runs are slow.
    let warm_end = Instant::now() + Duration::from_secs(20);
    loop {
        match iperf(ctx, &topo) {
            Ok(_) => break,
            Err(err) if Instant::now() < warm_end => {
                eprintln!("bench: iperf3 not ready yet ({err:#}); retrying");
                topo::sleep(Duration::from_millis(300))?;
            }
            Err(err) => return Err(err).context("iperf3 never worked"),
        }
    }
    traffic::tcp_rr(&topo.client, ctx.client_cpu(), plan.probe_for)?;

    let started = Instant::now();
    let mut samples: HashMap<Cond, Vec<Sample>> = HashMap::new();
    let mut prog_ns: HashMap<Cond, Vec<f64>> = HashMap::new();
    let mut attach = BTreeSet::new();
    let mut matched = 0u64;
    let mut failures: Vec<String> = Vec::new();
    let mut rounds_done = 0;
    for round in 0..plan.rounds {
        if round >= 3 && started.elapsed() > plan.scenario_budget {
            eprintln!("bench: overhead: time budget reached after {round} rounds");
            break;
        }
        let t = Instant::now();
        let n = conds.len();
        for i in 0..n {
            // Rotate the order each round, keeping drift out of the ratios.
            let cond = conds[(i + round) % n];
            topo::check_interrupted()?;
            let armed = arm(ctx, &topo, cond)?;
            // Every condition, baseline included, gets the same pause after
            // arming: loading programs leaves deferred kernel work behind.
            topo::sleep(SETTLE)?;
            let sample = measure(ctx, &topo, &mut failures);
            topo::check_interrupted()?;
            let pid = match &armed {
                Armed::Faultbpf(fb) => Some(fb.proc.pid()),
                Armed::Daemon(d) => Some(d.pid()),
                _ => None,
            };
            if let Some(pid) = pid {
                match program_ns(ctx, &topo, pid) {
                    Ok(ns) => prog_ns.entry(cond).or_default().push(ns),
                    Err(err) => failures.push(format!("bpf_stats: {err:#}")),
                }
            }
            match armed {
                Armed::Faultbpf(fb) => {
                    let c = fb.stop()?;
                    attach.insert(c.attach);
                    matched += c.matched_packets;
                }
                Armed::Nft => disarm_nft(&topo)?,
                Armed::Daemon(d) => d.stop()?,
                Armed::Nothing => {}
            }
            samples.entry(cond).or_default().push(sample);
        }
        rounds_done += 1;
        eprintln!(
            "bench: overhead round {}/{} in {:.0}s",
            round + 1,
            plan.rounds,
            t.elapsed().as_secs_f64()
        );
    }
    analyze(
        ctx,
        &conds,
        &samples,
        Context {
            offloads,
            attach: attach.into_iter().collect::<Vec<_>>().join(", "),
            matched,
            failures,
            rounds_done,
            load_times,
            prog_ns,
        },
    )
}

/// ns per packet of faultbpf's ingress program during a short flood of
/// unmatched small UDP (`prog_stats`).
fn program_ns(ctx: &Ctx, topo: &Topology, pid: u32) -> Result<f64> {
    let per = super::prog_stats::ns_per_run(pid, 1000, || {
        traffic::udp_flood(&topo.client, ctx.client_cpu(), ctx.plan.probe_for).map(drop)
    })?;
    per.get(INGRESS_PROGRAM)
        .copied()
        .with_context(|| format!("{INGRESS_PROGRAM} did not run during the flood"))
}

/// What `run` learnt besides the samples.
struct Context {
    offloads: String,
    attach: String,
    matched: u64,
    failures: Vec<String>,
    rounds_done: usize,
    load_times: Vec<(String, Duration)>,
    /// faultbpf's ingress program, ns per unmatched packet, per round.
    prog_ns: HashMap<Cond, Vec<f64>>,
}

/// Loads every rule set into table `netdev fbb` once, unhooked: a linear
/// chain `lin_N` and a set chain `set_N` per count. Only a base chain that
/// jumps to one of them is added per condition, so a round costs no reload
/// (a 60 000-element set takes nftables ~20 s to load: insertion is O(n)).
fn load_nft(topo: &Topology, counts: &[usize]) -> Result<Vec<(String, Duration)>> {
    let mut times = Vec::new();
    let mut script = format!("add table netdev {TABLE}\n");
    for &n in counts.iter().filter(|&&n| n > 0) {
        script.push_str(&format!("table netdev {TABLE} {{\n chain lin_{n} {{\n"));
        script.push_str(&RuleSet { n }.nft_linear_rules());
        script.push_str(" }\n}\n");
    }
    eprintln!("bench: loading the nftables linear chains ({counts:?} rules)");
    let t = Instant::now();
    injector::nft(&topo.server, &script, Duration::from_secs(300))?;
    times.push(("all linear chains".to_owned(), t.elapsed()));
    for &n in counts.iter().filter(|&&n| n > 0) {
        let mut script = format!("table netdev {TABLE} {{\n");
        let mut rules = String::new();
        let set = RuleSet { n };
        for (side, elements) in set.nft_set_elements() {
            if let Some(elements) = elements {
                script.push_str(&format!(
                    " set {side}_{n} {{ type inet_service; elements = {{ {elements} }} }}\n"
                ));
                rules.push_str(&format!("  udp {side} @{side}_{n} drop\n"));
            }
        }
        script.push_str(&format!(" chain set_{n} {{\n{rules} }}\n}}\n"));
        eprintln!("bench: loading the nftables set of {n} elements");
        let t = Instant::now();
        injector::nft(&topo.server, &script, Duration::from_secs(300))?;
        times.push((format!("set of {n}"), t.elapsed()));
    }
    Ok(times)
}

enum Armed {
    Nothing,
    Faultbpf(Box<Faultbpf>),
    Daemon(Box<Daemon>),
    Nft,
}

fn arm(ctx: &Ctx, topo: &Topology, cond: Cond) -> Result<Armed> {
    match cond.kind {
        Kind::Baseline => Ok(Armed::Nothing),
        Kind::Faultbpf if cond.rules == 0 => Ok(Armed::Daemon(Box::new(Daemon::start(
            &ctx.bin,
            &topo.server,
            SERVER_IF,
        )?))),
        Kind::Faultbpf => {
            let mut args: Vec<String> = vec!["blackhole".into()];
            args.extend(RuleSet { n: cond.rules }.faultbpf_args());
            args.extend(["--iface".into(), SERVER_IF.into()]);
            let mut fb = Faultbpf::start(&ctx.bin, &topo.server, &args, Launch::IpNetnsExec)?;
            fb.wait_active(Duration::from_secs(60))?;
            Ok(Armed::Faultbpf(Box::new(fb)))
        }
        Kind::NftLinear | Kind::NftSet => {
            let mut script = format!(
                "add chain netdev {TABLE} entry {{ type filter hook ingress device \"{SERVER_IF}\" \
                 priority 0; policy accept; }}\n"
            );
            if cond.rules > 0 {
                let target = if cond.kind == Kind::NftLinear {
                    "lin"
                } else {
                    "set"
                };
                script.push_str(&format!(
                    "add rule netdev {TABLE} entry jump {target}_{}\n",
                    cond.rules
                ));
            }
            injector::nft(&topo.server, &script, Duration::from_secs(30))?;
            Ok(Armed::Nft)
        }
    }
}

fn disarm_nft(topo: &Topology) -> Result<()> {
    injector::nft(
        &topo.server,
        &format!("flush chain netdev {TABLE} entry\ndelete chain netdev {TABLE} entry\n"),
        Duration::from_secs(30),
    )
    .map(drop)
}

/// Restores offloads when a measurement with them off ends, however it ends.
struct OffloadsOff<'a>(&'a Topology);

impl Drop for OffloadsOff<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.0.set_offloads(true) {
            eprintln!("bench: could not turn offloads back on: {err:#}");
        }
    }
}

/// One sample of every metric; a metric that failed is NaN (and noted).
fn measure(ctx: &Ctx, topo: &Topology, failures: &mut Vec<String>) -> Sample {
    let mut note = |what: &str, r: Result<f64>| {
        r.unwrap_or_else(|err| {
            eprintln!("bench: {what} failed: {err:#}");
            failures.push(format!("{what}: {err:#}"));
            f64::NAN
        })
    };
    let on = note("iperf3 (offloads on)", iperf(ctx, topo));
    let off = {
        let r = topo.set_offloads(false).and_then(|()| {
            let _restore = OffloadsOff(topo);
            iperf(ctx, topo)
        });
        note("iperf3 (offloads off)", r)
    };
    let (p50, p99) = match traffic::tcp_rr(&topo.client, ctx.client_cpu(), ctx.plan.probe_for) {
        Ok(l) => (l.p50_us, l.p99_us),
        Err(err) => {
            let v = note("request/response", Err(err));
            (v, v)
        }
    };
    let crr = note(
        "connection rate",
        traffic::tcp_crr(&topo.client, ctx.client_cpu(), ctx.plan.probe_for),
    );
    let pps = note("small UDP", udp_pps(ctx, topo));
    [on, off, p50, p99, crr, pps]
}

/// Single-stream TCP for `iperf_secs`, client pinned to the client CPU and
/// server to the server CPU; returns received bits per second.
fn iperf(ctx: &Ctx, topo: &Topology) -> Result<f64> {
    let mut cmd = topo.client.exec("iperf3");
    cmd.args(["-c", &SERVER_IP.to_string(), "-p", IPERF_PORT, "-J"])
        .args(["-t", &ctx.plan.iperf_secs.to_string()]);
    if ctx.cpus >= 2 {
        cmd.args(["-A", &format!("{},{}", ctx.client_cpu(), ctx.server_cpu())]);
    }
    let json = topo::output_within(
        &mut cmd,
        None,
        Duration::from_secs(u64::from(ctx.plan.iperf_secs) + 30),
    )?;
    let v: serde_json::Value = serde_json::from_str(&json).context("iperf3 -J output")?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3: {err}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second in iperf3's JSON")
}

/// 60-byte UDP frames from one sender core: datagrams that reached the
/// server's UDP layer per second.
fn udp_pps(ctx: &Ctx, topo: &Topology) -> Result<f64> {
    let before = traffic::udp_arrived(&topo.server)?;
    let (sent, took) = traffic::udp_flood(&topo.client, ctx.client_cpu(), ctx.plan.probe_for)?;
    topo::sleep(Duration::from_millis(20))?;
    let arrived = traffic::udp_arrived(&topo.server)? - before;
    if sent > 0 && (arrived as f64) < 0.5 * sent as f64 {
        eprintln!("bench: only {arrived} of {sent} small UDP datagrams arrived");
    }
    Ok(arrived as f64 / took.as_secs_f64())
}

fn analyze(
    ctx: &Ctx,
    conds: &[Cond],
    samples: &HashMap<Cond, Vec<Sample>>,
    info: Context,
) -> Result<Section> {
    let base_cond = Cond {
        kind: Kind::Baseline,
        rules: 0,
    };
    let base = samples.get(&base_cond).context("no baseline samples")?;
    // Per condition and metric: the spread of per-round ratios (or deltas)
    // and of absolute values.
    let rel = |cond: Cond, m: usize| -> Option<Spread> {
        let v = samples.get(&cond)?;
        let per_round: Vec<f64> = v
            .iter()
            .zip(base)
            .map(|(s, b)| {
                if METRICS[m].delta {
                    s[m] - b[m]
                } else {
                    s[m] / b[m]
                }
            })
            .collect();
        stats::spread(&per_round)
    };
    let abs = |cond: Cond, m: usize| -> Option<Spread> {
        let v: Vec<f64> = samples.get(&cond)?.iter().map(|s| s[m]).collect();
        stats::spread(&v)
    };

    let mut section = Section::new("Unmatched-traffic overhead vs rule count");
    section.notes.push(format!(
        "Traffic the rules do not match, through the server's veth with faultbpf or nftables \
         on it, compared with no injector in the same round ({} rounds). faultbpf: `faultbpf \
         blackhole --iface {SERVER_IF}` with the rule set (both directions, attach: {}); \
         nftables: a netdev ingress base chain on the same veth that jumps to the rule set \
         (the chain and sets are loaded once; only the jump is added per round). Offloads of \
         the server veth when on: {}; \"off\" turns TSO, GSO and GRO off at both ends.",
        info.rounds_done,
        if info.attach.is_empty() {
            "-"
        } else {
            &info.attach
        },
        info.offloads
    ));
    section
        .notes
        .push(format!("How N rules were formed: {}", RuleSet::HOW));
    section.notes.push(format!(
        "Measures, after a {SETTLE:?} pause once the condition is armed: iperf3 single stream \
         for {} s (offloads on, then off); 64-byte TCP \
         request/response on one connection for {:?} (p50/p99, shown as µs added to the \
         baseline of the same round); connect + 64-byte request/answer + close (RST) for {:?}; \
         18-byte UDP datagrams (60-byte frames) from one sender core for {:?}, counted where \
         they reach the server's UDP layer. faultbpf matched {} packets over all runs (must \
         be 0: the traffic is unmatched).",
        ctx.plan.iperf_secs,
        ctx.plan.probe_for,
        ctx.plan.probe_for,
        ctx.plan.probe_for,
        info.matched
    ));
    if ctx.plan.rule_counts.contains(&0) {
        section.notes.push(
            "0 rules: the hooks alone. faultbpf: `faultbpf daemon --iface fbb-s` with no rule \
             (its programs attached, no rule loaded; the CLI cannot run without a rule); \
             nftables: an empty base chain."
                .into(),
        );
    }
    let loads: Vec<String> = info
        .load_times
        .iter()
        .map(|(what, d)| format!("{what} {:.2} s", d.as_secs_f64()))
        .collect();
    section.notes.push(format!(
        "nftables load times (once, not part of any measurement): {}.",
        loads.join(", ")
    ));
    if !info.failures.is_empty() {
        section.notes.push(format!(
            "{} measurements failed and are left out: {}",
            info.failures.len(),
            info.failures.join("; ")
        ));
    }

    let mut headers = vec!["Injector", "Rules"];
    headers.extend(METRICS.iter().map(|m| m.name));
    let mut ratios = Table::new(
        "Ratio to the no-injector baseline of the same round (latency: µs added), median \
         [min, max] over rounds:",
        &headers,
    );
    let mut absolute = Table::new("Absolute medians over rounds:", &headers);
    let mut summary_csv = Table::new(
        "",
        &[
            "injector",
            "rules",
            "metric",
            "median",
            "min",
            "max",
            "abs_median",
            "unit",
        ],
    );
    let mut rounds_csv = {
        let mut h = vec!["round", "injector", "rules"];
        h.extend(METRICS.iter().map(|m| m.csv));
        Table::new("", &h)
    };
    for &cond in conds {
        let label = cond.kind.label().to_owned();
        let rules = if cond.kind == Kind::Baseline {
            "-".to_owned()
        } else {
            cond.rules.to_string()
        };
        let label = match (cond.kind, cond.rules) {
            (Kind::NftLinear, 0) => "nft empty chain".to_owned(),
            (Kind::Faultbpf, 0) => "faultbpf daemon, no rule".to_owned(),
            _ => label,
        };
        let mut arow = vec![label.clone(), rules.clone()];
        let mut rrow = vec![label.clone(), rules.clone()];
        for (m, metric) in METRICS.iter().enumerate() {
            let a = abs(cond, m);
            arow.push(a.map_or("-".into(), |a| {
                if metric.unit == "µs" {
                    format!("{:.1} µs", a.median)
                } else {
                    report::si(a.median, metric.unit)
                }
            }));
            if cond.kind != Kind::Baseline {
                let r = rel(cond, m);
                rrow.push(if metric.delta {
                    report::delta_cell(r)
                } else {
                    report::ratio_cell(r)
                });
                if let Some(r) = r {
                    summary_csv.row(vec![
                        label.clone(),
                        cond.rules.to_string(),
                        metric.csv.into(),
                        format!("{:.4}", r.median),
                        format!("{:.4}", r.min),
                        format!("{:.4}", r.max),
                        a.map_or("".into(), |a| format!("{:.1}", a.median)),
                        if metric.delta { "delta_us" } else { "ratio" }.into(),
                    ]);
                }
            }
        }
        absolute.row(arow);
        if cond.kind != Kind::Baseline {
            ratios.row(rrow);
        }
        for (round, s) in samples.get(&cond).into_iter().flatten().enumerate() {
            let mut row = vec![(round + 1).to_string(), label.clone(), rules.clone()];
            row.extend(s.iter().map(|v| format!("{v:.1}")));
            rounds_csv.row(row);
        }
    }
    section.tables.push(ratios);
    section.tables.push(absolute);
    section.csvs.push(("overhead.csv".into(), summary_csv));
    section
        .csvs
        .push(("overhead-rounds.csv".into(), rounds_csv));

    // The plot: TCP throughput ratio vs rules, one panel per offload state.
    let series = |kind: Kind, m: usize| -> Vec<(usize, Spread)> {
        conds
            .iter()
            .filter(|c| c.kind == kind && c.rules > 0)
            .filter_map(|&c| Some((c.rules, rel(c, m)?)))
            .collect()
    };
    let panels: Vec<plot::Panel> = [(0, "offloads on"), (1, "offloads off")]
        .into_iter()
        .map(|(m, title)| plot::Panel {
            title: format!("Single-stream TCP, {title}"),
            series: [Kind::Faultbpf, Kind::NftLinear, Kind::NftSet]
                .into_iter()
                .map(|k| plot::Series {
                    name: k.label().into(),
                    points: series(k, m),
                })
                .collect(),
        })
        .collect();
    let png = "throughput-vs-rules.png";
    match plot::throughput_vs_rules(&ctx.out.join(png), &panels) {
        Ok(()) => section.images.push(png.into()),
        Err(err) => section
            .notes
            .push(format!("The plot could not be drawn: {err:#}")),
    }

    // Goals.
    let fb: Vec<Cond> = conds
        .iter()
        .copied()
        .filter(|c| c.kind == Kind::Faultbpf)
        .collect();
    let worst = |m: usize, lowest: bool| -> Option<(usize, Spread)> {
        fb.iter()
            .filter_map(|&c| Some((c.rules, rel(c, m)?)))
            .reduce(|a, b| {
                let b_worse = if lowest {
                    b.1.median < a.1.median
                } else {
                    b.1.median > a.1.median
                };
                if b_worse { b } else { a }
            })
    };
    for (m, what) in [(0, "offloads on"), (1, "offloads off")] {
        section.goals.push(match worst(m, true) {
            Some((n, s)) => Goal::new(
                &format!("faultbpf TCP throughput, {what}, every rule count"),
                ">= 0.97 x baseline",
                format!("lowest median {:.3} (at {})", s.median, rules(n)),
                Verdict::check(s.median >= 0.97),
            ),
            None => Goal::na("faultbpf TCP throughput", ">= 0.97", "no data"),
        });
    }
    section.goals.push(match worst(2, false) {
        Some((n, s)) => Goal::new(
            "faultbpf 64 B RR p50, every rule count",
            "<= +1 µs",
            format!("highest median {:+.2} µs (at {})", s.median, rules(n)),
            Verdict::check(s.median <= 1.0),
        ),
        None => Goal::na("faultbpf RR p50", "<= +1 µs", "no data"),
    });
    let first = fb
        .iter()
        .find(|c| c.rules > 0)
        .and_then(|&c| Some((c.rules, rel(c, 0)?)));
    let last = fb.last().and_then(|&c| Some((c.rules, rel(c, 0)?)));
    if let (Some((n1, a)), Some((n2, b))) = (first, last) {
        section.goals.push(Goal::new(
            "faultbpf flat as rules grow (TCP, offloads on)",
            "within 0.03",
            format!("{:.3} at {n1} -> {:.3} at {n2} rules", a.median, b.median),
            Verdict::check((a.median - b.median).abs() <= 0.03),
        ));
    }
    program_cost(&mut section, conds, &info.prog_ns);
    // What one condition measured twice differs by: the resolution of every
    // ratio above on this machine.
    let base_tcp: Vec<f64> = base.iter().map(|s| s[0]).collect();
    if let Some(sp) = stats::spread(&base_tcp) {
        section.goals.push(Goal::new(
            "noise: no-injector TCP throughput (offloads on), round to round",
            "(reference)",
            format!(
                "{:.2} to {:.2} Gbit/s ({:+.0} % / {:+.0} % of the median)",
                sp.min / 1e9,
                sp.max / 1e9,
                100.0 * (sp.min / sp.median - 1.0),
                100.0 * (sp.max / sp.median - 1.0)
            ),
            Verdict::Info,
        ));
    }
    for (m, what) in [(4, "conn/s"), (5, "small UDP pps")] {
        if let Some((n, s)) = worst(m, true) {
            section.goals.push(Goal::new(
                &format!("faultbpf {what}, every rule count"),
                "(no goal)",
                format!("lowest median {:.3} (at {})", s.median, rules(n)),
                Verdict::Info,
            ));
        }
    }
    for kind in [Kind::NftLinear, Kind::NftSet] {
        let at = conds
            .iter()
            .copied()
            .filter(|c| c.kind == kind && c.rules > 0 && c.rules <= 10_000)
            .max_by_key(|c| c.rules);
        if let Some(c) = at
            && let (Some(t), Some(l)) = (rel(c, 0), rel(c, 2))
        {
            section.goals.push(Goal::new(
                &format!("{} at {} rules", kind.label(), c.rules),
                "(reference)",
                format!("TCP {:.3} x baseline, p50 {:+.1} µs", t.median, l.median),
                Verdict::Info,
            ));
        }
    }
    Ok(section)
}

/// The table and goal of faultbpf's own per-packet time (`prog_stats`).
fn program_cost(section: &mut Section, conds: &[Cond], prog_ns: &HashMap<Cond, Vec<f64>>) {
    let mut table = Table::new(
        &format!(
            "faultbpf's ingress program ({INGRESS_PROGRAM}) per unmatched packet, from the \
             kernel's BPF statistics during a separate flood of small UDP, ns, median [min, \
             max] over rounds. It includes the statistics' own two clock reads per run (tens \
             of ns here), the same at every rule count:"
        ),
        &["Rules", "ns per packet"],
    );
    let mut medians = Vec::new();
    for c in conds.iter().filter(|c| c.kind == Kind::Faultbpf) {
        let Some(s) = prog_ns.get(c).and_then(|v| stats::spread(v)) else {
            continue;
        };
        table.row(vec![
            c.rules.to_string(),
            format!("{:.0} [{:.0}, {:.0}]", s.median, s.min, s.max),
        ]);
        medians.push((c.rules, s.median));
    }
    if medians.is_empty() {
        section.goals.push(Goal::na(
            "faultbpf ns per unmatched packet, flat as rules grow",
            "(reference)",
            "n/a (no BPF statistics)",
        ));
        return;
    }
    let lo = medians.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
    let hi = medians.iter().map(|m| m.1).fold(0.0, f64::max);
    section.goals.push(Goal::new(
        "faultbpf ns per unmatched packet (ingress program), flat as rules grow",
        "spread <= 15 ns or 15 %",
        medians
            .iter()
            .map(|(n, m)| format!("{m:.0} ns at {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        Verdict::check(hi - lo <= (0.15 * lo).max(15.0)),
    ));
    section.tables.push(table);
}
