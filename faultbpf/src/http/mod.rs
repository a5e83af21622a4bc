//! `faultbpf http`: HTTP status faults with no proxy in anyone else's path.
//!
//! What the application sees: on the connections faultbpf selects, the
//! answers it asked for (`--status 503` with a problem+json body and
//! `Retry-After` when asked, 429, 504 after `--delay-first-byte`, or a
//! connection closed after the request with `--status abort`), while every
//! other request on those connections is forwarded to the real server and
//! answered by it. Every connection not selected goes straight to the real
//! server: no hop, no cost.
//!
//! How, on the server's host (`--side server`, where a server listens on
//! the port in faultbpf's network namespace): an `sk_lookup` program
//! (`steer`) gives selected new connections to the port to the responder's
//! listening socket. On the client's host (`--side client`, the dependency
//! runs elsewhere): cgroup `connect4`/`connect6` programs send selected
//! connects to the port to the responder on loopback, a `sock_ops` program
//! tells it where each was going, and `getpeername` hooks show the
//! application the peer it dialled (`connect`). `--side auto` picks server
//! where a server listens here, client elsewhere. The responder
//! (`responder`) is an HTTP/1.1 server built on hyper. `--per connection`
//! draws `--pct` per connection in the kernel; `--per request` steers every connection and
//! draws per request in the responder, so keep-alive connections get mixed
//! answers. Plain HTTP only: a TLS server on the port is refused at start
//! (`probe`); client side, where the servers are not known at start, a
//! connection that opens with a TLS handshake is passed through untouched.
//!
//! Not a registry fault: it acts on sockets, not on the tc rule maps. As a
//! rule of the daemon, its config and scenario steps it has its own fields
//! and check (`rule`), and runs on a runtime of its own ([`Responders`]).

mod connect;
mod probe;
mod responder;
pub mod rule;
mod steer;

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use probe::{ProbeError, listener_addr};

/// What a faulted request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// This status code, with a problem+json body.
    Code(u16),
    /// No answer: the connection is closed once the request is read.
    Abort,
}

impl Status {
    /// Parses `503` or `abort`; only 4xx and 5xx codes are faults.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("abort") {
            return Ok(Self::Abort);
        }
        match s.parse::<u16>() {
            Ok(c) if (400..=599).contains(&c) => Ok(Self::Code(c)),
            _ => Err(format!(
                "`{s}` is not a fault status; give a code from 400 to 599 (e.g. 503, 429, 504) \
                 or `abort`"
            )),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "{c}"),
            Self::Abort => f.write_str("abort"),
        }
    }
}

/// Where `--pct` is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Every connection is steered; each request draws.
    Request,
    /// Each new connection draws in the kernel; a selected connection's
    /// matching requests are all faulted, the others never see faultbpf.
    Connection,
}

/// When the fault replaces the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// Instead of the server: it never sees the request.
    Before,
    /// After the server acted on the request: its answer is replaced.
    After,
}

/// Which end of the connections faultbpf runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// `server` where a server listens on the port in this network
    /// namespace, `client` elsewhere.
    Auto,
    /// The server's host: new connections to the port are steered
    /// (`sk_lookup`).
    Server,
    /// The client's host: connects to the port, to any address, from this
    /// network namespace are steered (cgroup connect hooks).
    Client,
}

/// The cgroup v2 whose processes' connects `--side client` steers, by
/// default all of them (still only those in faultbpf's network namespace).
pub const DEFAULT_CGROUP: &str = "/";

/// A validated `faultbpf http` fault.
#[derive(Clone, Debug)]
pub struct Options {
    /// The real server's TCP port.
    pub port: u16,
    pub status: Status,
    /// `Retry-After` in whole seconds (rounded up).
    pub retry_after: Option<Duration>,
    /// Chance, 0..=100, per `per`.
    pub pct: f64,
    pub per: Per,
    /// Methods to fault, upper case; empty: all.
    pub methods: Vec<String>,
    /// Path prefixes to fault; empty: all.
    pub paths: Vec<String>,
    pub when: When,
    /// Wait before the faulted answer's first byte.
    pub delay_first_byte: Duration,
    pub side: Side,
    /// `--side client`: the cgroup v2 path whose connects are steered.
    pub cgroup: String,
}

/// Longest `--delay-first-byte` and `--retry-after`: beyond any client timeout.
pub const MAX_DELAY: Duration = Duration::from_secs(3_600);

impl Options {
    /// Checks every value; the message names the bad one and the fix.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.port == 0 {
            return Err("--port 0 is not a port; give the real server's port, 1-65535".into());
        }
        if !(self.pct > 0.0 && self.pct <= 100.0) {
            return Err(format!(
                "--pct {} is out of range; give a percentage above 0 and at most 100",
                self.pct
            ));
        }
        if let Some(r) = self.retry_after {
            if self.status == Status::Abort {
                return Err("--retry-after needs an answer; --status abort sends none".into());
            }
            if r > MAX_DELAY {
                return Err(format!(
                    "--retry-after {} is longer than the maximum, 1h",
                    humantime::format_duration(r)
                ));
            }
        }
        if self.delay_first_byte > MAX_DELAY {
            return Err(format!(
                "--delay-first-byte {} is longer than the maximum, 1h",
                humantime::format_duration(self.delay_first_byte)
            ));
        }
        for m in &mut self.methods {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!(
                    "--method `{m}` is not an HTTP method; e.g. GET, POST"
                ));
            }
            m.make_ascii_uppercase();
        }
        for p in &self.paths {
            if !p.starts_with('/') {
                return Err(format!("--path `{p}` must start with `/`, e.g. /api"));
            }
        }
        if !self.cgroup.starts_with('/') || self.cgroup.split('/').any(|c| c == "..") {
            return Err(format!(
                "--cgroup `{}` is not a cgroup v2 path; give it from the root, e.g. / or \
                 /system.slice/app.service",
                self.cgroup
            ));
        }
        if self.side == Side::Server && self.cgroup != DEFAULT_CGROUP {
            return Err("--cgroup is for --side client; the server side steers by port".into());
        }
        Ok(())
    }

    /// Whether a request with `method` and `path` is one this fault acts on
    /// (before the `--per request` draw).
    pub fn selects(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str())))
    }

    /// "http 503 on port 8080 (30 % of requests, GET /api)".
    pub fn describe(&self) -> String {
        let mut s = format!("http {} on port {}", self.status, self.port);
        let per = match self.per {
            Per::Request => "requests",
            Per::Connection => "connections",
        };
        s += &format!(" ({} % of {per}", self.pct);
        if !self.methods.is_empty() {
            s += &format!(", method {}", self.methods.join("|"));
        }
        if !self.paths.is_empty() {
            s += &format!(", path {}", self.paths.join("|"));
        }
        if self.when == When::After {
            s += ", after the server acts";
        }
        if let Some(r) = self.retry_after {
            s += &format!(", Retry-After {}", retry_after_secs(r));
        }
        if !self.delay_first_byte.is_zero() {
            s += &format!(
                ", first byte after {}",
                humantime::format_duration(self.delay_first_byte)
            );
        }
        s + ")"
    }
}

/// `Retry-After` takes whole seconds: round up, so a client never retries early.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The counters of one `faultbpf http` fault.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections the kernel gave to the responder.
    pub connections_steered: AtomicU64,
    /// Requests the responder read.
    pub requests_seen: AtomicU64,
    /// Requests answered with the fault.
    pub requests_faulted: AtomicU64,
}

/// A snapshot of [`Counters`], as `--json` prints it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterValues {
    pub connections_steered: u64,
    pub requests_seen: u64,
    pub requests_faulted: u64,
}

impl CounterValues {
    /// As a rule's counters, the way the daemon's stats and scenario
    /// reports count an http rule: requests seen as matched, requests
    /// faulted as acted, no bytes.
    pub fn as_rule_counters(&self) -> faultbpf_common::RuleCounters {
        faultbpf_common::RuleCounters {
            matched_packets: self.requests_seen,
            acted_packets: self.requests_faulted,
            ..Default::default()
        }
    }
}

impl Counters {
    pub fn get(&self) -> CounterValues {
        CounterValues {
            connections_steered: self.connections_steered.load(Ordering::Relaxed),
            requests_seen: self.requests_seen.load(Ordering::Relaxed),
            requests_faulted: self.requests_faulted.load(Ordering::Relaxed),
        }
    }
}

/// Why `faultbpf http` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The port's server, or the probe of it.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The responder's listening sockets.
    #[error("could not open the responder's listening socket on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Loading or attaching the `sk_lookup` program.
    #[error("could not steer connections to port {port}: {what}")]
    Steer {
        port: u16,
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// How selected connections reach the responder. One per fault, held in
/// an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Steer {
    /// Server side: `sk_lookup`.
    Lookup(steer::Steering),
    /// Client side: cgroup connect hooks.
    Connect(connect::Steering),
}

impl Steer {
    fn detach(&self) {
        match self {
            Self::Lookup(s) => s.detach(),
            Self::Connect(s) => s.detach(),
        }
    }
}

/// A fault in force: the steering programs attached and the responder
/// serving. Dropping it (or the process dying) detaches the programs: new
/// connections go straight to the server again.
pub struct Running {
    counters: Arc<Counters>,
    steer: Arc<Steer>,
    server: tokio::task::JoinHandle<()>,
    /// The fault, how it steers and where it forwards: "http 503 on port
    /// 8080 (...); steering new connections with sk_lookup, forwarding to
    /// 127.0.0.1:8080", for the `active:` line and rule lists.
    pub description: String,
    pub side: Side,
}

impl Running {
    pub fn counters(&self) -> CounterValues {
        self.counters.get()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.steer.detach();
        self.server.abort();
    }
}

/// Probes the server on `opts.port` (refusing TLS), opens the responder,
/// then attaches the steering program; call inside a tokio runtime.
pub async fn start(opts: Options) -> Result<Running, StartError> {
    let listener = match opts.side {
        Side::Client => None,
        Side::Server => Some(listener_addr(opts.port)?),
        Side::Auto => match listener_addr(opts.port) {
            Ok(a) => Some(a),
            Err(ProbeError::NoListener(_)) => None,
            Err(e) => return Err(e.into()),
        },
    };
    if let Some(server_addr) = listener {
        probe::refuse_tls(server_addr).await?;
    }
    let listeners = responder::Listeners::open()?;
    let description = opts.describe();
    let (steer, placement, side) = match listener {
        Some(server_addr) => (
            Steer::Lookup(steer::Steering::attach(&opts, &listeners)?),
            format!("steering new connections with sk_lookup, forwarding to {server_addr}"),
            Side::Server,
        ),
        None => (
            Steer::Connect(connect::Steering::attach(&opts, &listeners)?),
            format!(
                "steering connects to port {} from cgroup {} in this network namespace \
                 (cgroup connect hooks), forwarding to where each was going",
                opts.port, opts.cgroup
            ),
            Side::Client,
        ),
    };
    let steer = Arc::new(steer);
    let counters = Arc::new(Counters::default());
    let server = tokio::spawn(responder::serve(
        Arc::new(opts),
        listeners,
        counters.clone(),
        steer.clone(),
    ));
    Ok(Running {
        counters,
        steer,
        server,
        description: format!("{description}; {placement}"),
        side,
    })
}

/// Responders started from code that is not async (the daemon's rule
/// table, a scenario's steps): a runtime of their own, made with the
/// first, so a steered flood never competes with the caller's work.
#[derive(Default)]
pub struct Responders {
    rt: Option<tokio::runtime::Runtime>,
}

/// How long a start may take: the TLS probe waits up to 2 s.
const START_LIMIT: Duration = Duration::from_secs(10);

impl Responders {
    /// [`start`] on this runtime, waited for.
    pub fn start(&mut self, opts: Options) -> Result<Running, StartError> {
        let port = opts.port;
        let stuck = |what: &str| StartError::Steer {
            port,
            what: what.into(),
            source: None,
        };
        if self.rt.is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("http-responders")
                .enable_all()
                .build()
                .map_err(|e| StartError::Steer {
                    port,
                    what: "could not start the responders' runtime".into(),
                    source: Some(Box::new(e)),
                })?;
            self.rt = Some(rt);
        }
        let rt = self.rt.as_ref().expect("made above");
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(start(opts).await);
        });
        rx.recv_timeout(START_LIMIT)
            .map_err(|_| stuck("the responder did not start within 10 s"))?
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        // Without waiting on its tasks: safe from any thread, async or not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            port: 8080,
            status: Status::Code(503),
            retry_after: None,
            pct: 100.0,
            per: Per::Request,
            methods: vec![],
            paths: vec![],
            when: When::Before,
            delay_first_byte: Duration::ZERO,
            side: Side::Auto,
            cgroup: DEFAULT_CGROUP.into(),
        }
    }

    #[test]
    fn status_takes_4xx_5xx_and_abort_only() {
        assert_eq!(Status::parse("503"), Ok(Status::Code(503)));
        assert_eq!(Status::parse("ABORT"), Ok(Status::Abort));
        for bad in ["200", "302", "600", "x", ""] {
            let e = Status::parse(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn validate_names_the_bad_value() {
        let mut o = opts();
        o.pct = 0.0;
        assert!(o.validate().unwrap_err().contains("--pct 0"));
        let mut o = opts();
        o.paths = vec!["api".into()];
        assert!(o.validate().unwrap_err().contains("`api`"));
        let mut o = opts();
        o.methods = vec!["po st".into()];
        assert!(o.validate().unwrap_err().contains("`po st`"));
        let mut o = opts();
        o.status = Status::Abort;
        o.retry_after = Some(Duration::from_secs(1));
        assert!(o.validate().unwrap_err().contains("--retry-after"));
        let mut o = opts();
        o.delay_first_byte = Duration::from_secs(7_200);
        assert!(o.validate().unwrap_err().contains("2h"));
    }

    #[test]
    fn cgroup_is_a_path_from_the_root_for_the_client_side_only() {
        for bad in ["app.slice", "", "/a/../..", "/.."] {
            let mut o = opts();
            o.cgroup = bad.into();
            let e = o.validate().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        let mut o = opts();
        o.cgroup = "/system.slice/app.service".into();
        o.validate().unwrap();
        o.side = Side::Server;
        assert!(o.validate().unwrap_err().contains("--side client"));
    }

    #[test]
    fn selects_by_method_and_path_prefix() {
        let mut o = opts();
        o.methods = vec!["post".into()];
        o.paths = vec!["/api".into()];
        o.validate().unwrap();
        assert!(o.selects("POST", "/api/x"));
        assert!(!o.selects("GET", "/api/x"));
        assert!(!o.selects("POST", "/other"));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1_500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
    }
}
