//! Issue 3, `hang`: the connection opens, then nothing gets through. Over
//! IPv4 and IPv6, with faultbpf in the server namespace (both directions)
//! and at the client's egress: connect() succeeds, a read with a 1 s
//! timeout times out, the server never sees the request, and another port
//! on the same server is unaffected. After faultbpf exits the port answers
//! again.

use std::{io::ErrorKind, net::SocketAddr, time::Duration};

use faultbpf_tests::{
    CLIENT_IF, Launch, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    fault_kit::{EchoServer, connect_timed, exchange},
};

/// The hung port.
const P: u16 = 5000;
/// A port on the same server that must keep working.
const Q: u16 = 5001;
/// The application's read timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

#[test]
fn hang_in_server() {
    hang("hang-s", false);
}

#[test]
fn hang_at_client_egress() {
    hang("hang-c", true);
}

fn hang(tag: &str, at_client: bool) {
    let topo = Topology::new(tag);
    let any = |port| SocketAddr::new("::".parse().unwrap(), port);
    let echo_p = EchoServer::tcp(&topo.server, any(P));
    let echo_q = EchoServer::tcp(&topo.server, any(Q));
    let servers = [SERVER_V4, SERVER_V6];
    let echo_ok = |ip, port, what: &str| {
        let (stream, _) = connect_timed(
            &topo.client,
            SocketAddr::new(ip, port),
            Duration::from_secs(2),
        );
        let mut stream = stream.unwrap_or_else(|e| panic!("{what}: connect to {ip}:{port}: {e}"));
        let reply = exchange(&mut stream, what.as_bytes(), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{what}: echo from {ip}:{port}: {e}"));
        assert_eq!(reply, what.as_bytes());
    };
    for ip in servers {
        echo_ok(ip, P, "before the fault");
    }

    let port = P.to_string();
    let mut fb = if at_client {
        Launch::new(&topo.client, ["hang"])
            .args([
                "--port",
                &port,
                "--iface",
                CLIENT_IF,
                "--direction",
                "egress",
                "--json",
            ])
            .standalone()
            .start()
    } else {
        Launch::new(&topo.server, ["hang"])
            .args(["--port", &port, "--iface", SERVER_IF, "--json"])
            .standalone()
            .start()
    };
    let cmd = fb.command().to_owned();
    let received_before = echo_p.received();
    let mut open = Vec::new();
    for ip in servers {
        let (stream, took) =
            connect_timed(&topo.client, SocketAddr::new(ip, P), Duration::from_secs(2));
        let mut stream = stream
            .unwrap_or_else(|e| panic!("connect to {ip}:{P} must succeed under `{cmd}`: {e}"));
        assert!(
            took < Duration::from_secs(1),
            "connect to {ip}:{P} took {took:?} (a lost SYN or SYN-ACK)"
        );
        match exchange(&mut stream, b"request", READ_TIMEOUT) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!(
                "read from {ip}:{P} under `{cmd}`: expected a timeout, got {:?}",
                other.map_err(|e| (e.kind(), e.to_string()))
            ),
        }
        // Keep it open until the end: the data must not arrive late either.
        open.push(stream);
        echo_ok(ip, Q, "the other port");
    }
    assert_eq!(
        echo_p.received(),
        received_before,
        "the server must never see the request under `{cmd}`"
    );
    assert!(echo_q.received() > 0);

    let exit = fb.finish();
    let rule = exit.rule(0);
    // One request per family, each retransmitted at least once in 1 s.
    assert!(
        rule.acted_packets >= 2,
        "data segments must be counted: {rule:?}"
    );
    for ip in servers {
        echo_ok(ip, P, "after faultbpf exited");
    }
}
