//! Issue 2, test 1: a 100 % blackhole on the server makes its port silent
//! (TCP connects time out, UDP datagrams vanish) while other ports keep
//! working, over IPv4 and IPv6, and the `--json` counters match the traffic.

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd,
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_V4, CLIENT_V6, Launch, SERVER_IF, SERVER_V4, SERVER_V6, Topology, count_datagrams,
    force_rcvbuf, tcp_connect, tcp_listen, udp_bind,
};

/// The blackholed port.
const P: u16 = 5000;
/// A port that must keep working.
const Q: u16 = 5001;

#[test]
fn tcp_to_blackholed_port_times_out_while_other_port_answers() {
    let topo = Topology::new("bh-tcp");
    // `[::]` is dual-stack, so one listener per port serves IPv4 and IPv6.
    let _p = tcp_listen(&topo.server, SocketAddr::new("::".parse().unwrap(), P));
    let _q = tcp_listen(&topo.server, SocketAddr::new("::".parse().unwrap(), Q));
    let targets = [SERVER_V4, SERVER_V6];
    for ip in targets {
        // Without the fault the same connect works, so the test can fail.
        tcp_connect(&topo.client, SocketAddr::new(ip, P), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("before the fault, connect to {ip} port {P}: {e}"));
    }

    // Default interfaces (veth-s and lo) and direction (both).
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(["--port", &P.to_string(), "--json"])
        .standalone()
        .start();
    for ip in targets {
        let err = tcp_connect(
            &topo.client,
            SocketAddr::new(ip, P),
            Duration::from_millis(1500),
        )
        .expect_err("connect to the blackholed port must not complete");
        assert_eq!(
            err.kind(),
            ErrorKind::TimedOut,
            "connect to {ip} port {P}: {err}"
        );
        tcp_connect(&topo.client, SocketAddr::new(ip, Q), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("port {Q} on {ip} must still answer: {e}"));
    }
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    let rule = exit.rule(0);
    // At least one SYN per blocked connect; with --pct 100 every match is acted on.
    assert!(rule.acted_packets >= targets.len() as u64, "{rule:?}");
    assert_eq!(rule.matched_packets, rule.acted_packets, "{rule:?}");
    assert_eq!(rule.matched_bytes, rule.acted_bytes, "{rule:?}");
}

#[test]
fn udp_to_blackholed_port_vanishes_while_other_port_arrives() {
    const N: usize = 200;
    let topo = Topology::new("bh-udp");
    let any = |port| SocketAddr::new("::".parse().unwrap(), port);
    let rx_p = udp_bind(&topo.server, any(P));
    let rx_q = udp_bind(&topo.server, any(Q));
    // Read only after all is sent: make room so overflow is not mistaken for loss.
    force_rcvbuf(rx_p.as_fd(), 8 << 20);
    force_rcvbuf(rx_q.as_fd(), 8 << 20);
    let tx4 = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    let tx6 = udp_bind(&topo.client, SocketAddr::new(CLIENT_V6, 0));
    let send = |port: u16, count: usize| {
        for i in 0..count {
            let msg = format!("datagram {i} to {port}");
            tx4.send_to(msg.as_bytes(), SocketAddr::new(SERVER_V4, port))
                .unwrap();
            tx6.send_to(msg.as_bytes(), SocketAddr::new(SERVER_V6, port))
                .unwrap();
        }
    };

    // Control: without the fault, port P receives.
    send(P, 1);
    assert_eq!(
        recv_count(&rx_p, 2),
        2,
        "before the fault, port {P} must receive"
    );

    // Only UDP is sent to P from here on, so the counters must equal N*2 exactly.
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(["--port", &P.to_string(), "--iface", SERVER_IF, "--json"])
        .standalone()
        .start();
    send(P, N);
    send(Q, N);
    assert_eq!(
        recv_count(&rx_q, 2 * N),
        2 * N,
        "port {Q} must get every datagram"
    );
    assert_eq!(recv_count(&rx_p, 2 * N), 0, "port {P} must get nothing");

    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    let rule = exit.rule(0);
    assert_eq!(rule.matched_packets, 2 * N as u64, "{rule:?}");
    assert_eq!(rule.acted_packets, 2 * N as u64, "{rule:?}");
}

fn recv_count(socket: &UdpSocket, limit: usize) -> usize {
    count_datagrams(socket, limit + 1, Duration::from_millis(500)).len()
}
