//! `--container NAME|ID` against a real engine: Debian's dockerd, started
//! by the test inside a namespace of its own (tests/src/engine.rs), with
//! busybox containers on a user-defined network. faultbpf finds the
//! container through `docker inspect` on the engine `DOCKER_HOST` names,
//! enters its network namespace and cuts the port there; the client
//! container sees it. A name no engine knows is a bad argument (exit 2,
//! naming it); an engine nobody can reach is a machine problem (exit 1,
//! naming where it looked).

use std::time::Duration;

use faultbpf_tests::{
    Launch, Netns,
    engine::{Docker, HI_SERVER, Podman, cli_to_srv, wait_srv_answers},
};

/// `nc srv 5672` from the client container (2 s connect timeout).
fn connect(docker: &Docker) -> (String, Duration) {
    cli_to_srv(|a| docker.run(a))
}

/// A directory for PATH that holds `ip` only (the launcher runs `ip netns
/// exec`, found on the child's PATH): faultbpf started with it finds no
/// docker or podman CLI.
fn path_without_engines(tag: &str) -> faultbpf_tests::temp::TempDir {
    let dir = faultbpf_tests::temp::TempDir::new(tag);
    let ip = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
        .expect("ip on PATH");
    std::os::unix::fs::symlink(ip, dir.path().join("ip")).unwrap();
    dir
}

#[test]
fn blackhole_by_container_name_and_id_cuts_new_connects_and_heals() {
    let docker = Docker::start("ctr-bh");
    let origin = Netns::new("ctr-bh-o");
    let srv = docker.container("srv", HI_SERVER);
    docker.container("cli", "sleep 600");
    wait_srv_answers(|a| docker.run(a));
    let (control, control_took) = connect(&docker);
    assert!(control.contains("hi"), "control: {control}");

    // The third time without the docker CLI on PATH (as in faultbpf's own
    // image): the engine's API is asked on DOCKER_HOST's socket instead.
    let no_cli = path_without_engines("ctr-bh-path");
    for (target, engine, path) in [
        ("srv", None, None),
        (&srv[..12], Some("docker"), None),
        ("srv", None, Some(no_cli.path())),
    ] {
        let mut args = vec![
            "blackhole",
            "--port",
            "5672",
            "--container",
            target,
            "--for",
            "30s",
        ];
        if let Some(e) = engine {
            args.extend(["--engine", e]);
        }
        let mut launch = Launch::new(&origin, args)
            .standalone()
            .env("DOCKER_HOST", docker.host());
        if let Some(path) = path {
            launch = launch.env("PATH", path);
        }
        let mut fault = launch.start();
        assert!(
            fault.stderr().contains("on eth0"),
            "the rule should sit on the container's eth0: {}",
            fault.stderr()
        );
        let (during, took) = connect(&docker);
        assert!(
            !during.contains("hi") && during.contains("rc=1"),
            "{target}: the connect should time out during the blackhole: {during}"
        );
        assert!(
            took > control_took + Duration::from_secs(1),
            "{target}: a blackholed connect waits for its timeout (2 s): took {took:?}, \
             control {control_took:?}"
        );
        let exit = fault.stop(libc::SIGINT);
        assert_eq!(exit.status.code(), Some(0), "{exit:#?}");
        assert!(exit.stdout.contains("dropped"), "{exit:#?}");
        let (after, _) = connect(&docker);
        assert!(after.contains("hi"), "{target}: healed: {after}");
    }
    // Nothing was attached where faultbpf ran: it entered the container.
    faultbpf_tests::assert_nothing_attached(&origin, &["lo"]);
}

#[test]
fn a_container_no_engine_knows_exits_2_naming_it() {
    let docker = Docker::start("ctr-no");
    let origin = Netns::new("ctr-no-o");
    let no_cli = path_without_engines("ctr-no-path");
    // A container that exists but never started has no process either.
    docker.ok(&[
        "create",
        "--name",
        "fbt-stopped",
        "--network",
        faultbpf_tests::engine::NETWORK,
        faultbpf_tests::engine::IMAGE,
        "true",
    ]);
    for (name, needle) in [
        (
            "fbt-no-such-container",
            "no container `fbt-no-such-container`",
        ),
        ("fbt-stopped", "container `fbt-stopped` is not running"),
    ] {
        // The last time without the docker CLI: the engine's API says so.
        for (engine, path) in [
            (None, None),
            (Some("docker"), None),
            (Some("docker"), Some(no_cli.path())),
        ] {
            let mut args = vec!["blackhole", "--port", "1", "--container", name];
            if let Some(e) = engine {
                args.extend(["--engine", e]);
            }
            let mut launch = Launch::new(&origin, args)
                .standalone()
                .env("DOCKER_HOST", docker.host());
            if let Some(path) = path {
                launch = launch.env("PATH", path);
            }
            let exit = launch.run_within(Duration::from_secs(60));
            assert_eq!(
                exit.status.code(),
                Some(2),
                "{name} {engine:?} {path:?}: {exit:#?}"
            );
            assert!(
                exit.stderr.contains(needle),
                "{name} {engine:?} {path:?}: {exit:#?}"
            );
        }
    }
    faultbpf_tests::assert_nothing_attached(&origin, &["lo"]);
}

#[test]
fn an_engine_nobody_can_reach_exits_1_naming_where_it_looked() {
    let origin = Netns::new("ctr-un-o");
    // podman's own error for a missing socket says "no such file or
    // directory": that is not "no such container".
    for (engine, var, host) in [
        (
            "docker",
            "DOCKER_HOST",
            "unix:///nonexistent/fbt-docker.sock",
        ),
        (
            "podman",
            "CONTAINER_HOST",
            "unix:///nonexistent/fbt-podman.sock",
        ),
    ] {
        let exit = Launch::new(
            &origin,
            [
                "blackhole",
                "--port",
                "1",
                "--container",
                "api",
                "--engine",
                engine,
            ],
        )
        .standalone()
        .env(var, host)
        .run_within(Duration::from_secs(60));
        assert_eq!(exit.status.code(), Some(1), "{engine}: {exit:#?}");
        for needle in ["`api`", host.trim_start_matches("unix://"), var] {
            assert!(exit.stderr.contains(needle), "{engine} {needle}: {exit:#?}");
        }
    }
    faultbpf_tests::assert_nothing_attached(&origin, &["lo"]);
}

#[test]
fn blackhole_in_a_podman_container_with_engine_podman() {
    let podman = Podman::start("ctr-pm");
    let origin = Netns::new("ctr-pm-o");
    podman.container("srv", HI_SERVER);
    podman.container("cli", "sleep 600");
    let connect = || cli_to_srv(|a| podman.run(a));
    wait_srv_answers(|a| podman.run(a));
    let (_, control_took) = connect();
    let mut launch = Launch::new(
        &origin,
        [
            "blackhole",
            "--port",
            "5672",
            "--container",
            "srv",
            "--engine",
            "podman",
            "--for",
            "30s",
        ],
    )
    .standalone();
    for (k, v) in podman.env() {
        launch = launch.env(k, v);
    }
    let mut fault = launch.start();
    let (during, took) = connect();
    assert!(
        !during.contains("hi") && during.contains("rc=1"),
        "the connect should time out during the blackhole: {during}"
    );
    assert!(
        took > control_took + Duration::from_secs(1),
        "took {took:?}, control {control_took:?}"
    );
    let exit = fault.stop(libc::SIGINT);
    assert_eq!(exit.status.code(), Some(0), "{exit:#?}");
    assert!(connect().0.contains("hi"), "healed");
    faultbpf_tests::assert_nothing_attached(&origin, &["lo"]);
}

#[test]
fn a_scenario_targets_a_container_and_an_unknown_one_exits_2() {
    let docker = Docker::start("ctr-sc");
    let origin = Netns::new("ctr-sc-o");
    docker.container("srv", HI_SERVER);
    docker.container("cli", "sleep 600");
    wait_srv_answers(|a| docker.run(a));
    let (_, control_took) = connect(&docker);
    let dir = faultbpf_tests::temp::TempDir::new("ctr-sc");
    let file = dir.write(
        "partition.toml",
        "[target]\ncontainer = \"srv\"\nengine = \"docker\"\n\n[[step]]\nname = \"cut\"\nat = \
         \"0s\"\nfor = \"20s\"\nfault = \"blackhole\"\nport = [5672]\n",
    );
    let mut run = Launch::new(&origin, ["scenario", "run", &file])
        .no_daemon()
        .env("DOCKER_HOST", docker.host())
        .spawn();
    run.wait_stderr("faultbpf: scenario", Duration::from_secs(30));
    // The step starts at 0 s; give its attach a moment.
    std::thread::sleep(Duration::from_millis(500));
    let (during, took) = connect(&docker);
    assert!(
        !during.contains("hi") && took > control_took + Duration::from_secs(1),
        "the scenario's blackhole should hold srv's port: {during} in {took:?}"
    );
    let exit = run.stop(libc::SIGINT);
    assert!(exit.stderr.contains("container srv"), "{exit:#?}");
    assert!(connect(&docker).0.contains("hi"), "healed");

    let missing = dir.write(
        "missing.toml",
        "[target]\ncontainer = \"fbt-no-such\"\n\n[[step]]\nat = \"0s\"\nfor = \"1s\"\nfault = \
         \"blackhole\"\nport = [1]\n",
    );
    let exit = Launch::new(&origin, ["scenario", "run", &missing])
        .no_daemon()
        .env("DOCKER_HOST", docker.host())
        .run_within(Duration::from_secs(60));
    assert_eq!(exit.status.code(), Some(2), "{exit:#?}");
    assert!(exit.stderr.contains("`fbt-no-such`"), "{exit:#?}");
    faultbpf_tests::assert_nothing_attached(&origin, &["lo"]);
}
