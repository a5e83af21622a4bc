//! Scenario 6, faults: the rows issue 15 asks for its three kernel faults
//! (`dns`, `duplicate`, `throttle`), each measured against what it imitates
//! or replaces, in the same run and interleaved round by round:
//!
//! - **DNS**: answers per second from a bounded query loop (a fixed number
//!   of queries outstanding, counted over a fixed window) when dnsmasq
//!   answers, and when `faultbpf dns --rcode nxdomain` answers every query
//!   from the kernel before dnsmasq could see it.
//! - **Cost per matched packet**: faultbpf's tc ingress program by the
//!   kernel's BPF statistics (`prog_stats`) during a flood of DNS queries
//!   to a plain socket, with a `blackhole` rule (the reference), with
//!   `duplicate --pct 100`, `throttle --rate 10mbit` and `dns --rcode
//!   nxdomain` matching every packet, and with a rule that matches none.
//! - **Throttle accuracy**: iperf3 TCP through `faultbpf throttle --rate
//!   10mbit`, through tc's `tbf rate 10mbit` on the sender's veth (the
//!   control of `tests/tests/throttle.rs`, with its parameters), and with
//!   no limit.
//!
//! Only ratios are judged: achieved/target, faultbpf/tbf, x/blackhole.

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd as _,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use faultbpf_common::INGRESS_PROGRAM;

use super::{
    Ctx,
    injector::{Faultbpf, FinalCounters, Launch},
    prog_stats,
    report::{Goal, Section, Table, Verdict, ratio_cell, si, value_cell},
    stats::over,
    topo::{self, CLIENT_IF, CLIENT_IP, Netns, Proc, SERVER_IF, SERVER_IP, Topology},
    traffic,
};

/// dnsmasq's port, and the one the DNS rows' rule takes.
const DNS_PORT: u16 = 53;
/// The cost floods' destination: a plain socket that is never read, so
/// nothing answers and nothing replies "port unreachable".
const COST_PORT: u16 = 5353;
/// A port no packet of the cost flood goes to (the unmatched rule's).
const UNMATCHED_PORT: u16 = 5354;
const IPERF_PORT: u16 = 5201;
/// The name every query asks for; dnsmasq answers it with `GOOD_ADDR`.
const NAME: &str = "q.good.test";
const GOOD_ADDR: &str = "10.200.0.77";
/// Queries in flight in the DNS loop.
const OUTSTANDING: usize = 32;
/// With nothing received for this long, the queries in flight count as
/// lost and the loop sends new ones.
const LOST_AFTER: Duration = Duration::from_millis(50);
/// The rate both limiters get, as tc writes it and in bit/s.
const RATE: &str = "10mbit";
const RATE_BPS: f64 = 10e6;
/// tc's control, as `tests/tests/throttle.rs` runs it.
const TBF: [&str; 6] = ["rate", RATE, "burst", "32kb", "latency", "100ms"];
/// Ratios `tests/tests/throttle.rs` accepts: 8.5-10.5 Mbit/s through
/// 10mbit, and 0.85-1.1 of tbf's rate.
const ACHIEVED_OK: (f64, f64) = (0.85, 1.05);
const VS_TBF_OK: (f64, f64) = (0.85, 1.1);
/// A cost flood counts only if the program ran this often.
const MIN_RUNS: u64 = 1000;

/// The conditions of the DNS rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dns {
    Resolver,
    Forged,
}

impl Dns {
    const ALL: [Self; 2] = [Self::Resolver, Self::Forged];

    fn label(self) -> &'static str {
        match self {
            Self::Resolver => "dnsmasq answers",
            Self::Forged => "faultbpf dns --rcode nxdomain answers",
        }
    }

    /// The response code every answer must carry.
    fn rcode(self) -> u8 {
        match self {
            Self::Resolver => 0,
            Self::Forged => 3,
        }
    }
}

/// The conditions of the cost rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cost {
    Blackhole,
    Duplicate,
    Throttle,
    Dns,
    Unmatched,
}

impl Cost {
    const ALL: [Self; 5] = [
        Self::Blackhole,
        Self::Duplicate,
        Self::Throttle,
        Self::Dns,
        Self::Unmatched,
    ];

    /// faultbpf's fault and its own arguments.
    fn fault(self) -> Vec<String> {
        let port = COST_PORT.to_string();
        let other = UNMATCHED_PORT.to_string();
        let v: Vec<&str> = match self {
            Self::Blackhole => vec!["blackhole", "--dport", &port],
            Self::Duplicate => vec!["duplicate", "--pct", "100", "--dport", &port],
            Self::Throttle => vec!["throttle", "--rate", RATE, "--dport", &port],
            Self::Dns => vec!["dns", "--rcode", "nxdomain", "--dport", &port],
            Self::Unmatched => vec!["blackhole", "--dport", &other],
        };
        v.into_iter().map(String::from).collect()
    }

    fn label(self) -> String {
        self.fault().join(" ")
    }

    fn args(self) -> Vec<String> {
        let mut args = self.fault();
        args.extend(
            [
                "--proto",
                "udp",
                "--direction",
                "ingress",
                "--iface",
                SERVER_IF,
            ]
            .map(String::from),
        );
        args
    }
}

/// The conditions of the throttle rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Free,
    Tbf,
    Throttle,
}

impl Limit {
    const ALL: [Self; 3] = [Self::Free, Self::Tbf, Self::Throttle];

    fn label(self) -> String {
        match self {
            Self::Free => "no limit".into(),
            Self::Tbf => format!("tc qdisc ... root tbf {}", TBF.join(" ")),
            Self::Throttle => format!("faultbpf throttle --port {IPERF_PORT} --rate {RATE}"),
        }
    }
}

/// A DNS query for `NAME` with id `id`, recursion desired, no EDNS0.
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in NAME.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The response code of a DNS answer, None if it is not one.
fn rcode(answer: &[u8]) -> Option<u8> {
    (answer.len() >= 12 && answer[2] & 0x80 != 0).then_some(answer[3] & 0x0f)
}

/// What one window of the query loop saw.
#[derive(Debug, Clone, Copy, Default)]
struct Answers {
    sent: u64,
    /// Answers carrying the expected response code.
    right: u64,
    /// Answers with another code, and datagrams that are no answer.
    wrong: u64,
    /// Queries given up after `LOST_AFTER` of silence.
    lost: u64,
    secs: f64,
}

impl Answers {
    fn per_sec(&self) -> f64 {
        self.right as f64 / self.secs
    }
}

/// `OUTSTANDING` queries in flight to `SERVER_IP:port` from the client
/// namespace for `window`: each answer is counted and replaced by a new
/// query. Bounded by the window and by a cap on queries sent.
fn query_loop(ns: &Netns, cpu: usize, port: u16, window: Duration, want: u8) -> Result<Answers> {
    ns.run(Some(cpu), || {
        let sock = UdpSocket::bind(SocketAddr::new(CLIENT_IP.into(), 0))?;
        sock.connect(SocketAddr::new(SERVER_IP.into(), port))?;
        sock.set_nonblocking(true)?;
        traffic::force_rcvbuf(sock.as_fd(), 4 << 20);
        let mut out = Answers::default();
        let mut buf = [0u8; 1500];
        let mut id = 0u16;
        let mut in_flight = 0usize;
        let start = Instant::now();
        let end = start + window;
        while out.sent < 50_000_000 {
            while in_flight < OUTSTANDING {
                match sock.send(&query(id)) {
                    Ok(_) => {
                        id = id.wrapping_add(1);
                        in_flight += 1;
                        out.sent += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // An earlier query found no listener (ICMP port
                    // unreachable): the resolver is not up yet.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e).context("sending a DNS query"),
                }
            }
            let now = Instant::now();
            if now >= end {
                break;
            }
            let wait = (end - now).min(LOST_AFTER).as_millis().max(1) as i32;
            if !traffic::readable(sock.as_fd(), wait) {
                if Instant::now() < end {
                    out.lost += in_flight as u64;
                    in_flight = 0;
                }
                continue;
            }
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if rcode(&buf[..n]) == Some(want) {
                            out.right += 1;
                        } else {
                            out.wrong += 1;
                        }
                        in_flight = in_flight.saturating_sub(1);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e).context("receiving a DNS answer"),
                }
            }
        }
        out.secs = start.elapsed().as_secs_f64();
        Ok(out)
    })
}

/// DNS queries to `COST_PORT` as fast as one core sends them, for `dur`.
fn query_flood(ns: &Netns, cpu: usize, dur: Duration) -> Result<u64> {
    ns.run(Some(cpu), || {
        let sock = UdpSocket::bind(SocketAddr::new(CLIENT_IP.into(), 0))?;
        sock.connect(SocketAddr::new(SERVER_IP.into(), COST_PORT))?;
        let q = query(1);
        let mut sent = 0u64;
        let start = Instant::now();
        while sent < 100_000_000 {
            if sent.is_multiple_of(64) && start.elapsed() >= dur {
                break;
            }
            // ENOBUFS, ECONNREFUSED and the like: try again.
            if sock.send(&q).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })
}

/// dnsmasq on `SERVER_IP:53`, pinned to `cpu`, answering `good.test` and
/// every name under it from its configuration (no upstream, no cache);
/// returns once it answers.
fn dnsmasq(ctx: &Ctx, topo: &Topology) -> Result<Proc> {
    let mut p = Proc::spawn(
        "dnsmasq",
        topo.server
            .exec("taskset")
            .args(["-c", &ctx.server_cpu().to_string(), "dnsmasq"])
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address",
                &SERVER_IP.to_string(),
                "--except-interface=lo",
                "--port=53",
                "--user=root",
                "--pid-file",
                "--log-facility=-",
                &format!("--address=/good.test/{GOOD_ADDR}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        topo::check_interrupted()?;
        if let Some(status) = p.child.try_wait()? {
            bail!("dnsmasq exited ({status}) at start");
        }
        let a = query_loop(
            &topo.client,
            ctx.client_cpu(),
            DNS_PORT,
            Duration::from_millis(100),
            Dns::Resolver.rcode(),
        )?;
        if a.right > 0 {
            return Ok(p);
        }
        if Instant::now() >= end {
            p.stop(libc::SIGTERM, Duration::from_secs(2))?;
            bail!("dnsmasq did not answer within 10 s: {a:?}");
        }
        topo::sleep(Duration::from_millis(100))?;
    }
}

/// `faultbpf ARGS` in the server namespace, once active.
fn faultbpf(ctx: &Ctx, topo: &Topology, args: &[String]) -> Result<Faultbpf> {
    let mut fb = Faultbpf::start(&ctx.bin, &topo.server, args, Launch::IpNetnsExec)?;
    fb.wait_active(Duration::from_secs(60))?;
    Ok(fb)
}

/// One DNS window under `cond`; with faultbpf, also its final counters.
fn dns_round(ctx: &Ctx, topo: &Topology, cond: Dns) -> Result<(Answers, Option<FinalCounters>)> {
    let fb = match cond {
        Dns::Resolver => None,
        Dns::Forged => Some(faultbpf(
            ctx,
            topo,
            &[
                "dns",
                "--rcode",
                "nxdomain",
                "--port",
                &DNS_PORT.to_string(),
                "--iface",
                SERVER_IF,
            ]
            .map(String::from),
        )?),
    };
    let a = query_loop(
        &topo.client,
        ctx.client_cpu(),
        DNS_PORT,
        ctx.plan.dns_window,
        cond.rcode(),
    )?;
    let counters = fb.map(Faultbpf::stop).transpose()?;
    if a.right == 0 {
        bail!(
            "{}: no answer with rcode {}: {a:?}",
            cond.label(),
            cond.rcode()
        );
    }
    Ok((a, counters))
}

/// One cost flood under `cond`: (ns of the ingress program in all, its
/// runs, packets the rule matched).
fn cost_round(ctx: &Ctx, topo: &Topology, cond: Cost) -> Result<(u64, u64, u64)> {
    let fb = faultbpf(ctx, topo, &cond.args())?;
    let totals = prog_stats::totals(fb.proc.pid(), || {
        query_flood(&topo.client, ctx.client_cpu(), ctx.plan.flood_window).map(drop)
    });
    let counters = fb.stop()?;
    let (ns, runs) = totals?
        .get(INGRESS_PROGRAM)
        .copied()
        .with_context(|| format!("{INGRESS_PROGRAM} is not among faultbpf's programs"))?;
    if runs < MIN_RUNS {
        bail!("{INGRESS_PROGRAM} ran only {runs} times during the flood");
    }
    Ok((ns, runs, counters.matched_packets))
}

/// tc's tbf on the client's veth while this lives.
struct TbfGuard<'a>(&'a Netns);

impl<'a> TbfGuard<'a> {
    fn add(ns: &'a Netns) -> Result<Self> {
        topo::output_within(
            ns.exec("tc")
                .args(["qdisc", "add", "dev", CLIENT_IF, "root", "tbf"])
                .args(TBF),
            None,
            Duration::from_secs(10),
        )?;
        Ok(Self(ns))
    }
}

impl Drop for TbfGuard<'_> {
    fn drop(&mut self) {
        if let Err(err) = topo::output_within(
            self.0
                .exec("tc")
                .args(["qdisc", "del", "dev", CLIENT_IF, "root"]),
            None,
            Duration::from_secs(10),
        ) {
            eprintln!("bench: could not remove tbf from {CLIENT_IF}: {err:#}");
        }
    }
}

/// iperf3 TCP client -> server for `secs` after `omit` seconds it ignores:
/// bits per second received.
fn iperf(ctx: &Ctx, topo: &Topology, secs: u32, omit: u32) -> Result<f64> {
    let mut cmd = topo.client.exec("iperf3");
    cmd.args(["-c", &SERVER_IP.to_string(), "-p", &IPERF_PORT.to_string()])
        .args(["-t", &secs.to_string(), "-O", &omit.to_string(), "-J"]);
    if ctx.cpus >= 2 {
        cmd.args(["-A", &format!("{},{}", ctx.client_cpu(), ctx.server_cpu())]);
    }
    let json = topo::output_within(
        &mut cmd,
        None,
        Duration::from_secs(u64::from(secs + omit) + 30),
    )?;
    let v: serde_json::Value = serde_json::from_str(&json).context("iperf3 -J output")?;
    if let Some(err) = v["error"].as_str() {
        bail!("iperf3: {err}");
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second in iperf3's JSON")
}

/// One iperf3 run under `cond`: bits per second.
fn limit_round(ctx: &Ctx, topo: &Topology, cond: Limit) -> Result<f64> {
    let (secs, omit) = (ctx.plan.throttle_secs, ctx.plan.throttle_omit);
    match cond {
        // Line rate needs only a glance, as in the test.
        Limit::Free => iperf(ctx, topo, 1, 0),
        Limit::Tbf => {
            let _tbf = TbfGuard::add(&topo.client)?;
            iperf(ctx, topo, secs, omit)
        }
        Limit::Throttle => {
            let fb = faultbpf(
                ctx,
                topo,
                &[
                    "throttle",
                    "--port",
                    &IPERF_PORT.to_string(),
                    "--rate",
                    RATE,
                    "--iface",
                    SERVER_IF,
                ]
                .map(String::from),
            )?;
            let bps = iperf(ctx, topo, secs, omit);
            let counters = fb.stop()?;
            let bps = bps?;
            if counters.acted_packets == 0 {
                eprintln!("bench: faults: throttle dropped nothing at {bps:.0} bit/s");
            }
            Ok(bps)
        }
    }
}

/// Everything the rounds measured.
#[derive(Default)]
struct Samples {
    /// Per round: answers per second per condition.
    dns: Vec<BTreeMap<&'static str, Answers>>,
    /// faultbpf's `acted` and `matched` over the forged windows.
    forged: (u64, u64),
    /// Per round: (ns, runs, matched) per condition.
    cost: Vec<BTreeMap<Cost, (u64, u64, u64)>>,
    /// Per round: bit/s per condition (by label).
    limit: Vec<BTreeMap<&'static str, f64>>,
    failures: Vec<String>,
}

fn limit_key(cond: Limit) -> &'static str {
    match cond {
        Limit::Free => "free",
        Limit::Tbf => "tbf",
        Limit::Throttle => "throttle",
    }
}

fn dns_key(cond: Dns) -> &'static str {
    match cond {
        Dns::Resolver => "resolver",
        Dns::Forged => "forged",
    }
}

/// Scenario 6.
pub fn run(ctx: &Ctx) -> Result<Section> {
    let topo = Topology::new()?;
    let _dnsmasq = dnsmasq(ctx, &topo)?;
    // The cost flood's destination: bound, never read.
    let _sink = topo.server.run(None, || {
        let s = UdpSocket::bind(SocketAddr::new(SERVER_IP.into(), COST_PORT))?;
        traffic::force_rcvbuf(s.as_fd(), 1 << 16);
        Ok(s)
    })?;
    let _iperf = Proc::spawn(
        "iperf3 server",
        topo.server
            .exec("iperf3")
            .args(["-s", "-B", &SERVER_IP.to_string()])
            .args(["-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    // The iperf3 server needs a moment; the first run also warms up.
    let warm_end = Instant::now() + Duration::from_secs(20);
    loop {
        match iperf(ctx, &topo, 1, 0) {
            Ok(_) => break,
            Err(err) if Instant::now() < warm_end => {
                eprintln!("bench: iperf3 not ready yet ({err:#}); retrying");
                topo::sleep(Duration::from_millis(300))?;
            }
            Err(err) => return Err(err).context("iperf3 never worked"),
        }
    }

    let started = Instant::now();
    let mut s = Samples::default();
    let mut rounds_done = 0;
    for round in 0..ctx.plan.rounds {
        if round >= 3 && started.elapsed() > ctx.plan.scenario_budget {
            eprintln!("bench: faults: time budget reached after {round} rounds");
            break;
        }
        let mut dns = BTreeMap::new();
        for i in 0..Dns::ALL.len() {
            let cond = Dns::ALL[(i + round) % Dns::ALL.len()];
            topo::check_interrupted()?;
            match dns_round(ctx, &topo, cond) {
                Ok((a, counters)) => {
                    if let Some(c) = counters {
                        s.forged.0 += c.acted_packets;
                        s.forged.1 += c.matched_packets;
                    }
                    dns.insert(dns_key(cond), a);
                }
                Err(err) => s
                    .failures
                    .push(format!("round {round}, {}: {err:#}", cond.label())),
            }
        }
        s.dns.push(dns);
        let mut cost = BTreeMap::new();
        for i in 0..Cost::ALL.len() {
            let cond = Cost::ALL[(i + round) % Cost::ALL.len()];
            topo::check_interrupted()?;
            match cost_round(ctx, &topo, cond) {
                Ok(v) => {
                    cost.insert(cond, v);
                }
                Err(err) => s
                    .failures
                    .push(format!("round {round}, {}: {err:#}", cond.label())),
            }
        }
        s.cost.push(cost);
        let mut limit = BTreeMap::new();
        for i in 0..Limit::ALL.len() {
            let cond = Limit::ALL[(i + round) % Limit::ALL.len()];
            topo::check_interrupted()?;
            match limit_round(ctx, &topo, cond) {
                Ok(bps) => {
                    limit.insert(limit_key(cond), bps);
                }
                Err(err) => s
                    .failures
                    .push(format!("round {round}, {}: {err:#}", cond.label())),
            }
        }
        s.limit.push(limit);
        rounds_done += 1;
        eprintln!(
            "bench: faults: round {} done ({:.0}s)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(section(ctx, &s, rounds_done))
}

/// ns per packet that entered: the runs of `duplicate`'s clones (which
/// cross the program again) are charged to the packet they copy.
fn ns_per_packet(cond: Cost, (ns, runs, matched): (u64, u64, u64)) -> f64 {
    let packets = match cond {
        Cost::Duplicate if matched > 0 && matched <= runs => matched,
        _ => runs,
    };
    ns as f64 / packets as f64
}

fn section(ctx: &Ctx, s: &Samples, rounds_done: usize) -> Section {
    let mut section = Section::new("Faults of issue 15: dns, duplicate, throttle");
    section.notes.push(format!(
        "{rounds_done} rounds; each round runs the three parts below in turn, the conditions of \
         each part in an order that rotates by round. faultbpf attaches to the server's veth \
         ({SERVER_IF}) and is started fresh (`ip netns exec`) for every measurement."
    ));

    // DNS.
    let ratio = |r: &BTreeMap<&str, Answers>| {
        Some(r.get("forged")?.per_sec() / r.get("resolver")?.per_sec())
    };
    section.notes.push(format!(
        "**DNS.** dnsmasq (`--no-resolv --no-hosts --address=/good.test/{GOOD_ADDR}`, port 53, \
         pinned to CPU {}) in the server namespace; in the client namespace one thread (CPU {}) \
         keeps {OUTSTANDING} queries for `{NAME}` in flight for {:?}, replacing each answer \
         with a new query; queries unanswered for {LOST_AFTER:?} count as lost. Answers/s \
         counts answers with the expected code (NOERROR from dnsmasq, NXDOMAIN from faultbpf). \
         Forged: the same loop with `faultbpf dns --rcode nxdomain --port 53 --iface \
         {SERVER_IF}` running; dnsmasq then sees no query. On a veth pair the forged answer is \
         built and sent back on the client's CPU, so that row uses one CPU where dnsmasq's \
         uses two.",
        ctx.server_cpu(),
        ctx.client_cpu(),
        ctx.plan.dns_window,
    ));
    let mut dns = Table::new(
        "DNS answers per second (median [min, max] over rounds):",
        &[
            "Condition",
            "Answers/s",
            "Ratio to dnsmasq (per round)",
            "Wrong or no answers",
        ],
    );
    for cond in Dns::ALL {
        let key = dns_key(cond);
        let per = over(&s.dns, |r| r.get(key).map(Answers::per_sec));
        let (wrong, lost): (u64, u64) = s
            .dns
            .iter()
            .filter_map(|r| r.get(key))
            .fold((0, 0), |acc, a| (acc.0 + a.wrong, acc.1 + a.lost));
        dns.row(vec![
            cond.label().into(),
            per.map_or("-".into(), |p| {
                format!(
                    "{} [{}, {}]",
                    si(p.median, "/s"),
                    si(p.min, "/s"),
                    si(p.max, "/s")
                )
            }),
            match cond {
                Dns::Resolver => "1 (reference)".into(),
                Dns::Forged => ratio_cell(over(&s.dns, ratio)),
            },
            format!("{wrong} wrong, {lost} lost"),
        ]);
    }
    section.tables.push(dns);
    if s.forged.1 > 0 {
        section.notes.push(format!(
            "faultbpf's own counters over the forged windows: {} packets matched (`--port 53` \
             in both directions, so the forged answers count again as they leave), {} queries \
             answered.",
            s.forged.1, s.forged.0
        ));
    }

    // Cost per packet.
    section.notes.push(format!(
        "**Cost per matched packet.** The kernel's BPF statistics (run time and run count of \
         faultbpf's tc ingress program `{INGRESS_PROGRAM}`, on only during the flood) while \
         one client thread sends {}-byte DNS queries (`{NAME}`) to UDP {COST_PORT} on the \
         server as fast as it can for {:?}; a socket there is bound and never read. Each rule \
         is `--proto udp --direction ingress --iface {SERVER_IF}` plus the fault below: every \
         packet matches, except in the last row (rule on {UNMATCHED_PORT}). ns per packet is \
         the program's total time over the packets that entered; for `duplicate` the clone \
         crosses the program again (and passes), and that second run is charged to the packet \
         it copies (runs/packet shows it). The ratio is to `blackhole` in the same round.",
        query(0).len(),
        ctx.plan.flood_window,
    ));
    let mut cost = Table::new(
        "faultbpf's tc program per packet (median [min, max] over rounds):",
        &[
            "Rule",
            "ns per packet",
            "Ratio to blackhole (per round)",
            "ns per run",
            "Runs per packet",
        ],
    );
    for cond in Cost::ALL {
        let per = over(&s.cost, |r| r.get(&cond).map(|&v| ns_per_packet(cond, v)));
        let vs = over(&s.cost, |r| {
            Some(
                ns_per_packet(cond, *r.get(&cond)?)
                    / ns_per_packet(Cost::Blackhole, *r.get(&Cost::Blackhole)?),
            )
        });
        let per_run = over(&s.cost, |r| {
            r.get(&cond).map(|&(ns, runs, _)| ns as f64 / runs as f64)
        });
        let runs_per = over(&s.cost, |r| {
            r.get(&cond)
                .map(|&v| v.1 as f64 * ns_per_packet(cond, v) / v.0 as f64)
        });
        cost.row(vec![
            cond.label(),
            value_cell(per, 0),
            if cond == Cost::Blackhole {
                "1 (reference)".into()
            } else {
                ratio_cell(vs)
            },
            value_cell(per_run, 0),
            value_cell(runs_per, 2),
        ]);
    }
    section.tables.push(cost);

    // Throttle.
    section.notes.push(format!(
        "**Throttle accuracy.** iperf3 TCP, one stream client -> server (client on CPU {}, \
         server on CPU {}), {} s measured after {} s of slow start it omits (`-O`), through \
         `faultbpf throttle --port {IPERF_PORT} --rate {RATE} --iface {SERVER_IF}` \
         (policing on this kernel) and through `tc qdisc add dev {CLIENT_IF} root tbf {}` on \
         the sender's veth (the control of tests/tests/throttle.rs, same parameters); no \
         limit: 1 s. Target: {RATE}.",
        ctx.client_cpu(),
        ctx.server_cpu(),
        ctx.plan.throttle_secs,
        ctx.plan.throttle_omit,
        TBF.join(" ")
    ));
    let mut limit = Table::new(
        "Achieved TCP rate (median [min, max] over rounds):",
        &[
            "Limit",
            "Mbit/s",
            "Achieved / target",
            "Ratio to tbf (per round)",
        ],
    );
    let rate = |key: &'static str| over(&s.limit, move |r| r.get(key).map(|b| b / 1e6));
    let achieved = |key: &'static str| over(&s.limit, move |r| r.get(key).map(|b| b / RATE_BPS));
    let vs_tbf = over(&s.limit, |r| Some(r.get("throttle")? / r.get("tbf")?));
    for cond in Limit::ALL {
        let key = limit_key(cond);
        limit.row(vec![
            cond.label(),
            value_cell(rate(key), 2),
            match cond {
                Limit::Free => "-".into(),
                _ => ratio_cell(achieved(key)),
            },
            match cond {
                Limit::Throttle => ratio_cell(vs_tbf),
                Limit::Tbf => "1 (reference)".into(),
                Limit::Free => "-".into(),
            },
        ]);
    }
    section.tables.push(limit);

    if !s.failures.is_empty() {
        section.notes.push(format!(
            "Measurements that failed (their rounds lack that value):\n\n```\n{}\n```",
            s.failures.join("\n")
        ));
    }

    // Raw data.
    let mut csv = Table::new("", &["round", "part", "condition", "metric", "value"]);
    for (round, r) in s.dns.iter().enumerate() {
        for (key, a) in r {
            for (metric, v) in [
                ("answers_per_sec", a.per_sec()),
                ("sent", a.sent as f64),
                ("wrong", a.wrong as f64),
                ("lost", a.lost as f64),
            ] {
                csv.row(vec![
                    round.to_string(),
                    "dns".into(),
                    (*key).into(),
                    metric.into(),
                    v.to_string(),
                ]);
            }
        }
    }
    for (round, r) in s.cost.iter().enumerate() {
        for (cond, &(ns, runs, matched)) in r {
            for (metric, v) in [("run_time_ns", ns), ("run_cnt", runs), ("matched", matched)] {
                csv.row(vec![
                    round.to_string(),
                    "cost".into(),
                    cond.label(),
                    metric.into(),
                    v.to_string(),
                ]);
            }
        }
    }
    for (round, r) in s.limit.iter().enumerate() {
        for (key, bps) in r {
            csv.row(vec![
                round.to_string(),
                "throttle".into(),
                (*key).into(),
                "bits_per_second".into(),
                bps.to_string(),
            ]);
        }
    }
    section.csvs.push(("faults.csv".into(), csv));

    // Summary lines.
    section.goals.push(match over(&s.dns, ratio) {
        Some(r) => Goal::new(
            "DNS answers/s, faultbpf dns / dnsmasq",
            "(no goal)",
            ratio_cell(Some(r)),
            Verdict::Info,
        ),
        None => Goal::na(
            "DNS answers/s, faultbpf dns / dnsmasq",
            "(no goal)",
            "n/a (failed)",
        ),
    });
    let costs: Vec<String> = Cost::ALL[1..]
        .iter()
        .filter_map(|&cond| {
            let vs = over(&s.cost, |r| {
                Some(
                    ns_per_packet(cond, *r.get(&cond)?)
                        / ns_per_packet(Cost::Blackhole, *r.get(&Cost::Blackhole)?),
                )
            })?;
            Some(format!("{} {:.2}x", cond.fault()[0], vs.median)).map(|t| match cond {
                Cost::Unmatched => t.replace("blackhole", "unmatched"),
                _ => t,
            })
        })
        .collect();
    section.goals.push(Goal::new(
        "tc program ns per packet / blackhole's",
        "(no goal)",
        if costs.is_empty() {
            "-".into()
        } else {
            costs.join(", ")
        },
        Verdict::Info,
    ));
    let band = |(lo, hi): (f64, f64)| format!("{lo} to {hi}");
    section.goals.push(match achieved("throttle") {
        Some(a) => Goal::new(
            "throttle --rate 10mbit, achieved / target (iperf3 TCP)",
            &band(ACHIEVED_OK),
            ratio_cell(Some(a)),
            Verdict::check((ACHIEVED_OK.0..=ACHIEVED_OK.1).contains(&a.median)),
        ),
        None => Goal::na(
            "throttle --rate 10mbit, achieved / target (iperf3 TCP)",
            &band(ACHIEVED_OK),
            "n/a (failed)",
        ),
    });
    section.goals.push(match vs_tbf {
        Some(v) => Goal::new(
            "throttle / tbf at 10mbit (iperf3 TCP)",
            &band(VS_TBF_OK),
            ratio_cell(Some(v)),
            Verdict::check((VS_TBF_OK.0..=VS_TBF_OK.1).contains(&v.median)),
        ),
        None => Goal::na(
            "throttle / tbf at 10mbit (iperf3 TCP)",
            &band(VS_TBF_OK),
            "n/a (failed)",
        ),
    });
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_answers() {
        let q = query(0x1234);
        assert_eq!(&q[..2], &[0x12, 0x34]);
        assert_eq!(q.len(), 12 + NAME.len() + 2 + 4);
        assert_eq!(rcode(&q), None, "a query is no answer");
        let mut a = q.clone();
        a[2] |= 0x80;
        a[3] = 0x83;
        assert_eq!(rcode(&a), Some(3));
        assert_eq!(rcode(&a[..11]), None);
    }

    #[test]
    fn duplicate_charges_its_clones_to_the_packet() {
        assert_eq!(ns_per_packet(Cost::Duplicate, (4000, 20, 10)), 400.0);
        assert_eq!(ns_per_packet(Cost::Blackhole, (2000, 10, 10)), 200.0);
        assert_eq!(ns_per_packet(Cost::Unmatched, (1000, 10, 0)), 100.0);
    }

    #[test]
    fn cost_rules_match_the_flood_but_one() {
        assert!(Cost::Blackhole.args().contains(&COST_PORT.to_string()));
        assert!(Cost::Unmatched.args().contains(&UNMATCHED_PORT.to_string()));
        assert!(!Cost::Unmatched.args().contains(&COST_PORT.to_string()));
    }
}
