//! Start-up checks of the real server: that one listens on the port in
//! this network namespace (the responder forwards to it), and that it does
//! not speak TLS, which faultbpf will not intercept.
//!
//! The TLS check sends a ClientHello and looks at the first bytes back: a
//! TLS server answers with a handshake (0x16) or an alert (0x15) record,
//! version 3.x; an HTTP server answers `HTTP/1.x 400` or closes.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// How long the TLS probe waits for the server's first bytes.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Why the port's server cannot be faulted.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens on the port here.
    #[error(
        "no server listens on TCP port {0} in this network namespace; start it first, run \
         faultbpf in the server's namespace (ip netns exec NAME faultbpf http ...), or steer \
         this host's clients with --side client"
    )]
    NoListener(u16),
    /// `/proc/net/tcp*` could not be read.
    #[error("could not read {path}")]
    Proc {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    /// The probe connection failed.
    #[error("could not connect to the server on {0} to check it speaks plain HTTP")]
    Connect(SocketAddr, #[source] io::Error),
    /// A TLS server.
    #[error(
        "the server on {0} speaks TLS: faultbpf http answers plain HTTP only and does not \
         intercept TLS; fault the plain-HTTP port behind the TLS terminator, or use a packet \
         fault (reset, blackhole, delay) on this one"
    )]
    Tls(SocketAddr),
}

/// The address to reach the server listening on TCP `port` in this
/// network namespace: its bound address, or loopback for a wildcard.
pub fn listener_addr(port: u16) -> Result<SocketAddr, ProbeError> {
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            // No IPv6 in this kernel: nothing listens there.
            Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ProbeError::Proc { path, source }),
        };
        if let Some(addr) = find_listener(&text, port, v6) {
            return Ok(addr);
        }
    }
    Err(ProbeError::NoListener(port))
}

/// A listener on `port` in one `/proc/net/tcp*` table.
fn find_listener(table: &str, port: u16, v6: bool) -> Option<SocketAddr> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        if state != LISTEN {
            return None;
        }
        let (ip_hex, port_hex) = local.split_once(':')?;
        if u16::from_str_radix(port_hex, 16).ok()? != port {
            return None;
        }
        let ip = parse_ip(ip_hex, v6)?;
        let ip = match ip {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Some(SocketAddr::new(ip, port))
    })
}

/// `/proc/net/tcp*` prints each 32-bit word of the address in host order.
fn parse_ip(hex: &str, v6: bool) -> Option<IpAddr> {
    let words = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if v6 {
        let b: [u8; 16] = bytes.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        let b: [u8; 4] = bytes.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    }
}

/// A TLS 1.2 ClientHello with TLS 1.3 offered too: any TLS server answers
/// it with a ServerHello or an alert.
fn client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
    let suites: &[u8] = &[0x13, 0x01, 0xc0, 0x2f, 0xc0, 0x2b, 0x00, 0x9c, 0x00, 0x2f];
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[1, 0]); // compression: null
    let exts: &[u8] = &[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, // sig algs
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // groups: P-256
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // point formats
    ];
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(exts);
    let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Whether a server's first bytes are a TLS record.
fn is_tls(first: &[u8]) -> bool {
    matches!(first, [0x15 | 0x16, 0x03, ..])
}

/// Refuses a server that answers a ClientHello like a TLS server.
pub async fn refuse_tls(addr: SocketAddr) -> Result<(), ProbeError> {
    let mut s = timeout(PROBE_WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| ProbeError::Connect(addr, io::ErrorKind::TimedOut.into()))?
        .map_err(|e| ProbeError::Connect(addr, e))?;
    // A server that resets or closes at once is not TLS either.
    if s.write_all(&client_hello()).await.is_err() {
        return Ok(());
    }
    let mut first = [0u8; 2];
    let mut got = 0;
    while got < first.len() {
        match timeout(PROBE_WAIT, s.read(&mut first[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    if got == first.len() && is_tls(&first) {
        return Err(ProbeError::Tls(addr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_wildcard_listener_as_loopback() {
        let t = "  sl  local_address rem_address   st\n\
                 0: 00000000:1F90 00000000:0000 0A 0\n\
                 1: 0100007F:0050 0100007F:9C40 01 0\n";
        assert_eq!(
            find_listener(t, 8080, false),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        // An established connection on the port is not a listener.
        assert_eq!(find_listener(t, 80, false), None);
    }

    #[test]
    fn reads_a_bound_ipv4_address() {
        let t = "h\n 0: 0200C80A:1F90 00000000:0000 0A 0\n";
        assert_eq!(
            find_listener(t, 8080, false),
            Some("10.200.0.2:8080".parse().unwrap())
        );
    }

    #[test]
    fn tls_records_are_recognised() {
        assert!(is_tls(&[0x16, 0x03]));
        assert!(is_tls(&[0x15, 0x03]));
        assert!(!is_tls(b"HT"));
        let hello = client_hello();
        assert_eq!(
            usize::from(u16::from_be_bytes([hello[3], hello[4]])) + 5,
            hello.len()
        );
    }
}
