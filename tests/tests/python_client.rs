//! The Python client (clients/python) against a real `faultbpf daemon`,
//! the way Vaurien's `with client.with_handler('errors')` was used: a
//! Python program in the client namespace puts a fault in force with
//! `with faultbpf.fault(...)`, sees its dependency cut inside the block
//! and back after it, gets the daemon's errors as `FaultbpfError`, and a
//! killed Python process leaves no rule behind. The pytest fixture runs
//! too, when Debian's python3-pytest is installed.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    SERVER_V4, Topology,
    daemon::Daemon,
    deps::{PYTHON, connects, python, wait_connects},
    run_bounded, tcp_listen,
    temp::TempDir,
};

const P: u16 = 5700;

/// clients/python, for PYTHONPATH.
fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/python")
}

/// Reports what it sees at each stage as one JSON line, and waits for a
/// line on stdin before going on, so the test can look from outside.
const SCRIPT: &str = r#"
import json, os, socket, sys
import faultbpf

SOCK, HOST, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])

def reachable():
    try:
        socket.create_connection((HOST, PORT), timeout=0.8).close()
        return True
    except OSError:
        return False

def say(**kw):
    print(json.dumps(kw), flush=True)
    sys.stdin.readline()

client = faultbpf.Client(SOCK)
with faultbpf.fault("blackhole", port=PORT, for_="30s", socket_path=SOCK, name="py") as rule:
    rules = client.rules()
    say(stage="inside", id=rule.id, reachable=reachable(), rules=rules,
        counters=rule.counters(), pid=os.getpid())
say(stage="after", reachable=reachable(), rules=client.rules())

errors = {}
for key, call in [
    ("guarded", lambda: client.add("blackhole", port=22)),
    ("bad_fault", lambda: client.add("explode", port=PORT)),
    ("bad_pct", lambda: client.add("blackhole", port=PORT, pct=101)),
    ("unknown_key", lambda: client.add("blackhole", port=PORT, prot="tcp")),
    ("missing", lambda: client.remove(424242)),
    ("no_daemon", lambda: faultbpf.Client("/nonexistent/fb.sock").rules()),
]:
    try:
        call()
        errors[key] = "no error"
    except faultbpf.FaultbpfError as e:
        errors[key] = [e.status, e.detail]
say(stage="errors", errors=errors, rules=client.rules())

info = client.add("reset", port=PORT)
say(stage="owned", id=info["id"], pid=os.getpid())
"#;

#[test]
fn python_client_scopes_faults_and_reports_errors() {
    let topo = Topology::new("py");
    let _listener = tcp_listen(&topo.server, (SERVER_V4, P).into());
    let daemon = Daemon::start(&topo.server, "py", &[]);
    let dir = client_dir();
    let mut py = python(
        &topo.client,
        SCRIPT,
        &[daemon.socket_str(), &SERVER_V4.to_string(), &P.to_string()],
        Some(&dir),
    );
    let t = Duration::from_secs(30);

    let inside = py.next_json(t);
    assert_eq!(inside["stage"], "inside", "{inside}");
    assert_eq!(
        inside["reachable"], false,
        "port cut inside the block: {inside}"
    );
    let rules = inside["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{inside}");
    assert_eq!(rules[0]["spec"]["owner_pid"], py.pid(), "{inside}");
    assert_eq!(rules[0]["spec"]["for"], "30s", "{inside}");
    assert_eq!(rules[0]["name"], "py");
    // Seen from outside too.
    assert!(!connects(
        &topo.client,
        (SERVER_V4, P).into(),
        Duration::from_millis(800)
    ));
    assert!(
        inside["counters"]["acted_packets"].as_u64().unwrap() >= 1,
        "{inside}"
    );
    py.send("go");

    let after = py.next_json(t);
    assert_eq!(after["reachable"], true, "{after}");
    assert_eq!(after["rules"], serde_json::json!([]), "{after}");
    assert!(daemon.rules().is_empty());
    py.send("go");

    let errors = py.next_json(t);
    let e = &errors["errors"];
    let status = |k: &str| e[k][0].clone();
    let detail = |k: &str| e[k][1].as_str().unwrap_or_default().to_string();
    assert_eq!(status("guarded"), 403, "{errors}");
    assert!(detail("guarded").contains("22"), "{errors}");
    assert_eq!(status("bad_fault"), 400, "{errors}");
    assert!(detail("bad_fault").contains("explode"), "{errors}");
    assert_eq!(status("bad_pct"), 400, "{errors}");
    assert!(detail("bad_pct").contains("101"), "{errors}");
    assert_eq!(status("unknown_key"), 400, "{errors}");
    assert!(detail("unknown_key").contains("prot"), "{errors}");
    assert_eq!(status("missing"), 404, "{errors}");
    assert!(e["no_daemon"][0].is_null(), "{errors}");
    assert!(
        detail("no_daemon").contains("/nonexistent/fb.sock"),
        "{errors}"
    );
    assert_eq!(errors["rules"], serde_json::json!([]), "{errors}");
    py.send("go");

    // A rule the script never removes: killing the script must remove it.
    let owned = py.next_json(t);
    assert_eq!(owned["stage"], "owned", "{owned}");
    assert_eq!(daemon.rules().len(), 1);
    py.signal(libc::SIGKILL);
    py.wait(Duration::from_secs(10));
    let killed = Instant::now();
    while !daemon.rules().is_empty() {
        assert!(
            killed.elapsed() < Duration::from_millis(2500),
            "a killed Python test left its rule: {:?}",
            daemon.rules()
        );
        thread::sleep(Duration::from_millis(50));
    }
    wait_connects(&topo.client, (SERVER_V4, P).into(), Duration::from_secs(1));
}

/// A test file using the fixture: one test in a `with` block, one that
/// leaves two rules behind and fails.
const PYTEST_FILE: &str = r#"
import socket

HOST, PORT = "10.200.0.2", 5700

def reachable():
    try:
        socket.create_connection((HOST, PORT), timeout=0.8).close()
        return True
    except OSError:
        return False

def test_with_block(faultbpf):
    assert reachable()
    with faultbpf.fault("blackhole", port=PORT, for_="30s"):
        assert not reachable()
    assert reachable()

def test_leftovers_go_at_teardown(faultbpf):
    faultbpf.add("blackhole", port=PORT)
    faultbpf.add("hang", port=PORT + 1)
    assert not reachable()
    assert False, "failing on purpose: the fixture must still remove both rules"

def test_after_the_failure(faultbpf):
    assert reachable()
    assert faultbpf.rules() == []
"#;

#[test]
fn pytest_fixture_removes_what_a_failing_test_left() {
    let has_pytest = run_bounded(
        std::process::Command::new(PYTHON).args(["-c", "import pytest"]),
        Duration::from_secs(30),
    );
    assert!(
        has_pytest.status.success(),
        "{PYTHON} has no pytest: install Debian's python3-pytest (`cargo xtask setup` does): \
         {has_pytest:#?}"
    );
    let topo = Topology::new("pyt");
    let _listener = tcp_listen(&topo.server, (SERVER_V4, P).into());
    let daemon = Daemon::start(&topo.server, "pyt", &[]);
    let dir = TempDir::new("pytest");
    let file = dir.write("test_faults.py", PYTEST_FILE);
    let mut cmd = topo.client.command(PYTHON);
    cmd.args([
        "-B",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:faultbpf",
        "-p",
        "faultbpf.pytest_plugin",
        "--faultbpf-socket",
        daemon.socket_str(),
        &file,
    ])
    .current_dir(dir.path())
    .env("PYTHONPATH", client_dir())
    .env("PYTHONDONTWRITEBYTECODE", "1");
    let exit = run_bounded(&mut cmd, Duration::from_secs(120));
    assert_eq!(
        exit.status.code(),
        Some(1),
        "one test fails on purpose: {exit:#?}"
    );
    assert!(
        exit.stdout.contains("1 failed, 2 passed"),
        "{}\n{}",
        exit.stdout,
        exit.stderr
    );
    assert!(daemon.rules().is_empty(), "{:?}", daemon.rules());
    wait_connects(&topo.client, (SERVER_V4, P).into(), Duration::from_secs(1));
}
