//! The bench's own HTTP/1.1, both ends: the client that talks to the
//! daemon's API and measures requests, and a keep-alive server with a
//! fixed answer. xtask cannot use faultbpf's hyper (it builds before
//! faultbpf can), and Python's `http.server` spends hundreds of µs per
//! request with a wide spread, which would bury the microseconds the http
//! scenario measures.
//!
//! Only what those callers need: requests without a body from the server's
//! point of view (it answers `GET` and `HEAD` alike and reads no body),
//! responses framed by `Content-Length`, chunked, or the end of the
//! connection.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};

/// The server's answer to every request: 200 with this body.
pub const BODY: &str = "faultbpf bench: the real server answered\n";

/// Refuses a request head longer than this (no request of the bench's is).
const MAX_HEAD: usize = 16 * 1024;

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Writes one request. `close`: ask the server to close after answering.
pub fn write_request(
    w: &mut impl Write,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    close: bool,
) -> std::io::Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: faultbpf-bench\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    if let Some(body) = json_body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    w.write_all(req.as_bytes())
}

/// Reads one response into `buf` (cleared first; reused across requests so
/// a measuring loop allocates nothing). Nothing may follow it: the bench
/// never pipelines.
pub fn read_response(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Response> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading an HTTP response"),
        };
        if n > 0 {
            buf.extend_from_slice(&chunk[..n]);
        }
        if let Some(resp) = parse_response(buf, n == 0)? {
            return Ok(resp);
        }
        if n == 0 {
            bail!(
                "the connection closed in the middle of a response: {:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }
}

/// A complete response in `raw`, None while more is needed; `eof`: the
/// peer closed, which ends a body with no length.
fn parse_response(raw: &[u8], eof: bool) -> Result<Option<Response>> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&raw[..end]).context("a response head that is not UTF-8")?;
    let rest = &raw[end + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no HTTP status in {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    let body = if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .with_context(|| format!("bad Content-Length in {head:?}"))?;
        if rest.len() < len {
            return Ok(None);
        }
        &rest[..len]
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        if !rest.ends_with(b"0\r\n\r\n") && !eof {
            return Ok(None);
        }
        return Ok(Some(Response {
            status,
            body: dechunk(&String::from_utf8_lossy(rest)),
        }));
    } else if eof {
        rest
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    }))
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The fixed answer, head and body.
fn answer() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

/// Serves one connection until the client closes it or `stop`: answers
/// each request head with [`BODY`]; a client that sends `Connection: close`
/// is closed after its answer, and one that does not speak HTTP (faultbpf's
/// TLS probe sends a ClientHello) gets a 400 and is closed. The stream has a
/// read timeout, so `stop` is seen.
pub fn serve_keep_alive(mut stream: TcpStream, stop: &AtomicBool) {
    let ok = answer();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let close = std::str::from_utf8(&buf[..end]).is_ok_and(|h| {
                h.lines().skip(1).any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("connection")
                            && v.trim().eq_ignore_ascii_case("close")
                    })
                })
            });
            buf.drain(..end + 4);
            if stream.write_all(&ok).is_err() || close {
                return;
            }
            continue;
        }
        if buf.first().is_some_and(|b| !b.is_ascii_alphabetic()) || buf.len() > MAX_HEAD {
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_responses_by_length_chunks_or_close() {
        let fixed = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse_response(&fixed[..fixed.len() - 1], false).unwrap(),
            None
        );
        assert_eq!(
            parse_response(fixed, false).unwrap(),
            Some(Response {
                status: 200,
                body: "hello".into()
            })
        );
        let chunked = b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n\
                        4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(&chunked[..40], false).unwrap(), None);
        assert_eq!(
            parse_response(chunked, false).unwrap().unwrap().body,
            "{\"a\":1}"
        );
        let until_close = b"HTTP/1.1 503 Service Unavailable\r\n\r\ngone";
        assert_eq!(parse_response(until_close, false).unwrap(), None);
        assert_eq!(
            parse_response(until_close, true).unwrap().unwrap().status,
            503
        );
        assert!(parse_response(b"garbage\r\n\r\n", true).is_err());
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
        assert_eq!(dechunk(""), "");
    }

    #[test]
    fn requests_carry_their_body_length() {
        let mut w = Vec::new();
        write_request(&mut w, "POST", "/v1/rules", Some("{}"), true).unwrap();
        let text = String::from_utf8(w).unwrap();
        assert!(text.starts_with("POST /v1/rules HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"), "{text}");
        let mut w = Vec::new();
        write_request(&mut w, "GET", "/", None, false).unwrap();
        assert_eq!(w, b"GET / HTTP/1.1\r\nHost: faultbpf-bench\r\n\r\n");
    }

    #[test]
    fn the_server_answers_keep_alive_requests_and_refuses_tls() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(std::time::Duration::from_millis(100)))
                    .unwrap();
                serve_keep_alive(s, &AtomicBool::new(false));
            }
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let mut buf = Vec::new();
        for _ in 0..3 {
            write_request(&mut c, "GET", "/", None, false).unwrap();
            let r = read_response(&mut c, &mut buf).unwrap();
            assert_eq!((r.status, r.body.as_str()), (200, BODY));
        }
        write_request(&mut c, "GET", "/", None, true).unwrap();
        assert_eq!(read_response(&mut c, &mut buf).unwrap().status, 200);
        let mut tls = TcpStream::connect(addr).unwrap();
        tls.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05]).unwrap();
        assert_eq!(read_response(&mut tls, &mut buf).unwrap().status, 400);
        server.join().unwrap();
    }
}
