//! Issue 15, `duplicate`: each hit packet is delivered twice, never more.
//! - UDP at the receiver's ingress and at the sender's egress, IPv4 and
//!   IPv6: every datagram arrives exactly twice (a duplicate cloned again
//!   would show as 3x, 4x...), and the counters say what was sent.
//! - `--pct 30`: the extra datagrams are within 4 binomial sigma of 30 %.
//! - TCP: a transfer completes intact while the receiver sends D-SACKs for
//!   the duplicate segments (`TcpExtTCPDSACKOldSent`) and the sender gets
//!   them (`TcpExtTCPDSACKRecv`); a control run without the fault sends none.
//! - kill -9 of faultbpf: every datagram arrives once again within a
//!   second.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    os::fd::AsFd,
    thread,
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, CLIENT_V6, Launch, Netns, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    count_datagrams, fault_kit::nstat, force_rcvbuf, tcp_connect, tcp_listen, udp_bind,
};

const P: u16 = 5000;
/// Datagrams sent between pauses, well under the backlog (1000) even when
/// each arrives twice.
const BURST: u32 = 200;

/// Sends `n` numbered datagrams from the client to `server` and returns how
/// often each number arrived.
fn send_udp(topo: &Topology, client: IpAddr, server: IpAddr, n: u32) -> BTreeMap<u32, u32> {
    let rx = udp_bind(&topo.server, SocketAddr::new(server, P));
    force_rcvbuf(rx.as_fd(), 32 << 20);
    let tx = udp_bind(&topo.client, SocketAddr::new(client, 0));
    tx.connect(SocketAddr::new(server, P)).unwrap();
    for i in 0..n {
        tx.send(&i.to_be_bytes()).unwrap();
        if i % BURST == BURST - 1 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let mut seen = BTreeMap::new();
    for d in count_datagrams(&rx, 8 * n as usize, Duration::from_millis(700)) {
        let i = u32::from_be_bytes(d[..4].try_into().unwrap());
        *seen.entry(i).or_insert(0) += 1;
    }
    seen
}

/// Runs `duplicate` in `ns` on `iface`, in `direction`, around `send`.
fn with_duplicate<T>(
    ns: &Netns,
    iface: &str,
    direction: &str,
    extra: &[&str],
    send: impl FnOnce() -> T,
) -> (T, faultbpf_tests::Counters) {
    let mut fb = Launch::new(ns, ["duplicate"])
        .args([
            "--port",
            &P.to_string(),
            "--iface",
            iface,
            "--direction",
            direction,
            "--json",
        ])
        .args(extra)
        .standalone()
        .start();
    let out = send();
    let exit = fb.finish();
    (out, exit.rule(0))
}

#[test]
fn duplicate_udp_arrives_exactly_twice_at_ingress_and_egress() {
    const N: u32 = 1000;
    for (tag, at_server) in [("dup-in", true), ("dup-out", false)] {
        let topo = Topology::new(tag);
        let (ns, iface, direction) = if at_server {
            (&topo.server, SERVER_IF, "ingress")
        } else {
            (&topo.client, CLIENT_IF, "egress")
        };
        for (client, server) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
            let control = send_udp(&topo, client, server, 50);
            assert!(
                control.len() == 50 && control.values().all(|&c| c == 1),
                "control without the fault: {control:?}"
            );
            let (seen, rule) = with_duplicate(ns, iface, direction, &["--proto", "udp"], || {
                send_udp(&topo, client, server, N)
            });
            let wrong: Vec<_> = seen.iter().filter(|(_, c)| **c != 2).take(10).collect();
            assert!(
                seen.len() == N as usize && wrong.is_empty(),
                "{direction} over {server}: every datagram must arrive exactly twice; \
                 {} distinct arrived, not twice: {wrong:?}",
                seen.len()
            );
            assert_eq!(
                (rule.matched_packets, rule.acted_packets),
                (u64::from(N), u64::from(N)),
                "{direction} over {server}: counters"
            );
        }
    }
}

#[test]
fn duplicate_pct_is_within_four_sigma() {
    const N: u32 = 4000;
    let topo = Topology::new("dup-pct");
    let (seen, rule) = with_duplicate(
        &topo.server,
        SERVER_IF,
        "ingress",
        &["--proto", "udp", "--pct", "30"],
        || send_udp(&topo, CLIENT_V4, SERVER_V4, N),
    );
    assert_eq!(
        seen.len(),
        N as usize,
        "every datagram arrived at least once"
    );
    assert!(seen.values().all(|&c| c <= 2), "none more than twice");
    let twice = seen.values().filter(|&&c| c == 2).count() as f64;
    let (n, p) = (f64::from(N), 0.3);
    let sigma = (n * p * (1.0 - p)).sqrt();
    assert!(
        (twice - n * p).abs() <= 4.0 * sigma,
        "{twice} of {N} duplicated at --pct 30: expected {} ± {:.0}",
        n * p,
        4.0 * sigma
    );
    assert_eq!(rule.matched_packets, u64::from(N));
    assert_eq!(
        rule.acted_packets, twice as u64,
        "acted = datagrams seen twice"
    );
}

/// D-SACK counters of the receiver (sent) and the sender (received).
fn dsacks(topo: &Topology) -> (u64, u64) {
    let server = nstat(&topo.server);
    let client = nstat(&topo.client);
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    (
        get(&server, "TcpExtTCPDSACKOldSent") + get(&server, "TcpExtTCPDSACKOfoSent"),
        get(&client, "TcpExtTCPDSACKRecv"),
    )
}

/// Sends `bytes` from the client to the server over TCP and checks they all
/// arrive intact.
fn tcp_transfer(topo: &Topology, bytes: usize) {
    let listener = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, P));
    let data: Vec<u8> = (0..bytes).map(|i| (i * 31 + i / 997) as u8).collect();
    thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        let mut c = tcp_connect(
            &topo.client,
            SocketAddr::new(SERVER_V4, P),
            Duration::from_secs(2),
        )
        .unwrap();
        c.write_all(&data).unwrap();
        drop(c);
        let got = reader.join().unwrap();
        assert!(
            got == data,
            "{} of {bytes} bytes arrived, intact: {}",
            got.len(),
            got.len() == bytes && got == data
        );
    });
}

#[test]
fn duplicate_tcp_completes_and_the_receiver_sends_dsacks() {
    let topo = Topology::new("dup-tcp");
    let before = dsacks(&topo);
    tcp_transfer(&topo, 1 << 20);
    let control = dsacks(&topo);
    assert_eq!(control, before, "no D-SACK without the fault");
    let (_, rule) = with_duplicate(
        &topo.server,
        SERVER_IF,
        "ingress",
        &["--proto", "tcp"],
        || tcp_transfer(&topo, 1 << 20),
    );
    let after = dsacks(&topo);
    assert!(
        after.0 > control.0 && after.1 > control.1,
        "D-SACKs sent by the receiver {} -> {}, received by the sender {} -> {}",
        control.0,
        after.0,
        control.1,
        after.1
    );
    assert!(
        rule.acted_packets > 0 && rule.acted_packets == rule.matched_packets,
        "{rule:?}"
    );
}

#[test]
fn duplicate_sigkill_heals_within_a_second() {
    let topo = Topology::new("dup-kill");
    let mut fb = Launch::new(&topo.server, ["duplicate"])
        .args([
            "--port",
            &P.to_string(),
            "--proto",
            "udp",
            "--iface",
            SERVER_IF,
        ])
        .standalone()
        .start();
    let during = send_udp(&topo, CLIENT_V4, SERVER_V4, 20);
    assert!(
        during.len() == 20 && during.values().all(|&c| c == 2),
        "in force before the kill: {during:?}"
    );
    let exit = fb.stop(libc::SIGKILL);
    assert!(!exit.status.success(), "{exit:?}");
    let killed = std::time::Instant::now();
    loop {
        let after = send_udp(&topo, CLIENT_V4, SERVER_V4, 20);
        if after.len() == 20 && after.values().all(|&c| c == 1) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "still duplicated {:?} after kill -9: {after:?}",
            killed.elapsed()
        );
    }
}
