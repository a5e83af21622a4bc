//! `--netns NAME`, `--pid PID` and `--container NAME`: faultbpf enters the
//! target's network namespace before it attaches anything. Each command is
//! started from a third throwaway namespace (the "origin"), never from the
//! test's own root namespace: if the CLI failed to switch, it would attach
//! in the origin, which the tests check stays untouched.

use std::{net::SocketAddr, time::Duration};

use faultbpf_tests::{
    ACTIVE_PREFIX, Launch, Netns, Proc, SERVER_V4, Topology, assert_nothing_attached,
    deps::{NsProcesses, connects, wait_connects},
    tcp_listen,
};

const P: u16 = 5500;

fn addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4, P)
}

/// Runs `faultbpf blackhole --port P TARGET..` from `origin`, checks the
/// server's port is cut while it runs and reachable after, and that the
/// origin namespace never got anything attached.
fn fault_lands_in_the_server(topo: &Topology, origin: &Netns, target: &[&str]) {
    let port = P.to_string();
    let mut args = vec!["blackhole", "--port", &port, "--json"];
    args.extend_from_slice(target);
    let mut fb = Launch::new(origin, &args)
        .standalone()
        .stdin_piped()
        .spawn();
    let active = fb.wait_stderr(ACTIVE_PREFIX, Duration::from_secs(30));
    // The server's interfaces, not the origin's (which has only `lo`).
    assert!(active.contains("veth-s"), "{active}");
    assert!(
        !connects(&topo.client, addr(), Duration::from_millis(800)),
        "{target:?}: port {P} reachable while faultbpf runs: {active}"
    );
    assert_nothing_attached(origin, &["lo"]);
    fb.signal(libc::SIGTERM);
    let exit = fb.wait(Duration::from_secs(15));
    exit.assert_success();
    assert!(exit.rule(0).acted_packets >= 1, "{exit:#?}");
    wait_connects(&topo.client, addr(), Duration::from_secs(1));
    assert_nothing_attached(&topo.server, &["veth-s", "lo"]);
}

#[test]
fn netns_target_faults_that_namespace() {
    let topo = Topology::new("tgn");
    let origin = Netns::new("tgn-o");
    origin.ip(&["link", "set", "lo", "up"]);
    let _listener = tcp_listen(&topo.server, addr());
    fault_lands_in_the_server(&topo, &origin, &["--netns", topo.server.name()]);
    // A path works as well as a name.
    let path = format!("/var/run/netns/{}", topo.server.name());
    fault_lands_in_the_server(&topo, &origin, &["--netns", &path]);
}

#[test]
fn pid_target_faults_that_processes_namespace() {
    let topo = Topology::new("tgp");
    let _reap = NsProcesses(topo.server.name().to_string());
    let origin = Netns::new("tgp-o");
    origin.ip(&["link", "set", "lo", "up"]);
    let _listener = tcp_listen(&topo.server, addr());
    let sleeper = Proc::spawn(
        topo.server.command("sleep").arg("60"),
        "sleep 60 in the server namespace",
    );
    let pid = sleeper.pid().to_string();
    fault_lands_in_the_server(&topo, &origin, &["--pid", &pid]);
}

#[test]
fn missing_targets_are_named() {
    let origin = Netns::new("tgx-o");
    for (target, needles) in [
        (
            &["--netns", "fbt-no-such-namespace"][..],
            &["fbt-no-such-namespace"][..],
        ),
        (&["--pid", "999999999"][..], &["999999999"][..]),
    ] {
        let mut args = vec!["blackhole", "--port", "1"];
        args.extend_from_slice(target);
        let exit = Launch::new(&origin, &args)
            .standalone()
            .run_within(Duration::from_secs(30));
        assert_eq!(exit.status.code(), Some(1), "{target:?}: {exit:#?}");
        for n in needles {
            assert!(exit.stderr.contains(n), "{target:?}: {exit:#?}");
        }
    }
    assert_nothing_attached(&origin, &["lo"]);
}

#[test]
fn container_without_a_container_runtime_says_so() {
    let origin = Netns::new("tgc-o");
    let exit = Launch::new(
        &origin,
        ["blackhole", "--port", "1", "--container", "fbt-nope"],
    )
    .standalone()
    // No engine answers: neither a docker daemon nor a podman service
    // listens at these (a local podman would answer "no such container",
    // which is exit 2: tests/tests/containers.rs).
    .env("DOCKER_HOST", "unix:///nonexistent/fbt-docker.sock")
    .env("CONTAINER_HOST", "unix:///nonexistent/fbt-podman.sock")
    .run_within(Duration::from_secs(60));
    assert_eq!(exit.status.code(), Some(1), "{exit:#?}");
    let err = &exit.stderr;
    let has = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if has("docker") || has("podman") {
        // This machine has docker's CLI but no daemon: the message must
        // name the container and say why it could not be found.
        assert!(err.contains("fbt-nope"), "{err}");
        assert!(
            err.contains("docker") || err.contains("podman"),
            "the message should name the tool it asked: {err}"
        );
        assert!(
            err.to_lowercase().contains("daemon") || err.contains("No such"),
            "the message should say what went wrong: {err}"
        );
    } else {
        assert!(err.contains("neither is installed"), "{err}");
    }
    assert_nothing_attached(&origin, &["lo"]);
}
