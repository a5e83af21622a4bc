//! The typed client of the daemon's API (`add`, `remove`, `list`, `stats`,
//! ...), over a small blocking HTTP/1.1 exchange on its Unix socket, or on
//! a remote daemon's `--listen` port (bearer token, and TLS when the
//! daemon serves it: [`Client::remote`]): one request per connection,
//! `Connection: close`. The daemon's problem bodies come back as
//! `ClientError::Api` with status and detail.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::{Health, Removed, RuleInfo, RuleList, RuleStats};
use crate::spec::RuleSpec;

/// Where the CLI looks for a daemon unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/faultbpf.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached or the exchange broke off.
    #[error("could not talk to the daemon at {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with an error status.
    #[error("the daemon said {status}: {detail}")]
    Api { status: u16, detail: String },
    /// The daemon's answer was not what this client understands.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// What is on the other end of the socket path.
#[derive(Debug)]
pub enum Probe {
    /// A daemon accepts connections.
    Up,
    /// Nothing listens there (no file, or a stale socket).
    Absent,
    /// A socket is there but refuses this user (EACCES/EPERM): the caller
    /// must say so rather than carry on without the daemon.
    Refused(std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Client {
    /// The Unix socket, or for a remote daemon its URL (for messages).
    path: PathBuf,
    remote: Option<Arc<Remote>>,
}

/// A daemon's `--listen` port.
#[derive(Debug)]
struct Remote {
    /// `HOST:PORT`.
    addr: String,
    token: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// How long a remote connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            remote: None,
        }
    }

    /// A remote daemon's `--listen` port `HOST:PORT`, with the bearer
    /// token of its `--token-file`, over TLS when `tls` is given (see
    /// [`crate::tls::client_config`]; the certificate must name `HOST`).
    pub fn remote(
        addr: impl Into<String>,
        token: impl Into<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let addr = addr.into();
        let scheme = if tls.is_some() { "https" } else { "http" };
        Self {
            path: PathBuf::from(format!("{scheme}://{addr}")),
            remote: Some(Arc::new(Remote {
                addr,
                token: token.into(),
                tls,
            })),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when a daemon accepts connections on the socket.
    pub fn is_up(&self) -> bool {
        matches!(self.probe(), Probe::Up)
    }

    /// Whether a daemon listens, nothing does, or it refuses us.
    pub fn probe(&self) -> Probe {
        if let Some(r) = &self.remote {
            return match connect_tcp(&r.addr) {
                Ok(_) => Probe::Up,
                Err(_) => Probe::Absent,
            };
        }
        match UnixStream::connect(&self.path) {
            Ok(_) => Probe::Up,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::PermissionDenied) => Probe::Refused(e),
            Err(_) => Probe::Absent,
        }
    }

    /// `POST /v1/rules`: adds a rule.
    pub fn add(&self, spec: &RuleSpec) -> Result<RuleInfo, ClientError> {
        let body = serde_json::to_value(spec).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call("POST", "/v1/rules", Some(&body))
    }

    /// `GET /v1/rules/{id}`.
    pub fn get(&self, id: u32) -> Result<RuleInfo, ClientError> {
        self.call("GET", &format!("/v1/rules/{id}"), None)
    }

    /// `DELETE /v1/rules/{id}`: removes a rule, answers what it was.
    pub fn remove(&self, id: u32) -> Result<RuleInfo, ClientError> {
        self.call("DELETE", &format!("/v1/rules/{id}"), None)
    }

    /// `DELETE /v1/rules`: removes every rule.
    pub fn remove_all(&self) -> Result<Removed, ClientError> {
        self.call("DELETE", "/v1/rules", None)
    }

    /// `GET /v1/rules`.
    pub fn list(&self) -> Result<Vec<RuleInfo>, ClientError> {
        Ok(self
            .call::<RuleList<RuleInfo>>("GET", "/v1/rules", None)?
            .rules)
    }

    /// `GET /v1/stats`: every rule's counters.
    pub fn stats(&self) -> Result<Vec<RuleStats>, ClientError> {
        Ok(self
            .call::<RuleList<RuleStats>>("GET", "/v1/stats", None)?
            .rules)
    }

    /// One rule's counters; `None` when the daemon no longer has it.
    pub fn stats_of(&self, id: u32) -> Result<Option<RuleStats>, ClientError> {
        Ok(self.stats()?.into_iter().find(|s| s.id == id))
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Result<Health, ClientError> {
        self.call("GET", "/healthz", None)
    }

    /// Sends one request; decodes a 2xx JSON body into `T`.
    pub fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let (status, body) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Api { status, detail });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends one request; returns status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = match &self.remote {
            Some(r) => format!("Authorization: Bearer {}\r\n", r.token),
            None => String::new(),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: faultbpf\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let exchange = |mut s: Box<dyn ReadWrite>| {
            s.write_all(head.as_bytes())?;
            s.write_all(body.as_bytes())?;
            s.flush()?;
            read_response(BufReader::new(s))
        };
        let stream: Box<dyn ReadWrite> = match &self.remote {
            None => {
                let s = UnixStream::connect(&self.path).map_err(io)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(io)?;
                Box::new(s)
            }
            Some(r) => {
                let s = connect_tcp(&r.addr).map_err(io)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .map_err(io)?;
                match &r.tls {
                    None => Box::new(s),
                    Some(config) => {
                        let host = r.addr.rsplit_once(':').map_or(&r.addr[..], |(h, _)| h);
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        let name = rustls::pki_types::ServerName::try_from(host.to_string())
                            .map_err(|e| {
                                io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                            })?;
                        let conn = rustls::ClientConnection::new(config.clone(), name)
                            .map_err(|e| io(std::io::Error::other(e)))?;
                        Box::new(rustls::StreamOwned::new(conn, s))
                    }
                }
            }
        };
        exchange(stream).map_err(|e| match e {
            ReadError::Io(e) => io(e),
            ReadError::Bad(m) => ClientError::Protocol(m),
        })
    }
}

/// A byte stream the exchange runs over (Unix, TCP or TLS).
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Connects to `HOST:PORT`, trying each address it resolves to.
fn connect_tcp(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{addr}` resolves to no address"),
        )
    }))
}

enum ReadError {
    Io(std::io::Error),
    Bad(String),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Status line, headers, then a body by Content-Length, chunks, or EOF.
fn read_response(mut r: impl BufRead) -> Result<(u16, Vec<u8>), ReadError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ReadError::Bad(format!("status line `{}`", line.trim())))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| ReadError::Bad(format!("chunk size `{}`", line.trim())))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> (u16, String) {
        match read_response(raw.as_bytes()) {
            Ok((s, b)) => (s, String::from_utf8(b).unwrap()),
            Err(_) => panic!("parse failed"),
        }
    }

    #[test]
    fn reads_length_chunked_and_eof_bodies() {
        assert_eq!(
            parse("HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"),
            (201, "{}".into())
        );
        assert_eq!(
            parse(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            ),
            (200, "abcde".into())
        );
        assert_eq!(
            parse("HTTP/1.1 404 Not Found\r\n\r\nnope"),
            (404, "nope".into())
        );
    }
}
