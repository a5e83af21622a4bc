//! The Rust library's scoped fault, as a Rust test suite would use it:
//! `faultbpf::guard::FaultBuilder` in a thread that joined the server
//! namespace (in-process programs), and through a daemon (a rule owned by
//! this process). The fault is in force inside the scope and gone after
//! the guard is dropped.

use std::{net::SocketAddr, time::Duration};

use faultbpf::guard::FaultBuilder;
use faultbpf_tests::{
    SERVER_IF, SERVER_V4, Topology, assert_nothing_attached,
    daemon::Daemon,
    deps::{connects, wait_connects},
    tcp_listen,
};

const P: u16 = 5600;

fn addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4, P)
}

#[test]
fn in_process_guard_lives_as_long_as_its_scope() {
    let topo = Topology::new("lgl");
    let _listener = tcp_listen(&topo.server, addr());
    assert!(connects(&topo.client, addr(), Duration::from_secs(1)));

    topo.server.run(|| {
        // This thread is in the server namespace: the guard loads the
        // programs here, on its interfaces (veth-s, lo).
        let guard = FaultBuilder::blackhole()
            .port(P)
            .standalone()
            .lasting(Duration::from_secs(60))
            .apply()
            .unwrap_or_else(|e| panic!("apply: {}", faultbpf::error::chain(&e)));
        assert!(!guard.in_daemon());
        assert!(
            !connects(&topo.client, addr(), Duration::from_millis(800)),
            "port {P} reachable inside the guard's scope"
        );
        let c = guard.counters().unwrap();
        assert!(c.acted_packets >= 1, "{c:?}");
        drop(guard);
    });
    wait_connects(&topo.client, addr(), Duration::from_secs(1));
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
}

#[test]
fn daemon_guard_is_a_rule_owned_by_this_process() {
    let topo = Topology::new("lgd");
    let _listener = tcp_listen(&topo.server, addr());
    let daemon = Daemon::start(&topo.server, "lgd", &[]);
    {
        let guard = FaultBuilder::blackhole()
            .port(P)
            .name("library-guard")
            .socket(daemon.socket())
            .apply()
            .unwrap_or_else(|e| panic!("apply: {}", faultbpf::error::chain(&e)));
        assert!(guard.in_daemon(), "a daemon listens: the guard must use it");
        let id = guard.id();
        let rules = daemon.rules();
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert_eq!(rules[0]["id"], id);
        assert_eq!(rules[0]["name"], "library-guard");
        assert_eq!(rules[0]["spec"]["owner_pid"], std::process::id());
        assert!(
            !connects(&topo.client, addr(), Duration::from_millis(800)),
            "port {P} reachable inside the guard's scope"
        );
        assert!(guard.counters().unwrap().acted_packets >= 1);
    }
    assert!(daemon.rules().is_empty(), "{:?}", daemon.rules());
    wait_connects(&topo.client, addr(), Duration::from_secs(1));
    // A bad builder is refused before anything is applied.
    let e = FaultBuilder::blackhole()
        .socket(daemon.socket())
        .apply()
        .err()
        .expect("a builder without a port must be refused");
    assert!(e.to_string().contains("port"), "{e}");
    assert!(daemon.rules().is_empty());
}
