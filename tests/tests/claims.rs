//! Issue 12: two standalone faultbpf processes on the same port in one
//! network namespace (`reset --port P` and `blackhole --port P`) both
//! started and acted on alternate packets. The second must refuse (exit 1,
//! naming the first one's pid and rule) unless `--force`, as the daemon's
//! 409 does; a claim left by a killed process must not block anyone; the
//! same port in another namespace, or another port, is no conflict. The
//! daemon answers 409 for a port a standalone process holds. The registry
//! is `faultbpf/src/claims.rs`.

use std::{os::unix::process::ExitStatusExt, time::Duration};

use faultbpf_tests::{
    ACTIVE_PREFIX, Launch, Proc, SERVER_IF, Topology, daemon::Daemon, deps::NsProcesses,
};

const P: &str = "7100";

fn start_reset(topo: &Topology) -> Proc {
    let mut first = Launch::new(&topo.server, ["reset", "--port", P, "--iface", SERVER_IF])
        .no_daemon()
        .spawn();
    first.wait_stderr(ACTIVE_PREFIX, Duration::from_secs(30));
    first
}

#[test]
fn a_second_process_on_the_same_port_is_refused_unless_forced() {
    let topo = Topology::new("claim");
    let _reap = NsProcesses(topo.server.name().to_string());
    let mut first = start_reset(&topo);
    let pid = first.pid();

    // The same port, as a fault and under `run`: refused, exit 1, naming
    // the first process and its rule. `--for 2s` makes a start that was
    // not refused end with 0 instead of hanging the test.
    let attempts: [&[&str]; 3] = [
        &[
            "blackhole",
            "--port",
            P,
            "--iface",
            SERVER_IF,
            "--for",
            "2s",
        ],
        &[
            "hang", "--dport", P, "--proto", "tcp", "--iface", SERVER_IF, "--for", "2s",
        ],
        &[
            "run",
            "blackhole",
            "--port",
            P,
            "--iface",
            SERVER_IF,
            "--",
            "sleep",
            "2",
        ],
    ];
    for args in attempts {
        let exit = Launch::new(&topo.server, args)
            .no_daemon()
            .run_within(Duration::from_secs(30));
        assert_eq!(exit.status.code(), Some(1), "{args:?}: {exit:#?}");
        for needle in [
            format!("pid {pid}"),
            "reset tcp+udp port 7100".into(),
            "--force".into(),
        ] {
            assert!(
                exit.stderr.contains(&needle),
                "{args:?}: no {needle:?} in {}",
                exit.stderr
            );
        }
        assert!(
            !exit.stderr.contains(ACTIVE_PREFIX),
            "{args:?}: {}",
            exit.stderr
        );
    }

    // Another port is no conflict; --force overrides one.
    for args in [
        &[
            "blackhole",
            "--port",
            "7101",
            "--iface",
            SERVER_IF,
            "--for",
            "1s",
        ][..],
        &[
            "blackhole",
            "--port",
            P,
            "--iface",
            SERVER_IF,
            "--for",
            "1s",
            "--force",
        ][..],
    ] {
        let exit = Launch::new(&topo.server, args)
            .no_daemon()
            .run_within(Duration::from_secs(30));
        assert_eq!(exit.status.code(), Some(0), "{args:?}: {exit:#?}");
    }

    // The same port in another namespace is no conflict either.
    let other = Topology::new("claim2");
    let exit = Launch::new(
        &other.server,
        [
            "blackhole",
            "--port",
            P,
            "--iface",
            SERVER_IF,
            "--for",
            "1s",
        ],
    )
    .no_daemon()
    .run_within(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(0), "{exit:#?}");

    first.signal(libc::SIGTERM);
    first.wait(Duration::from_secs(15));
}

#[test]
fn a_claim_left_by_a_killed_process_blocks_nobody() {
    let topo = Topology::new("claimk");
    let _reap = NsProcesses(topo.server.name().to_string());
    let mut first = start_reset(&topo);
    first.signal(libc::SIGKILL);
    let exit = first.wait(Duration::from_secs(10));
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL), "{exit:#?}");
    // Its claim file is still there, but nobody holds its lock.
    let exit = Launch::new(
        &topo.server,
        [
            "blackhole",
            "--port",
            P,
            "--iface",
            SERVER_IF,
            "--for",
            "1s",
        ],
    )
    .no_daemon()
    .run_within(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(0), "{exit:#?}");
}

#[test]
fn the_daemon_refuses_a_port_a_standalone_process_holds() {
    let topo = Topology::new("claimd");
    let _reap = NsProcesses(topo.server.name().to_string());
    let d = Daemon::start(&topo.server, "claimd", &["--iface", SERVER_IF]);
    let mut first = start_reset(&topo);
    let r = d.post("/v1/rules", br#"{"fault":"hang","port":[7100]}"#);
    let detail = r.expect_problem(409);
    assert!(
        detail.contains(&format!("pid {}", first.pid())) && detail.contains("reset"),
        "the 409 must name the standalone process and its rule: {detail}"
    );
    // Another port, or --force, is accepted.
    d.add_rule(&serde_json::json!({"fault": "hang", "port": [7101]}));
    d.add_rule(&serde_json::json!({"fault": "hang", "port": [7100], "force": true}));
    first.signal(libc::SIGTERM);
    first.wait(Duration::from_secs(15));
}
