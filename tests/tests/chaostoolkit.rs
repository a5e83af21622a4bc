//! Issue 14, "a Chaos Toolkit extension": the real `chaos run`
//! (chaostoolkit from PyPI, in target/tools) runs an experiment with
//! `clients/chaostoolkit-faultbpf` against three daemons in three
//! namespaces, joined by veth pairs to a hub namespace where `chaos`
//! runs: steady state before (daemons healthy, no fault of this run), a
//! UDP blackhole on every daemon, traffic, the deviation observed (each
//! daemon's counter equals the packets sent to it), the heal (the last
//! step of the method, then again as the rollback), and the steady state
//! again. Then a `chaos run` killed mid-experiment: its
//! faults expire on the daemons by themselves.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use faultbpf_tests::{Netns, Proc, Star, daemon::Daemon, temp::TempDir};
use serde_json::{Value, json};

const TOKEN: &str = "chaostoolkit-token-0123456789ab";
const PORT: u16 = 7100;

fn chaos_bin() -> PathBuf {
    let path = std::env::var_os("FAULTBPF_CHAOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/chaostoolkit/bin/chaos")
        });
    assert!(
        path.is_file(),
        "chaostoolkit is not installed at {} (cargo xtask test installs it)",
        path.display()
    );
    path
}

fn pythonpath() -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients");
    format!(
        "{}:{}",
        root.join("python").display(),
        root.join("chaostoolkit-faultbpf").display()
    )
}

struct Fleet {
    daemons: Vec<Daemon>,
    /// The daemons' node addresses.
    ips: Vec<String>,
    star: Star,
}

/// Three daemons listening on TCP in three nodes of a star (10.200.51-53).
fn fleet(tag: &str, token_file: &str) -> Fleet {
    let star = Star::new(tag, 50, 3);
    let daemons = star
        .nodes
        .iter()
        .map(|n| {
            Daemon::start(
                &n.ns,
                "ctk",
                &[
                    "--iface",
                    &n.iface,
                    "--listen",
                    &format!("{}:7443", n.ip),
                    "--token-file",
                    token_file,
                ],
            )
        })
        .collect();
    let ips = star.nodes.iter().map(|n| n.ip.clone()).collect();
    Fleet { daemons, ips, star }
}

fn python_activity(name: &str, kind: &str, module: &str, func: &str, args: Value) -> Value {
    json!({
        "type": kind,
        "name": name,
        "provider": {
            "type": "python",
            "module": module,
            "func": func,
            "arguments": args,
            "secrets": ["faultbpf"],
        },
    })
}

fn experiment(ips: &[String], for_: &str, method_tail: Vec<Value>) -> Value {
    let urls: Vec<String> = ips.iter().map(|ip| format!("http://{ip}:7443")).collect();
    let mut method = vec![python_activity(
        "blackhole-udp",
        "action",
        "chaosfaultbpf.actions",
        "add_fault",
        json!({ "fault": "blackhole", "port": PORT, "proto": "udp", "for_": for_ }),
    )];
    method.extend(method_tail);
    let mut healthy = python_activity(
        "daemons-healthy",
        "probe",
        "chaosfaultbpf.probes",
        "daemons_healthy",
        json!({}),
    );
    healthy["tolerance"] = json!(true);
    let mut none = python_activity(
        "no-faults-of-this-run",
        "probe",
        "chaosfaultbpf.probes",
        "faults_in_force",
        json!({}),
    );
    none["tolerance"] = json!(0);
    json!({
        "version": "1.0.0",
        "title": "a UDP port blackholed on three hosts",
        "description": "faultbpf daemons in three namespaces",
        "configuration": { "faultbpf_daemons": urls },
        "secrets": { "faultbpf": { "token": TOKEN } },
        "steady-state-hypothesis": { "title": "healthy, no fault", "probes": [healthy, none] },
        "method": method,
        "rollbacks": [python_activity(
            "remove-faults",
            "action",
            "chaosfaultbpf.actions",
            "remove_faults",
            json!({}),
        )],
    })
}

/// Sends `counts[i]` UDP packets to node `i`'s PORT (after a warm-up
/// packet to another port, so the neighbour is resolved).
fn traffic_script(ips: &[String], counts: &[u32]) -> String {
    let pairs: Vec<String> = ips
        .iter()
        .zip(counts)
        .map(|(ip, n)| format!("('{ip}', {n})"))
        .collect();
    format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor ip, n in \
         [{}]:\n    s.sendto(b'warm', (ip, 9))\n    time.sleep(0.2)\n    for _ in range(n):\n        \
         s.sendto(b'x', (ip, {PORT}))\n",
        pairs.join(", ")
    )
}

fn chaos_run(hub: &Netns, dir: &TempDir, experiment: &Value) -> Proc {
    let file = dir.write("experiment.json", &experiment.to_string());
    let mut cmd = hub.command(chaos_bin());
    cmd.current_dir(dir.path())
        .env("PYTHONPATH", pythonpath())
        .args(["--log-file", &dir.join("chaostoolkit.log"), "run"])
        .args(["--journal-path", &dir.join("journal.json")])
        .arg(&file);
    Proc::spawn(&mut cmd, "chaos run")
}

#[test]
fn chaos_run_blackholes_three_daemons_observes_and_rolls_back() {
    let dir = TempDir::new("ctk");
    let token = dir.write("token", &format!("{TOKEN}\n"));
    let f = fleet("ctk", &token);
    let counts = [10u32, 20, 30];
    let mut send = json!({
        "type": "action",
        "name": "send-traffic",
        "provider": {
            "type": "process",
            "path": "/usr/bin/python3",
            "arguments": ["-c", traffic_script(&f.ips, &counts)],
        },
        "pauses": { "after": 1 },
    });
    send["provider"]["timeout"] = json!(30);
    let acted = python_activity(
        "acted",
        "probe",
        "chaosfaultbpf.probes",
        "acted_packets",
        json!({}),
    );
    // Chaos Toolkit checks the steady state again right after the method,
    // before the rollbacks: the method ends by removing its faults, and
    // the rollback (the same action) is what a failed step would rely on.
    let heal = python_activity(
        "heal",
        "action",
        "chaosfaultbpf.actions",
        "remove_faults",
        json!({}),
    );
    let exp = experiment(&f.ips, "60s", vec![send, acted, heal]);
    let mut chaos = chaos_run(&f.star.hub, &dir, &exp);
    let exit = chaos.wait(Duration::from_secs(180));
    let journal: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("journal.json")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert!(
        exit.status.success(),
        "{exit:#?}\nlog: {}",
        std::fs::read_to_string(dir.join("chaostoolkit.log")).unwrap_or_default()
    );
    assert_eq!(journal["status"], "completed", "{journal:#}");
    assert_eq!(journal["steady_states"]["before"]["steady_state_met"], true);
    assert_eq!(journal["steady_states"]["after"]["steady_state_met"], true);
    let runs = journal["run"].as_array().unwrap();
    let observed = runs
        .iter()
        .find(|r| r["activity"]["name"] == "acted")
        .unwrap_or_else(|| panic!("no `acted` probe in {journal:#}"));
    let want: BTreeMap<String, u64> = f
        .ips
        .iter()
        .zip(counts)
        .map(|(ip, n)| (format!("http://{ip}:7443"), u64::from(n)))
        .collect();
    let got: BTreeMap<String, u64> = serde_json::from_value(observed["output"].clone())
        .unwrap_or_else(|e| panic!("{e}: {observed:#}"));
    assert_eq!(
        got, want,
        "the deviation: each daemon dropped what it was sent"
    );
    let rollback = &journal["rollbacks"][0];
    assert_eq!(rollback["status"], "succeeded", "{rollback:#}");
    for d in &f.daemons {
        assert!(
            d.rules().is_empty(),
            "left after the rollback: {:?}",
            d.rules()
        );
    }
}

#[test]
fn a_killed_chaos_run_leaves_nothing_in_force_past_its_expiry() {
    let dir = TempDir::new("ctk-kill");
    let token = dir.write("token", &format!("{TOKEN}\n"));
    let f = fleet("ctkk", &token);
    // Held by a pause inside `chaos` itself (a process step would leave
    // its child behind when chaos is killed).
    let mut exp = experiment(&f.ips, "4s", Vec::new());
    exp["method"][0]["pauses"] = json!({ "after": 60 });
    let mut chaos = chaos_run(&f.star.hub, &dir, &exp);
    let start = Instant::now();
    while f.daemons.iter().any(|d| d.rules().is_empty()) {
        assert!(chaos.is_running(), "chaos exited early: {}", chaos.stderr());
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "faults never added"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let added = Instant::now();
    chaos.kill();
    // No rollback ran; the daemons' own expiry removes the rules.
    for d in &f.daemons {
        assert_eq!(d.rules().len(), 1, "in force right after the kill");
    }
    while f.daemons.iter().any(|d| !d.rules().is_empty()) {
        assert!(
            added.elapsed() < Duration::from_secs(10),
            "rules outlived their 4 s expiry by far: {:?}",
            f.daemons.iter().map(|d| d.rules()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let gone = added.elapsed();
    assert!(
        gone >= Duration::from_secs(2),
        "removed after {gone:?}: earlier than any expiry, so not by it"
    );
}
