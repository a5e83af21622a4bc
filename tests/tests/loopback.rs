//! Issue 12, "reset on IPv4 loopback acts like blackhole": app and
//! dependency on one host is the most common CI topology, so `reset` on
//! `lo` must refuse and reset exactly as it does between hosts, for IPv4
//! and IPv6, on every hook and both attach paths.
//!
//! One namespace, a dual-stack TCP echo server and a UDP listener on
//! `[::]:P`, and `faultbpf reset --iface lo`: a `connect()` to 127.0.0.1
//! and to ::1 fails at once with ECONNREFUSED, a connection opened before
//! the fault fails with ECONNRESET, and a connected UDP socket gets
//! ECONNREFUSED although a listener is bound. On main the egress answer was
//! handed to the stack with `BPF_F_INGRESS`, which drops the skb's route;
//! IPv4 then routes 127.0.0.1 as a martian destination and drops the
//! answer, so the IPv4 connect timed out like a blackhole.

use std::{
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

use faultbpf_tests::{
    Launch, Netns, count_datagrams,
    fault_kit::{EchoServer, connect_timed, exchange, udp_connect},
    udp_bind,
};

/// The port faultbpf resets.
const P: u16 = 7000;
const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
/// Far below the first SYN retransmission (1 s): a connect that got no
/// RST and waited for one fails this bound.
const REFUSED_WITHIN: Duration = Duration::from_millis(250);

#[test]
fn reset_on_loopback_refuses_both_families_with_tcx() {
    every_direction("lo-tcx", "tcx");
}

#[test]
fn reset_on_loopback_refuses_both_families_with_netlink() {
    every_direction("lo-nl", "netlink");
}

fn every_direction(tag: &str, attach: &str) {
    let ns = Netns::new(tag);
    ns.ip(&["link", "set", "lo", "up"]);
    let any = SocketAddr::new("::".parse().unwrap(), P);
    let _echo = EchoServer::tcp(&ns, any);
    let udp_rx = udp_bind(&ns, any);
    let mut failures = Vec::new();
    for direction in ["both", "egress", "ingress"] {
        failures.extend(
            check_direction(&ns, &udp_rx, attach, direction)
                .into_iter()
                .map(|f| format!("--attach {attach} --direction {direction}: {f}")),
        );
    }
    assert!(
        failures.is_empty(),
        "reset on lo:\n  {}",
        failures.join("\n  ")
    );
}

/// Everything an application sees under `reset --iface lo`; the failures.
fn check_direction(
    ns: &Netns,
    udp_rx: &std::net::UdpSocket,
    attach: &str,
    direction: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    // Controls, and the connections that must be reset later.
    let mut established: Vec<(IpAddr, TcpStream)> = [V4, V6]
        .into_iter()
        .map(|ip| {
            let (stream, _) = connect_timed(ns, SocketAddr::new(ip, P), secs(2));
            let mut stream = stream.unwrap_or_else(|e| panic!("before the fault, {ip}: {e}"));
            assert_eq!(
                exchange(&mut stream, b"before", secs(2)).unwrap(),
                b"before",
                "echo from {ip} before the fault"
            );
            (ip, stream)
        })
        .collect();
    let udp: Vec<_> = [V4, V6]
        .into_iter()
        .map(|ip| {
            let s = udp_connect(ns, SocketAddr::new(ip, 0), SocketAddr::new(ip, P));
            s.send(b"before").unwrap();
            (ip, s)
        })
        .collect();
    assert_eq!(
        count_datagrams(udp_rx, 3, Duration::from_millis(300)).len(),
        2,
        "the UDP listener receives before the fault"
    );

    let port = P.to_string();
    let mut fb = Launch::new(ns, ["reset"])
        .args([
            "--port",
            &port,
            "--iface",
            "lo",
            "--attach",
            attach,
            "--direction",
            direction,
        ])
        .standalone()
        .start();
    for ip in [V4, V6] {
        let (result, took) = connect_timed(ns, SocketAddr::new(ip, P), secs(3));
        match result {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && took < REFUSED_WITHIN => {}
            Err(e) => failures.push(format!(
                "connect to {ip}: {e} ({:?}) after {took:?}, not ECONNREFUSED within \
                 {REFUSED_WITHIN:?}",
                e.kind()
            )),
            Ok(_) => failures.push(format!("connect to {ip} succeeded")),
        }
    }
    for (ip, stream) in &mut established {
        match exchange(stream, b"after", secs(2)) {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => failures.push(format!(
                "established connection to {ip}: {e} ({:?}), not ECONNRESET",
                e.kind()
            )),
            Ok(_) => failures.push(format!("established connection to {ip} still echoes")),
        }
    }
    for (ip, socket) in &udp {
        socket.set_read_timeout(Some(secs(2))).unwrap();
        let _ = socket.send(b"after");
        let mut buf = [0u8; 64];
        match socket.recv(&mut buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            other => failures.push(format!(
                "connected UDP socket to {ip}: {other:?}, not ECONNREFUSED"
            )),
        }
    }
    fb.finish();
    // Nothing the fault refused may reach the listener; drain for the next round.
    let leaked = count_datagrams(udp_rx, 3, Duration::from_millis(200));
    if !leaked.is_empty() {
        failures.push(format!("{} datagram(s) reached the listener", leaked.len()));
    }
    failures
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
