//! `faultbpf run FAULT ... -- CMD`: the fault lives exactly as long as the
//! command. It exits with the command's status, the fault is in force while
//! the command runs and gone after, and a `kill -9` of faultbpf in the
//! middle leaves nothing: standalone, its links die with it; through a
//! daemon, the rule names faultbpf's pid as its owner and goes within ~2 s.

use std::{
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    ACTIVE_PREFIX, Launch, SERVER_IF, SERVER_V4, Topology, assert_nothing_attached,
    daemon::Daemon,
    deps::{NsProcesses, PYTHON, connects, wait_connects},
    tcp_listen,
};

const P: u16 = 5400;

/// Exits 7 if a connect to 10.200.0.2:P fails within 1 s, 0 if it works:
/// run as the command, it tells whether the fault was in force for it.
fn probe_script() -> String {
    format!(
        "import socket, sys\ntry:\n    socket.create_connection(('{SERVER_V4}', {P}), timeout=1).close()\nexcept OSError:\n    sys.exit(7)\n"
    )
}

fn addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4, P)
}

#[test]
fn run_exits_with_the_commands_status_and_the_fault_ends_with_it() {
    let topo = Topology::new("run");
    let _listener = tcp_listen(&topo.server, addr());
    let port = P.to_string();
    let script = probe_script();
    let cases: [(&[&str], i32); 3] = [
        // In force while the command runs: the probe is cut off.
        (&[PYTHON, "-c", &script], 7),
        (&["sh", "-c", "exit 0"], 0),
        // Killed by a signal: 128 + signal, as a shell reports it.
        (&["sh", "-c", "kill -TERM $$"], 128 + libc::SIGTERM),
    ];
    for (cmd, want) in cases {
        let mut args = vec!["run", "blackhole", "--port", &port, "--"];
        args.extend_from_slice(cmd);
        let exit = Launch::new(&topo.server, &args)
            .standalone()
            .run_within(Duration::from_secs(30));
        assert_eq!(
            exit.status.code(),
            Some(want),
            "faultbpf run ... -- {cmd:?}: {exit:#?}"
        );
        assert!(exit.stderr.contains(ACTIVE_PREFIX), "{exit:#?}");
        // Gone after: the client reaches the port at once.
        assert!(
            connects(&topo.client, addr(), Duration::from_secs(1)),
            "port {P} still cut after `faultbpf run` exited"
        );
        assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
    }
    // Without a command: bad usage, exit 2, nothing attached.
    let exit = Launch::new(&topo.server, ["run", "blackhole", "--port", &port])
        .standalone()
        .run_within(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(2), "{exit:#?}");
    assert!(exit.stderr.contains("--"), "{exit:#?}");
}

#[test]
fn kill_9_of_a_standalone_run_leaves_nothing() {
    let topo = Topology::new("runk");
    // The orphaned `sleep` goes too, whatever happens.
    let _reap = NsProcesses(topo.server.name().to_string());
    let _listener = tcp_listen(&topo.server, addr());
    let port = P.to_string();
    let mut fb = Launch::new(
        &topo.server,
        ["run", "blackhole", "--port", &port, "--", "sleep", "30"],
    )
    .standalone()
    .stdin_piped()
    .spawn();
    fb.wait_stderr(ACTIVE_PREFIX, Duration::from_secs(30));
    assert!(
        !connects(&topo.client, addr(), Duration::from_millis(800)),
        "port {P} reachable while `faultbpf run` runs"
    );
    fb.signal(libc::SIGKILL);
    let exit = fb.wait(Duration::from_secs(10));
    assert_eq!(exit.status.signal(), Some(libc::SIGKILL), "{exit:#?}");
    // TCX links die with the process; netlink filters are removed by the
    // reaper at once and inert after the 3 s lease anyway.
    let took = wait_connects(&topo.client, addr(), Duration::from_secs(4));
    eprintln!("healed {:.2}s after kill -9", took.as_secs_f64());
    thread::sleep(Duration::from_millis(500));
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
}

#[test]
fn kill_9_of_a_run_through_the_daemon_removes_its_rule() {
    let topo = Topology::new("rund");
    let _reap = NsProcesses(topo.server.name().to_string());
    let _listener = tcp_listen(&topo.server, addr());
    let daemon = Daemon::start(&topo.server, "rund", &[]);
    let port = P.to_string();

    // A normal end first: the command's status, and the rule gone.
    let script = probe_script();
    let exit = Launch::new(
        &topo.server,
        [
            "run",
            "blackhole",
            "--port",
            &port,
            "--",
            PYTHON,
            "-c",
            &script,
        ],
    )
    .socket(daemon.socket_str())
    .run_within(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(7), "{exit:#?}");
    assert!(exit.stderr.contains("via the daemon"), "{exit:#?}");
    assert!(daemon.rules().is_empty(), "{:?}", daemon.rules());

    // Then kill -9 in the middle.
    let mut fb = Launch::new(
        &topo.server,
        ["run", "blackhole", "--port", &port, "--", "sleep", "30"],
    )
    .socket(daemon.socket_str())
    .stdin_piped()
    .spawn();
    fb.wait_stderr(ACTIVE_PREFIX, Duration::from_secs(30));
    let rules = daemon.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0]["spec"]["owner_pid"],
        fb.pid(),
        "the rule must be owned by faultbpf: {rules:?}"
    );
    assert!(!connects(&topo.client, addr(), Duration::from_millis(800)));
    fb.signal(libc::SIGKILL);
    // Reaped at once, so the pid is really gone (a zombie still exists).
    fb.wait(Duration::from_secs(10));
    let killed = Instant::now();
    while !daemon.rules().is_empty() {
        assert!(
            killed.elapsed() < Duration::from_millis(2500),
            "the daemon still has the rule of a killed `faultbpf run` after 2.5 s: {:?}\nlog:\n{}",
            daemon.rules(),
            daemon.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "rule gone {:.2}s after kill -9",
        killed.elapsed().as_secs_f64()
    );
    wait_connects(&topo.client, addr(), Duration::from_secs(1));
}
