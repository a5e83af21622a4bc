//! A tiny HTTP/1.1 client for the daemon's API, written against the bytes
//! on the wire rather than a library, so tests can also send what a real
//! client never would (chunked bodies, huge headers, a body cut short) and
//! see exactly what came back: over the daemon's Unix socket, or over TCP
//! from inside a test namespace.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use serde_json::Value;

use crate::Netns;

/// Read and write timeout of one HTTP exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the response) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }

    /// Panics unless the status is `status`; returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self.json()
    }

    /// Panics unless this is an RFC 9457 problem with `status`: that status,
    /// `Content-Type: application/problem+json`, and a JSON object with the
    /// same `status`, a `title` and a non-empty `detail`. Returns the detail.
    pub fn expect_problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "unexpected status: {self}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "a problem needs Content-Type application/problem+json: {self}"
        );
        let body = self.json();
        assert_eq!(body["status"], status, "problem body status: {self}");
        assert!(body["title"].is_string(), "problem without title: {self}");
        assert!(body["type"].is_string(), "problem without type: {self}");
        let detail = body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("problem without detail: {self}"));
        assert!(!detail.trim().is_empty(), "empty problem detail: {self}");
        detail.to_string()
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = self.text();
        let shown: String = body.chars().take(2000).collect();
        write!(f, "HTTP {} {:?} {shown}", self.status, self.headers)
    }
}

/// One HTTP/1.1 request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<&'a [u8]>,
    /// Send the body with `Transfer-Encoding: chunked` instead of a length.
    pub chunked: bool,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Request {
            method,
            path,
            headers: Vec::new(),
            body: None,
            chunked: false,
        }
    }

    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

/// Sends `req` on `stream` (one request, `Connection: close`) and reads the
/// response. Write errors are tolerated once the head is out: a server may
/// answer (413) and close before it has read a large body, and that answer
/// is what the test wants to see.
pub fn exchange<S: Read + Write>(mut stream: S, req: &Request<'_>) -> io::Result<Response> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: faultbpf\r\nConnection: close\r\n",
        req.method, req.path
    );
    for (k, v) in &req.headers {
        head += &format!("{k}: {v}\r\n");
    }
    if let Some(body) = req.body {
        if req.chunked {
            head += "Transfer-Encoding: chunked\r\n";
        } else {
            head += &format!("Content-Length: {}\r\n", body.len());
        }
        if !req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            head += "Content-Type: application/json\r\n";
        }
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    if let Some(body) = req.body {
        let sent = if req.chunked {
            body.chunks(64 * 1024)
                .try_for_each(|c| {
                    stream.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
                    stream.write_all(c)?;
                    stream.write_all(b"\r\n")
                })
                .and_then(|()| stream.write_all(b"0\r\n\r\n"))
        } else {
            stream.write_all(body)
        };
        match sent {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = stream.flush();
    read_response(BufReader::new(stream))
}

fn read_response(mut r: impl BufRead) -> io::Result<Response> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = find("content-length") {
        let n: usize = n
            .parse()
            .map_err(|_| bad(format!("bad content-length {n:?}")))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One request over the Unix socket at `path`.
pub fn unix_request(path: &Path, req: &Request<'_>) -> io::Result<Response> {
    unix_request_within(path, req, IO_TIMEOUT)
}

/// [`unix_request`] waiting up to `timeout` for each read and write, for
/// a request the daemon is expected to answer late.
pub fn unix_request_within(
    path: &Path,
    req: &Request<'_>,
    timeout: Duration,
) -> io::Result<Response> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    exchange(s, req)
}

/// One request over TCP to `addr`, from inside `ns` (the daemon's TCP
/// listeners bind the namespace's own loopback).
pub fn tcp_request(ns: &Netns, addr: SocketAddr, req: &Request<'_>) -> io::Result<Response> {
    let s = ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    exchange(s, req)
}
