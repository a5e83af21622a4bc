//! Issue 2, test 3: `--pct N` drops N % of the matching packets, checked over
//! enough UDP datagrams that a wrong ratio cannot pass by chance, and the
//! `--json` counters agree with what the receiver saw.

use std::{
    net::SocketAddr,
    os::fd::AsFd,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    CLIENT_V4, Counters, Launch, RecvRetry, SERVER_IF, SERVER_V4, Topology, force_rcvbuf, udp_bind,
};

const P: u16 = 5000;
/// Datagrams per burst before a pause: keeps well under the per-CPU
/// backlog (netdev_max_backlog, 1000), so nothing is lost but to the fault.
const BURST: u64 = 500;

/// Sends `n` datagrams to port P through a `--pct pct` blackhole on the
/// server's ingress; returns (datagrams received, faultbpf's counters).
fn run(tag: &str, pct: &str, n: u64) -> (u64, Counters) {
    let topo = Topology::new(tag);
    let rx = udp_bind(&topo.server, SocketAddr::new(SERVER_V4, P));
    // 64 MiB (doubled by the kernel): room for all of them, even unread.
    force_rcvbuf(rx.as_fd(), 64 << 20);
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tx = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    tx.connect(SocketAddr::new(SERVER_V4, P)).unwrap();

    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args([
            "--port",
            &P.to_string(),
            "--pct",
            pct,
            "--proto",
            "udp",
            "--iface",
            SERVER_IF,
            "--direction",
            "ingress",
            "--json",
        ])
        .standalone()
        .start();
    let sent_all = AtomicBool::new(false);
    let sent_at = OnceLock::new();
    let received = thread::scope(|s| {
        // Receive while sending, and stop once the sender is done and the
        // socket has been quiet for 1 s (or after 2 minutes at most).
        let receiver = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut got = 0u64;
            let mut last = Instant::now();
            let mut buf = [0u8; 64];
            while got < n && Instant::now() < deadline {
                match rx.recv_retry(&mut buf) {
                    Ok(_) => {
                        got += 1;
                        last = Instant::now();
                    }
                    Err(_) if sent_all.load(Ordering::Acquire) => {
                        // Quiet since the later of the last datagram and the end of sending.
                        let done_at = *sent_at.get_or_init(Instant::now);
                        if last.max(done_at).elapsed() > Duration::from_secs(1) {
                            break;
                        }
                    }
                    Err(_) => {}
                }
            }
            got
        });
        for i in 0..n {
            tx.send(&i.to_be_bytes()).unwrap();
            if i % BURST == BURST - 1 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        sent_all.store(true, Ordering::Release);
        receiver.join().unwrap()
    });
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    (received, exit.rule(0))
}

/// Panics unless `observed` is within 4 binomial standard deviations of
/// `n * p`.
fn assert_binomial(what: &str, observed: u64, n: u64, p: f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let off = (observed as f64 - mean).abs();
    assert!(
        off <= 4.0 * sd,
        "{what}: {observed} of {n}, expected {mean:.0} ± {:.0} (4 sd)",
        4.0 * sd
    );
}

#[test]
fn pct_30_drops_about_30_percent() {
    const N: u64 = 100_000;
    let (received, rule) = run("pct30", "30", N);
    assert_binomial("delivered", received, N, 0.7);
    assert_binomial("acted", rule.acted_packets, N, 0.3);
    assert_eq!(rule.matched_packets, N, "every datagram matches: {rule:?}");
    // Nothing is lost but what faultbpf dropped, so the two add up exactly.
    assert_eq!(
        received + rule.acted_packets,
        N,
        "received {received}, {rule:?}"
    );
}

#[test]
fn pct_0_drops_nothing() {
    const N: u64 = 10_000;
    let (received, rule) = run("pct0", "0", N);
    assert_eq!(received, N);
    assert_eq!(rule.acted_packets, 0, "{rule:?}");
    assert_eq!(rule.matched_packets, N, "{rule:?}");
}

#[test]
fn pct_100_drops_everything() {
    const N: u64 = 10_000;
    let (received, rule) = run("pct100", "100", N);
    assert_eq!(received, 0);
    assert_eq!(rule.acted_packets, N, "{rule:?}");
    assert_eq!(rule.matched_packets, N, "{rule:?}");
}
