//! Issue 2, tests 5 and 6: however faultbpf ends (SIGTERM, SIGINT, SIGKILL or
//! `--for`), the network heals at once and nothing of it stays attached:
//! no TCX program, no tc filter, no clsact qdisc.

use std::{
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    EGRESS_PROGRAM, INGRESS_PROGRAM, Launch, SERVER_IF, SERVER_V4, TcAttachType, Topology,
    assert_nothing_attached, has_clsact, program_name, tc_filters, tcp_connect, tcp_listen,
    tcx_program_names,
};

const P: u16 = 5000;

/// Panics unless a connect to port P fails now (the fault is in force).
fn assert_blocked(topo: &Topology) {
    let addr = SocketAddr::new(SERVER_V4, P);
    assert!(
        tcp_connect(&topo.client, addr, Duration::from_millis(1200)).is_err(),
        "connect to port {P} must fail while faultbpf runs"
    );
}

/// Panics unless a connect to port P succeeds within 1 s.
fn assert_heals_within_1s(topo: &Topology) {
    let addr = SocketAddr::new(SERVER_V4, P);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tcp_connect(&topo.client, addr, left.max(Duration::from_millis(50))) {
            Ok(_) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("port {P} still blocked 1 s after faultbpf exited: {e}")
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Panics unless faultbpf's program is on both TCX hooks of `ifname`.
fn assert_tcx_attached(topo: &Topology, ifname: &str) {
    for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
        let names = tcx_program_names(&topo.server, ifname, hook);
        let want = program_name(hook);
        assert!(
            names.iter().any(|n| n == want),
            "{ifname} {hook:?} should carry {want}, has {names:?}"
        );
    }
}

/// Starts a TCX blackhole on the server's default interfaces (veth-s, lo),
/// checks it is in force, ends it with `signal` and checks it healed.
fn signal_heals_and_detaches_tcx(tag: &str, signal: libc::c_int) {
    let topo = Topology::new(tag);
    let _listener = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, P));
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(["--port", &P.to_string(), "--attach", "tcx", "--json"])
        .standalone()
        .start();
    assert_tcx_attached(&topo, SERVER_IF);
    assert_tcx_attached(&topo, "lo");
    assert_blocked(&topo);

    let exit = fb.stop(signal);
    if signal == libc::SIGKILL {
        assert_eq!(exit.status.signal(), Some(libc::SIGKILL), "{exit:?}");
    } else {
        exit.assert_success();
        let rule = exit.rule(0);
        assert!(rule.acted_packets >= 1, "{rule:?}");
    }
    assert_heals_within_1s(&topo);
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
}

#[test]
fn sigterm_heals_and_detaches_tcx() {
    signal_heals_and_detaches_tcx("lc-term", libc::SIGTERM);
}

#[test]
fn sigint_heals_and_detaches_tcx() {
    signal_heals_and_detaches_tcx("lc-int", libc::SIGINT);
}

/// TCX links are owned by the process's file descriptors, so even a kill
/// that runs no cleanup code leaves nothing behind.
#[test]
fn sigkill_heals_and_detaches_tcx() {
    signal_heals_and_detaches_tcx("lc-kill", libc::SIGKILL);
}

/// On the netlink path faultbpf adds clsact and filters itself, so it must
/// also remove them.
#[test]
fn sigterm_heals_and_detaches_netlink() {
    let topo = Topology::new("lc-nl");
    let _listener = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, P));
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(["--port", &P.to_string(), "--attach", "netlink", "--json"])
        .standalone()
        .start();
    for ifname in [SERVER_IF, "lo"] {
        assert!(
            has_clsact(&topo.server, ifname),
            "{ifname} should have clsact"
        );
        for (hook, want) in [("ingress", INGRESS_PROGRAM), ("egress", EGRESS_PROGRAM)] {
            let filters = tc_filters(&topo.server, ifname, hook);
            assert!(
                filters.contains(want),
                "{ifname} {hook} should have a {want} filter:\n{filters}"
            );
        }
    }
    assert_blocked(&topo);

    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    assert_eq!(exit.json()["attach"], "netlink", "{}", exit.stdout);
    assert_heals_within_1s(&topo);
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
}

/// Issue 2, test 6: `--for 2s` ends by itself, cleanly, with the counters.
#[test]
fn for_duration_ends_by_itself() {
    let topo = Topology::new("lc-for");
    let _listener = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, P));
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(["--port", &P.to_string(), "--for", "2s", "--json"])
        .standalone()
        .start();
    let active_at = Instant::now();
    let exit = fb.wait(Duration::from_secs(10));
    let took = active_at.elapsed();
    exit.assert_success();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(4),
        "--for 2s ended {took:?} after the fault became active"
    );
    let rule = exit.rule(0);
    assert_eq!(rule.matched_packets, rule.acted_packets, "{rule:?}");
    assert_heals_within_1s(&topo);
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
}
