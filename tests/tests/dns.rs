//! Issue 15, `dns`: matched queries are answered from the kernel with the
//! rule's response code (or vanish), the resolver never sees them, and
//! everything else passes untouched.
//! - dnsmasq serves `good.test`, `bad.test` and `notbad.test` in the
//!   server namespace;
//!   `dig` in the client namespace, over IPv4 and IPv6, with and without
//!   EDNS0: names under `--domain bad.test` (any case) get NXDOMAIN,
//!   SERVFAIL or REFUSED, `good.test` names NOERROR with their address,
//!   and dnsmasq's own query log never shows a `bad.test` query.
//! - Without `--rcode` the matched lookup times out.
//! - Raw queries to a plain UDP socket: a 253-byte name is answered; a
//!   truncated header, a compression pointer in the question and a label
//!   running past the end arrive byte for byte, not acted on.
//! - `--pct 30` over 2000 queries: the answered ones within 4 binomial
//!   sigma, and answered + delivered = sent.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsFd,
    thread,
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, Launch, Netns, Proc, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    count_datagrams, force_rcvbuf, run_bounded, udp_bind,
};

const GOOD_ADDR: &str = "10.200.0.77";
const BAD_ADDR: &str = "10.200.0.88";
const NOTBAD_ADDR: &str = "10.200.0.66";

/// dnsmasq on port 53 of the server, answering `good.test` and
/// `bad.test` (and every name under them), logging each query on stderr.
fn dnsmasq(ns: &Netns) -> Proc {
    let mut p = Proc::spawn(
        ns.command("dnsmasq").args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address",
            &SERVER_V4.to_string(),
            "--listen-address",
            &SERVER_V6.to_string(),
            "--except-interface=lo",
            "--port=53",
            "--user=root",
            "--pid-file",
            "--log-queries",
            "--log-facility=-",
            &format!("--address=/good.test/{GOOD_ADDR}"),
            &format!("--address=/bad.test/{BAD_ADDR}"),
            &format!("--address=/notbad.test/{NOTBAD_ADDR}"),
        ]),
        "dnsmasq",
    );
    // Its log lines carry a syslog prefix: wait for "started" anywhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !p.stderr().contains("started, version") {
        assert!(
            p.is_running() && std::time::Instant::now() < deadline,
            "dnsmasq did not start: {}",
            p.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(200));
    p
}

/// `dig @server NAME A` from the client: (status, first A record).
fn dig(topo: &Topology, server: IpAddr, name: &str, extra: &[&str]) -> (String, Option<String>) {
    let exit = run_bounded(
        topo.client
            .command("dig")
            .args([&format!("@{server}"), name, "A", "+tries=1", "+time=2"])
            .args(extra),
        Duration::from_secs(10),
    );
    let status = exit
        .stdout
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap().to_string())
        .unwrap_or_else(|| "TIMEOUT".to_string());
    let addr = exit
        .stdout
        .lines()
        .skip_while(|l| !l.contains("ANSWER SECTION"))
        .nth(1)
        .and_then(|l| l.split_whitespace().last().map(str::to_string));
    (status, addr)
}

fn dns_fault(ns: &Netns, args: &[&str]) -> faultbpf_tests::Proc {
    Launch::new(ns, ["dns"])
        .args(["--iface", SERVER_IF, "--json"])
        .args(args)
        .standalone()
        .start()
}

#[test]
fn dns_rcodes_answer_matched_names_and_the_resolver_never_sees_them() {
    let topo = Topology::new("dns-rcode");
    let resolver = dnsmasq(&topo.server);
    for server in [SERVER_V4, SERVER_V6] {
        assert_eq!(
            dig(&topo, server, "control.bad.test", &[]),
            ("NOERROR".into(), Some(BAD_ADDR.into())),
            "control over {server}"
        );
    }
    for (rcode, status) in [
        ("nxdomain", "NXDOMAIN"),
        ("servfail", "SERVFAIL"),
        ("refused", "REFUSED"),
    ] {
        let mut fb = dns_fault(&topo.server, &["--rcode", rcode, "--domain", "bad.test"]);
        let mut asked = 0;
        for server in [SERVER_V4, SERVER_V6] {
            for (name, extra) in [
                ("bad.test", &[][..]),
                ("www.BAD.Test", &["+noedns"][..]),
                ("a.b.bad.test", &[][..]),
            ] {
                assert_eq!(
                    dig(&topo, server, name, extra).0,
                    status,
                    "--rcode {rcode}: {name} over {server} {extra:?}"
                );
                asked += 1;
            }
            assert_eq!(
                dig(&topo, server, "www.good.test", &[]),
                ("NOERROR".into(), Some(GOOD_ADDR.into())),
                "--rcode {rcode}: an unmatched name over {server}"
            );
            assert_eq!(
                dig(&topo, server, "notbad.test", &[]),
                ("NOERROR".into(), Some(NOTBAD_ADDR.into())),
                "notbad.test is not under bad.test"
            );
        }
        let rule = fb.finish().rule(0);
        assert_eq!(rule.acted_packets, asked, "--rcode {rcode}: {rule:?}");
        thread::sleep(Duration::from_millis(300));
        let log = resolver.stderr().to_ascii_lowercase();
        let seen = |name: &str| log.contains(&format!("query[a] {name} from"));
        assert!(
            seen("control.bad.test") && seen("www.good.test") && seen("notbad.test"),
            "dnsmasq logs the queries it gets:\n{log}"
        );
        for name in ["bad.test", "www.bad.test", "a.b.bad.test"] {
            assert!(
                !seen(name),
                "dnsmasq saw a matched query for {name}:\n{log}"
            );
        }
    }
}

#[test]
fn dns_without_rcode_makes_matched_lookups_time_out() {
    let topo = Topology::new("dns-drop");
    let _resolver = dnsmasq(&topo.server);
    let mut fb = dns_fault(&topo.server, &["--domain", "bad.test"]);
    assert_eq!(dig(&topo, SERVER_V4, "x.bad.test", &[]).0, "TIMEOUT");
    assert_eq!(dig(&topo, SERVER_V4, "x.good.test", &[]).0, "NOERROR");
    let rule = fb.finish().rule(0);
    assert_eq!(rule.acted_packets, 1, "{rule:?}");
}

/// A DNS query for `name` (dotted), with an EDNS0 OPT record if `edns`.
fn query(id: u16, name: &str, edns: bool) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

const RAW_PORT: u16 = 5353;

/// A client socket connected to a plain UDP socket on the server's
/// `RAW_PORT`.
fn raw_pair(topo: &Topology) -> (UdpSocket, UdpSocket) {
    let server = udp_bind(&topo.server, SocketAddr::new(SERVER_V4, RAW_PORT));
    force_rcvbuf(server.as_fd(), 16 << 20);
    let client = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    force_rcvbuf(client.as_fd(), 16 << 20);
    client
        .connect(SocketAddr::new(SERVER_V4, RAW_PORT))
        .unwrap();
    (client, server)
}

#[test]
fn dns_answers_long_names_and_passes_malformed_payloads_untouched() {
    let topo = Topology::new("dns-raw");
    let (client, server) = raw_pair(&topo);
    let mut fb = dns_fault(
        &topo.server,
        &["--rcode", "nxdomain", "--dport", &RAW_PORT.to_string()],
    );
    // 253 characters: the longest name DNS allows.
    let long = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(long.len(), 253);
    let q = query(7, &long, true);
    client.send(&q).unwrap();
    let answers = count_datagrams(&client, 2, Duration::from_millis(500));
    assert_eq!(answers.len(), 1, "the long query is answered");
    let a = &answers[0];
    assert_eq!(a.len(), q.len(), "the answer keeps the question and OPT");
    assert_eq!(&a[..2], &q[..2], "same id");
    assert_eq!(a[2] & 0x80, 0x80, "QR set");
    assert_eq!(a[3] & 0x0f, 3, "NXDOMAIN");
    assert_eq!(&a[4..], &q[4..], "counts and question kept");

    let mut pointer = query(8, "x.example", false);
    pointer.truncate(12);
    pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    let mut past_end = query(9, "x.example", false);
    past_end.truncate(12);
    past_end.extend_from_slice(&[40, b'a', b'b', b'c']);
    let malformed = [
        query(10, "x.example", false)[..5].to_vec(),
        pointer,
        past_end,
    ];
    for m in &malformed {
        client.send(m).unwrap();
    }
    let arrived = count_datagrams(&server, 10, Duration::from_millis(500));
    assert_eq!(
        arrived,
        malformed.to_vec(),
        "malformed queries arrive untouched"
    );
    assert!(
        count_datagrams(&client, 10, Duration::from_millis(200)).is_empty(),
        "and none is answered"
    );
    let rule = fb.finish().rule(0);
    assert_eq!(
        (rule.matched_packets, rule.acted_packets),
        (4, 1),
        "{rule:?}"
    );
}

#[test]
fn dns_pct_answers_within_four_sigma() {
    const N: u16 = 2000;
    let topo = Topology::new("dns-pct");
    let (client, server) = raw_pair(&topo);
    let mut fb = dns_fault(
        &topo.server,
        &[
            "--rcode",
            "servfail",
            "--dport",
            &RAW_PORT.to_string(),
            "--pct",
            "30",
            "--domain",
            "example.com",
        ],
    );
    for i in 0..N {
        client
            .send(&query(i, "Host.Example.com", i % 2 == 0))
            .unwrap();
        if i % 200 == 199 {
            thread::sleep(Duration::from_millis(5));
        }
    }
    let answered = count_datagrams(&client, 2 * N as usize, Duration::from_millis(700)).len();
    let delivered = count_datagrams(&server, 2 * N as usize, Duration::from_millis(300)).len();
    let rule = fb.finish().rule(0);
    assert_eq!(
        answered + delivered,
        N as usize,
        "each query answered or delivered"
    );
    let (n, p) = (f64::from(N), 0.3);
    let sigma = (n * p * (1.0 - p)).sqrt();
    assert!(
        (answered as f64 - n * p).abs() <= 4.0 * sigma,
        "{answered} of {N} answered at --pct 30 (expected {} ± {:.0})",
        n * p,
        4.0 * sigma
    );
    assert_eq!(rule.acted_packets, answered as u64, "{rule:?}");
}

/// `/etc/netns/NS/resolv.conf`, which `ip netns exec` mounts over
/// `/etc/resolv.conf` for what it runs in NS; removed on drop.
struct ResolvConf(std::path::PathBuf);

impl ResolvConf {
    fn new(ns: &Netns, server: IpAddr) -> Self {
        let dir = std::path::PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {server}\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Python's `socket.getaddrinfo(name)` in the client namespace: the
/// address, or the gaierror's errno.
fn getaddrinfo(topo: &Topology, name: &str) -> String {
    let exit = run_bounded(
        topo.client.command("python3").args([
            "-c",
            "import socket, sys\n\
             try:\n    print(socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)[0][4][0])\n\
             except socket.gaierror as e:\n    print(socket.EAI_NONAME == e.errno and 'EAI_NONAME' \
             or socket.EAI_AGAIN == e.errno and 'EAI_AGAIN' or e)",
            name,
        ]),
        Duration::from_secs(20),
    );
    exit.assert_success();
    exit.stdout.trim().to_string()
}

#[test]
fn dns_at_the_client_egress_fails_getaddrinfo() {
    let topo = Topology::new("dns-gai");
    let _resolver = dnsmasq(&topo.server);
    let _conf = ResolvConf::new(&topo.client, SERVER_V4);
    assert_eq!(getaddrinfo(&topo, "x.bad.test"), BAD_ADDR, "control");
    for (rcode, error) in [("nxdomain", "EAI_NONAME"), ("servfail", "EAI_AGAIN")] {
        let mut fb = Launch::new(&topo.client, ["dns"])
            .args([
                "--iface",
                CLIENT_IF,
                "--direction",
                "egress",
                "--rcode",
                rcode,
                "--domain",
                "bad.test",
                "--json",
            ])
            .standalone()
            .start();
        assert_eq!(getaddrinfo(&topo, "x.bad.test"), error, "--rcode {rcode}");
        assert_eq!(
            getaddrinfo(&topo, "x.good.test"),
            GOOD_ADDR,
            "--rcode {rcode}"
        );
        let rule = fb.finish().rule(0);
        assert!(rule.acted_packets >= 1, "{rule:?}");
    }
}

#[test]
fn dns_sigkill_heals_within_a_second() {
    let topo = Topology::new("dns-kill");
    let _resolver = dnsmasq(&topo.server);
    let mut fb = dns_fault(&topo.server, &["--rcode", "nxdomain"]);
    assert_eq!(dig(&topo, SERVER_V4, "x.good.test", &[]).0, "NXDOMAIN");
    let exit = fb.stop(libc::SIGKILL);
    assert!(!exit.status.success(), "{exit:?}");
    let killed = std::time::Instant::now();
    loop {
        let (status, addr) = dig(&topo, SERVER_V4, "x.good.test", &["+time=1"]);
        if status == "NOERROR" {
            assert_eq!(addr.as_deref(), Some(GOOD_ADDR));
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "still {status} {:?} after kill -9",
            killed.elapsed()
        );
        thread::sleep(Duration::from_millis(50));
    }
}
