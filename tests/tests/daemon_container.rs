//! Issue 14: daemon rules on a container (`"container": "srv"`). The
//! daemon runs in a namespace of the test's own (only `lo`), finds `srv`
//! through the test's dockerd (tests/src/engine.rs, in a namespace of its
//! own too) and acts inside srv's network namespace; a client container
//! `cli` on the same network sees it.
//! - A rule on srv cuts `cli -> srv:5672`, and the daemon counts it; the
//!   CLI's `--container` against the daemon adds such a rule; a name the
//!   engine does not know is a 422 naming it, and nothing is added; a
//!   daemon killed with SIGKILL leaves nothing in force in srv.
//! - `docker restart srv` (a new network namespace) while the rule is in
//!   force: the daemon follows within seconds, the rule (same id) cuts
//!   again, its `target` names the new process; `docker stop srv`: the
//!   rule stays and says it waits; `docker start srv`: in force again.

use std::time::{Duration, Instant};

use faultbpf_tests::{
    Netns,
    daemon::Daemon,
    engine::{Docker, HI_SERVER, cli_to_srv, wait_srv_answers},
};
use serde_json::{Value, json};

/// `nc srv 5672` from the client container (2 s connect timeout).
fn connect(docker: &Docker) -> (String, Duration) {
    cli_to_srv(|a| docker.run(a))
}

/// Asserts that a connect from `cli` to `srv` waits out its timeout, where
/// the control (measured in the same run) answered.
fn assert_cut(docker: &Docker, control: Duration, what: &str) {
    let (said, took) = connect(docker);
    assert!(
        !said.contains("hi") && said.contains("rc=1"),
        "{what}: the connect should time out: {said}"
    );
    assert!(
        took > control + Duration::from_secs(1),
        "{what}: a cut connect waits for its 2 s timeout: took {took:?}, control {control:?}"
    );
}

/// The engine, srv and cli, and a daemon in a namespace of its own that
/// asks that engine; returns the control connect time too.
fn scene(tag: &str) -> (Docker, Netns, Daemon, Duration) {
    let docker = Docker::start(tag);
    docker.container("srv", HI_SERVER);
    docker.container("cli", "sleep 600");
    let control = wait_srv_answers(|a| docker.run(a));
    let ns = Netns::new(&format!("{tag}-d"));
    ns.ip(&["link", "set", "lo", "up"]);
    let host = docker.host();
    let daemon = Daemon::start_env(&ns, tag, &["--lease", "2s"], &[("DOCKER_HOST", &host)]);
    (docker, ns, daemon, control)
}

/// Polls rule `id` for up to `within` until `pred` holds for its `target`;
/// returns the rule.
fn wait_target(
    d: &Daemon,
    id: u64,
    within: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let r = d.get(&format!("/v1/rules/{id}")).expect(200);
        if pred(r["target"].as_str().unwrap_or_default()) {
            return r;
        }
        assert!(
            start.elapsed() < within,
            "{what}: rule {id}'s target is still {} after {within:?}\ndaemon log:\n{}",
            r["target"],
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// srv's main process, as the engine says.
fn srv_pid(docker: &Docker) -> String {
    docker.ok(&["inspect", "--format", "{{.State.Pid}}", "srv"])
}

#[test]
fn a_daemon_rule_on_a_container_cuts_it_counts_and_dies_with_the_daemon() {
    let (docker, ns, mut daemon, control) = scene("dctr-cut");

    // A name the engine does not know: 422 naming it, nothing added.
    let r = daemon.post(
        "/v1/rules",
        json!({"fault": "blackhole", "port": [5672], "container": "fbt-no-such"})
            .to_string()
            .as_bytes(),
    );
    let detail = r.expect_problem(422);
    assert!(detail.contains("`fbt-no-such`"), "{detail}");
    assert!(
        daemon.rules().is_empty(),
        "nothing added: {:?}",
        daemon.rules()
    );
    // A bad name is refused before any engine is asked.
    let r = daemon.post(
        "/v1/rules",
        json!({"fault": "blackhole", "port": [5672], "container": "a b"})
            .to_string()
            .as_bytes(),
    );
    assert!(r.expect_problem(400).contains("container"), "{r}");

    let rule = daemon.add_rule(&json!({
        "fault": "blackhole", "port": [5672], "container": "srv", "for": "60s"
    }));
    let id = rule["id"].as_u64().unwrap();
    let pid = srv_pid(&docker);
    let target = rule["target"].as_str().unwrap_or_default();
    assert!(
        target.contains("container srv") && target.contains(&format!("pid {pid}")),
        "{rule}"
    );
    assert!(target.contains("eth0"), "it sits on srv's eth0: {rule}");
    assert_cut(&docker, control, "daemon rule on srv");
    let stats = daemon.stats_of(id).expect("the rule's counters");
    assert!(
        stats["acted_packets"].as_u64().unwrap() > 0,
        "the daemon counts what it dropped in srv: {stats}"
    );
    // `faultbpf rules` shows where it acts.
    let exit = daemon.launch(&ns, ["rules"]).run();
    assert!(exit.status.success(), "{exit:#?}");
    assert!(exit.stdout.contains("in container srv (pid"), "{exit:#?}");
    daemon.delete(&format!("/v1/rules/{id}")).expect(200);
    wait_srv_answers(|a| docker.run(a));

    // The CLI's --container against the daemon sends the field: the rule
    // is the daemon's, and the daemon enters srv.
    let exit = daemon
        .launch(
            &ns,
            [
                "blackhole",
                "--port",
                "5672",
                "--container",
                "srv",
                "--for",
                "60s",
            ],
        )
        .run();
    assert!(exit.status.success(), "{exit:#?}");
    assert!(exit.stdout.contains("added"), "{exit:#?}");
    let rules = daemon.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["spec"]["container"], "srv", "{rules:?}");
    assert_cut(&docker, control, "CLI --container via the daemon");
    // An unknown container through the CLI: exit 2, naming it.
    let exit = daemon
        .launch(
            &ns,
            ["blackhole", "--port", "1", "--container", "fbt-no-such"],
        )
        .run();
    assert_eq!(exit.status.code(), Some(2), "{exit:#?}");
    assert!(exit.stderr.contains("fbt-no-such"), "{exit:#?}");

    // Frozen (SIGSTOP): the lease in srv's namespace runs out (2 s) and
    // srv answers; thawed, the heartbeat renews it and the cut is back.
    daemon.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    loop {
        let (said, _) = connect(&docker);
        if said.contains("hi") {
            break;
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(10),
            "a frozen daemon's rule in srv should lapse with its 2 s lease: {said}"
        );
    }
    eprintln!(
        "frozen daemon: srv answers {:?} after SIGSTOP",
        frozen.elapsed()
    );
    daemon.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(1500));
    assert_cut(&docker, control, "after SIGCONT");

    // SIGKILL: the links in srv's namespace go with the daemon.
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(15));
    let start = Instant::now();
    let (said, _) = connect(&docker);
    assert!(
        said.contains("hi"),
        "traffic to srv flows again once the daemon is killed: {said}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_daemon_rule_follows_its_container_through_restart_and_stop() {
    let (docker, ns, daemon, control) = scene("dctr-rst");
    let rule = daemon.add_rule(&json!({
        "fault": "blackhole", "port": [5672], "container": "srv", "for": "5m"
    }));
    let id = rule["id"].as_u64().unwrap();
    assert_cut(&docker, control, "before the restart");
    let before = srv_pid(&docker);

    // A restart makes a new network namespace: the daemon follows.
    let mark = daemon.log_len();
    docker.ok(&["restart", "-t", "0", "srv"]);
    let restarted = Instant::now();
    let after = srv_pid(&docker);
    assert_ne!(before, after, "srv restarted with a new process");
    let r = wait_target(&daemon, id, Duration::from_secs(15), "after restart", |t| {
        t.contains(&format!("pid {after},"))
    });
    eprintln!(
        "rule {id} in force in the new namespace {:?} after the restart: {}",
        restarted.elapsed(),
        r["target"]
    );
    assert_eq!(r["id"], id, "same id: {r}");
    assert_cut(&docker, control, "after the restart");
    daemon.expect_log(mark, "restarted", Duration::from_secs(5));

    // Stopped: the rule stays, and says it waits.
    docker.ok(&["stop", "-t", "0", "srv"]);
    wait_target(&daemon, id, Duration::from_secs(15), "after stop", |t| {
        t.contains("container srv is not running; waiting for it")
    });
    let exit = daemon.launch(&ns, ["rules", "--json"]).run();
    assert!(exit.status.success(), "{exit:#?}");
    assert!(
        exit.stdout.contains("not running; waiting for it"),
        "{exit:#?}"
    );

    // Back: in force again.
    docker.ok(&["start", "srv"]);
    let again = srv_pid(&docker);
    wait_target(&daemon, id, Duration::from_secs(15), "after start", |t| {
        t.contains(&format!("pid {again},"))
    });
    assert_cut(&docker, control, "after start");

    // Removed: srv answers, and the daemon let go of srv's namespace.
    let mark = daemon.log_len();
    daemon.delete(&format!("/v1/rules/{id}")).expect(200);
    daemon.expect_log(
        mark,
        "detached from network namespace",
        Duration::from_secs(5),
    );
    wait_srv_answers(|a| docker.run(a));
}
