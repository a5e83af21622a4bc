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
    engine::{self, Docker, HI_SERVER, cli_to_srv, wait_srv_answers},
    http::{Request, Response},
    openapi::{ApiCheck, check_openapi},
    temp::TempFile,
};
use serde_json::{Value, json};

/// `nc srv 5672` from the client container (2 s connect timeout).
fn connect(docker: &Docker) -> (String, Duration) {
    cli_to_srv(|a| docker.run(a))
}

/// [`engine::assert_cut`] through `docker`.
fn assert_cut(docker: &Docker, control: Duration, what: &str) {
    engine::assert_cut(|a| docker.run(a), control, what);
}

/// The engine, srv and cli, and a daemon (given `args`) in a namespace of
/// its own that asks that engine; returns the control connect time too.
fn scene(tag: &str, args: &[&str]) -> (Docker, Netns, Daemon, Duration) {
    let docker = Docker::start(tag);
    docker.container("srv", HI_SERVER);
    docker.container("cli", "sleep 600");
    let control = wait_srv_answers(|a| docker.run(a));
    let ns = Netns::new(&format!("{tag}-d"));
    ns.ip(&["link", "set", "lo", "up"]);
    let host = docker.host();
    let mut all = vec!["--lease", "2s"];
    all.extend(args);
    let daemon = Daemon::start_env(&ns, tag, &all, &[("DOCKER_HOST", &host)]);
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

/// Sends `method path [body]` to the daemon and records the answer (and a
/// body it accepted or refused as malformed) for the OpenAPI check.
fn observe(
    checks: &mut Vec<ApiCheck>,
    d: &Daemon,
    method: &str,
    route: &str,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let text = body.map(Value::to_string).unwrap_or_default();
    let mut req = Request::new(method, path);
    if body.is_some() {
        req = req.body(text.as_bytes());
    }
    let r = d.request(&req);
    checks.push(ApiCheck::response(route, method, &r));
    if let Some(b) = body
        && matches!(r.status, 201 | 400)
    {
        checks.push(ApiCheck::RuleSpec {
            body: b.clone(),
            accepted: r.status == 201,
        });
    }
    r
}

/// srv's main process, as the engine says.
fn srv_pid(docker: &Docker) -> String {
    docker.ok(&["inspect", "--format", "{{.State.Pid}}", "srv"])
}

#[test]
fn a_daemon_rule_on_a_container_cuts_it_counts_and_dies_with_the_daemon() {
    let (docker, ns, mut daemon, control) = scene("dctr-cut", &[]);
    let mut checks = Vec::new();

    // A name the engine does not know: 422 naming it, nothing added.
    let body = json!({"fault": "blackhole", "port": [5672], "container": "fbt-no-such"});
    let r = observe(
        &mut checks,
        &daemon,
        "POST",
        "/v1/rules",
        "/v1/rules",
        Some(&body),
    );
    let detail = r.expect_problem(422);
    assert!(detail.contains("`fbt-no-such`"), "{detail}");
    assert!(
        daemon.rules().is_empty(),
        "nothing added: {:?}",
        daemon.rules()
    );
    // A bad name, or an engine without a container, is refused before any
    // engine is asked.
    for body in [
        json!({"fault": "blackhole", "port": [5672], "container": "a b"}),
        json!({"fault": "blackhole", "port": [5672], "engine": "docker"}),
    ] {
        let r = observe(
            &mut checks,
            &daemon,
            "POST",
            "/v1/rules",
            "/v1/rules",
            Some(&body),
        );
        let detail = r.expect_problem(400);
        assert!(detail.contains("container"), "{body}: {detail}");
    }

    let body = json!({
        "fault": "blackhole", "port": [5672], "container": "srv", "engine": "docker", "for": "60s"
    });
    let r = observe(
        &mut checks,
        &daemon,
        "POST",
        "/v1/rules",
        "/v1/rules",
        Some(&body),
    );
    let rule = r.expect(201);
    let id = rule["id"].as_u64().unwrap();
    let path = format!("/v1/rules/{id}");
    observe(&mut checks, &daemon, "GET", "/v1/rules/{id}", &path, None);
    observe(&mut checks, &daemon, "GET", "/v1/rules", "/v1/rules", None);
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
    observe(&mut checks, &daemon, "GET", "/v1/stats", "/v1/stats", None);
    let metrics = daemon.get("/metrics").text();
    let acted = metrics
        .lines()
        .find(|l| l.contains("acted_packets") && l.contains(&format!("id=\"{id}\"")))
        .unwrap_or_else(|| panic!("no acted_packets sample for rule {id}:\n{metrics}"));
    assert!(!acted.ends_with(" 0"), "{acted}");
    let doc = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let wrong = check_openapi(&doc, &checks);
    assert!(
        wrong.is_empty(),
        "docs/openapi.yaml disagrees with the daemon:\n{}",
        wrong.join("\n")
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
    follow_through_restarts("dctr-rst", "auto");
}

/// The same with cls_bpf filters: the clsact qdisc the daemon adds in
/// srv's namespace (and its reaper there) come and go with the rules.
#[test]
fn a_daemon_rule_follows_its_container_through_restart_and_stop_netlink() {
    follow_through_restarts("dctr-rnl", "netlink");
}

/// Whether srv's `eth0` has a clsact qdisc (only the netlink path adds
/// one).
fn srv_has_clsact(docker: &Docker) -> bool {
    let pid = srv_pid(docker);
    let out = faultbpf_tests::run_checked(
        std::process::Command::new("nsenter")
            .args(["-t", &pid, "-n", "tc", "qdisc", "show", "dev", "eth0"]),
    );
    out.contains("clsact")
}

fn follow_through_restarts(tag: &str, attach: &str) {
    // A config rule on srv too (another port): placed by the daemon's
    // check within a second of the start, and followed like the API's.
    let config = TempFile::new(
        tag,
        ".toml",
        "[[rule]]\nname = \"srv-other\"\nfault = \"reset\"\nport = [5673]\ncontainer = \"srv\"\n",
    );
    let (docker, ns, daemon, control) = scene(
        tag,
        &[
            "--attach",
            attach,
            "--config",
            config.path().to_str().unwrap(),
        ],
    );
    let from_config = daemon.rules()[0]["id"].as_u64().unwrap();
    let pid = srv_pid(&docker);
    wait_target(
        &daemon,
        from_config,
        Duration::from_secs(10),
        "config rule",
        |t| t.contains(&format!("pid {pid},")),
    );
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
    wait_target(
        &daemon,
        from_config,
        Duration::from_secs(5),
        "config rule",
        |t| t.contains(&format!("pid {after},")),
    );
    // "container srv restarted; in force again in ...", or, when a check
    // fell between the stop and the start of the restart, "not running"
    // then "in force in ...": either way the log names the new process.
    daemon.expect_log(mark, &format!("pid {after},"), Duration::from_secs(5));
    assert_eq!(
        srv_has_clsact(&docker),
        attach == "netlink",
        "a clsact qdisc in srv's new namespace only on the netlink path"
    );

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
    daemon
        .delete(&format!("/v1/rules/{from_config}"))
        .expect(200);
    daemon.expect_log(
        mark,
        "detached from network namespace",
        Duration::from_secs(5),
    );
    wait_srv_answers(|a| docker.run(a));
    assert!(
        !srv_has_clsact(&docker),
        "the daemon left a clsact qdisc in srv"
    );
}

/// An engine that never answers (a `docker` that sleeps) holds up only the
/// request that asked it, and the daemon's own check of its containers:
/// meanwhile `/healthz` and the rule list answer at once, and the
/// heartbeat keeps a 1 s lease alive (a blackhole on lo still cuts).
#[test]
fn a_slow_engine_holds_up_neither_other_requests_nor_the_heartbeat() {
    use std::{net::TcpListener, os::unix::fs::PermissionsExt};

    let bin = faultbpf_tests::temp::TempDir::new("dctr-slow-path");
    let docker = bin.path().join("docker");
    let on_path = |tool: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} on PATH"))
    };
    std::fs::write(
        &docker,
        format!("#!/bin/sh\nexec {} 60\n", on_path("sleep").display()),
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The launcher runs `ip netns exec`, found on the child's PATH.
    std::os::unix::fs::symlink(on_path("ip"), bin.path().join("ip")).unwrap();

    // The config's container rule keeps the daemon's check busy on the
    // slow engine from the start.
    let config = TempFile::new(
        "dctr-slow",
        ".toml",
        "[[rule]]\nname = \"slow\"\nfault = \"blackhole\"\nport = [7002]\ncontainer = \"slow\"\n\
         engine = \"docker\"\n[[rule]]\nname = \"home\"\nfault = \"blackhole\"\nport = [7001]\n",
    );
    let ns = Netns::new("dctr-slow");
    ns.ip(&["link", "set", "lo", "up"]);
    let path = bin.path().to_str().unwrap().to_string();
    let daemon = Daemon::start_env(
        &ns,
        "dctr-slow",
        &["--lease", "1s", "--config", config.path().to_str().unwrap()],
        &[("PATH", &path)],
    );

    std::thread::scope(|s| {
        let socket = daemon.socket().to_path_buf();
        let adding = s.spawn(move || {
            let start = Instant::now();
            let body = json!({
                "fault": "blackhole", "port": [7003], "container": "slow2", "engine": "docker"
            })
            .to_string();
            let req = Request::new("POST", "/v1/rules").body(body.as_bytes());
            // The daemon answers once the engine's 15 s are up: more than
            // the default read timeout, which is also 15 s.
            let r = faultbpf_tests::http::unix_request_within(
                &socket,
                &req,
                faultbpf::target::ENGINE_TIMEOUT + Duration::from_secs(15),
            )
            .unwrap();
            (r, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let watched = Instant::now();
        while watched.elapsed() < Duration::from_secs(6) {
            let start = Instant::now();
            daemon.get("/healthz").expect(200);
            let rules = daemon.get("/v1/rules").expect(200);
            let took = start.elapsed();
            assert!(
                took < Duration::from_secs(1),
                "the rule list waited {took:?} for a slow engine: {rules}"
            );
            // The home rule still acts: the lease (1 s) is renewed.
            let cut = ns.run(|| {
                let l = TcpListener::bind("127.0.0.1:7001").unwrap();
                let c = std::net::TcpStream::connect_timeout(
                    &l.local_addr().unwrap(),
                    Duration::from_millis(500),
                );
                c.is_err()
            });
            assert!(cut, "the home rule lapsed: the heartbeat was held up");
            std::thread::sleep(Duration::from_millis(300));
        }
        let (r, took) = adding.join().unwrap();
        let detail = r.expect_problem(422);
        assert!(
            detail.contains("`slow2`") && detail.contains("did not answer"),
            "{detail}"
        );
        assert!(took >= Duration::from_secs(14), "{took:?}");
    });
    let slow = daemon
        .rules()
        .into_iter()
        .find(|r| r["name"] == "slow")
        .unwrap();
    assert!(
        slow["target"]
            .as_str()
            .unwrap()
            .contains("waiting: could not ask about container `slow`"),
        "{slow}"
    );
}
