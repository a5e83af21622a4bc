//! `--xdp`: the ingress half as an XDP program (`faultbpf_xdp`), in native
//! and in generic mode, on the test veth pair:
//! - drop: a TCP connect to the port times out while another port answers,
//!   over IPv4 and IPv6, and every matched packet was dropped;
//! - reset: a connect fails with ECONNREFUSED in under 10 ms, an
//!   established connection gets ECONNRESET, a connected UDP socket gets
//!   ECONNREFUSED (v4 and v6), and the kernel finds every checksum of the
//!   answers right (transmit checksum offload is off on both sides, so a
//!   wrong one would be dropped and counted);
//! - the program really is XDP in the mode asked (`ip -d link`), no tc
//!   ingress program is attached, and nothing is left after a `kill -9`;
//! - faults XDP cannot do, and `--direction egress`, are refused (exit 2).
//!
//! Native mode on veth: `XDP_TX` hands the answer to the peer veth, whose
//! NAPI is only woken when the peer has an XDP program of its own (GRO on
//! the peer is not enough: the answers queue until other traffic arrives).
//! The native reset tests therefore attach one to the client's veth, and
//! the simplest at hand is faultbpf's own, with a rule on an unused port,
//! which passes every packet.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    ACTIVE_PREFIX, CLIENT_IF, CLIENT_V4, CLIENT_V6, Launch, Netns, RecvRetry, SERVER_IF, SERVER_V4,
    SERVER_V6, TcAttachType, Topology, count_datagrams,
    fault_kit::{CsumErrors, EchoServer, connect_timed, exchange, tx_checksum_off, udp_connect},
    run_checked, tcx_program_names, udp_bind,
};

/// The faulted port.
const P: u16 = 5000;
/// A port that must keep working.
const Q: u16 = 5001;
/// An unused port: the rule of the client's pass-through XDP program.
const UNUSED: u16 = 9;
/// The bound on a refused connect.
const REFUSED_WITHIN: Duration = Duration::from_millis(10);
/// Refused connects measured per address family.
const CONNECT_ATTEMPTS: usize = 5;
/// The XDP program's name (docs/cli-contract.md).
const XDP_PROGRAM: &str = "faultbpf_xdp";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Native,
    Generic,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    /// `ip -d -j link`'s `xdp.mode`: XDP_ATTACHED_DRV (1) or _SKB (2).
    fn ip_mode(self) -> u64 {
        match self {
            Self::Native => 1,
            Self::Generic => 2,
        }
    }
}

#[test]
fn drop_native() {
    // Default `--direction both`: XDP for ingress, tc for egress.
    drop_test("xdp-dn", Mode::Native, None);
}

#[test]
fn drop_generic() {
    drop_test("xdp-dg", Mode::Generic, Some("ingress"));
}

#[test]
fn reset_native() {
    reset_test("xdp-rn", Mode::Native, Some("ingress"));
}

#[test]
fn reset_generic() {
    // Default `--direction both`: the answers cross the tc egress program.
    reset_test("xdp-rg", Mode::Generic, None);
}

/// The args of an `--xdp` run on the server's veth.
fn xdp_args<'a>(port: &'a str, mode: Mode, direction: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "--port",
        port,
        "--iface",
        SERVER_IF,
        "--xdp",
        "--xdp-mode",
        mode.arg(),
        "--json",
    ];
    if let Some(d) = direction {
        args.extend(["--direction", d]);
    }
    args
}

/// The `attach` value `--json` and the active line must show.
fn attach_name(mode: Mode, direction: Option<&str>) -> String {
    match direction {
        Some("ingress") => format!("xdp-{}", mode.arg()),
        _ => format!("xdp-{}+tcx", mode.arg()),
    }
}

fn drop_test(tag: &str, mode: Mode, direction: Option<&str>) {
    let topo = Topology::new(tag);
    let any = |port| SocketAddr::new("::".parse().unwrap(), port);
    let _p = EchoServer::tcp(&topo.server, any(P));
    let _q = EchoServer::tcp(&topo.server, any(Q));
    let servers = [SERVER_V4, SERVER_V6];
    for ip in servers {
        // Without the fault the same connect works, so the test can fail.
        let (r, _) = connect_timed(&topo.client, SocketAddr::new(ip, P), secs(2));
        r.unwrap_or_else(|e| panic!("before the fault, connect to {ip} port {P}: {e}"));
    }
    let drops_before = xdp_drops(&topo.server, SERVER_IF);

    let port = P.to_string();
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(xdp_args(&port, mode, direction))
        .standalone()
        .start();
    assert_attached(&topo.server, mode, direction, &fb.stderr());
    for ip in servers {
        let (r, took) = connect_timed(&topo.client, SocketAddr::new(ip, P), ms(1500));
        match r {
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            other => panic!(
                "connect to blackholed {ip} port {P} under {mode:?} XDP: expected a timeout, \
                 got {:?} after {took:?}",
                other.map(|_| "a connection")
            ),
        }
        let (r, _) = connect_timed(&topo.client, SocketAddr::new(ip, Q), secs(2));
        r.unwrap_or_else(|e| panic!("port {Q} on {ip} must still answer: {e}"));
    }
    let exit = fb.finish();
    assert_eq!(exit.json()["attach"], attach_name(mode, direction));
    let rule = exit.rule(0);
    // At least one SYN per blocked connect, and every match dropped.
    assert!(rule.acted_packets >= servers.len() as u64, "{rule:?}");
    assert_eq!(rule.matched_packets, rule.acted_packets, "{rule:?}");
    assert_eq!(rule.matched_bytes, rule.acted_bytes, "{rule:?}");
    if mode == Mode::Native {
        // The driver's own count: the drops happened in native XDP.
        let dropped = xdp_drops(&topo.server, SERVER_IF) - drops_before;
        assert!(
            dropped >= rule.acted_packets,
            "veth counted {dropped} XDP drops for {rule:?}"
        );
    }
    assert_no_xdp(&topo.server, SERVER_IF);
    for ip in servers {
        let (r, _) = connect_timed(&topo.client, SocketAddr::new(ip, P), secs(2));
        r.unwrap_or_else(|e| panic!("after faultbpf exited, connect to {ip} port {P}: {e}"));
    }
}

fn reset_test(tag: &str, mode: Mode, direction: Option<&str>) {
    let topo = Topology::new(tag);
    // Software checksums on both sides: the receiver verifies every one.
    tx_checksum_off(&topo.client, CLIENT_IF);
    tx_checksum_off(&topo.server, SERVER_IF);
    let any = SocketAddr::new("::".parse().unwrap(), P);
    let echo = EchoServer::tcp(&topo.server, any);
    let udp_rx = udp_bind(&topo.server, any);
    let servers = [SERVER_V4, SERVER_V6];

    // Controls: the port works for TCP and UDP, and the neighbours are
    // resolved, so the timing below is the answer's alone.
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
    let got = count_datagrams(&udp_rx, 3, ms(500));
    assert_eq!(
        got.len(),
        2,
        "before the fault the UDP listener must receive"
    );
    let csum_client = CsumErrors::snapshot(&topo.client);
    let csum_server = CsumErrors::snapshot(&topo.server);
    let accepted_before = echo.accepted();

    // See the module docs: the peer needs an XDP program for native XDP_TX.
    let unused = UNUSED.to_string();
    let _peer = (mode == Mode::Native).then(|| {
        Launch::new(&topo.client, ["blackhole"])
            .args([
                "--port",
                &unused,
                "--iface",
                CLIENT_IF,
                "--xdp",
                "--xdp-mode",
                "native",
                "--direction",
                "ingress",
            ])
            .standalone()
            .start()
    });
    let port = P.to_string();
    let mut fb = Launch::new(&topo.server, ["reset"])
        .args(xdp_args(&port, mode, direction))
        .standalone()
        .start();
    assert_attached(&topo.server, mode, direction, &fb.stderr());
    let cmd = fb.command().to_owned();

    // Every check runs and all failures are reported together, so a report
    // says which answers are lost (RST, ICMP, which family).
    let mut failures: Vec<String> = Vec::new();
    let mut timings = Vec::new();
    for &ip in &servers {
        for attempt in 0..CONNECT_ATTEMPTS {
            let (result, took) = connect_timed(&topo.client, SocketAddr::new(ip, P), secs(3));
            match result {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    timings.push(took);
                    if took >= REFUSED_WITHIN {
                        failures.push(format!(
                            "connect to {ip} (attempt {attempt}) refused after {took:?}, \
                             not within {REFUSED_WITHIN:?}"
                        ));
                    }
                }
                other => {
                    failures.push(format!(
                        "connect to {ip}: expected ECONNREFUSED, got {} after {took:?}",
                        outcome(other)
                    ));
                    break;
                }
            }
        }
    }
    eprintln!("{mode:?} XDP reset: refused connects took {timings:?}");
    for (ip, stream) in &mut established {
        match exchange(stream, b"after the fault", secs(3)) {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => failures.push(format!(
                "established connection to {ip}: expected ECONNRESET, got {}",
                outcome(other)
            )),
        }
    }
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
    let leaked = count_datagrams(&udp_rx, 10, ms(300));
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
        "{mode:?} XDP under `{cmd}`:\n  {}\nfaultbpf: {}",
        failures.join("\n  "),
        exit.stdout.trim()
    );
    assert_eq!(exit.json()["attach"], attach_name(mode, direction));
    let rule = exit.rule(0);
    // Every SYN, one data segment per connection, one datagram per socket.
    let answered = (2 * CONNECT_ATTEMPTS + 2 + 2) as u64;
    assert!(
        rule.acted_packets >= answered,
        "{mode:?}: expected >= {answered} packets acted on: {rule:?}"
    );
    csum_client.assert_unchanged(&topo.client);
    csum_server.assert_unchanged(&topo.server);
    assert_no_xdp(&topo.server, SERVER_IF);
}

#[test]
fn kill_9_leaves_no_xdp_program() {
    let topo = Topology::new("xdp-k9");
    let port = P.to_string();
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(xdp_args(&port, Mode::Generic, None))
        .standalone()
        .start();
    assert_eq!(
        xdp_attached(&topo.server, SERVER_IF),
        Some((XDP_PROGRAM.to_owned(), Mode::Generic.ip_mode())),
        "{}",
        fb.stderr()
    );
    let exit = fb.stop(libc::SIGKILL);
    assert_eq!(exit.status.code(), None, "{exit:?}");
    // XDP and TCX links die with the process's file descriptors.
    let deadline = Instant::now() + secs(5);
    while xdp_attached(&topo.server, SERVER_IF).is_some() && Instant::now() < deadline {
        thread::sleep(ms(50));
    }
    assert_no_xdp(&topo.server, SERVER_IF);
    faultbpf_tests::assert_nothing_attached(&topo.server, &[SERVER_IF]);
}

/// (subcommand and args, text stderr must contain)
const REFUSED: &[(&[&str], &str)] = &[
    (&["mark", "--value", "7"], "cannot mark"),
    (&["mark", "--ecn"], "mark --ecn"),
    (&["corrupt"], "corrupt"),
    (&["chaos", "--mix", "drop:10,corrupt:5"], "corrupt"),
    (
        &["blackhole", "--direction", "egress"],
        "--direction egress",
    ),
    (&["reset", "--direction", "egress"], "--direction egress"),
];

#[test]
fn faults_xdp_cannot_do_are_refused() {
    let ns = Netns::new("xdp-usage");
    let mut failures = Vec::new();
    for (args, needle) in REFUSED {
        let mut all = args.to_vec();
        all.extend(["--port", "5000", "--xdp"]);
        let (code, stderr) = run_to_exit(&ns, &all);
        if code != Some(2) {
            failures.push(format!("{all:?}: exit {code:?}, want 2; stderr: {stderr}"));
        }
        if !stderr.contains("--xdp") || !stderr.contains(needle) {
            failures.push(format!(
                "{all:?}: stderr does not say why (--xdp, {needle:?}): {stderr}"
            ));
        }
        if stderr.contains(ACTIVE_PREFIX) {
            failures.push(format!("{all:?}: became active"));
        }
    }
    // --xdp-mode alone makes no sense.
    let (code, stderr) = run_to_exit(
        &ns,
        &["blackhole", "--port", "5000", "--xdp-mode", "native"],
    );
    if code != Some(2) || !stderr.contains("--xdp") {
        failures.push(format!("--xdp-mode without --xdp: exit {code:?}: {stderr}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_no_xdp(&ns, "lo");
}

/// Runs `faultbpf ARGS --standalone` in `ns` to its end (bounded: killed
/// by pid after 20 s); returns its exit code and stderr.
fn run_to_exit(ns: &Netns, args: &[&str]) -> (Option<i32>, String) {
    let exit = Launch::new(ns, args).standalone().run_within(secs(20));
    (exit.status.code(), exit.stderr)
}

/// Checks, right after the active line, that the XDP program is attached
/// in `mode`, that no tc program holds ingress, and that tc holds egress
/// exactly when the direction includes it.
fn assert_attached(server: &Netns, mode: Mode, direction: Option<&str>, stderr: &str) {
    assert_eq!(
        xdp_attached(server, SERVER_IF),
        Some((XDP_PROGRAM.to_owned(), mode.ip_mode())),
        "stderr: {stderr}"
    );
    let active = stderr
        .lines()
        .find(|l| l.starts_with(ACTIVE_PREFIX))
        .unwrap_or_else(|| panic!("no active line in {stderr}"));
    let via = format!("via {}", attach_name(mode, direction));
    assert!(active.contains(&via), "{active:?} does not say {via:?}");
    let ingress = tcx_program_names(server, SERVER_IF, TcAttachType::Ingress);
    assert!(
        ingress.is_empty(),
        "tc ingress programs with --xdp: {ingress:?}"
    );
    let egress = tcx_program_names(server, SERVER_IF, TcAttachType::Egress);
    let want: &[&str] = match direction {
        Some("ingress") => &[],
        _ => &["faultbpf_out"],
    };
    assert_eq!(egress, want, "tc egress programs");
}

/// The name and `ip` mode of the XDP program on `ifname`, if any.
fn xdp_attached(ns: &Netns, ifname: &str) -> Option<(String, u64)> {
    let json = ns.ip(&["-d", "-j", "link", "show", "dev", ifname]);
    let links: serde_json::Value = serde_json::from_str(&json).unwrap();
    let xdp = &links[0]["xdp"];
    let name = xdp["prog"]["name"].as_str()?;
    Some((name.to_owned(), xdp["mode"].as_u64()?))
}

fn assert_no_xdp(ns: &Netns, ifname: &str) {
    assert_eq!(
        xdp_attached(ns, ifname),
        None,
        "an XDP program is left on {ifname}"
    );
}

/// Packets veth dropped by native XDP on `ifname` (`ethtool -S`).
fn xdp_drops(ns: &Netns, ifname: &str) -> u64 {
    let out = run_checked(ns.command("ethtool").args(["-S", ifname]));
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("rx_queue_0_xdp_drops:"))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .sum()
}

/// A socket call's result, for failure messages.
fn outcome<T: std::fmt::Debug>(result: std::io::Result<T>) -> String {
    match result {
        Ok(value) => format!("success ({value:?})"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            "a timeout (no answer arrived)".to_owned()
        }
        Err(e) => format!("{e} ({:?})", e.kind()),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
