//! Issue 12, "nothing left behind", the daemon's part, and issue 13 item 3:
//! `--socket` on a regular file is refused and the file kept; a daemon
//! removes only its own socket on exit; one daemon per network namespace,
//! decided by a lock and not by the socket file; the lease holds faults in
//! force at 500 ms and logs no spurious misses at 1 s; `--iface X` follows
//! X when it is deleted and made again; `--socket-group`/`--socket-mode`
//! let a group's members add and remove rules, and nobody else.

mod daemon_kit;

use std::{
    os::unix::{fs::PermissionsExt, net::UnixListener},
    time::{Duration, Instant},
};

use faultbpf_tests::{
    CLIENT_IF, SERVER_IF, Topology, daemon::Daemon, probe::UdpPath, temp::temp_path, user::TestUser,
};
use serde_json::json;

const P: u16 = 7100;

#[test]
fn a_socket_path_that_is_a_regular_file_is_refused_and_kept() {
    let topo = Topology::new("dso-file");
    let path = temp_path("dso-file", ".sock");
    std::fs::write(&path, "precious\n").unwrap();
    let mut d = Daemon::spawn_at(&topo.server, path.clone(), &["--iface", SERVER_IF]);
    let (status, stderr) = d.wait(Duration::from_secs(20));
    let kept = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    assert!(!status.success(), "the daemon must refuse: {stderr}");
    assert!(
        stderr.contains("is not a socket") && stderr.contains(path.to_str().unwrap()),
        "the refusal must name the path and why: {stderr}"
    );
    assert_eq!(
        kept.ok().as_deref(),
        Some("precious\n"),
        "the file must be kept"
    );
}

#[test]
fn on_exit_a_daemon_removes_only_its_own_socket() {
    let topo = Topology::new("dso-own");
    let mut d = Daemon::start(&topo.server, "own", &["--iface", SERVER_IF]);
    let path = d.socket().to_path_buf();
    // Someone else's socket now sits at the path.
    std::fs::remove_file(&path).unwrap();
    let other = UnixListener::bind(&path).unwrap();
    let (status, stderr) = d.stop(libc::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(
        path.exists(),
        "the daemon removed a socket it did not make:\n{stderr}"
    );
    drop(other);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn one_daemon_per_namespace_even_after_its_socket_is_unlinked() {
    let topo = Topology::new("dso-lock");
    let mut first = Daemon::start(&topo.server, "lock1", &["--iface", SERVER_IF]);
    first.add_rule(&json!({ "fault": "blackhole", "port": [P], "proto": "udp" }));
    std::fs::remove_file(first.socket()).unwrap();

    let mut second = Daemon::spawn(&topo.server, "lock2", &["--iface", SERVER_IF]);
    let (status, stderr) = second.wait(Duration::from_secs(20));
    assert!(!status.success(), "a second daemon started: {stderr}");
    assert!(
        stderr.contains("another faultbpf daemon runs in this network namespace")
            && stderr.contains(&format!("pid {}", first.pid())),
        "the refusal must name the other daemon: {stderr}"
    );
    assert!(first.is_running());
    assert_eq!(
        UdpPath::new(&topo, P).probe(5),
        0,
        "the first daemon's rule acts"
    );
}

/// Probes a blackhole `n` times, 50 ms apart; how many got through.
fn through(path: &UdpPath, n: usize) -> usize {
    path.drain();
    for _ in 0..n {
        path.tx.send_to(b"probe", path.to).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    path.drain()
}

#[test]
fn a_half_second_lease_keeps_faults_in_force() {
    let topo = Topology::new("dso-lease");
    let d = Daemon::start(
        &topo.server,
        "lease",
        &["--iface", SERVER_IF, "--lease", "500ms"],
    );
    d.add_rule(&json!({ "fault": "blackhole", "port": [P], "proto": "udp" }));
    let n = through(&UdpPath::new(&topo, P), 100);
    assert_eq!(
        n, 0,
        "{n} of 100 probes got through a blackhole with --lease 500ms"
    );
    assert!(
        !d.stderr().contains("without a heartbeat"),
        "{}",
        d.stderr()
    );
}

#[test]
fn a_one_second_lease_logs_no_spurious_misses() {
    let topo = Topology::new("dso-lease1");
    let d = Daemon::start(
        &topo.server,
        "lease1",
        &["--iface", SERVER_IF, "--lease", "1s"],
    );
    d.add_rule(&json!({ "fault": "blackhole", "port": [P], "proto": "udp" }));
    let n = through(&UdpPath::new(&topo, P), 80);
    assert_eq!(n, 0, "{n} of 80 probes got through with --lease 1s");
    assert!(
        !d.stderr().contains("without a heartbeat"),
        "spurious heartbeat misses:\n{}",
        d.stderr()
    );
}

#[test]
fn a_lease_too_short_to_renew_is_refused() {
    let topo = Topology::new("dso-lease0");
    let mut d = Daemon::spawn(
        &topo.server,
        "lease0",
        &["--iface", SERVER_IF, "--lease", "50ms"],
    );
    let (status, stderr) = d.wait(Duration::from_secs(20));
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("lease 50ms is too short"), "{stderr}");
}

#[test]
fn an_iface_deleted_and_made_again_is_attached_again() {
    let topo = Topology::new("dso-iface");
    let d = Daemon::start(&topo.server, "iface", &["--iface", SERVER_IF]);
    d.add_rule(&json!({ "fault": "blackhole", "port": [P], "proto": "udp" }));
    assert_eq!(UdpPath::new(&topo, P).probe(5), 0);

    // Delete the pair and make it again, as Topology does.
    let from = d.log_len();
    topo.client.ip(&["link", "del", CLIENT_IF]);
    topo.client.ip(&[
        "link",
        "add",
        CLIENT_IF,
        "type",
        "veth",
        "peer",
        "name",
        SERVER_IF,
        "netns",
        topo.server.name(),
    ]);
    for (ns, ifname, v4) in [
        (&topo.client, CLIENT_IF, "10.200.0.1/24"),
        (&topo.server, SERVER_IF, "10.200.0.2/24"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", ifname]);
        ns.ip(&["link", "set", ifname, "up"]);
    }
    topo.client.wait_link_up(CLIENT_IF);
    topo.server.wait_link_up(SERVER_IF);
    // The rule acts on the new device within a couple of the daemon's
    // one-second looks.
    let to_p = UdpPath::new(&topo, P);
    let started = Instant::now();
    while to_p.probe(3) != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the blackhole does not act on the new {SERVER_IF}:\n{}",
            d.stderr()
        );
    }
    d.expect_log(
        from,
        &format!("attached again to {SERVER_IF}"),
        Duration::from_secs(1),
    );
    let health = d.get("/healthz").expect(200);
    assert_eq!(health["interfaces"], json!([SERVER_IF]), "{health}");
    let r = d.add_rule(&json!({ "fault": "blackhole", "port": [P + 1], "proto": "udp" }));
    assert!(r["id"].is_u64(), "{r}");
    assert_eq!(
        UdpPath::new(&topo, P + 1).probe(5),
        0,
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn socket_group_members_may_add_and_remove_rules_and_others_may_not() {
    let topo = Topology::new("dso-group");
    let member = TestUser::create();
    let gid = member.gid.to_string();
    let d = Daemon::start(
        &topo.server,
        "group",
        &[
            "--iface",
            SERVER_IF,
            "--socket-group",
            &gid,
            "--socket-mode",
            "0660",
        ],
    );
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), member.gid);

    let curl = |user: &TestUser, args: &[&str]| {
        let out = user
            .command(&topo.server, "curl")
            .args(["-sS", "--max-time", "10", "--unix-socket", d.socket_str()])
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let body = json!({ "fault": "blackhole", "port": [P], "proto": "udp" }).to_string();
    let (out, err) = curl(&member, &["-d", &body, "http://x/v1/rules"]);
    let rule: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert_eq!(UdpPath::new(&topo, P).probe(5), 0, "the member's rule acts");
    let (out, err) = curl(
        &member,
        &["-X", "DELETE", &format!("http://x/v1/rules/{}", rule["id"])],
    );
    assert!(
        out.contains(&format!("\"id\":{}", rule["id"])),
        "{out} {err}"
    );
    assert!(d.rules().is_empty());

    // Someone outside the group.
    let outsider = TestUser {
        name: None,
        uid: member.uid + 1,
        gid: member.gid + 1,
    };
    let (out, err) = curl(&outsider, &["-d", &body, "http://x/v1/rules"]);
    assert!(out.is_empty() && !err.is_empty(), "{out} {err}");
    assert!(d.rules().is_empty());
}
