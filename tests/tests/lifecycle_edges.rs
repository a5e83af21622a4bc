//! One rule lifecycle, tried at its edges (issue "One rule lifecycle"):
//! every bad value is refused with a 4xx or exit 2 that names it, before
//! anything reaches the kernel, on every path (API, CLI standalone, config,
//! scenario); afterwards the kernel's rule index holds exactly the rules the
//! API lists, and an unrelated blackhole stayed in force the whole time.
//! Also: `--json` on every command, and `rm` that removes what it can.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, Map, MapData, MapInfo},
    programs::SchedClassifier,
};
use faultbpf_tests::{
    Exit, Launch, Netns, SERVER_IF, SERVER_V4, TcAttachType, Topology, assert_nothing_attached,
    daemon::Daemon, temp::TempFile, udp_bind,
};
use serde_json::{Value, json};

/// `faultbpf ARGS..` in `ns`, its rules sent to `socket` (a daemon's, or a
/// path where none listens), run to its end.
fn cli(ns: &Netns, socket: &str, args: &[&str]) -> Exit {
    Launch::new(ns, args).socket(socket).run()
}

/// `faultbpf ARGS.. --standalone` in `ns`, run to its end.
fn standalone(ns: &Netns, args: &[&str]) -> Exit {
    Launch::new(ns, args).standalone().run()
}

/// The sentinel: an unrelated blackhole that must hold throughout.
const SENTINEL: u16 = 6000;

/// The rule slots (`id`s) the kernel's `RULE_INDEX` of the faultbpf whose
/// ingress program is attached to `ifname` in `ns` points at.
fn kernel_slots(ns: &Netns, ifname: &str) -> BTreeSet<u64> {
    ns.run(|| {
        let (_, progs) = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
            .unwrap_or_else(|e| panic!("query_tcx {ifname}: {e}"));
        let prog = progs
            .iter()
            .find(|p| p.name_as_str() == Some("faultbpf_in"))
            .expect("faultbpf's ingress program is attached");
        let ids = prog.map_ids().unwrap().unwrap_or_default();
        let index = ids
            .into_iter()
            .find(|id| MapInfo::from_id(*id).unwrap().name_as_str() == Some("RULE_INDEX"))
            .expect("the program uses RULE_INDEX");
        let map = Map::from_map_data(MapData::from_id(index).unwrap()).unwrap();
        let array: Array<MapData, u64> = Array::try_from(map).unwrap();
        let mut slots = BTreeSet::new();
        for w in array.iter() {
            let w = w.unwrap();
            for shift in [0, 16, 32, 48] {
                let v = (w >> shift) & 0xffff;
                if v != 0 {
                    slots.insert(v - 1);
                }
            }
        }
        slots
    })
}

fn api_ids(d: &Daemon) -> BTreeSet<u64> {
    d.rules()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// Sends a UDP datagram to the sentinel port every 100 ms from the client
/// namespace and counts those that arrive, until dropped.
struct SentinelProbe {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    arrived: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl SentinelProbe {
    fn start(topo: &Topology) -> Self {
        let to = SocketAddr::new(SERVER_V4, SENTINEL);
        let rx = udp_bind(&topo.server, to);
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let tx = udp_bind(&topo.client, SocketAddr::new(faultbpf_tests::CLIENT_V4, 0));
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, arrived) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s1, s2, n, a) = (stop.clone(), stop.clone(), sent.clone(), arrived.clone());
        let sender = thread::spawn(move || {
            // Bounded: at most 10 minutes of probes.
            for _ in 0..6000 {
                if s1.load(Ordering::Relaxed) {
                    break;
                }
                tx.send_to(b"sentinel", to).unwrap();
                n.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(100));
            }
        });
        let receiver = thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s2.load(Ordering::Relaxed) {
                if rx.recv(&mut buf).is_ok() {
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self {
            stop,
            sent,
            arrived,
            threads: vec![sender, receiver],
        }
    }

    /// Stops probing; returns (sent, arrived).
    fn finish(mut self) -> (usize, usize) {
        // One last moment for a late datagram to be counted.
        thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.arrived.load(Ordering::Relaxed),
        )
    }
}

#[test]
fn bad_rules_are_refused_naming_the_value_and_nothing_else_moves() {
    let topo = Topology::new("lce-api");
    let d = Daemon::start(&topo.server, "lce-api", &["--iface", SERVER_IF]);
    d.add_rule(&json!({ "fault": "blackhole", "port": [SENTINEL], "proto": "udp" }));
    let probe = SentinelProbe::start(&topo);
    let hundred = vec![json!("9461-65535"); 100];
    for (body, status, needle) in [
        (
            json!({"fault":"blackhole","port":[5002],"for":"300000000000y"}),
            400,
            "300000000000y",
        ),
        (
            json!({"fault":"blackhole","port":[5002],"for":"31days"}),
            400,
            "31days",
        ),
        (
            json!({"fault":"delay","port":[5002],"delay_ms":1e300}),
            400,
            "1e300",
        ),
        (
            json!({"fault":"blackhole","port":[5002],"owner_pid":0}),
            400,
            "owner_pid",
        ),
        (json!({"fault":"ecn","port":[5002],"mark":0}), 400, "mark"),
        (
            json!({"fault":"chaos","port":[5002],"mix":"drop:5","mark":null}),
            400,
            "mark",
        ),
        (
            json!({"fault":"hang","port":[5002],"proto":"udp"}),
            400,
            "blackhole",
        ),
        (
            json!({"fault":"blackhole","dport":hundred}),
            403,
            "56075 ports",
        ),
        (
            json!({"fault":"blackhole","port":["1-65535"],"force":false}),
            403,
            "port 22",
        ),
    ] {
        let t = Instant::now();
        let detail = d
            .post("/v1/rules", body.to_string().as_bytes())
            .expect_problem(status);
        assert!(detail.contains(needle), "{body}: {detail}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{body}: refused after {:?}",
            t.elapsed()
        );
        d.assert_healthy(&body.to_string());
        assert_eq!(
            kernel_slots(&topo.server, SERVER_IF),
            api_ids(&d),
            "after {body}"
        );
    }
    // The hundred ranges with force: merged into one, in force, removable.
    let body = json!({"fault":"blackhole","dport":vec![json!("9461-65535"); 100],"force":true});
    let rule = d.add_rule(&body);
    assert_eq!(
        rule["description"]
            .as_str()
            .unwrap()
            .matches("dport")
            .count(),
        1,
        "{rule}"
    );
    assert_eq!(kernel_slots(&topo.server, SERVER_IF), api_ids(&d));
    d.delete(&format!("/v1/rules/{}", rule["id"])).expect(200);
    assert_eq!(kernel_slots(&topo.server, SERVER_IF), api_ids(&d));
    assert_eq!(api_ids(&d).len(), 1, "only the sentinel is left");

    let (sent, arrived) = probe.finish();
    assert!(sent >= 10, "the probe ran ({sent} sent)");
    assert_eq!(
        arrived, 0,
        "{arrived} of {sent} probes passed the sentinel blackhole"
    );
}

#[test]
fn cli_refuses_bad_values_with_exit_2_before_attaching() {
    let ns = Netns::new("lce-cli");
    ns.ip(&["link", "set", "lo", "up"]);
    for (args, needle) in [
        (&["blackhole", "--port", "22"][..], "port 22"),
        (&["blackhole", "--port", "1-65535"][..], "port 22"),
        (&["blackhole", "--dport", "100-40000"][..], "39901 ports"),
        (
            &["blackhole", "--port", "5002", "--for", "300000000000y"][..],
            "300000000000y",
        ),
        (
            &["hang", "--port", "5002", "--proto", "udp"][..],
            "blackhole",
        ),
        (&["delay", "--port", "5002", "--ms", "1e300"][..], "1e300"),
        (&["delay", "--port", "5002"][..], "--ms"),
        (
            &["run", "blackhole", "--port", "22", "--", "true"][..],
            "port 22",
        ),
    ] {
        let out = standalone(&ns, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {out:?}");
        assert!(!out.stderr.contains("active:"), "{args:?}: {out:?}");
    }
    assert_nothing_attached(&ns, &["lo"]);
    // With --force the guard rail gives way.
    let out = standalone(
        &ns,
        &["blackhole", "--port", "22", "--force", "--for", "1s"],
    );
    out.assert_success();
}

#[test]
fn config_and_scenario_refuse_huge_times_and_guarded_ports() {
    let ns = Netns::new("lce-files");
    ns.ip(&["link", "set", "lo", "up"]);
    let config = TempFile::new(
        "lce",
        ".toml",
        "[[rule]]\nname = \"x\"\nfault = \"blackhole\"\nport = [5002]\nttl = \"300000000000y\"\n",
    );
    let out = cli(&ns, "/nonexistent/lce.sock", &["check", config.as_str()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains(":5:") && out.stderr.contains("300000000000y"),
        "{out:?}"
    );
    // The daemon refuses the same file at start, with the same words, and
    // does not panic.
    let out = Launch::new(&ns, ["daemon", "--config", config.as_str()])
        .socket("/tmp/lce-none.sock")
        .run_within(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("300000000000y"), "{out:?}");

    for (step, needle) in [
        (
            "at = \"500000000000y\"\nfor = \"1s\"\nfault = \"blackhole\"\nport = [5002]",
            "500000000000y",
        ),
        (
            "at = \"0s\"\nfor = \"1s\"\nfault = \"blackhole\"\nport = [22]",
            "port 22",
        ),
        (
            "at = \"0s\"\nfor = \"1s\"\nfault = \"hang\"\nport = [5002]\nproto = \"udp\"",
            "blackhole",
        ),
    ] {
        let file = TempFile::new("lce", ".toml", &format!("[[step]]\nname = \"s\"\n{step}\n"));
        for verb in ["check", "run"] {
            let out = cli(
                &ns,
                "/nonexistent/lce.sock",
                &["scenario", verb, file.as_str()],
            );
            assert_eq!(out.status.code(), Some(1), "{verb} {step}: {out:?}");
            assert!(out.stderr.contains(needle), "{verb} {step}: {out:?}");
        }
    }
    assert_nothing_attached(&ns, &["lo"]);
}

/// `--json` of every command is one line of JSON with the documented
/// fields; `rm` with a missing id in the middle removes the others.
#[test]
fn every_command_speaks_json_and_rm_removes_what_it_can() {
    let topo = Topology::new("lce-json");
    let d = Daemon::start(&topo.server, "lce-json", &["--iface", SERVER_IF]);
    let sock = d.socket_str();
    let json_of = |out: &Exit| -> Value {
        let line = out.stdout.trim();
        assert_eq!(line.lines().count(), 1, "{out:?}");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };

    let mut ids = Vec::new();
    for port in ["7000", "7001"] {
        let out = cli(&topo.server, sock, &["blackhole", "--port", port, "--json"]);
        out.assert_success();
        let v = json_of(&out);
        assert_eq!(v["fault"], "blackhole", "{v}");
        assert_eq!(v["origin"], "api", "{v}");
        assert!(v["description"].as_str().unwrap().contains(port), "{v}");
        ids.push(v["id"].as_u64().unwrap());
    }
    let v = json_of(&cli(&topo.server, sock, &["rules", "--json"]));
    assert_eq!(v["rules"].as_array().unwrap().len(), 2, "{v}");
    let v = json_of(&cli(&topo.server, sock, &["stats", "--json"]));
    let first = &v["rules"][0];
    for field in [
        "id",
        "fault",
        "ports",
        "description",
        "matched_packets",
        "acted_packets",
    ] {
        assert!(first.get(field).is_some(), "stats lacks {field}: {v}");
    }
    let text = cli(&topo.server, sock, &["rules"]);
    assert!(
        text.stdout.starts_with("   ID  NAME"),
        "a header first: {text:?}"
    );

    // A missing id in the middle: the others go all the same, exit 1.
    let (a, b) = (ids[0].to_string(), ids[1].to_string());
    let out = cli(&topo.server, sock, &["rm", &a, "4000", &b, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = json_of(&out);
    assert_eq!(v["removed"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["failed"][0]["id"], 4000, "{v}");
    assert!(d.rules().is_empty(), "{:?}", d.rules());
    assert_eq!(kernel_slots(&topo.server, SERVER_IF), BTreeSet::new());

    // The daemon's --wait, standalone, and run: the final counters report.
    let args = ["blackhole", "--port", "7002", "--for", "1s", "--json"];
    for out in [
        Launch::new(&topo.server, args)
            .arg("--wait")
            .socket(sock)
            .run(),
        standalone(&topo.server, &args),
    ] {
        out.assert_success();
        let v = json_of(&out);
        assert_eq!(v["rules"][0]["fault"], "blackhole", "{out:?}: {v}");
        assert!(v["attach"].is_string() && v["interfaces"].is_array(), "{v}");
    }
    let out = standalone(
        &topo.server,
        &["run", "reset", "--port", "7003", "--json", "--", "true"],
    );
    out.assert_success();
    let last = out.stderr.trim().lines().last().unwrap();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(v["rules"][0]["fault"], "reset", "{v}");
}
