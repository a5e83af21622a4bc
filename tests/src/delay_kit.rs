//! Measuring tools for the `delay` tests: whether the kernel has the qdiscs
//! delay needs, UDP round trips to an echo server, one-way times of a
//! numbered UDP burst, and bulk TCP throughput over a bounded window.
//!
//! Every socket is made inside a test namespace; every loop and wait is
//! bounded; servers and threads stop on `Drop`.

use std::{
    collections::BTreeSet,
    io::{self, Read, Write},
    mem,
    net::{Shutdown, SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    process::Command,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    Netns, assert_nothing_attached, force_rcvbuf, has_clsact, net::RecvRetry, tc_filters,
    tcp_connect, tcp_listen, udp_bind,
};

/// What `tc` says when the kernel has no such qdisc (module missing).
pub const UNKNOWN_QDISC: &str = "Specified qdisc kind is unknown";

/// True if the kernel has both qdiscs `delay` builds on (sch_fq and
/// sch_netem): adds each as the root qdisc of `ifname` in `ns` and removes
/// it again. Panics on any failure other than an unknown qdisc kind.
pub fn has_delay_qdiscs(ns: &Netns, ifname: &str) -> bool {
    let mut have = true;
    for kind in [&["fq"][..], &["netem", "delay", "1ms"][..]] {
        let out = Command::new("tc")
            .args(["-n", ns.name(), "qdisc", "add", "dev", ifname, "root"])
            .args(kind)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tc: {e}"));
        if out.status.success() {
            ns.tc(&["qdisc", "del", "dev", ifname, "root"]);
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(UNKNOWN_QDISC),
            "tc qdisc add dev {ifname} root {kind:?} in {} failed for another reason: {err}",
            ns.name()
        );
        have = false;
    }
    have
}

/// The environment variable by which `cargo xtask test` declares, after
/// probing, that this kernel has neither sch_fq nor sch_netem (`1`); it then
/// also skips the tests that need them (`--skip needs_qdiscs::`).
pub const NO_NETEM_ENV: &str = "FAULTBPF_TEST_NO_NETEM";

/// True if [`NO_NETEM_ENV`] is `1`.
pub fn qdiscs_declared_absent() -> bool {
    std::env::var_os(NO_NETEM_ENV).is_some_and(|v| v == "1")
}

/// For a test that needs sch_fq and sch_netem: returns if the kernel has
/// both (probed on `ifname` in `ns`), and panics otherwise, saying how to
/// skip it visibly instead. A stale declaration that they are absent,
/// where they exist, panics too: it would hide these tests.
pub fn require_delay_qdiscs(ns: &Netns, ifname: &str) {
    let have = has_delay_qdiscs(ns, ifname);
    let declared_absent = qdiscs_declared_absent();
    assert!(
        !(have && declared_absent),
        "{NO_NETEM_ENV}=1 says this kernel has no sch_fq/sch_netem, but it has both: \
         unset it, so the delay tests run"
    );
    if have {
        return;
    }
    if declared_absent {
        panic!(
            "this kernel has no sch_fq/sch_netem ({NO_NETEM_ENV}=1): this test must be \
             skipped, not run; pass `--skip needs_qdiscs::` (cargo xtask test does), so \
             libtest counts it as filtered out"
        );
    }
    panic!(
        "this kernel has no sch_fq/sch_netem, which this delay test needs: load them \
         (`modprobe sch_fq sch_netem`), or declare them absent with {NO_NETEM_ENV}=1 and \
         skip these tests with `--skip needs_qdiscs::` (cargo xtask test does both after \
         probing)"
    );
}

/// For the refusal test: panics if the kernel has sch_fq and sch_netem,
/// where no refusal can be seen (skip it there: `--skip without_qdiscs::`,
/// as the VM lane and `cargo xtask test` do).
pub fn require_no_delay_qdiscs(ns: &Netns, ifname: &str) {
    assert!(
        !has_delay_qdiscs(ns, ifname),
        "this kernel has sch_fq and sch_netem, so `delay` is not refused here: skip this \
         test with `--skip without_qdiscs::` (cargo xtask test does after probing)"
    );
}

/// Waits (up to 10 s) until `ifname` carries nothing of faultbpf's, then
/// [`assert_nothing_attached`]: after a `kill -9` on netlink, the reaper removes the
/// filters in the background.
pub fn wait_clean(ns: &Netns, ifname: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let clean = !has_clsact(ns, ifname)
            && tc_filters(ns, ifname, "ingress").trim().is_empty()
            && tc_filters(ns, ifname, "egress").trim().is_empty();
        if clean {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert_nothing_attached(ns, &[ifname]);
}

/// Names of the links in `ns` that look like faultbpf delay devices (`fbd*`).
/// Sorted, so lists compare whatever order `ip link` shows them in.
pub fn delay_links(ns: &Netns) -> Vec<String> {
    let json = ns.ip(&["-j", "link", "show"]);
    let links: serde_json::Value = serde_json::from_str(&json).unwrap();
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("fbd"))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Every qdisc in `ns` as `DEV KIND PARENT`, e.g. `veth-s noqueue root`
/// (`tc -j qdisc show`), sorted.
pub fn qdiscs(ns: &Netns) -> Vec<String> {
    let json = ns.tc(&["-j", "qdisc", "show"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            let parent = if q["root"].as_bool() == Some(true) {
                "root".to_owned()
            } else {
                q["parent"].as_str().unwrap_or("?").to_owned()
            };
            format!(
                "{} {} {parent}",
                q["dev"].as_str().unwrap_or("?"),
                q["kind"].as_str().unwrap_or("?")
            )
        })
        .collect();
    out.sort();
    out
}

/// Sets `SO_PRIORITY` (0-6 for anyone, 7 needs CAP_NET_ADMIN).
pub fn set_priority(fd: BorrowedFd<'_>, priority: libc::c_int) {
    // SAFETY: the pointer and length describe a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            (&raw const priority).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "SO_PRIORITY {priority}: {}",
        io::Error::last_os_error()
    );
}

/// A UDP echo server in a namespace: every datagram goes back to its
/// sender. Stopped and joined on drop.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Serves on `addr` in `ns` (`[::]:P` is dual-stack).
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let socket = udp_bind(ns, addr);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from_retry(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client socket for round trips to a [`UdpEcho`]: one source port, so
/// one flow.
pub struct UdpProbe {
    socket: UdpSocket,
    dst: SocketAddr,
    seq: u32,
}

impl UdpProbe {
    pub fn new(ns: &Netns, dst: SocketAddr) -> Self {
        let local: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let socket = udp_bind(ns, local);
        socket.connect(dst).unwrap();
        UdpProbe {
            socket,
            dst,
            seq: 0,
        }
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// One round trip; `None` if no reply came within `timeout`. Late
    /// replies to earlier probes are skipped.
    pub fn rtt(&mut self, timeout: Duration) -> Option<Duration> {
        self.seq += 1;
        let msg = self.seq.to_le_bytes();
        let start = Instant::now();
        if let Err(e) = self.socket.send(&msg) {
            panic!("send to {}: {e}", self.dst);
        }
        let mut buf = [0u8; 64];
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv_retry(&mut buf) {
                Ok(4) if buf[..4] == msg => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                // ECONNREFUSED from an earlier probe's ICMP error: go on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => panic!("recv from {}: {e}", self.dst),
            }
        }
    }

    /// `n` round trips in milliseconds, `gap` apart; panics (naming `what`)
    /// if one gets no reply within `timeout`.
    pub fn rtts_ms(&mut self, n: usize, gap: Duration, timeout: Duration, what: &str) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let rtt = self.rtt(timeout).unwrap_or_else(|| {
                    panic!(
                        "{what}: probe {i} of {n} to {} got no reply within {timeout:?}",
                        self.dst
                    )
                });
                thread::sleep(gap);
                ms(rtt)
            })
            .collect()
    }
}

/// One datagram of a [`burst`] as the receiver saw it, in arrival order.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub seq: u32,
    /// From just before `send` to just after `recv`, in milliseconds.
    pub one_way_ms: f64,
}

/// Sequence number of the warm-up datagram of a burst.
const WARM_UP: u32 = u32::MAX;

/// The clock both ends of a burst read (one process, so one clock).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Sends `count` numbered datagrams, `spacing` apart, on one flow from
/// `client` to `dst` (an address of `server`, where a socket bound to it
/// receives them), after one warm-up datagram that resolves the
/// neighbours. Returns what arrived, in arrival order; the receiver stops
/// after `count` or when nothing came for `idle`.
pub fn burst(
    client: &Netns,
    server: &Netns,
    dst: SocketAddr,
    count: u32,
    spacing: Duration,
    idle: Duration,
) -> Vec<Arrival> {
    let rx = udp_bind(server, dst);
    force_rcvbuf(rx.as_fd(), 8 << 20);
    let local: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let tx = udp_bind(client, local);
    tx.connect(dst).unwrap();
    let packet = |seq: u32| {
        let mut p = [0u8; 12];
        p[..4].copy_from_slice(&seq.to_le_bytes());
        let sent = epoch().elapsed().as_nanos() as u64;
        p[4..].copy_from_slice(&sent.to_le_bytes());
        p
    };
    // Warm-up: wait until it is through (delayed or not).
    tx.send(&packet(WARM_UP)).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    let n = rx
        .recv_retry(&mut buf)
        .unwrap_or_else(|e| panic!("burst warm-up to {dst} did not arrive: {e}"));
    assert_eq!(n, 12, "warm-up datagram");
    rx.set_read_timeout(Some(idle)).unwrap();
    let receiver = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < count as usize {
            match rx.recv_retry(&mut buf) {
                Ok(12) => {
                    let now = epoch().elapsed().as_nanos() as u64;
                    let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
                    let sent = u64::from_le_bytes(buf[4..12].try_into().unwrap());
                    if seq != WARM_UP {
                        got.push(Arrival {
                            seq,
                            one_way_ms: now.saturating_sub(sent) as f64 / 1e6,
                        });
                    }
                }
                Ok(n) => panic!("burst receiver: unexpected {n}-byte datagram"),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("burst receiver: {e}"),
            }
        }
        got
    });
    let start = Instant::now();
    for seq in 0..count {
        let at = start + spacing * seq;
        let now = Instant::now();
        if at > now {
            thread::sleep(at - now);
        }
        tx.send(&packet(seq))
            .unwrap_or_else(|e| panic!("burst send {seq} to {dst}: {e}"));
    }
    receiver.join().unwrap()
}

/// How many datagrams arrived after one with a higher sequence number.
pub fn late_arrivals(arrivals: &[Arrival]) -> usize {
    let mut max_seen: Option<u32> = None;
    let mut late = 0;
    for a in arrivals {
        match max_seen {
            Some(m) if a.seq < m => late += 1,
            _ => max_seen = Some(a.seq),
        }
    }
    late
}

/// True if every sequence number in `arrivals` is distinct.
pub fn no_duplicates(arrivals: &[Arrival]) -> bool {
    let set: BTreeSet<u32> = arrivals.iter().map(|a| a.seq).collect();
    set.len() == arrivals.len()
}

/// Which side of a [`bulk_mbps`] connection sends the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The side that connects.
    Connector,
    /// The side that listens.
    Listener,
}

/// One bulk TCP transfer between `connector` (which connects to `dst`) and
/// `listener` (which listens on `dst`'s port): the sender writes as fast as
/// it can, the receiver counts what arrives during `window` after the
/// connection is up and then closes. Returns Mbit/s over the window.
pub fn bulk_mbps(
    connector: &Netns,
    listener: &Netns,
    dst: SocketAddr,
    sender: Sender,
    window: Duration,
) -> f64 {
    let bind: SocketAddr = if dst.is_ipv4() {
        SocketAddr::new("0.0.0.0".parse().unwrap(), dst.port())
    } else {
        SocketAddr::new("::".parse().unwrap(), dst.port())
    };
    let lst = tcp_listen(listener, bind);
    lst.set_nonblocking(true).unwrap();
    let accept = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match lst.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return s;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    assert!(Instant::now() < deadline, "bulk: no connection within 15 s");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("bulk: accept: {e}"),
            }
        }
    });
    let conn = tcp_connect(connector, dst, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("bulk: connect to {dst}: {e}"));
    let accepted = accept.join().unwrap();
    let (tx, rx) = match sender {
        Sender::Connector => (conn, accepted),
        Sender::Listener => (accepted, conn),
    };
    let send = thread::spawn(move || {
        let mut tx = tx;
        tx.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let chunk = vec![0x5au8; 128 << 10];
        // Stops when the receiver closes (EPIPE/ECONNRESET) or, at the
        // latest, a little after the window.
        let deadline = Instant::now() + window + Duration::from_secs(2);
        while Instant::now() < deadline {
            match tx.write(&chunk) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let _ = tx.shutdown(Shutdown::Both);
    });
    let mut rx = rx;
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    while start.elapsed() < window {
        match rx.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("bulk: read: {e}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = rx.shutdown(Shutdown::Both);
    drop(rx);
    send.join().unwrap();
    bytes as f64 * 8.0 / secs / 1e6
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`-th percentile (0-100, nearest rank) of `values`.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    assert!(!values.is_empty(), "percentile of nothing");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

/// The median of `values`.
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}
