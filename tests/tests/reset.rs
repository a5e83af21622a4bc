//! Issue 3, `reset`: the fast failure. With faultbpf answering for the
//! port, over IPv4 and IPv6:
//! - a TCP connect fails with ECONNREFUSED in under 10 ms (not after a SYN
//!   retransmission, and not with a timeout);
//! - on a connection established before the fault, the next exchange fails
//!   with ECONNRESET;
//! - a connected UDP socket gets ECONNREFUSED although a real UDP listener is
//!   bound on the port, so the refusal can only come from faultbpf;
//! - every answer carries a correct checksum: transmit checksum offload is
//!   off on both veths, so a wrong one would be dropped and counted in the
//!   kernel's checksum-error counters, which must not grow.
//!
//! All of it at the server's ingress, at the client's egress (the answer is
//! turned back into the client's own stack), and with the default
//! `--direction both` in each namespace, where the answer crosses
//! faultbpf's other hook and must not be eaten there.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, CLIENT_V6, Launch, Netns, Proc, RecvRetry, SERVER_IF, SERVER_V4,
    SERVER_V6, Topology, count_datagrams,
    fault_kit::{CsumErrors, EchoServer, connect_timed, exchange, tx_checksum_off, udp_connect},
    udp_bind,
};

/// The port faultbpf resets.
const P: u16 = 5000;
/// The bound on a refused connect, held by the median of each
/// family's attempts: one attempt can lose a scheduler slice on a busy CI
/// host or in the emulated VM lane.
const REFUSED_WITHIN: Duration = Duration::from_millis(10);
/// The bound on every single attempt: far below the first SYN retransmit
/// (1 s), so a connect that got no RST and waited for one still fails.
const EACH_REFUSED_WITHIN: Duration = Duration::from_millis(250);
/// Refused connects measured per address family.
const CONNECT_ATTEMPTS: usize = 5;

/// Where faultbpf runs and which of its hooks act.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// In the server namespace, `--direction ingress`.
    ServerIngress,
    /// In the client namespace, `--direction egress`.
    ClientEgress,
    /// In the server namespace, default `--direction both`.
    ServerBoth,
    /// In the client namespace, default `--direction both`.
    ClientBoth,
}

#[test]
fn reset_at_server_ingress() {
    reset_everything("rst-si", Placement::ServerIngress);
}

#[test]
fn reset_at_client_egress() {
    reset_everything("rst-ce", Placement::ClientEgress);
}

#[test]
fn reset_both_directions_in_server() {
    reset_everything("rst-sb", Placement::ServerBoth);
}

#[test]
fn reset_both_directions_in_client() {
    reset_everything("rst-cb", Placement::ClientBoth);
}

fn start_reset(topo: &Topology, placement: Placement) -> Proc {
    let port = P.to_string();
    let (ns, ifname, direction) = match placement {
        Placement::ServerIngress => (&topo.server, SERVER_IF, Some("ingress")),
        Placement::ClientEgress => (&topo.client, CLIENT_IF, Some("egress")),
        Placement::ServerBoth => (&topo.server, SERVER_IF, None),
        Placement::ClientBoth => (&topo.client, CLIENT_IF, None),
    };
    let mut args = vec!["--port", &port, "--iface", ifname, "--json"];
    if let Some(direction) = direction {
        args.extend(["--direction", direction]);
    }
    Launch::new(ns, ["reset"]).args(&args).standalone().start()
}

fn reset_everything(tag: &str, placement: Placement) {
    let topo = Topology::new(tag);
    // Software checksums on both sides: the receiver verifies every one.
    tx_checksum_off(&topo.client, CLIENT_IF);
    tx_checksum_off(&topo.server, SERVER_IF);
    let any = SocketAddr::new("::".parse().unwrap(), P);
    // `[::]` is dual-stack: one TCP echo server and one UDP listener serve
    // both families on the port.
    let echo = EchoServer::tcp(&topo.server, any);
    let udp_rx = udp_bind(&topo.server, any);
    let servers = [SERVER_V4, SERVER_V6];

    // Controls: without the fault the port works for TCP and UDP. The
    // connections opened here stay established for the ECONNRESET check.
    let mut established: Vec<(IpAddr, TcpStream)> = servers
        .iter()
        .map(|&ip| {
            let (stream, _) = connect_timed(&topo.client, SocketAddr::new(ip, P), secs(2));
            let mut stream =
                stream.unwrap_or_else(|e| panic!("before the fault, connect to {ip}: {e}"));
            let reply = exchange(&mut stream, b"before the fault", secs(2))
                .unwrap_or_else(|e| panic!("before the fault, echo from {ip}: {e}"));
            assert_eq!(reply, b"before the fault");
            (ip, stream)
        })
        .collect();
    let udp: Vec<(IpAddr, UdpSocket)> = [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)]
        .into_iter()
        .map(|(local, remote)| {
            let socket = udp_connect(
                &topo.client,
                SocketAddr::new(local, 0),
                SocketAddr::new(remote, P),
            );
            socket.send(b"before the fault").unwrap();
            (remote, socket)
        })
        .collect();
    let got = count_datagrams(&udp_rx, 3, Duration::from_millis(500));
    assert_eq!(
        got.len(),
        2,
        "before the fault the UDP listener must receive"
    );
    let csum_client = CsumErrors::snapshot(&topo.client);
    let csum_server = CsumErrors::snapshot(&topo.server);
    let accepted_before = echo.accepted();

    let mut fb = start_reset(&topo, placement);
    let cmd = fb.command().to_owned();

    // Every check runs, and all failures are reported together, so a
    // report says which answers are lost (TCP RST, ICMP, which family).
    let mut failures: Vec<String> = Vec::new();

    // 1. New connections are refused at once. One refused connect per
    // family first, untimed: it warms what a first packet pays once (the
    // JIT image's first run, an emulator's code cache in the VM lane), as
    // the neighbour warm-up above does for ARP/ND; the timed ones follow.
    let mut timings = Vec::new();
    for &ip in &servers {
        let _ = connect_timed(&topo.client, SocketAddr::new(ip, P), secs(3));
        let mut family = Vec::new();
        for attempt in 0..CONNECT_ATTEMPTS {
            let (result, took) = connect_timed(&topo.client, SocketAddr::new(ip, P), secs(3));
            match result {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    family.push(took);
                    if took >= EACH_REFUSED_WITHIN {
                        failures.push(format!(
                            "connect to {ip} (attempt {attempt}) refused after {took:?}, \
                             not within {EACH_REFUSED_WITHIN:?}"
                        ));
                    }
                }
                Err(e) => {
                    failures.push(format!(
                        "connect to {ip} failed after {took:?} with {e} ({:?}), not ECONNREFUSED",
                        e.kind()
                    ));
                    break;
                }
                Ok(_) => {
                    failures.push(format!("connect to {ip} succeeded"));
                    break;
                }
            }
        }
        family.sort();
        if let Some(&median) = family.get(family.len() / 2)
            && median >= REFUSED_WITHIN
        {
            failures.push(format!(
                "connects to {ip} refused after a median of {median:?}, not within {REFUSED_WITHIN:?}"
            ));
        }
        timings.extend(family);
    }
    eprintln!("{placement:?}: refused connects took {timings:?}");

    // 2. Established connections fail on their next exchange.
    for (ip, stream) in &mut established {
        match exchange(stream, b"after the fault", secs(3)) {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => failures.push(format!(
                "established connection to {ip}: expected ECONNRESET, got {}",
                outcome(other)
            )),
        }
    }

    // 3. Connected UDP sockets get ECONNREFUSED, though a listener is bound.
    for (ip, socket) in &udp {
        socket.send(b"after the fault").unwrap();
        socket.set_read_timeout(Some(secs(3))).unwrap();
        let mut buf = [0u8; 64];
        match socket.recv_retry(&mut buf) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            other => failures.push(format!(
                "connected UDP socket to {ip}: expected ECONNREFUSED, got {}",
                outcome(other)
            )),
        }
    }
    let leaked = count_datagrams(&udp_rx, 10, Duration::from_millis(300));
    if !leaked.is_empty() {
        failures.push(format!(
            "the UDP listener got {} datagram(s) through the reset",
            leaked.len()
        ));
    }
    if echo.accepted() != accepted_before {
        failures.push("the server accepted a connection through the reset".to_owned());
    }
    let exit = fb.finish();
    assert!(
        failures.is_empty(),
        "{placement:?} under `{cmd}`:\n  {}\nfaultbpf: {}",
        failures.join("\n  "),
        exit.stdout.trim()
    );

    let rule = exit.rule(0);
    // At least every SYN, one data segment per connection and one datagram
    // per socket were answered.
    let answered = (2 * CONNECT_ATTEMPTS + 2 + 2) as u64;
    assert!(
        rule.acted_packets >= answered,
        "{placement:?}: expected >= {answered} packets acted on: {rule:?}"
    );
    csum_client.assert_unchanged(&topo.client);
    csum_server.assert_unchanged(&topo.server);
    assert_healed(&topo.client, &servers);
}

/// A socket call's result, for failure messages.
fn outcome<T: std::fmt::Debug>(result: std::io::Result<T>) -> String {
    match result {
        Ok(value) => format!("success ({value:?})"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            "a read timeout (no answer arrived)".to_owned()
        }
        Err(e) => format!("{e} ({:?})", e.kind()),
    }
}

/// After faultbpf exits the port answers again.
fn assert_healed(client: &Netns, servers: &[IpAddr]) {
    for &ip in servers {
        let (stream, _) = connect_timed(client, SocketAddr::new(ip, P), secs(2));
        let mut stream =
            stream.unwrap_or_else(|e| panic!("after faultbpf exited, connect to {ip}: {e}"));
        let reply = exchange(&mut stream, b"healed", secs(2))
            .unwrap_or_else(|e| panic!("after faultbpf exited, echo from {ip}: {e}"));
        assert_eq!(reply, b"healed");
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
