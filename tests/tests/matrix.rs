//! Issue 12, "A test matrix, not single cases": blackhole, reset, hang,
//! corrupt and chaos x IPv4 and IPv6 x three paths x direction ingress,
//! egress and both, each case asserting what the application sees.
//!
//! Paths, one test each (they run in parallel), one echo server per path:
//! - `veth`: client and server namespaces joined by a veth pair;
//! - `loopback`: client and server in one namespace, over `lo`;
//! - `bridge`: client, server and a bystander namespace on a Linux bridge
//!   (in a fourth, switch namespace), as containers on a host bridge.
//!
//! faultbpf runs where the dependency runs (the server namespace, on its
//! interface; on `lo` for loopback), one process per case. What the client
//! application sees, per fault and direction:
//!
//! | fault            | ingress      | egress       | both         |
//! |------------------|--------------|--------------|--------------|
//! | blackhole        | timeout      | timeout      | timeout      |
//! | reset            | ECONNREFUSED | timeout (1)  | ECONNREFUSED |
//! | hang             | read timeout | read timeout | read timeout |
//! | corrupt          | damaged echo | damaged echo | damaged echo |
//! | chaos reset:100  | as reset     | as reset     | as reset     |
//!
//! (1) At the server's egress the SYN-ACK is what matches: it is answered
//! to its sender, the server, and the client hears nothing. On `lo` every
//! packet crosses both hooks, so reset refuses in every direction.
//! The bystander's connections to the server on another port must be
//! untouched by every case.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use faultbpf_tests::{
    Launch, Netns, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    fault_kit::{EchoServer, connect_timed, exchange},
};

/// The faulted port, and one no rule touches (bridge bystander's control).
const P: u16 = 7100;
const OTHER: u16 = 7101;
/// A connect or read that gets nothing within this counts as a timeout.
const SILENCE: Duration = Duration::from_millis(700);
/// An ECONNREFUSED must come well before the first SYN retransmission.
const REFUSED_WITHIN: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Timeout,
    Refused,
    ReadTimeout,
    Damaged,
}

const FAULTS: [(&str, &[&str]); 5] = [
    ("blackhole", &[]),
    ("reset", &[]),
    ("hang", &[]),
    ("corrupt", &[]),
    ("chaos", &["--mix", "reset:100"]),
];
const DIRECTIONS: [&str; 3] = ["ingress", "egress", "both"];

fn expected(fault: &str, direction: &str, loopback: bool) -> Seen {
    match fault {
        "blackhole" => Seen::Timeout,
        "hang" => Seen::ReadTimeout,
        "corrupt" => Seen::Damaged,
        _ if direction == "egress" && !loopback => Seen::Timeout,
        _ => Seen::Refused,
    }
}

/// What the application sees on one connection to `addr`.
fn observe(client: &Netns, addr: SocketAddr) -> Result<Seen, String> {
    let (stream, took) = connect_timed(client, addr, SILENCE);
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused && took < REFUSED_WITHIN => {
            return Ok(Seen::Refused);
        }
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            return Ok(Seen::Timeout);
        }
        Err(e) => return Err(format!("connect: {e} ({:?}) after {took:?}", e.kind())),
    };
    let sent = *b"mx";
    match exchange(&mut stream, &sent, SILENCE) {
        Ok(reply) if reply != sent => Ok(Seen::Damaged),
        Ok(_) => Err("the echo came back intact".into()),
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            Ok(Seen::ReadTimeout)
        }
        Err(e) => Err(format!("echo: {e} ({:?})", e.kind())),
    }
}

/// One path: where the client connects from, the server's addresses, and
/// where faultbpf runs.
struct Path<'a> {
    name: &'static str,
    client: &'a Netns,
    server: &'a Netns,
    iface: &'a str,
    targets: [IpAddr; 2],
    loopback: bool,
    /// A third namespace whose traffic to `OTHER` must never be touched.
    bystander: Option<&'a Netns>,
}

fn run_matrix(path: &Path) {
    let any = |port| SocketAddr::new("::".parse().unwrap(), port);
    let _echo = EchoServer::tcp(path.server, any(P));
    let _other = EchoServer::tcp(path.server, any(OTHER));
    // Controls: the path echoes without a fault.
    for ip in path.targets {
        let (s, _) = connect_timed(path.client, SocketAddr::new(ip, P), Duration::from_secs(2));
        let mut s = s.unwrap_or_else(|e| panic!("{}: control connect to {ip}: {e}", path.name));
        assert_eq!(
            exchange(&mut s, b"mx", Duration::from_secs(2)).unwrap(),
            b"mx",
            "{}: control echo from {ip}",
            path.name
        );
    }
    let port = P.to_string();
    let mut failures = Vec::new();
    let mut cases = 0;
    for (fault, extra) in FAULTS {
        for direction in DIRECTIONS {
            let mut args = vec![
                "--port",
                &port,
                "--iface",
                path.iface,
                "--direction",
                direction,
            ];
            args.extend_from_slice(extra);
            let mut fb = Launch::new(path.server, [fault])
                .args(&args)
                .standalone()
                .start();
            let want = expected(fault, direction, path.loopback);
            for ip in path.targets {
                cases += 1;
                match observe(path.client, SocketAddr::new(ip, P)) {
                    Ok(seen) if seen == want => {}
                    Ok(seen) => failures.push(format!(
                        "{fault} --direction {direction} to {ip}: saw {seen:?}, expected {want:?}"
                    )),
                    Err(e) => failures.push(format!(
                        "{fault} --direction {direction} to {ip}: {e}, expected {want:?}"
                    )),
                }
                if let Some(by) = path.bystander {
                    let (s, _) = connect_timed(by, SocketAddr::new(ip, OTHER), SILENCE);
                    let ok = s.and_then(|mut s| exchange(&mut s, b"by", SILENCE));
                    if !matches!(&ok, Ok(r) if r == b"by") {
                        failures.push(format!(
                            "{fault} --direction {direction}: bystander to {ip}:{OTHER}: {ok:?}"
                        ));
                    }
                }
            }
            fb.finish();
        }
    }
    eprintln!("{}: {cases} cases, {} failed", path.name, failures.len());
    assert!(
        failures.is_empty(),
        "{}:\n  {}",
        path.name,
        failures.join("\n  ")
    );
}

#[test]
fn matrix_over_veth() {
    let topo = Topology::new("mx-veth");
    run_matrix(&Path {
        name: "veth",
        client: &topo.client,
        server: &topo.server,
        iface: SERVER_IF,
        targets: [SERVER_V4, SERVER_V6],
        loopback: false,
        bystander: None,
    });
}

#[test]
fn matrix_over_loopback() {
    let ns = Netns::new("mx-lo");
    ns.ip(&["link", "set", "lo", "up"]);
    run_matrix(&Path {
        name: "loopback",
        client: &ns,
        server: &ns,
        iface: "lo",
        targets: ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        loopback: true,
        bystander: None,
    });
}

/// Three host namespaces on a bridge that lives in a fourth (the switch).
struct Bridge {
    hosts: Vec<Netns>,
    _switch: Netns,
}

impl Bridge {
    const IF: &'static str = "eth0";

    fn new(tag: &str) -> Self {
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let hosts: Vec<Netns> = (1..=3u8)
            .map(|n| {
                let ns = Netns::new(&format!("{tag}-{n}"));
                let port = format!("port{n}");
                ns.ip(&[
                    "link",
                    "add",
                    Self::IF,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    switch.name(),
                ]);
                switch.ip(&["link", "set", &port, "master", "br0"]);
                switch.ip(&["link", "set", &port, "up"]);
                ns.ip(&["link", "set", "lo", "up"]);
                ns.ip(&["addr", "add", &format!("10.200.5.{n}/24"), "dev", Self::IF]);
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("fd00:200::5:{n}/112"),
                    "dev",
                    Self::IF,
                    "nodad",
                ]);
                ns.ip(&["link", "set", Self::IF, "up"]);
                ns.wait_link_up(Self::IF);
                ns
            })
            .collect();
        Bridge {
            hosts,
            _switch: switch,
        }
    }
}

#[test]
fn matrix_over_a_bridge() {
    let bridge = Bridge::new("mx-br");
    run_matrix(&Path {
        name: "bridge",
        client: &bridge.hosts[0],
        server: &bridge.hosts[1],
        iface: Bridge::IF,
        targets: [
            "10.200.5.2".parse().unwrap(),
            "fd00:200::5:2".parse().unwrap(),
        ],
        loopback: false,
        bystander: Some(&bridge.hosts[2]),
    });
}
