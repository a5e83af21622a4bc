//! Issue 11 item 4: the daemon can't be stalled. One client posting
//! wide-range rules as fast as it can must neither lift another client's
//! fault (the heartbeat runs on its own thread) nor hold up `/healthz`;
//! and a huge `for` is refused before anything reaches the kernel.

mod daemon_kit;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use daemon_kit::{Probe, assert_kernel_matches_api, p99};
use faultbpf_tests::{
    SERVER_IF, Topology,
    daemon::Daemon,
    http::{Request, unix_request},
    probe::UdpPath,
};
use serde_json::json;

/// The other client's blackhole (outside 9461-65535).
const P: u16 = 7002;
/// How long the wide-range client keeps going.
const LOAD: Duration = Duration::from_secs(20);

/// `GET /healthz` once; how long the answer took.
fn healthz_time(socket: &std::path::Path) -> Duration {
    let t = Instant::now();
    let r = unix_request(socket, &Request::new("GET", "/healthz")).expect("/healthz");
    assert_eq!(r.status, 200, "{r}");
    t.elapsed()
}

/// `n` timings of `/healthz`, one every 50 ms.
fn healthz_times(socket: &std::path::Path, until: impl Fn(usize) -> bool) -> Vec<Duration> {
    let mut out = Vec::new();
    while !until(out.len()) {
        out.push(healthz_time(socket));
        thread::sleep(Duration::from_millis(50));
    }
    out
}

#[test]
fn wide_range_requests_stall_neither_other_faults_nor_healthz() {
    let topo = Topology::new("dst-stall");
    let d = Daemon::start(
        &topo.server,
        "stall",
        &["--iface", SERVER_IF, "--lease", "1s"],
    );
    let sink = d.add_rule(&json!({ "fault": "blackhole", "port": [P], "proto": "udp" }));
    let probe = Probe::start(UdpPath::new(&topo, P));

    // Control: /healthz on the same daemon, no load.
    let mut control = healthz_times(d.socket(), |n| n >= 100);

    // Load: 100 copies of one wide range, added and removed in a loop.
    let body = json!({
        "fault": "blackhole",
        "dport": vec!["9461-65535"; 100],
        // Most of the port space: a guard rail wants it said.
        "force": true,
    })
    .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let socket: PathBuf = d.socket().to_path_buf();
    let loader = {
        let stop = stop.clone();
        thread::spawn(move || -> Result<usize, String> {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = unix_request(
                    &socket,
                    &Request::new("POST", "/v1/rules").body(body.as_bytes()),
                )
                .map_err(|e| format!("POST: {e}"))?;
                if r.status != 201 {
                    return Err(format!("POST: {r}"));
                }
                let id = r.json()["id"].clone();
                let r = unix_request(&socket, &Request::new("DELETE", &format!("/v1/rules/{id}")))
                    .map_err(|e| format!("DELETE: {e}"))?;
                if r.status != 200 {
                    return Err(format!("DELETE {id}: {r}"));
                }
                done += 1;
            }
            Ok(done)
        })
    };
    let started = Instant::now();
    let mut loaded = healthz_times(d.socket(), |_| started.elapsed() >= LOAD);
    stop.store(true, Ordering::Relaxed);
    let rounds = loader
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", d.stderr()));
    let (sent, through) = probe.finish();

    let (control, loaded_p99) = (p99(&mut control), p99(&mut loaded));
    eprintln!(
        "{rounds} add/remove rounds of 100 x 9461-65535 in {LOAD:?}; /healthz p99 {loaded_p99:?} \
         under load, {control:?} without; {through} of {sent} probes through"
    );
    assert!(rounds >= 2, "only {rounds} rounds in {LOAD:?}");
    assert!(sent >= 150, "the probe sent only {sent}");
    assert_eq!(
        through,
        0,
        "the blackhole on {P} let {through} of {sent} probes through while another client \
         wrote wide ranges\nlog:\n{}",
        d.stderr()
    );
    assert!(
        loaded_p99 <= control + Duration::from_millis(100),
        "/healthz p99 {loaded_p99:?} under load against {control:?} without"
    );
    assert!(
        !d.stderr().contains("without a heartbeat"),
        "the heartbeat missed:\n{}",
        d.stderr()
    );
    let rules = d.rules();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["id"], sink["id"]);
    assert_kernel_matches_api(&d, "the wide-range load");
    d.assert_healthy("the wide-range load");
}

#[test]
fn a_huge_for_is_refused_before_the_kernel_sees_it() {
    let topo = Topology::new("dst-huge");
    let d = Daemon::start(&topo.server, "huge", &["--iface", SERVER_IF]);
    d.add_rule(&json!({ "fault": "blackhole", "port": [P], "proto": "udp" }));
    let to_p = UdpPath::new(&topo, P);
    let to_q = UdpPath::new(&topo, 5002);
    for body in [
        json!({ "fault": "blackhole", "port": [5002], "for": "300000000000y" }),
        json!({ "fault": "blackhole", "port": [5002], "ttl": "300000000000y" }),
    ] {
        let r = d.post("/v1/rules", body.to_string().as_bytes());
        let detail = r.expect_problem(400);
        assert!(
            detail.contains("300000000000year") || detail.contains("300000000000y"),
            "the refusal must name the value: {detail}"
        );
        assert_kernel_matches_api(&d, &format!("refusing {body}"));
    }
    assert_eq!(to_q.probe(5), 5, "port 5002 must not be faulted");
    assert_eq!(to_p.probe(5), 0, "the unrelated blackhole must act");
    d.assert_healthy("huge durations");
}
