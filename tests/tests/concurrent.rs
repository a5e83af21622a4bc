//! Issue 3: two faultbpf invocations in the same namespace, on the same
//! interface, a blackhole on one port and a reset on another, both act at
//! once; stopping either one (SIGTERM) heals its port and leaves the other
//! working, on TCX and on netlink (where the first one to start creates the
//! clsact qdisc the other's filters also hang on). The reset acts at
//! ingress only, so its answers cross the blackhole's egress hook; `reset`
//! with both directions is tested in reset.rs.

use std::{io::ErrorKind, net::SocketAddr, time::Duration};

use faultbpf_tests::{
    Launch, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    fault_kit::{EchoServer, connect_timed, exchange},
};

/// Blackholed port.
const A: u16 = 5000;
/// Reset port.
const B: u16 = 5001;
/// Never faulted.
const C: u16 = 5002;

#[derive(Debug, PartialEq, Clone, Copy)]
enum State {
    Works,
    TimesOut,
    Refused,
}

#[test]
fn tcx_stop_blackhole_first() {
    concurrent("conc-tb", "tcx", Stop::BlackholeFirst);
}

#[test]
fn tcx_stop_reset_first() {
    concurrent("conc-tr", "tcx", Stop::ResetFirst);
}

#[test]
fn netlink_stop_blackhole_first() {
    concurrent("conc-nb", "netlink", Stop::BlackholeFirst);
}

#[test]
fn netlink_stop_reset_first() {
    concurrent("conc-nr", "netlink", Stop::ResetFirst);
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    BlackholeFirst,
    ResetFirst,
}

fn concurrent(tag: &str, attach: &str, stop: Stop) {
    let topo = Topology::new(tag);
    let any = |port| SocketAddr::new("::".parse().unwrap(), port);
    let _servers: Vec<EchoServer> = [A, B, C]
        .into_iter()
        .map(|port| EchoServer::tcp(&topo.server, any(port)))
        .collect();
    let check = |want: [State; 3], when: &str| {
        for ip in [SERVER_V4, SERVER_V6] {
            let got = [A, B, C].map(|port| state(&topo, SocketAddr::new(ip, port)));
            assert_eq!(got, want, "{when}: ports {A}, {B}, {C} on {ip} ({attach})");
        }
    };
    check([State::Works; 3], "before faultbpf");

    let mut blackhole = Launch::new(&topo.server, ["blackhole"])
        .args([
            "--port",
            &A.to_string(),
            "--iface",
            SERVER_IF,
            "--attach",
            attach,
            "--json",
        ])
        .standalone()
        .start();
    let mut reset = Launch::new(&topo.server, ["reset"])
        .args([
            "--port",
            &B.to_string(),
            "--iface",
            SERVER_IF,
            "--direction",
            "ingress",
            "--attach",
            attach,
            "--json",
        ])
        .standalone()
        .start();
    check(
        [State::TimesOut, State::Refused, State::Works],
        "both running",
    );

    let (first, second, left) = match stop {
        Stop::BlackholeFirst => (
            &mut blackhole,
            &mut reset,
            [State::Works, State::Refused, State::Works],
        ),
        Stop::ResetFirst => (
            &mut reset,
            &mut blackhole,
            [State::TimesOut, State::Works, State::Works],
        ),
    };
    let first_cmd = first.command().to_owned();
    let first_exit = first.finish();
    assert!(
        second.is_running(),
        "stopping `{first_cmd}` ended the other one:\n{}",
        second.stderr()
    );
    check(left, &format!("after stopping `{first_cmd}`"));
    let second_exit = second.finish();
    check([State::Works; 3], "after stopping both");
    for exit in [first_exit, second_exit] {
        let rule = exit.rule(0);
        assert!(
            rule.acted_packets >= 2,
            "each acted on both families: {rule:?}\n{}",
            exit.stdout
        );
    }
}

/// What a client connect and echo on `addr` get.
fn state(topo: &Topology, addr: SocketAddr) -> State {
    let (stream, _) = connect_timed(&topo.client, addr, Duration::from_millis(1500));
    match stream {
        Ok(mut stream) => {
            let reply = exchange(&mut stream, b"ping", Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("{addr} opened but did not echo: {e}"));
            assert_eq!(reply, b"ping");
            State::Works
        }
        Err(e) if e.kind() == ErrorKind::TimedOut => State::TimesOut,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => State::Refused,
        Err(e) => panic!("connect to {addr}: unexpected {e}"),
    }
}
