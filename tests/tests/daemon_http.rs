//! Issue 12, "the daemon can't be knocked over": slow-loris on `--listen`
//! (2,000 idle or partial-header connections) is cut off by the head
//! timeout and the connection cap while the Unix socket keeps answering;
//! errors of the HTTP layer itself (1,000 headers, a negative or a 2^63
//! Content-Length, a missing token with a body announced) are answered,
//! at once, with problem+json bodies.

mod daemon_kit;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use daemon_kit::p99;
use faultbpf_tests::{
    SERVER_IF, Topology,
    daemon::Daemon,
    http::{Request, unix_request},
    temp::TempFile,
};
use serde_json::Value;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const API_PORT: u16 = 9470;
/// The daemon's head timeout (daemon/http.rs), and what we allow on top.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(4);

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Sends `raw` on `s` and reads the answer until EOF (at most `wait`):
/// (status, content type, JSON body).
fn raw_exchange<S: Read + Write>(mut s: S, raw: &[u8]) -> (u16, String, Value) {
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "no answer to {:?}: {text:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        )
    });
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, ctype, body)
}

fn unix_raw(socket: &Path, raw: &[u8]) -> (u16, String, Value) {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    raw_exchange(s, raw)
}

fn assert_problem(what: &str, got: (u16, String, Value), status: u16) {
    let (s, ctype, body) = got;
    assert_eq!(s, status, "{what}: {body}");
    assert_eq!(ctype, "application/problem+json", "{what}: {body}");
    assert_eq!(body["status"], status, "{what}: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: {body}"
    );
}

#[test]
fn http_layer_errors_are_problem_json_and_answered_at_once() {
    let topo = Topology::new("dht-err");
    let token_file = TempFile::new("dht-token", ".token", &format!("{TOKEN}\n"));
    let listen = format!("127.0.0.1:{API_PORT}");
    let d = Daemon::start(
        &topo.server,
        "httperr",
        &[
            "--iface",
            SERVER_IF,
            "--listen",
            &listen,
            "--token-file",
            token_file.as_str(),
        ],
    );
    let mut many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("X-Filler-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_problem("1000 headers", unix_raw(d.socket(), &many), 431);
    let neg = b"POST /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n";
    assert_problem("a negative Content-Length", unix_raw(d.socket(), neg), 400);
    let started = Instant::now();
    let huge = b"POST /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n";
    assert_problem("Content-Length 2^63", unix_raw(d.socket(), huge), 413);
    assert!(started.elapsed() < Duration::from_secs(2));

    // On TCP the token is checked before a byte of body is read: the
    // announced body never comes, the answer does.
    let addr: SocketAddr = listen.parse().unwrap();
    let s = topo
        .server
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let started = Instant::now();
    let got = raw_exchange(
        s,
        b"POST /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    );
    assert_problem("no token, body announced", got, 401);
    assert!(started.elapsed() < Duration::from_secs(2));
    d.assert_healthy("HTTP-layer errors");
}

#[test]
fn slow_loris_on_listen_is_cut_off_and_the_unix_socket_keeps_answering() {
    const CONNECTIONS: usize = 2_000;
    let topo = Topology::new("dht-loris");
    let token_file = TempFile::new("dht-loris", ".token", &format!("{TOKEN}\n"));
    let listen = format!("127.0.0.1:{API_PORT}");
    let d = Daemon::start(
        &topo.server,
        "loris",
        &[
            "--iface",
            SERVER_IF,
            "--listen",
            &listen,
            "--token-file",
            token_file.as_str(),
        ],
    );
    let health = |n: usize| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let r = unix_request(d.socket(), &Request::new("GET", "/healthz"))
                    .unwrap_or_else(|e| panic!("the Unix socket must answer: {e}"));
                assert_eq!(r.status, 200, "{r}");
                thread::sleep(Duration::from_millis(20));
                t.elapsed() - Duration::from_millis(20)
            })
            .collect()
    };
    let control = p99(&mut health(50));
    let fds_before = fds(d.pid());

    // Half send nothing, half a head that never ends.
    let addr: SocketAddr = listen.parse().unwrap();
    let opened = Instant::now();
    let mut conns: Vec<TcpStream> = topo.server.run(|| {
        (0..CONNECTIONS)
            .map(|i| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
                if i % 2 == 1 {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        .unwrap();
                }
                s
            })
            .collect()
    });
    // Each is closed within the head timeout of its own accept; the last
    // ones may have waited for a full accept queue.
    let made = Instant::now();
    eprintln!("{CONNECTIONS} connections made in {:?}", made - opened);
    let loaded = p99(&mut health(50));
    assert!(
        loaded <= control + Duration::from_millis(100),
        "/healthz on the Unix socket: p99 {loaded:?} with {CONNECTIONS} idle TCP connections, \
         {control:?} without"
    );

    // Every one of them is closed by the daemon within the head timeout.
    let deadline = made + HEAD_TIMEOUT + SLACK;
    let mut open = 0;
    for s in &mut conns {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(10);
        s.set_read_timeout(Some(left)).unwrap();
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(_) => open += 1,
        }
    }
    assert_eq!(
        open,
        0,
        "{open} of {CONNECTIONS} idle or partial connections still open {:?} after the last \
         was made",
        made.elapsed()
    );
    drop(conns);
    thread::sleep(Duration::from_millis(300));
    let fds_after = fds(d.pid());
    assert!(
        fds_after <= fds_before + 4,
        "the daemon holds {fds_after} file descriptors after the flood, {fds_before} before"
    );
    d.assert_healthy("the slow-loris flood");
}
