//! Issue 15 item 4: `faultbpf trace` says why packets are or are not
//! faulted, beside a standalone fault started `--traceable` and beside the
//! daemon (always traceable); a fault loaded without trace points is
//! named, not silently untraced; and a tracer killed with SIGKILL leaves
//! tracing on for at most its lease (`TRACE_LEASE_NS`, 3 s), and its ports
//! to no later tracer. The VM lane
//! runs these on 6.1's netlink attach path too, but for the lease test,
//! which reads the map through TCX (`*tcx*` tests are skipped there).

use std::time::{Duration, Instant};

use aya::{
    maps::{Array, Map, MapData, MapInfo},
    programs::{SchedClassifier, tc::TcAttachType},
};
use faultbpf_common::TraceConf;
use faultbpf_tests::{
    Launch, Proc, SERVER_IF, Topology, daemon::Daemon, probe::UdpPath, temp::TempFile,
};
use serde_json::Value;

/// The blackholed port.
const P: u16 = 5900;
/// A port no rule has.
const Q: u16 = 5901;
/// A port no rule has, in another word of the trace's port bitmap than P.
const R: u16 = 5990;
const _: () = assert!(P / 64 != R / 64);

/// `faultbpf trace ARGS..` in the server namespace, once it says it traces.
fn tracer(topo: &Topology, args: &[&str]) -> Proc {
    let mut argv = vec!["trace", "--json"];
    argv.extend_from_slice(args);
    let mut t = Launch::new(&topo.server, argv).no_daemon().spawn();
    t.wait_stderr("faultbpf: tracing:", Duration::from_secs(30));
    t
}

/// `blackhole --port P --traceable` on the server's veth, once active.
fn traceable_blackhole(topo: &Topology) -> Proc {
    let port = P.to_string();
    let args = [
        "blackhole",
        "--port",
        &port,
        "--traceable",
        "--iface",
        SERVER_IF,
    ];
    Launch::new(&topo.server, args).standalone().start()
}

/// The trace's events once it ended by itself (`--for`).
fn events(mut t: Proc) -> Vec<Value> {
    let exit = t.wait(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(0), "{exit:#?}");
    assert!(
        exit.stderr.contains("event(s) from 1 faultbpf instance(s)"),
        "{exit:#?}"
    );
    exit.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Events about packets to `port` on `hook`.
fn to_port<'a>(events: &'a [Value], port: u16, hook: &str) -> Vec<&'a Value> {
    let dst = format!(":{port}");
    events
        .iter()
        .filter(|e| e["hook"] == hook && e["dst"].as_str().is_some_and(|d| d.ends_with(&dst)))
        .collect()
}

#[test]
fn trace_shows_a_blackholes_drops_with_their_rule_and_no_rule_elsewhere() {
    let topo = Topology::new("tr-bh");
    let mut fault = traceable_blackhole(&topo);
    let t = tracer(
        &topo,
        &[
            "--port",
            &P.to_string(),
            "--port",
            &Q.to_string(),
            "--for",
            "3s",
        ],
    );
    UdpPath::new(&topo, P).send(5, 16);
    let q = UdpPath::new(&topo, Q);
    q.send(5, 16);
    assert_eq!(q.drain(), 5, "Q is not faulted");
    let events = events(t);
    let dropped = to_port(&events, P, "ingress");
    assert_eq!(dropped.len(), 5, "{events:#?}");
    for e in dropped {
        assert_eq!(e["reason"], "acted", "{e}");
        assert_eq!(e["rule"], 0, "{e}");
        assert_eq!(e["action"], "drop", "{e}");
        assert_eq!(e["iface"], SERVER_IF, "{e}");
        assert_eq!(e["proto"], "udp", "{e}");
    }
    let passed = to_port(&events, Q, "ingress");
    assert_eq!(passed.len(), 5, "{events:#?}");
    for e in passed {
        assert_eq!(e["reason"], "no rule", "{e}");
        assert_eq!(e["rule"], Value::Null, "{e}");
        assert_eq!(e["verdict"], "pass", "{e}");
    }
    // The fault's own counters agree.
    let exit = fault.stop(libc::SIGINT);
    assert!(exit.stdout.contains("dropped 5 packets"), "{exit:#?}");
}

/// `trace --all`: every packet, rate-limited in the kernel. 5000 datagrams
/// sent at once (11 ms here) to a port no rule has: the events written stay
/// within the limit (1000 per second per CPU, over the one-second windows
/// the burst can span), the rest are counted as not written, and the two
/// add up to at least what was sent.
#[test]
fn trace_all_is_rate_limited_in_the_kernel_and_counts_what_it_left_out() {
    const N: usize = 5000;
    let topo = Topology::new("tr-all");
    let _fault = traceable_blackhole(&topo);
    let t = tracer(&topo, &["--all", "--for", "3s"]);
    let q = UdpPath::new(&topo, Q);
    let started = Instant::now();
    q.send(N, 16);
    let sending = started.elapsed();
    let exit = {
        let mut t = t;
        t.wait(Duration::from_secs(30))
    };
    assert_eq!(exit.status.code(), Some(0), "{exit:#?}");
    let written = exit.stdout.lines().count();
    let summary = exit
        .stderr
        .lines()
        .find(|l| l.starts_with("faultbpf trace:"))
        .unwrap_or_else(|| panic!("no summary: {}", exit.stderr));
    let suppressed: usize = summary
        .split("; ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count left out in: {summary}"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("sent {N} in {sending:?}; written {written}, left out {suppressed}; {summary}");
    assert!(
        summary.contains("limit of 1000 per second per CPU"),
        "the summary says the limit: {summary}"
    );
    // The burst spans this many one-second windows at most (the VM lane's
    // emulated CPU sends slower).
    let windows = sending.as_secs() as usize + 2;
    assert!(
        written <= windows * 1000 * cpus,
        "at most the limit over {windows} windows: {written} written on {cpus} CPU(s)"
    );
    assert!(suppressed > 0, "{summary}");
    assert!(
        written + suppressed >= N,
        "every packet is written or counted: {written} + {suppressed} < {N}"
    );
}

#[test]
fn trace_beside_the_daemon_names_its_rule_and_a_rule_on_the_other_hook() {
    let topo = Topology::new("tr-d");
    let config = TempFile::new(
        "tr-d",
        ".toml",
        &format!("interfaces = [\"{SERVER_IF}\"]\n"),
    );
    let d = Daemon::start(&topo.server, "tr-d", &["--config", config.as_str()]);
    d.add_rule(&serde_json::json!({ "fault": "blackhole", "port": [Q], "proto": "udp" }));
    let egress = d.add_rule(&serde_json::json!({
        "fault": "blackhole", "port": [P], "proto": "udp", "direction": "egress"
    }));
    let t = tracer(&topo, &["--port", &P.to_string(), "--for", "3s"]);
    let p = UdpPath::new(&topo, P);
    p.send(3, 16);
    assert_eq!(p.drain(), 3, "an egress-only rule lets ingress pass");
    let events = events(t);
    let seen = to_port(&events, P, "ingress");
    assert_eq!(seen.len(), 3, "{events:#?}");
    for e in seen {
        assert_eq!(e["reason"], "other direction", "{e}");
        assert_eq!(e["rule"], egress["id"], "{e}");
    }
}

#[test]
fn trace_with_netns_watches_another_namespace_and_a_bad_name_is_named() {
    let topo = Topology::new("tr-ns");
    let _fault = traceable_blackhole(&topo);
    // Started in the client's namespace, where no faultbpf runs.
    let argv = [
        "trace",
        "--json",
        "--netns",
        topo.server.name(),
        "--port",
        &P.to_string(),
        "--for",
        "3s",
    ];
    let mut t = Launch::new(&topo.client, argv).no_daemon().spawn();
    t.wait_stderr("faultbpf: tracing:", Duration::from_secs(30));
    UdpPath::new(&topo, P).send(2, 16);
    let events = events(t);
    let dropped = to_port(&events, P, "ingress");
    assert_eq!(dropped.len(), 2, "{events:#?}");
    assert!(
        dropped.iter().all(|e| e["reason"] == "acted"),
        "{events:#?}"
    );
    let exit = Launch::new(
        &topo.client,
        ["trace", "--netns", "fbt-no-such-ns", "--port", "1"],
    )
    .no_daemon()
    .run();
    // As for a fault (targets.rs): a namespace that is not there is exit 1.
    assert_eq!(exit.status.code(), Some(1), "{exit:#?}");
    assert!(exit.stderr.contains("fbt-no-such-ns"), "{exit:#?}");
}

#[test]
fn a_fault_loaded_without_trace_points_is_named() {
    let topo = Topology::new("tr-no");
    let _fault = Launch::new(&topo.server, ["blackhole", "--port", &P.to_string()])
        .standalone()
        .start();
    let exit = Launch::new(
        &topo.server,
        ["trace", "--port", &P.to_string(), "--for", "1s"],
    )
    .no_daemon()
    .run();
    assert_eq!(exit.status.code(), Some(1), "{exit:#?}");
    assert!(exit.stderr.contains("--traceable"), "{exit:#?}");
}

/// The `TraceConf` of the faultbpf whose ingress program is on the
/// server's interface.
fn trace_conf(topo: &Topology) -> TraceConf {
    topo.server.run(|| {
        let (_, progs) = SchedClassifier::query_tcx(SERVER_IF, TcAttachType::Ingress).unwrap();
        let prog = progs
            .iter()
            .find(|p| p.name_as_str() == Some("faultbpf_in"))
            .expect("faultbpf's ingress program is attached");
        let id = prog
            .map_ids()
            .unwrap()
            .unwrap_or_default()
            .into_iter()
            .find(|id| MapInfo::from_id(*id).unwrap().name_as_str() == Some("TRACE"))
            .expect("the program has its TRACE map");
        let map = Map::from_map_data(MapData::from_id(id).unwrap()).unwrap();
        let conf: Array<MapData, TraceConf> = Array::try_from(map).unwrap();
        conf.get(&0, 0).unwrap()
    })
}

/// CLOCK_MONOTONIC_COARSE, the kernel side's clock for the lease.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn a_killed_tracer_leaves_tracing_on_for_its_lease_at_most_tcx() {
    let topo = Topology::new("tr-kill");
    let _fault = traceable_blackhole(&topo);
    assert_eq!(trace_conf(&topo).until_ns, 0, "off before any tracer");
    let mut t = tracer(&topo, &["--port", &P.to_string()]);
    UdpPath::new(&topo, P).send(1, 16);
    t.next_line(Duration::from_secs(10));
    let on = trace_conf(&topo);
    assert!(
        on.until_ns > coarse_now_ns(),
        "on while the tracer runs: {on:?}"
    );
    // Events it never reads: stopped, then killed, with tracing on. The
    // next tracer must not print them as its own.
    t.signal(libc::SIGSTOP);
    UdpPath::new(&topo, P).send(3, 16);
    t.kill();
    let killed = Instant::now();
    let until = trace_conf(&topo).until_ns;
    assert!(
        until <= coarse_now_ns() + 3_000_000_000,
        "the lease reaches at most 3 s past the kill: {until}"
    );
    while coarse_now_ns() < until {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the lease never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The next tracer watches R only: the killed one's port bit for P is
    // not left to it. And a tracer that ends normally switches tracing off
    // at once (the control for the lease).
    let t = tracer(&topo, &["--port", &R.to_string(), "--for", "2s"]);
    UdpPath::new(&topo, P).send(3, 16);
    let r = UdpPath::new(&topo, R);
    r.send(3, 16);
    r.drain();
    let events = events(t);
    assert!(to_port(&events, P, "ingress").is_empty(), "{events:#?}");
    assert_eq!(to_port(&events, R, "ingress").len(), 3, "{events:#?}");
    assert_eq!(
        trace_conf(&topo).until_ns,
        0,
        "a clean exit switches tracing off"
    );
}
