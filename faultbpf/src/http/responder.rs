//! The responder: an HTTP/1.1 server (hyper) on the sockets the kernel
//! steers selected connections to. It answers each request it selects
//! with the fault and forwards every other one to the real server, on one
//! upstream connection per client connection, so keep-alive clients get
//! the real answers between faulted ones.
//!
//! The upstream connection is registered with the steering programs before
//! it connects (`Steer::exempt`: its source port for `sk_lookup`, its
//! socket cookie for the connect hooks): it goes to the same port and
//! would otherwise be steered back here.
//!
//! Where a connection was going: server side, the address it arrived at
//! (`sk_lookup` keeps it); client side, what the `sock_ops` program filed
//! under its source port. Client side, a connection that opens with a TLS
//! handshake is spliced to that destination untouched.

use std::{
    collections::hash_map::RandomState,
    convert::Infallible,
    hash::{BuildHasher, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER},
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::Mutex,
};

use super::{
    Counters, Options, Per, StartError, Status, Steer, When, connect::socket_cookie,
    retry_after_secs,
};
use faultbpf_common::ExemptKey;

type Body = BoxBody<Bytes, hyper::Error>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The responder's listening sockets: loopback addresses, as the kernel
/// hands them connections whatever their destination address.
pub struct Listeners {
    v4: TcpListener,
    v6: Option<TcpListener>,
}

impl Listeners {
    /// Opens both; IPv6 only where this namespace has it.
    pub fn open() -> Result<Self, StartError> {
        let v4 = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let v6 = listen(SocketAddr::from((Ipv6Addr::LOCALHOST, 0))).ok();
        Ok(Self { v4, v6 })
    }

    pub fn v4(&self) -> &TcpListener {
        &self.v4
    }

    pub fn v6(&self) -> Option<&TcpListener> {
        self.v6.as_ref()
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bind = || {
        let s = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        s.bind(addr)?;
        s.listen(1_024)
    };
    bind().map_err(|source| StartError::Listen { addr, source })
}

/// What every connection's tasks share.
struct Shared {
    opts: Arc<Options>,
    counters: Arc<Counters>,
    steer: Arc<Steer>,
    /// `--per request` draws: a counter run through splitmix64.
    draws: AtomicU64,
    /// Server side: source ports of the connections to the server.
    ports: PortCycle,
}

impl Shared {
    /// One draw at `--pct`.
    fn draw(&self) -> bool {
        let mut z = self
            .draws
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits as a fraction of 1, against the percentage.
        ((z >> 11) as f64 / (1u64 << 53) as f64) * 100.0 < self.opts.pct
    }
}

/// Accepts steered connections until the task is aborted.
pub async fn serve(
    opts: Arc<Options>,
    listeners: Listeners,
    counters: Arc<Counters>,
    steer: Arc<Steer>,
) {
    let seed = RandomState::new().build_hasher().finish();
    let shared = Arc::new(Shared {
        opts,
        counters,
        steer,
        draws: AtomicU64::new(seed),
        ports: PortCycle::new(seed),
    });
    let Listeners { v4, v6 } = listeners;
    loop {
        let accepted = match &v6 {
            Some(v6) => tokio::select! {
                a = v4.accept() => a,
                a = v6.accept() => a,
            },
            None => v4.accept().await,
        };
        match accepted {
            Ok((stream, _)) => {
                shared
                    .counters
                    .connections_steered
                    .fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, shared.clone()));
            }
            // EMFILE and friends: back off a little rather than spin.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// The responder's connection to the real server for one client connection.
struct Upstream {
    send: SendRequest<Incoming>,
    _exempt: Exempt,
}

/// A socket the steering programs let through (its source address and
/// port, or its cookie), until dropped.
struct Exempt {
    key: ExemptBy,
    steer: Arc<Steer>,
}

enum ExemptBy {
    Source(ExemptKey),
    Cookie(u64),
}

impl Steer {
    /// Lets the responder's own connect on `sock` (bound) through.
    fn exempt(self: &Arc<Self>, sock: &TcpSocket) -> std::io::Result<Exempt> {
        let key = match &**self {
            Self::Lookup(s) => {
                let key = exempt_key(sock.local_addr()?);
                s.exempt(key)?;
                ExemptBy::Source(key)
            }
            Self::Connect(s) => {
                let cookie = socket_cookie(sock)?;
                s.exempt(cookie)?;
                ExemptBy::Cookie(cookie)
            }
        };
        Ok(Exempt {
            key,
            steer: self.clone(),
        })
    }
}

impl Drop for Exempt {
    fn drop(&mut self) {
        match (&*self.steer, &self.key) {
            (Steer::Lookup(s), ExemptBy::Source(k)) => s.unexempt(k),
            (Steer::Connect(s), ExemptBy::Cookie(c)) => s.unexempt(*c),
            _ => {}
        }
    }
}

/// The `STEER_EXEMPT` key of a socket bound to `local`, as the
/// `sk_lookup` program reads its connection's source.
fn exempt_key(local: SocketAddr) -> ExemptKey {
    let mut key = ExemptKey {
        port: local.port(),
        ..Default::default()
    };
    match local.ip() {
        IpAddr::V4(a) => {
            key.family = 4;
            key.addr[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            key.family = 6;
            key.addr = a.octets();
        }
    }
    key
}

/// Client side: forgets the steered socket's entry when its connection ends.
struct Forget(Arc<Steer>, u64);

impl Drop for Forget {
    fn drop(&mut self) {
        if let Steer::Connect(s) = &*self.0 {
            s.forget(self.1);
        }
    }
}

/// First byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (server, _forget) = match &*shared.steer {
        // Steered by sk_lookup, the socket keeps the address the client
        // dialled: the real server's.
        Steer::Lookup(_) => match stream.local_addr() {
            Ok(a) => (a, None),
            Err(_) => return,
        },
        Steer::Connect(s) => {
            let Some((server, cookie)) = stream
                .peer_addr()
                .ok()
                .and_then(|peer| s.destination(peer.port()))
            else {
                return;
            };
            (server, Some(Forget(shared.steer.clone(), cookie)))
        }
    };
    if matches!(&*shared.steer, Steer::Connect(_)) {
        let mut first = [0u8; 1];
        if matches!(stream.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE) {
            if let Ok(up) = connect_raw(&shared, server).await {
                let (mut up, _exempt) = up;
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut up).await;
            }
            return;
        }
    }
    let upstream: Arc<Mutex<Option<Upstream>>> = Arc::new(Mutex::new(None));
    let svc = service_fn(move |req| handle(req, shared.clone(), upstream.clone(), server));
    let _ = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    sh: Arc<Shared>,
    upstream: Arc<Mutex<Option<Upstream>>>,
    server: SocketAddr,
) -> Result<Response<Body>, BoxError> {
    let opts = &sh.opts;
    sh.counters.requests_seen.fetch_add(1, Ordering::Relaxed);
    let selected = opts.selects(req.method().as_str(), req.uri().path())
        && (opts.per == Per::Connection || sh.draw());
    if !selected {
        let resp = forward(req, &sh, &upstream, server).await?;
        return Ok(resp.map(BodyExt::boxed));
    }
    sh.counters.requests_faulted.fetch_add(1, Ordering::Relaxed);
    match opts.when {
        // Read the whole request, so the connection stays usable after
        // the answer.
        When::Before => {
            let _ = req.into_body().collect().await;
        }
        // The server acts on the request and answers in full; the client
        // gets the fault instead.
        When::After => {
            let resp = forward(req, &sh, &upstream, server).await?;
            let _ = resp.into_body().collect().await;
        }
    }
    if !opts.delay_first_byte.is_zero() {
        tokio::time::sleep(opts.delay_first_byte).await;
    }
    match opts.status {
        Status::Abort => Err("--status abort: closing the connection unanswered".into()),
        Status::Code(code) => Ok(fault_response(opts, code)),
    }
}

/// The fault's answer: the status, a problem+json body (RFC 9457) and
/// `Retry-After` when asked.
fn fault_response(opts: &Options, code: u16) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let title = status.canonical_reason().unwrap_or("Injected fault");
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": code,
        "detail": format!("injected by faultbpf http on port {}", opts.port),
    })
    .to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(r) = opts.retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(r)));
    }
    resp
}

/// Sends `req` to the real server on this client connection's upstream
/// connection, opening (or reopening, after the server closed it) one.
async fn forward(
    req: Request<Incoming>,
    sh: &Shared,
    upstream: &Mutex<Option<Upstream>>,
    server: SocketAddr,
) -> Result<Response<Incoming>, BoxError> {
    let mut up = upstream.lock().await;
    let usable = match up.as_mut() {
        Some(u) => u.send.ready().await.is_ok(),
        None => false,
    };
    if !usable {
        *up = None;
        *up = Some(connect(sh, server).await?);
    }
    let u = up.as_mut().expect("set above");
    Ok(u.send.send_request(req).await?)
}

/// A new connection to the real server, exempt from steering.
async fn connect(sh: &Shared, server: SocketAddr) -> Result<Upstream, BoxError> {
    let (stream, exempt) = connect_raw(sh, server).await?;
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Upstream {
        send,
        _exempt: exempt,
    })
}

/// A TCP connection to `server`, exempt from steering while the returned
/// [`Exempt`] lives.
async fn connect_raw(sh: &Shared, server: SocketAddr) -> Result<(TcpStream, Exempt), BoxError> {
    let socket = || {
        if server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
    };
    if let Steer::Connect(_) = &*sh.steer {
        // Exempt by cookie: the kernel picks the port at connect, from the
        // whole range, reusing ports towards other destinations.
        let sock = socket()?;
        let exempt = sh.steer.exempt(&sock)?;
        let stream = sock.connect(server).await?;
        let _ = stream.set_nodelay(true);
        return Ok((stream, exempt));
    }
    // sk_lookup exempts by source port, which must be known before the
    // SYN leaves, so the socket is bound first. Not with bind(0): it
    // takes only the odd half of the range and skips ports whose earlier
    // connections wait in TIME_WAIT, so past ~14 000 steered connections a
    // minute each bind scanned for ~1.4 ms, then failed. Instead each port
    // of the range in turn, with SO_REUSEADDR (a TIME_WAIT socket does not
    // block the bind; connect refuses, EADDRNOTAVAIL, only while the same
    // four-tuple is still in TIME_WAIT and cannot be reused).
    // Bound to the server's own address (local, since it listens here): the
    // source the kernel would pick to reach it, known before the SYN, so
    // the exemption names the address and the port, and a client elsewhere
    // using the same source port is still steered.
    let mut last: Option<std::io::Error> = None;
    for _ in 0..BIND_TRIES {
        let sock = socket()?;
        sock.set_reuseaddr(true)?;
        if let Err(e) = sock.bind(SocketAddr::new(server.ip(), sh.ports.next())) {
            last = Some(e);
            continue;
        }
        // Released on any early return below, or with the caller's connection.
        let exempt = sh.steer.exempt(&sock)?;
        match sock.connect(server).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, exempt));
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(format!(
        "no source port free to reach {server} after {BIND_TRIES} tries: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )
    .into())
}

/// Ports [`connect_raw`] tries before giving up.
const BIND_TRIES: usize = 64;

/// The source ports of the responder's connections to the server, in
/// turn over this namespace's ephemeral range.
struct PortCycle {
    next: AtomicU32,
    low: u32,
    count: u32,
}

impl PortCycle {
    /// Over `net.ipv4.ip_local_port_range` (Linux's default if unreadable),
    /// from a random start.
    fn new(seed: u64) -> Self {
        let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().map(|w| w.parse::<u32>().ok());
                Some((it.next()??, it.next()??))
            })
            .filter(|(l, h)| 0 < *l && l <= h && *h <= 65_535)
            .unwrap_or((32_768, 60_999));
        let count = high - low + 1;
        Self {
            next: AtomicU32::new((seed % u64::from(count)) as u32),
            low,
            count,
        }
    }

    fn next(&self) -> u16 {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.count;
        (self.low + i) as u16
    }
}
