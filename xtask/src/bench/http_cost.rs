//! Scenario 7, http: what `faultbpf http` costs the requests it does not
//! fault (issue 16). A proxy puts a hop in front of every request (Toxiproxy
//! measures +270 to 370 µs per small request in its own benchmark); faultbpf
//! steers only the connections it selects, so it should cost a steered
//! connection one local hop and an unsteered one nothing.
//!
//! Three conditions, the same server and client, interleaved round by round
//! (the order rotates), faultbpf started fresh for each window:
//!
//! - **direct**: no faultbpf.
//! - **steered, unfaulted**: `faultbpf http --per request --path NEVER`:
//!   the kernel steers every connection to the port to the responder, no
//!   request matches the path, so each is forwarded to the server.
//! - **unsteered**: `faultbpf http --per connection --pct 0.0001` on the same
//!   port: the kernel draws each new connection and (but for a one-in-a-
//!   million draw, which the counters catch) lets it through to the server.
//!
//! Each window measures GETs on one keep-alive connection (per-request
//! latency) and new connections (connect, GET, close). Reported: the p50 and
//! p99 of each, and per round the difference and ratio to direct.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Ctx, http,
    injector::{Faultbpf, Launch},
    report::{Goal, Section, Table, Verdict, delta_cell, ratio_cell, value_cell},
    stats::over,
    topo::{self, CLIENT_IF, Netns, SERVER_IF, SERVER_IP, Topology},
    traffic::{self, Answer, Latency, Servers},
};

/// The real server's port, the one every fault is on.
const PORT: u16 = 8080;
/// The only path the steered condition faults; no request asks for it.
const NEVER: &str = "/faultbpf-bench-never";
/// `--pct` of the unsteered condition: the smallest draw the CLI takes
/// (0 is refused), so the kernel lets practically every connection through.
const UNSTEERED_PCT: &str = "0.0001";
/// Requests sent on a fresh connection before the counted ones: the first
/// opens the responder's own connection to the server.
const WARMUP: usize = 50;
/// A window stops here even if its counts are not reached.
const WINDOW_MAX: Duration = Duration::from_secs(20);
/// Unsteered / direct must stay within this (median of per-round ratios).
const SAME_OK: (f64, f64) = (0.9, 1.1);
/// What Toxiproxy's own benchmark reports per small request, for the summary.
const TOXIPROXY: &str = "Toxiproxy's own benchmark: +270 to 370 µs";

/// How the client's connections reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Direct,
    Steered,
    Unsteered,
}

impl Via {
    const ALL: [Self; 3] = [Self::Direct, Self::Steered, Self::Unsteered];

    /// faultbpf's arguments; None: no faultbpf.
    fn args(self) -> Option<Vec<String>> {
        let port = PORT.to_string();
        let v: Vec<&str> = match self {
            Self::Direct => return None,
            Self::Steered => vec![
                "http", "--port", &port, "--status", "503", "--per", "request", "--path", NEVER,
            ],
            Self::Unsteered => vec![
                "http",
                "--port",
                &port,
                "--status",
                "503",
                "--per",
                "connection",
                "--pct",
                UNSTEERED_PCT,
            ],
        };
        Some(v.into_iter().map(String::from).collect())
    }

    fn label(self) -> String {
        match self.args() {
            None => "direct (no faultbpf)".into(),
            Some(args) => format!(
                "{} (faultbpf {})",
                match self {
                    Self::Steered => "steered, unfaulted",
                    _ => "unsteered",
                },
                args.join(" ")
            ),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Steered => "steered",
            Self::Unsteered => "unsteered",
        }
    }
}

/// `faultbpf http --json`'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    steered: u64,
    seen: u64,
    faulted: u64,
}

fn parse_counters(v: &serde_json::Value) -> Result<Counters> {
    let get = |k: &str| v[k].as_u64().with_context(|| format!("no `{k}` in {v}"));
    Ok(Counters {
        steered: get("connections_steered")?,
        seen: get("requests_seen")?,
        faulted: get("requests_faulted")?,
    })
}

/// What one window measured.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Per request on the keep-alive connection.
    request: Latency,
    requests: usize,
    /// Per new connection: connect, GET, answer, close.
    connection: Latency,
    connections: usize,
}

/// One answer from the real server, or an error saying what came instead.
fn get(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    http::write_request(stream, "GET", "/", None, false)?;
    let resp = http::read_response(stream, buf)?;
    if resp.status != 200 || resp.body != http::BODY {
        bail!(
            "expected the server's 200, got {} {:?}",
            resp.status,
            resp.body
        );
    }
    Ok(())
}

fn connect() -> Result<TcpStream> {
    let server = SocketAddr::new(SERVER_IP.into(), PORT);
    let s = TcpStream::connect_timeout(&server, Duration::from_secs(2))
        .with_context(|| format!("connecting to {server}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(s)
}

/// From the client namespace: `WARMUP` then `requests` GETs on one
/// keep-alive connection, then `connections` times connect, GET, close
/// (with a reset, so no TIME_WAIT piles up). Bounded by the counts and by
/// `WINDOW_MAX`.
fn window(ns: &Netns, cpu: usize, requests: usize, connections: usize) -> Result<Window> {
    ns.run(Some(cpu), || {
        let end = Instant::now() + WINDOW_MAX;
        let mut buf = Vec::with_capacity(4096);
        let mut stream = connect()?;
        for _ in 0..WARMUP {
            get(&mut stream, &mut buf)?;
        }
        let mut per_request = Vec::with_capacity(requests);
        while per_request.len() < requests && Instant::now() < end {
            let t = Instant::now();
            get(&mut stream, &mut buf)?;
            per_request.push(t.elapsed().as_nanos() as u64);
        }
        drop(stream);
        let mut per_connection = Vec::with_capacity(connections);
        while per_connection.len() < connections && Instant::now() < end {
            let t = Instant::now();
            let mut s = connect()?;
            get(&mut s, &mut buf)?;
            traffic::abort_on_close(&s);
            drop(s);
            per_connection.push(t.elapsed().as_nanos() as u64);
        }
        Ok(Window {
            request: Latency::of(&mut per_request),
            requests: per_request.len(),
            connection: Latency::of(&mut per_connection),
            connections: per_connection.len(),
        })
    })
}

/// One window under `via`; checks faultbpf's counters against what the
/// condition means (every connection steered and nothing faulted, or none
/// steered).
fn measure(ctx: &Ctx, topo: &Topology, via: Via) -> Result<Window> {
    let fb = match via.args() {
        Some(args) => {
            let mut fb = Faultbpf::start(&ctx.bin, &topo.server, &args, Launch::IpNetnsExec)?;
            fb.wait_active(Duration::from_secs(60))?;
            Some(fb)
        }
        None => None,
    };
    let w = window(
        &topo.client,
        ctx.client_cpu(),
        ctx.plan.http_requests,
        ctx.plan.http_connections,
    );
    let counters = fb
        .map(|fb| fb.stop_json().and_then(|v| parse_counters(&v)))
        .transpose()?;
    let w = w?;
    let conns = 1 + w.connections as u64;
    let reqs = (WARMUP + w.requests + w.connections) as u64;
    match (via, counters) {
        (Via::Steered, Some(c))
            if c != (Counters {
                steered: conns,
                seen: reqs,
                faulted: 0,
            }) =>
        {
            bail!("expected {conns} connections steered, {reqs} requests seen, none faulted: {c:?}")
        }
        (Via::Unsteered, Some(c)) if c.steered != 0 => {
            bail!(
                "the draw steered {} connection(s) after all: {c:?}",
                c.steered
            )
        }
        _ => {}
    }
    if w.requests == 0 || w.connections == 0 {
        bail!("no request finished within {WINDOW_MAX:?}");
    }
    Ok(w)
}

/// Scenario 7.
pub fn run(ctx: &Ctx) -> Result<Section> {
    let topo = Topology::new()?;
    let mut servers = Servers::none();
    servers.tcp(
        &topo.server,
        "http server",
        ctx.server_cpu(),
        PORT,
        Answer::Persistent(http::serve_keep_alive),
    )?;
    // The server is up once it answers; this also warms the path.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while let Err(err) = window(&topo.client, ctx.client_cpu(), 100, 10) {
        if Instant::now() >= ready_by {
            return Err(err).context("the bench's HTTP server never answered");
        }
        topo::sleep(Duration::from_millis(100))?;
    }

    let started = Instant::now();
    let mut rounds: Vec<BTreeMap<Via, Window>> = Vec::new();
    let mut failures = Vec::new();
    for round in 0..ctx.plan.http_rounds {
        if round >= 3 && started.elapsed() > ctx.plan.scenario_budget {
            eprintln!("bench: http: time budget reached after {round} rounds");
            break;
        }
        let mut r = BTreeMap::new();
        for i in 0..Via::ALL.len() {
            let via = Via::ALL[(i + round) % Via::ALL.len()];
            topo::check_interrupted()?;
            match measure(ctx, &topo, via) {
                Ok(w) => {
                    r.insert(via, w);
                }
                Err(err) => failures.push(format!("round {round}, {}: {err:#}", via.label())),
            }
        }
        rounds.push(r);
        eprintln!(
            "bench: http: round {} done ({:.0}s)",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    drop(servers);
    Ok(section(ctx, &rounds, &failures))
}

/// Which latency of a window a table shows.
#[derive(Clone, Copy)]
enum Part {
    Request,
    Connection,
}

impl Part {
    fn of(self, w: &Window) -> Latency {
        match self {
            Self::Request => w.request,
            Self::Connection => w.connection,
        }
    }
}

/// Per round, `f` of `via`'s latency against direct's.
fn vs_direct(
    rounds: &[BTreeMap<Via, Window>],
    via: Via,
    part: Part,
    f: impl Fn(Latency, Latency) -> f64,
) -> Option<super::stats::Spread> {
    over(rounds, |r| {
        Some(f(part.of(r.get(&via)?), part.of(r.get(&Via::Direct)?)))
    })
}

fn p50_added(a: Latency, d: Latency) -> f64 {
    a.p50_us - d.p50_us
}

fn p50_ratio(a: Latency, d: Latency) -> f64 {
    a.p50_us / d.p50_us
}

fn p99_ratio(a: Latency, d: Latency) -> f64 {
    a.p99_us / d.p99_us
}

fn section(ctx: &Ctx, rounds: &[BTreeMap<Via, Window>], failures: &[String]) -> Section {
    let mut section = Section::new("faultbpf http: cost to the requests it does not fault");
    section.notes.push(format!(
        "{} rounds, the three conditions in an order that rotates by round. The server is the \
         bench's own HTTP/1.1 keep-alive server on {SERVER_IP}:{PORT} in the server namespace \
         (fixed {}-byte 200 answer, one thread per connection, CPU {}); the client one thread \
         in the client namespace (CPU {}) across the veth pair ({CLIENT_IF} -> {SERVER_IF}). \
         faultbpf runs unpinned in the server namespace (`ip netns exec`), started fresh for \
         each window. Per window: {WARMUP} uncounted GETs, then {} GETs of `/` on the same \
         keep-alive connection (per-request latency: write the request, read the whole answer), \
         then {} new connections (connect, one GET, close with a reset). Every answer is \
         checked to be the server's 200; faultbpf's counters are checked too (steered: every \
         connection steered and no request faulted; unsteered: none steered). Ratios and \
         differences are per round, against direct in the same round. The connection count \
         was kept low while the responder bound its own connections with bind(0), which \
         slowed to ~1.4 ms a connection past ~14 000 a minute; it now takes the ports of \
         the range in turn (see `faultbpf/src/http/responder.rs`).",
        rounds.len(),
        http::BODY.len(),
        ctx.server_cpu(),
        ctx.client_cpu(),
        ctx.plan.http_requests,
        ctx.plan.http_connections,
    ));
    for (part, caption) in [
        (
            Part::Request,
            "Per request on one keep-alive connection, µs (median [min, max] over rounds):",
        ),
        (
            Part::Connection,
            "Per new connection (connect, GET, close), µs (median [min, max] over rounds):",
        ),
    ] {
        let mut t = Table::new(
            caption,
            &[
                "Condition",
                "p50",
                "p99",
                "p50 added vs direct",
                "p50 / direct",
                "p99 / direct",
            ],
        );
        for via in Via::ALL {
            let abs = |f: fn(Latency) -> f64| over(rounds, |r| r.get(&via).map(|w| f(part.of(w))));
            let rel = |f: fn(Latency, Latency) -> f64| match via {
                Via::Direct => "(reference)".into(),
                _ => ratio_cell(vs_direct(rounds, via, part, f)),
            };
            t.row(vec![
                via.label(),
                value_cell(abs(|l| l.p50_us), 1),
                value_cell(abs(|l| l.p99_us), 1),
                match via {
                    Via::Direct => "-".into(),
                    _ => delta_cell(vs_direct(rounds, via, part, p50_added)),
                },
                rel(p50_ratio),
                rel(p99_ratio),
            ]);
        }
        section.tables.push(t);
    }
    if !failures.is_empty() {
        section.notes.push(format!(
            "Windows that failed (their rounds lack that value):\n\n```\n{}\n```",
            failures.join("\n")
        ));
    }

    let mut csv = Table::new("", &["round", "condition", "metric", "value"]);
    for (round, r) in rounds.iter().enumerate() {
        for (via, w) in r {
            for (metric, v) in [
                ("request_p50_us", w.request.p50_us),
                ("request_p99_us", w.request.p99_us),
                ("requests", w.requests as f64),
                ("connection_p50_us", w.connection.p50_us),
                ("connection_p99_us", w.connection.p99_us),
                ("connections", w.connections as f64),
            ] {
                csv.row(vec![
                    round.to_string(),
                    via.key().into(),
                    metric.into(),
                    v.to_string(),
                ]);
            }
        }
    }
    section.csvs.push(("http.csv".into(), csv));

    let steered = vs_direct(rounds, Via::Steered, Part::Request, p50_added);
    let measure = "added latency per request, steered and unfaulted - direct (p50, µs)";
    section.goals.push(match steered {
        Some(d) => Goal::new(
            measure,
            &format!("(no goal; {TOXIPROXY})"),
            format!(
                "{} (x{})",
                delta_cell(Some(d)),
                ratio_cell(vs_direct(rounds, Via::Steered, Part::Request, p50_ratio))
            ),
            Verdict::Info,
        ),
        None => Goal::na(measure, "(no goal)", "n/a (failed)"),
    });
    let band = format!("{} to {}", SAME_OK.0, SAME_OK.1);
    for (part, measure) in [
        (
            Part::Request,
            "per-request latency, unsteered / direct (p50)",
        ),
        (
            Part::Connection,
            "per-connection latency, unsteered / direct (p50)",
        ),
    ] {
        section
            .goals
            .push(match vs_direct(rounds, Via::Unsteered, part, p50_ratio) {
                Some(r) => Goal::new(
                    measure,
                    &band,
                    ratio_cell(Some(r)),
                    Verdict::check((SAME_OK.0..=SAME_OK.1).contains(&r.median)),
                ),
                None => Goal::na(measure, &band, "n/a (failed)"),
            });
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_http_counters() {
        let v = serde_json::json!({
            "fault": "http", "port": 8080, "connections_steered": 3,
            "requests_seen": 12, "requests_faulted": 0,
        });
        assert_eq!(
            parse_counters(&v).unwrap(),
            Counters {
                steered: 3,
                seen: 12,
                faulted: 0
            }
        );
        assert!(parse_counters(&serde_json::json!({"fault": "http"})).is_err());
    }

    #[test]
    fn only_the_steered_condition_can_fault_and_none_does() {
        assert_eq!(Via::Direct.args(), None);
        let steered = Via::Steered.args().unwrap();
        assert!(steered.windows(2).any(|w| w == ["--per", "request"]));
        assert!(steered.windows(2).any(|w| w == ["--path", NEVER]));
        let unsteered = Via::Unsteered.args().unwrap();
        assert!(unsteered.windows(2).any(|w| w == ["--per", "connection"]));
        assert!(unsteered.windows(2).any(|w| w == ["--pct", UNSTEERED_PCT]));
        for args in [steered, unsteered] {
            assert!(args.windows(2).any(|w| w == ["--port", "8080"]));
        }
    }
}
