//! Issue 3, port ranges and one-sided ports:
//! - `--dport 9000-9002` faults the whole range, edges included (9000,
//!   9001, 9002 refused) and nothing outside it (8999, 9003 answer).
//! - `--sport 9000-9001` on the server faults only what leaves those ports:
//!   the server receives every request, the client gets no reply; a UDP echo
//!   on 9002 keeps answering. With `--port` the requests would be cut too.

use std::{
    io::ErrorKind,
    net::{SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_V4, CLIENT_V6, Launch, RecvRetry, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    count_datagrams,
    fault_kit::{EchoServer, connect_timed},
    udp_bind,
};

#[test]
fn dport_range_covers_its_edges_only() {
    let topo = Topology::new("dport");
    let ports = 8999..=9003u16;
    let _servers: Vec<EchoServer> = ports
        .clone()
        .map(|port| EchoServer::tcp(&topo.server, SocketAddr::new("::".parse().unwrap(), port)))
        .collect();
    let mut fb = Launch::new(&topo.server, ["reset"])
        .args(["--dport", "9000-9002", "--iface", SERVER_IF, "--json"])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    let mut wrong = Vec::new();
    for ip in [SERVER_V4, SERVER_V6] {
        for port in ports.clone() {
            let want_refused = (9000..=9002).contains(&port);
            let (result, _) = connect_timed(
                &topo.client,
                SocketAddr::new(ip, port),
                Duration::from_secs(2),
            );
            let refused = matches!(&result, Err(e) if e.kind() == ErrorKind::ConnectionRefused);
            if refused != want_refused || (!refused && result.is_err()) {
                wrong.push(format!(
                    "{ip} port {port}: expected {}, got {:?}",
                    if want_refused {
                        "ECONNREFUSED"
                    } else {
                        "a connection"
                    },
                    result.map(|_| "connected").map_err(|e| e.to_string())
                ));
            }
        }
    }
    let exit = fb.finish();
    assert!(wrong.is_empty(), "under `{cmd}`:\n  {}", wrong.join("\n  "));
    let rule = exit.rule(0);
    assert_eq!(
        rule.acted_packets, 6,
        "one SYN per refused port and family: {rule:?}"
    );
}

/// Sets the flag when dropped, so threads of a scope stop even when the
/// test panics inside it.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A UDP echo on `socket` until `stop`; counts what it received.
fn udp_echo(socket: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from_retry(&mut buf) {
            received.fetch_add(1, Ordering::Relaxed);
            socket.send_to(&buf[..n], from).unwrap();
        }
    }
}

#[test]
fn sport_on_the_server_cuts_replies_only() {
    const K: usize = 20;
    let topo = Topology::new("sport");
    let any = |port| SocketAddr::new("::".parse().unwrap(), port);
    let cut = udp_bind(&topo.server, any(9001));
    let kept = udp_bind(&topo.server, any(9002));
    let (cut_rx, kept_rx) = (AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| udp_echo(&cut, &stop, &cut_rx));
        s.spawn(|| udp_echo(&kept, &stop, &kept_rx));
        let _stop = SetOnDrop(&stop);
        let clients: Vec<(UdpSocket, SocketAddr, SocketAddr)> =
            [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)]
                .into_iter()
                .map(|(client, server)| {
                    (
                        udp_bind(&topo.client, SocketAddr::new(client, 0)),
                        SocketAddr::new(server, 9001),
                        SocketAddr::new(server, 9002),
                    )
                })
                .collect();
        // Sends K datagrams per family to `port` and returns the replies.
        let round = |port: u16| -> usize {
            clients
                .iter()
                .map(|(socket, to_cut, to_kept)| {
                    let to = if port == 9001 { to_cut } else { to_kept };
                    for i in 0..K {
                        socket
                            .send_to(format!("request {i}").as_bytes(), to)
                            .unwrap();
                    }
                    count_datagrams(socket, K + 1, Duration::from_millis(500)).len()
                })
                .sum()
        };
        assert_eq!(round(9001), 2 * K, "before the fault the echo answers");

        let mut fb = Launch::new(&topo.server, ["blackhole"])
            .args(["--sport", "9000-9001", "--iface", SERVER_IF, "--json"])
            .standalone()
            .start();
        let cmd = fb.command().to_owned();
        let before = cut_rx.load(Ordering::Relaxed);
        let replies = round(9001);
        let requests = cut_rx.load(Ordering::Relaxed) - before;
        let kept_replies = round(9002);
        let exit = fb.finish();
        assert_eq!(
            requests,
            2 * K as u64,
            "every request must reach the server under `{cmd}`"
        );
        assert_eq!(
            replies, 0,
            "no reply from port 9001 may reach the client under `{cmd}`"
        );
        assert_eq!(
            kept_replies,
            2 * K,
            "port 9002 must keep answering under `{cmd}`"
        );
        let rule = exit.rule(0);
        assert_eq!(
            rule.matched_packets,
            2 * K as u64,
            "only the replies match: {rule:?}"
        );
        assert_eq!(rule.acted_packets, 2 * K as u64, "{rule:?}");
    });
    assert!(kept_rx.load(Ordering::Relaxed) > 0);
}
