//! The daemon's own accept loop, in front of hyper: what `axum::serve`
//! does not bound, and errors hyper answers without a body.
//!
//! Measured on `axum::serve`: 2,000 idle or partial-header connections on
//! `--listen` were never closed (RSS 13 -> 152 MB at ~10k); 1,000 headers
//! got a bare 431 and a negative Content-Length a bare 400; a
//! Content-Length of 2^63 got no answer at all. Here, per listener:
//!
//! - at most [`MAX_CONNECTIONS`] connections; the next one is answered 503
//!   at once and closed, so a flood on TCP cannot starve the Unix socket;
//! - the request head must arrive within [`HEAD_TIMEOUT`] of the accept and
//!   fit in [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers (else 408/431);
//! - Content-Length must be a plain number no larger than the body limit
//!   (else 400/413), and on TCP the bearer token is checked, all before a
//!   byte of body is read;
//! - the whole exchange must end within [`REQUEST_TIMEOUT`];
//! - one request per connection (the clients send `Connection: close`), so
//!   every request goes through these checks.
//!
//! Every answer given here is `application/problem+json`, like the API's.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    sync::Semaphore,
};

use super::api::{BODY_LIMIT, constant_time_eq};

/// Connections served at once, per listener.
pub const MAX_CONNECTIONS: usize = 256;
/// From accept to the end of the request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// From accept to the end of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of request line and headers.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers in one request.
pub const MAX_HEADERS: usize = 64;

/// Something to accept connections from: the Unix socket or a TCP port,
/// plain or TLS.
pub trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// What a request is read from once the connection is set up (the
    /// stream itself, or a TLS session over it).
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Writes what it can without waiting (the over-capacity answer).
    fn try_write(stream: &Self::Stream, bytes: &[u8]);
    /// Sets the connection up (a TLS handshake); runs in the connection's
    /// own task under [`HEAD_TIMEOUT`], never in the accept loop, so a
    /// slow handshake holds only its own slot.
    fn upgrade(
        &self,
        stream: Self::Stream,
    ) -> impl Future<Output = io::Result<Self::Conn>> + Send + 'static;
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    type Conn = Self::Stream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
    fn try_write(stream: &Self::Stream, bytes: &[u8]) {
        let _ = stream.try_write(bytes);
    }
    fn upgrade(
        &self,
        stream: Self::Stream,
    ) -> impl Future<Output = io::Result<Self::Conn>> + Send + 'static {
        std::future::ready(Ok(stream))
    }
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    type Conn = Self::Stream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
    fn try_write(stream: &Self::Stream, bytes: &[u8]) {
        let _ = stream.try_write(bytes);
    }
    fn upgrade(
        &self,
        stream: Self::Stream,
    ) -> impl Future<Output = io::Result<Self::Conn>> + Send + 'static {
        std::future::ready(Ok(stream))
    }
}

/// `--listen` with `--tls-cert`: TCP, then a TLS handshake per connection
/// (which also checks the client's certificate when a client CA is set).
pub struct TlsListener {
    pub tcp: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

impl Accept for TlsListener {
    type Stream = tokio::net::TcpStream;
    type Conn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    async fn accept(&self) -> io::Result<Self::Stream> {
        self.tcp.accept().await.map(|(s, _)| s)
    }
    fn try_write(_stream: &Self::Stream, _bytes: &[u8]) {
        // Plain text on a TLS port is noise to the client: just close.
    }
    fn upgrade(
        &self,
        stream: Self::Stream,
    ) -> impl Future<Output = io::Result<Self::Conn>> + Send + 'static {
        self.acceptor.accept(stream)
    }
}

/// Serves `app` on `listener` until the process ends; `token`: the bearer
/// token every request must carry.
pub async fn serve<L: Accept>(listener: L, app: Router, token: Option<String>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let token = token.map(Arc::new);
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: wait rather than spin.
                super::log(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            L::try_write(
                &stream,
                &problem(
                    503,
                    &format!("the daemon serves {MAX_CONNECTIONS} connections at once; retry"),
                ),
            );
            continue;
        };
        let (app, token) = (app.clone(), token.clone());
        let upgrade = listener.upgrade(stream);
        tokio::spawn(async move {
            let _slot = slot;
            let conn = match tokio::time::timeout(HEAD_TIMEOUT, upgrade).await {
                Ok(Ok(c)) => c,
                // A failed or stalled handshake (wrong CA, no client
                // certificate): rustls has already sent its alert.
                Ok(Err(_)) | Err(_) => return,
            };
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, one(conn, app, token)).await;
        });
    }
}

/// One connection: read and check the head, then let hyper serve it.
async fn one<S>(mut stream: S, app: Router, token: Option<Arc<String>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(h))) => h,
        // Closed before a whole head: nothing to answer.
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => {
            let detail = format!(
                "the request head did not arrive within {}s",
                HEAD_TIMEOUT.as_secs()
            );
            return refuse(&mut stream, 408, &detail).await;
        }
    };
    let head = match head {
        Head::Complete(bytes) => bytes,
        Head::TooLarge => {
            let detail = format!("the request head is larger than {MAX_HEAD} bytes");
            return refuse(&mut stream, 431, &detail).await;
        }
    };
    if let Err((status, detail)) = check_head(&head, token.as_deref().map(String::as_str)) {
        return refuse(&mut stream, status, &detail).await;
    }
    let io = TokioIo::new(Prefixed {
        prefix: head,
        at: 0,
        inner: stream,
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(io, TowerToHyperService::new(app))
        .await;
}

enum Head {
    /// Everything read so far, the head and perhaps the start of a body.
    Complete(Vec<u8>),
    TooLarge,
}

/// Reads until the blank line that ends the head; `None` if the peer
/// closed first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<Head>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(Head::Complete(buf)));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Some(Head::TooLarge));
        }
    }
}

/// Checks a complete head: parses, bounded headers, Content-Length, token.
fn check_head(head: &[u8], token: Option<&str>) -> Result<(), (u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err((400, "the request head is incomplete".into()));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                431,
                format!("more than {MAX_HEADERS} headers in one request"),
            ));
        }
        Err(e) => return Err((400, format!("malformed request: {e}"))),
    }
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = String::from_utf8_lossy(h.value);
            let v = v.trim();
            let n: u64 = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                v.parse().unwrap_or(u64::MAX)
            } else {
                return Err((
                    400,
                    format!("Content-Length `{v}` is not a length; send the body's size in bytes"),
                ));
            };
            if n > BODY_LIMIT as u64 {
                return Err((
                    413,
                    format!("Content-Length {n} is larger than the {BODY_LIMIT}-byte limit"),
                ));
            }
        }
    }
    if let Some(token) = token {
        let ok = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()));
        if !ok {
            return Err((
                401,
                "a bearer token is required: Authorization: Bearer <token from --token-file>"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Answers `status` with a problem body and closes.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, detail: &str) {
    let _ = stream.write_all(&problem(status, detail)).await;
    let _ = stream.shutdown().await;
}

/// A whole HTTP/1.1 answer with an RFC 9457 body.
fn problem(status: u16, detail: &str) -> Vec<u8> {
    let code = axum::http::StatusCode::from_u16(status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let title = code.canonical_reason().unwrap_or("error");
    let body = serde_json::to_string(&crate::api::Problem {
        kind: "about:blank".into(),
        title: title.into(),
        status,
        detail: detail.into(),
    })
    .unwrap_or_default();
    format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A stream that first yields bytes already read from it.
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_checked_before_any_body() {
        let ok = b"POST /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n";
        assert!(check_head(ok, None).is_ok());
        let neg = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(check_head(neg, None).unwrap_err().0, 400);
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n";
        let (status, detail) = check_head(huge, None).unwrap_err();
        assert_eq!(status, 413);
        assert!(detail.contains("9223372036854775808"), "{detail}");
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..1000 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(check_head(&many, None).unwrap_err().0, 431);
        let tok = "0123456789abcdef";
        assert_eq!(check_head(ok, Some(tok)).unwrap_err().0, 401);
        let with = b"POST / HTTP/1.1\r\nAuthorization: Bearer 0123456789abcdef\r\n\r\n";
        assert!(check_head(with, Some(tok)).is_ok());
    }

    #[test]
    fn problems_are_whole_http_answers() {
        let p = String::from_utf8(problem(431, "too many")).unwrap();
        assert!(
            p.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{p}"
        );
        assert!(p.contains("content-type: application/problem+json\r\n"));
        let body = p.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 431);
        assert_eq!(v["detail"], "too many");
    }
}
