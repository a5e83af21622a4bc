//! `faultbpf scenario run FILE`: a game day's timeline applied for real.
//! Steps go into force at their `at` and out after their `for`, the
//! timeline shows on stderr as it happens, and the report (`--json`) says
//! per step when it was active and what it hit. Ctrl-C lifts everything,
//! prints the partial report and exits 130; through a daemon each step is
//! a rule owned by the run, so a `kill -9` of the run leaves nothing.
//!
//! In-process runs name the server namespace in `[target]` and are started
//! from a throwaway "origin" namespace, never from the root one.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    CLIENT_V4, Launch, Netns, SERVER_IF, SERVER_V4, Topology, assert_nothing_attached,
    daemon::Daemon, deps::NsProcesses, temp::TempFile, udp_bind,
};
use serde_json::Value;

const FIRST: u16 = 5800;
const SECOND: u16 = 5801;

/// Two one-second steps with traffic on both ports throughout.
fn two_steps(target: Option<&str>) -> String {
    let target = target
        .map(|ns| format!("[target]\nnetns = \"{ns}\"\n\n"))
        .unwrap_or_default();
    format!(
        r#"name = "e2e"
{target}[[step]]
name = "first"
at = "0s"
for = "1s"
fault = "blackhole"
port = [{FIRST}]
proto = "udp"

[[step]]
name = "second"
at = "2s"
for = "1s"
fault = "blackhole"
port = [{SECOND}]
proto = "udp"
"#
    )
}

/// UDP datagrams from the client to both ports every 10 ms until dropped
/// (at most 60 s).
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    _sinks: Vec<UdpSocket>,
}

impl Traffic {
    fn start(topo: &Topology) -> Self {
        let sinks = vec![
            udp_bind(&topo.server, SocketAddr::new(SERVER_V4, FIRST)),
            udp_bind(&topo.server, SocketAddr::new(SERVER_V4, SECOND)),
        ];
        let socket = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                for port in [FIRST, SECOND] {
                    let _ = socket.send_to(b"scenario traffic", SocketAddr::new(SERVER_V4, port));
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
            _sinks: sinks,
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report}"))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

fn secs(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// The checks both ways of running share: each step active in its window,
/// with counters from the traffic.
fn check_two_steps(report: &Value, via: &str) {
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(
        report["via"].as_str().unwrap() == "daemon",
        via == "daemon",
        "{report}"
    );
    for (name, start) in [("first", 0.0), ("second", 2.0)] {
        let s = step(report, name);
        assert_eq!(s["status"], "done", "{s}");
        let (a, b) = (secs(&s["started_seconds"]), secs(&s["ended_seconds"]));
        assert!((a - start).abs() < 0.5, "{name} started at {a}: {s}");
        assert!((b - a - 1.0).abs() < 0.5, "{name} lasted {}: {s}", b - a);
        assert!(secs(&s["planned_start_seconds"]) == start, "{s}");
        // Datagrams flow on each port all along (~100 a second, fewer
        // on a busy machine); a blackhole drops every one it matches.
        assert!(s["matched_packets"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["acted_packets"], s["matched_packets"], "{s}");
        assert_eq!(s["fault"], "blackhole");
    }
}

#[test]
fn scenario_runs_its_timeline_and_reports_each_step() {
    let topo = Topology::new("scn");
    let origin = Netns::new("scn-o");
    let file = TempFile::new("scenario", ".toml", &two_steps(Some(topo.server.name())));
    let check = Launch::new(&origin, ["scenario", "check", file.as_str()])
        .no_daemon()
        .run_within(Duration::from_secs(30));
    assert!(check.status.success(), "{check:#?}");
    assert!(check.stdout.contains("OK"), "{check:#?}");

    let _traffic = Traffic::start(&topo);
    let started = Instant::now();
    let exit = Launch::new(&origin, ["scenario", "run", file.as_str(), "--json"])
        .no_daemon()
        .run_within(Duration::from_secs(60));
    let took = started.elapsed();
    assert!(exit.status.success(), "{exit:#?}");
    let report = exit.json();
    check_two_steps(&report, "in-process");
    assert_eq!(report["netns"], topo.server.name(), "{report}");
    assert!(
        report["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == SERVER_IF),
        "{report}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // The timeline, as it happened, on stderr.
    for line in ["start first", "end   first", "start second", "end   second"] {
        assert!(
            exit.stderr.contains(line),
            "no `{line}` in:\n{}",
            exit.stderr
        );
    }
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
    assert_nothing_attached(&origin, &["lo"]);

    // The text report: one line per step.
    let exit = Launch::new(&origin, ["scenario", "run", file.as_str()])
        .no_daemon()
        .run_within(Duration::from_secs(60));
    assert!(exit.status.success(), "{exit:#?}");
    assert!(exit.stdout.contains("completed"), "{}", exit.stdout);
    assert_eq!(
        exit.stdout.lines().filter(|l| l.contains(" done ")).count(),
        2,
        "{}",
        exit.stdout
    );
}

#[test]
fn ctrl_c_lifts_everything_and_reports_so_far() {
    let topo = Topology::new("scc");
    let origin = Netns::new("scc-o");
    let text = two_steps(Some(topo.server.name()))
        .replace("for = \"1s\"", "for = \"30s\"")
        .replace("at = \"2s\"", "at = \"40s\"");
    let file = TempFile::new("scenario", ".toml", &text);
    let _traffic = Traffic::start(&topo);
    let mut run = Launch::new(&origin, ["scenario", "run", file.as_str(), "--json"])
        .no_daemon()
        .stdin_piped()
        .spawn();
    run.wait_stderr("[", Duration::from_secs(30));
    thread::sleep(Duration::from_millis(1500));
    run.signal(libc::SIGINT);
    let exit = run.wait(Duration::from_secs(15));
    assert_eq!(exit.status.code(), Some(130), "{exit:#?}");
    let report = exit.json();
    assert_eq!(report["outcome"], "interrupted", "{report}");
    let first = step(&report, "first");
    assert_eq!(first["status"], "cut_short", "{first}");
    assert!(first["acted_packets"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(step(&report, "second")["status"], "not_run", "{report}");
    assert!(step(&report, "second")["started_seconds"].is_null());
    assert_nothing_attached(&topo.server, &[SERVER_IF, "lo"]);
}

#[test]
fn through_a_daemon_steps_are_owned_rules() {
    let topo = Topology::new("scd");
    let _reap = NsProcesses(topo.server.name().to_string());
    let daemon = Daemon::start(&topo.server, "scd", &[]);
    // No [target]: the run uses the daemon it finds on the socket.
    let file = TempFile::new("scenario", ".toml", &two_steps(None));
    let _traffic = Traffic::start(&topo);
    let exit = Launch::new(&topo.server, ["scenario", "run", file.as_str(), "--json"])
        .socket(daemon.socket_str())
        .run_within(Duration::from_secs(60));
    assert!(exit.status.success(), "{exit:#?}");
    let report = exit.json();
    check_two_steps(&report, "daemon");
    assert!(step(&report, "first")["rule_id"].is_u64(), "{report}");
    assert!(daemon.rules().is_empty(), "{:?}", daemon.rules());

    // kill -9 in the middle of a long step: the daemon drops its rule.
    let long = TempFile::new(
        "scenario",
        ".toml",
        &two_steps(None)
            .replace("for = \"1s\"", "for = \"30s\"")
            .replace("at = \"2s\"", "at = \"40s\""),
    );
    let mut run = Launch::new(&topo.server, ["scenario", "run", long.as_str()])
        .socket(daemon.socket_str())
        .stdin_piped()
        .spawn();
    run.wait_stderr("[", Duration::from_secs(30));
    let rules = daemon.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["spec"]["owner_pid"], run.pid(), "{rules:?}");
    assert_eq!(rules[0]["name"], "first", "{rules:?}");
    run.signal(libc::SIGKILL);
    run.wait(Duration::from_secs(10));
    let killed = Instant::now();
    while !daemon.rules().is_empty() {
        assert!(
            killed.elapsed() < Duration::from_millis(2500),
            "a killed scenario run left its rule: {:?}",
            daemon.rules()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn check_names_the_line_of_a_mistake() {
    let origin = Netns::new("scx-o");
    let file = TempFile::new(
        "scenario",
        ".toml",
        "[[step]]\nat = \"0s\"\nfor = \"1s\"\nfault = \"blackhole\"\nport = [5]\npct = 101\n",
    );
    for sub in ["check", "run"] {
        let exit = Launch::new(&origin, ["scenario", sub, file.as_str()])
            .no_daemon()
            .run_within(Duration::from_secs(30));
        assert_eq!(exit.status.code(), Some(1), "{exit:#?}");
        assert!(
            exit.stderr.contains(&format!("{}:6:1:", file.as_str())),
            "{sub}: {}",
            exit.stderr
        );
        assert!(exit.stderr.contains("101"), "{}", exit.stderr);
    }
    assert_nothing_attached(&origin, &["lo"]);
    // The example game day checks (and lists its random picks).
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gameday.toml");
    let exit = Launch::new(&origin, ["scenario", "check", example])
        .no_daemon()
        .run_within(Duration::from_secs(30));
    assert!(exit.status.success(), "{exit:#?}");
    assert!(exit.stdout.contains("random #1"), "{}", exit.stdout);
}
