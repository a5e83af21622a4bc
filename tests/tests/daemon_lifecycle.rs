//! Faults never outlive the daemon that owns them: a killed daemon heals
//! the host within a second, a frozen one within its lease (and says so
//! when it thaws), rules with `for` stop acting on time while the daemon
//! stays up, a SIGTERM lifts everything, and `--wait` ties a rule to a
//! foreground CLI.

use std::{
    os::unix::process::ExitStatusExt,
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    Launch, SERVER_IF, Topology, assert_nothing_attached, daemon::Daemon, probe::UdpPath,
};
use serde_json::json;

const P: u16 = 5000;

/// Waits (bounded) until nothing of faultbpf is attached to the server's
/// interfaces; on the netlink path a helper process removes the filters of
/// a killed daemon, which takes a moment.
fn assert_detached_soon(topo: &Topology, ifaces: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clean = std::panic::catch_unwind(|| assert_nothing_attached(&topo.server, ifaces));
        match clean {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

#[test]
fn sigkill_heals_within_a_second() {
    sigkill_heals_within_a_second_via("dlc-kill", "auto");
}

/// The netlink path (kernels before 6.6): a helper process removes the
/// filters of a killed daemon.
#[test]
fn sigkill_heals_within_a_second_netlink() {
    sigkill_heals_within_a_second_via("dlc-killnl", "netlink");
}

fn sigkill_heals_within_a_second_via(tag: &str, attach: &str) {
    let topo = Topology::new(tag);
    let to_p = UdpPath::new(&topo, P);
    let mut d = Daemon::start(&topo.server, tag, &["--attach", attach]);
    if attach != "auto" {
        assert_eq!(d.get("/healthz").expect(200)["attach"], attach);
    }
    d.add_rule(&json!({ "fault": "blackhole", "port": [P] }));
    assert_eq!(to_p.probe(10), 0, "the blackhole must be in force");

    let killed = Instant::now();
    let (status, _) = d.stop(libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let healed = to_p
        .wait_flowing(killed + Duration::from_secs(3))
        .unwrap_or_else(|| panic!("port {P} still blackholed 3 s after kill -9"));
    let took = healed.saturating_duration_since(killed);
    assert!(
        took <= Duration::from_secs(1),
        "traffic flowed again only {took:?} after kill -9"
    );
    assert_detached_soon(&topo, &[SERVER_IF, "lo"]);

    // The killed daemon's socket file is stale; a new daemon takes it over.
    let socket = d.socket().to_path_buf();
    assert!(socket.exists(), "kill -9 cannot remove the socket file");
    let d2 = Daemon::start_at(&topo.server, socket, &["--iface", SERVER_IF]);
    assert!(d2.rules().is_empty(), "rules must not survive their daemon");
    assert_eq!(to_p.probe(10), 10);
}

#[test]
fn sigstop_heals_within_the_lease_and_sigcont_is_noticed() {
    const LEASE: Duration = Duration::from_secs(2);
    let topo = Topology::new("dlc-stop");
    let to_p = UdpPath::new(&topo, P);
    let d = Daemon::start(&topo.server, "stop", &["--lease", "2s"]);
    let id = d.add_rule(&json!({ "fault": "blackhole", "port": [P] }))["id"].clone();
    // Longer than the lease: the heartbeat keeps the rule in force.
    thread::sleep(LEASE + Duration::from_millis(500));
    assert_eq!(
        to_p.probe(10),
        0,
        "a running daemon's rule must outlast the lease"
    );

    let stopped = Instant::now();
    d.signal(libc::SIGSTOP);
    let healed = to_p.wait_flowing(stopped + LEASE + Duration::from_secs(3));
    let from = d.log_len();
    d.signal(libc::SIGCONT);
    let healed = healed.unwrap_or_else(|| {
        panic!(
            "port {P} still blackholed {:?} after SIGSTOP (lease {LEASE:?})",
            LEASE + Duration::from_secs(3)
        )
    });
    let took = healed.saturating_duration_since(stopped);
    assert!(
        took <= LEASE + Duration::from_secs(1),
        "traffic flowed again only {took:?} after SIGSTOP; the lease is {LEASE:?}"
    );

    // Thawed: the daemon says so, and its rule acts again.
    let line = d.expect_log(from, "resumed", Duration::from_secs(3));
    assert!(line.contains("faultbpf daemon:"), "{line}");
    d.assert_healthy("SIGCONT");
    let rules = d.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["id"], id);
    assert!(
        to_p.wait_blocked(Instant::now() + Duration::from_secs(3))
            .is_some(),
        "after SIGCONT the rule must act again"
    );
    assert_eq!(to_p.probe(10), 0);
}

#[test]
fn rule_for_2s_stops_acting_while_the_daemon_stays_up() {
    let topo = Topology::new("dlc-for");
    let to_p = UdpPath::new(&topo, P);
    let d = Daemon::start(&topo.server, "for", &[]);

    let started = Instant::now();
    let out = Launch::new(
        &topo.server,
        ["blackhole", "--port", &P.to_string(), "--for", "2s"],
    )
    .socket(d.socket_str())
    .run();
    let returned = Instant::now();
    out.assert_success();
    assert!(out.stdout.contains("expires in 2s"), "{out:?}");
    let id = d.rules()[0]["id"].as_u64().unwrap();
    let from = d.log_len();

    let healed = to_p
        .wait_flowing(started + Duration::from_secs(5))
        .unwrap_or_else(|| panic!("port {P} still blackholed 5 s after a 2 s rule"));
    let (after_start, after_return) = (
        healed.saturating_duration_since(started),
        healed.saturating_duration_since(returned),
    );
    assert!(
        after_start >= Duration::from_millis(1900),
        "a 2 s rule stopped acting after {after_start:?}"
    );
    assert!(
        after_return <= Duration::from_millis(2500),
        "a 2 s rule still acted {after_return:?} after it was added"
    );

    // The daemon stays up and forgets the rule at its next sweep.
    d.expect_log(from, &format!("rule {id} expired"), Duration::from_secs(3));
    assert!(d.rules().is_empty(), "{:?}", d.rules());
    d.assert_healthy("the expiry");
    assert_eq!(to_p.probe(10), 10);
    // And keeps taking rules.
    d.add_rule(&json!({ "fault": "blackhole", "port": [P] }));
    assert_eq!(to_p.probe(10), 0);
}

#[test]
fn sigterm_lifts_every_rule_and_detaches() {
    let topo = Topology::new("dlc-term");
    let to_p = UdpPath::new(&topo, P);
    let mut d = Daemon::start(&topo.server, "term", &[]);
    d.add_rule(&json!({ "fault": "blackhole", "port": [P] }));
    d.add_rule(&json!({ "fault": "reset", "port": [P + 1], "proto": "tcp" }));
    assert_eq!(to_p.probe(10), 0);

    let (status, log) = d.stop(libc::SIGTERM);
    assert!(status.success(), "SIGTERM: {status}\n{log}");
    assert!(log.contains("stopping: 2 rule(s) lifted"), "{log}");
    assert!(
        !d.socket().exists(),
        "the socket file must go on a clean stop"
    );
    assert_eq!(to_p.probe(10), 10, "port {P} must heal after SIGTERM");
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
}

#[test]
fn cli_wait_stays_in_the_foreground_and_removes_its_rule_on_sigterm() {
    let topo = Topology::new("dlc-wait");
    let to_p = UdpPath::new(&topo, P);
    let d = Daemon::start(&topo.server, "wait", &[]);

    let mut fg = d
        .launch(&topo.server, ["blackhole"])
        .args([
            "--port",
            &P.to_string(),
            "--wait",
            "--json",
            "--name",
            "waiter",
        ])
        .start();
    let rules = d.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["name"], "waiter");
    let id = rules[0]["id"].as_u64().unwrap();
    assert!(
        fg.stderr().contains(&format!("rule {id}")),
        "{}",
        fg.stderr()
    );
    to_p.send(25, 16);
    assert_eq!(to_p.drain(), 0);
    // Still there after a while: --wait stays until told.
    thread::sleep(Duration::from_millis(1500));
    assert!(fg.is_running(), "--wait must stay in the foreground");

    let exit = fg.stop(libc::SIGTERM);
    exit.assert_success();
    assert!(
        d.rules().is_empty(),
        "--wait must remove its rule on SIGTERM"
    );
    let json = exit.json();
    assert_eq!(json["attach"], "daemon", "{json}");
    let rule = exit.rule(id);
    assert_eq!(rule.acted_packets, 25, "{rule:?}");
    assert_eq!(to_p.probe(10), 10, "port {P} must heal");
    d.assert_healthy("the --wait client left");
}

/// A `--wait` client that is killed outright cannot remove its rule; the
/// daemon must notice its owner is gone and remove it.
#[test]
fn cli_wait_killed_leaves_no_rule_behind() {
    let topo = Topology::new("dlc-waitkill");
    let to_p = UdpPath::new(&topo, P);
    let d = Daemon::start(&topo.server, "waitkill", &[]);
    let mut fg = d
        .launch(&topo.server, ["blackhole"])
        .args(["--port", &P.to_string(), "--wait"])
        .start();
    let rules = d.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let id = rules[0]["id"].as_u64().unwrap();
    assert_eq!(rules[0]["spec"]["owner_pid"], fg.pid(), "{rules:?}");
    assert_eq!(to_p.probe(5), 0);

    let from = d.log_len();
    let killed = Instant::now();
    fg.stop(libc::SIGKILL);
    let line = d.expect_log(from, &format!("rule {id} removed"), Duration::from_secs(3));
    assert!(line.contains("owner"), "{line}");
    assert!(d.rules().is_empty(), "{:?}", d.rules());
    let healed = to_p
        .wait_flowing(killed + Duration::from_secs(3))
        .expect("the port must heal once the owner is gone");
    assert!(
        healed.saturating_duration_since(killed) <= Duration::from_millis(2500),
        "healed {:?} after the owner died",
        healed.saturating_duration_since(killed)
    );
    d.assert_healthy("the owner's death");
}
