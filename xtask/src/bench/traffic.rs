//! The bench's own load: small servers in the server namespace and clients in
//! the client namespace, as threads of this process (each enters its
//! namespace with setns), so latency, connections per second and small-UDP
//! rates need no extra tool. Every loop runs for a fixed duration or until a
//! stop flag, and every socket wait has a timeout.
//!
//! Ports (all above the 60000 that rule sets stop at, or TCP):
//! TCP 7001 request/response, TCP 7002 connect/request/close, UDP 61000 sink
//! (from 61001), UDP 62000 echo (probe from 62001).

use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd as _, BorrowedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    stats,
    topo::{CLIENT_IP, Netns, SERVER_IP},
};

pub const RR_PORT: u16 = 7001;
pub const CRR_PORT: u16 = 7002;
pub const SINK_PORT: u16 = 61_000;
pub const SINK_FROM: u16 = 61_001;
pub const ECHO_PORT: u16 = 62_000;
pub const ECHO_FROM: u16 = 62_001;

/// Request and response size of the latency and connection tests.
pub const MSG: usize = 64;
/// Payload of the small-UDP test: 14 + 20 + 8 + 18 = 60-byte frames.
pub const SMALL_UDP: usize = 18;

/// Waits until `fd` is readable, at most `ms` milliseconds.
pub fn readable(fd: BorrowedFd<'_>, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0
}

/// SO_RCVBUFFORCE (root may exceed rmem_max), so bursts are not lost in the
/// socket rather than where the bench looks.
pub fn force_rcvbuf(fd: BorrowedFd<'_>, bytes: i32) {
    // SAFETY: setsockopt with a pointer to an int of the stated size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// SO_LINGER 0: close with a RST, so a connection-rate loop leaves no
/// TIME_WAIT sockets that would exhaust the client's ports.
pub fn abort_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a linger of the stated size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// The servers of the overhead and apply scenarios, in the server namespace;
/// stopped and joined on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl Servers {
    /// TCP echo (7001), TCP connect/request/close (7002), UDP sink (61000)
    /// and UDP echo (62000), pinned to `cpu`.
    pub fn start(ns: &Netns, cpu: usize) -> Result<Self> {
        let mut servers = Self::none();
        servers.tcp(
            ns,
            "rr server",
            cpu,
            RR_PORT,
            Answer::Persistent(echo_until_closed),
        )?;
        servers.tcp(ns, "crr server", cpu, CRR_PORT, Answer::Once(answer_once))?;
        let s = Arc::clone(&servers.stop);
        servers
            .threads
            .push(ns.spawn("udp sink", Some(cpu), move || {
                udp_server(SINK_PORT, &s, false)
            })?);
        let s = Arc::clone(&servers.stop);
        servers
            .threads
            .push(ns.spawn("udp echo", Some(cpu), move || {
                udp_server(ECHO_PORT, &s, true)
            })?);
        Ok(servers)
    }

    /// No server yet; add them with [`Servers::tcp`].
    pub fn none() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    /// A TCP server on `SERVER_IP:port` in `ns`, its accepting thread and
    /// the threads it answers on pinned to `cpu`.
    pub fn tcp(
        &mut self,
        ns: &Netns,
        what: &str,
        cpu: usize,
        port: u16,
        answer: Answer,
    ) -> Result<()> {
        let s = Arc::clone(&self.stop);
        self.threads
            .push(ns.spawn(what, Some(cpu), move || tcp_server(port, s, answer))?);
        Ok(())
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("bench: a server failed: {err:#}"),
                Err(_) => eprintln!("bench: a server thread panicked"),
            }
        }
    }
}

/// How a TCP server answers the connections it accepts.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// On a thread of its own, until the client closes (request/response,
    /// HTTP keep-alive); the stream has a read timeout so `stop` is seen.
    Persistent(fn(TcpStream, &AtomicBool)),
    /// On the accepting thread, which then closes it (connection rate).
    Once(fn(TcpStream)),
}

/// Accepts connections until `stop` and answers each as `answer` says.
fn tcp_server(port: u16, stop: Arc<AtomicBool>, answer: Answer) -> Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(SERVER_IP.into(), port))
        .with_context(|| format!("binding TCP {port}"))?;
    listener.set_nonblocking(true)?;
    let mut handlers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if !readable(listener.as_fd(), 50) {
            continue;
        }
        let (stream, _) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).context("accept"),
        };
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        match answer {
            Answer::Persistent(serve) => {
                let stop = Arc::clone(&stop);
                // Inherits the namespace and CPU of this thread.
                handlers.push(std::thread::spawn(move || serve(stream, &stop)));
            }
            Answer::Once(serve) => serve(stream),
        }
        handlers.retain(|h| !h.is_finished());
    }
    for h in handlers {
        let _ = h.join();
    }
    Ok(())
}

fn read_msg(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return false,
            Ok(n) => filled += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn echo_until_closed(mut stream: TcpStream, stop: &AtomicBool) {
    let mut buf = [0u8; MSG];
    while read_msg(&mut stream, &mut buf, stop) {
        if stream.write_all(&buf).is_err() {
            return;
        }
    }
}

/// Reads one message and answers it; a client silent for a second is
/// dropped.
fn answer_once(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; MSG];
    let mut filled = 0;
    while filled < MSG {
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
    }
    let _ = stream.write_all(&buf);
}

/// Receives until `stop`; `echo` sends each datagram back.
fn udp_server(port: u16, stop: &AtomicBool, echo: bool) -> Result<()> {
    let sock = UdpSocket::bind(SocketAddr::new(SERVER_IP.into(), port))
        .with_context(|| format!("binding UDP {port}"))?;
    force_rcvbuf(sock.as_fd(), 8 << 20);
    sock.set_nonblocking(true)?;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if !readable(sock.as_fd(), 50) {
            continue;
        }
        // Drain what is queued before polling again.
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if echo {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("recv"),
            }
        }
    }
    Ok(())
}

/// Latency of request/response transactions on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Latency {
    /// The percentiles of `samples`, in ns (sorts them).
    pub fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let us = |p| stats::percentile(samples, p).map_or(f64::NAN, |ns| ns as f64 / 1000.0);
        Self {
            p50_us: us(50.0),
            p99_us: us(99.0),
        }
    }
}

/// Request/response over TCP for `dur`, from the client namespace.
pub fn tcp_rr(ns: &Netns, cpu: usize, dur: Duration) -> Result<Latency> {
    ns.run(Some(cpu), || {
        let server = SocketAddr::new(SERVER_IP.into(), RR_PORT);
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))
            .context("connecting to the request/response server")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let msg = [0x5au8; MSG];
        let mut buf = [0u8; MSG];
        let never = AtomicBool::new(false);
        let mut samples: Vec<u64> = Vec::with_capacity(50_000);
        let start = Instant::now();
        // Bounded by time, and by count in case the clock misbehaves.
        while start.elapsed() < dur && samples.len() < 5_000_000 {
            let t = Instant::now();
            stream.write_all(&msg)?;
            if !read_msg(&mut stream, &mut buf, &never) {
                bail!("the request/response server stopped answering");
            }
            samples.push(t.elapsed().as_nanos() as u64);
        }
        Ok(Latency::of(&mut samples))
    })
}

/// New connections per second (connect, 64-byte request and answer, close)
/// for `dur`, from the client namespace.
pub fn tcp_crr(ns: &Netns, cpu: usize, dur: Duration) -> Result<f64> {
    ns.run(Some(cpu), || {
        let server = SocketAddr::new(SERVER_IP.into(), CRR_PORT);
        let msg = [0xa5u8; MSG];
        let mut buf = [0u8; MSG];
        let never = AtomicBool::new(false);
        let mut done = 0u64;
        let start = Instant::now();
        while start.elapsed() < dur && done < 10_000_000 {
            let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))
                .context("connecting to the connection-rate server")?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(&msg)?;
            if !read_msg(&mut stream, &mut buf, &never) {
                bail!("the connection-rate server did not answer");
            }
            abort_on_close(&stream);
            done += 1;
        }
        Ok(done as f64 / start.elapsed().as_secs_f64())
    })
}

/// Sends 18-byte UDP datagrams to the sink as fast as one core can for
/// `dur`; returns how many were sent and for how long.
pub fn udp_flood(ns: &Netns, cpu: usize, dur: Duration) -> Result<(u64, Duration)> {
    ns.run(Some(cpu), || {
        let sock = UdpSocket::bind(SocketAddr::new(CLIENT_IP.into(), SINK_FROM))?;
        sock.connect(SocketAddr::new(SERVER_IP.into(), SINK_PORT))?;
        let payload = [0x11u8; SMALL_UDP];
        let mut sent = 0u64;
        let start = Instant::now();
        while sent < 100_000_000 {
            // Check the clock every 64 sends: it is not free at this rate.
            if sent.is_multiple_of(64) && start.elapsed() >= dur {
                break;
            }
            match sock.send(&payload) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // ENOBUFS and the like: the path is full, try again.
                Err(_) => {}
            }
        }
        Ok((sent, start.elapsed()))
    })
}

/// The `Udp:` counters of `/proc/net/snmp` (InDatagrams, RcvbufErrors, ...).
pub fn udp_counters(snmp: &str) -> HashMap<String, u64> {
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let mut out = HashMap::new();
    if let [names, values, ..] = udp[..] {
        for (k, v) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(v) = v.parse() {
                out.insert(k.to_owned(), v);
            }
        }
    }
    out
}

/// Datagrams that reached the UDP layer of `ns` so far: delivered to a
/// socket, or dropped there because its buffer was full.
pub fn udp_arrived(ns: &Netns) -> Result<u64> {
    let c = udp_counters(&ns.proc_net("snmp")?);
    Ok(c.get("InDatagrams").copied().unwrap_or(0) + c.get("RcvbufErrors").copied().unwrap_or(0))
}

/// Bytes waiting in the receive queue of the UDP socket bound to `port`,
/// from `/proc/net/udp` (`local_address` `HEXIP:HEXPORT`, then
/// `tx_queue:rx_queue` in hex); None if no socket is bound there.
pub fn udp_rx_queue(udp_file: &str, port: u16) -> Option<u64> {
    udp_file.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(fields.get(1)?.split(':').nth(1)?, 16).ok()?;
        if local_port != port {
            return None;
        }
        u64::from_str_radix(fields.get(4)?.split(':').nth(1)?, 16).ok()
    })
}

/// `rx_packets` of `dev` from `/proc/net/dev`.
pub fn rx_packets(dev_file: &str, dev: &str) -> Option<u64> {
    dev_file.lines().find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        (name.trim() == dev).then(|| rest.split_whitespace().nth(1)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_udp_counters() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    Udp: 10 2 0 5 3\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let c = udp_counters(snmp);
        assert_eq!(c["InDatagrams"], 10);
        assert_eq!(c["RcvbufErrors"], 3);
    }

    #[test]
    fn reads_a_udp_sockets_queue() {
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                   \x20 12: 0200C80A:F618 00000000:0000 07 00000000:00000A80 00:00000000 00000000     0        0 1 2 0\n";
        assert_eq!(udp_rx_queue(udp, 63_000), Some(0xa80));
        assert_eq!(udp_rx_queue(udp, 53), None);
    }

    #[test]
    fn reads_rx_packets() {
        let dev = "Inter-|   Receive\n face |bytes    packets errs\n\
                   lo: 100 2 0 0\n fbb-s: 6000 100 0 0 0 0 0 0 50 1 0\n";
        assert_eq!(rx_packets(dev, "fbb-s"), Some(100));
        assert_eq!(rx_packets(dev, "lo"), Some(2));
        assert_eq!(rx_packets(dev, "eth9"), None);
    }
}
