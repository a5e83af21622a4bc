//! The daemon under load: while trafgen floods the server with unmatched UDP
//! and a steady stream hits one rule, 8 concurrent clients make 10 000 rule
//! additions and deletions. Every operation must succeed, the final rule
//! set must be exactly what the clients left (in the API and in the kernel),
//! and the counters of the busy rule must never go backwards while sampled.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    process::{Child, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, Netns, SERVER_IF, SERVER_V4, Topology,
    daemon::Daemon,
    frames,
    http::{Request, unix_request},
    probe::UdpPath,
    root_is_read_only,
    temp::TempFile,
    udp_bind,
};
use serde_json::{Value, json};

/// The rule that sees matched traffic all along.
const BUSY: u16 = 5000;
/// Where the flood goes: no rule matches it.
const FLOOD: u16 = 9999;
const CLIENTS: usize = 8;
/// 8 x 1250 = 10 000 operations.
const OPS_PER_CLIENT: usize = 1250;
/// In the VM lane, whose CPU is emulated (10-20x slower): 2 000.
const OPS_PER_CLIENT_VM: usize = 250;
/// Rules each client leaves behind.
const KEEP: usize = 6;
/// All clients must be done by then (7-10 s are usual on the host).
const OPS_LIMIT: Duration = Duration::from_secs(45);
const OPS_LIMIT_VM: Duration = Duration::from_secs(120);

/// trafgen, killed by pid on drop.
struct Trafgen(Child);

impl Trafgen {
    /// Floods `CLIENT_IF` with copies of `frame` as fast as trafgen can,
    /// for at most `count` frames.
    fn start(ns: &Netns, config: &TempFile, count: u64) -> Self {
        let child = ns
            .command("trafgen")
            .args(["--dev", CLIENT_IF, "--conf", config.as_str()])
            .args(["--num", &count.to_string(), "--cpus", "1"])
            .args([
                "--no-sock-mem",
                "--notouch-irq",
                "--qdisc-path",
                "--no-cpu-stats",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run trafgen (install netsniff-ng): {e}"));
        Trafgen(child)
    }

    fn is_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Packets received by `ifname` in `ns` so far.
fn rx_packets(ns: &Netns, ifname: &str) -> u64 {
    let json = ns.ip(&["-j", "-s", "link", "show", "dev", ifname]);
    let v: Value = serde_json::from_str(&json).unwrap();
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rx packets in {json}"))
}

/// (name, port, id) of the rules a client leaves.
type Kept = Vec<(String, u16, u64)>;

/// One client's part: add/delete pairs on its own ports, then `KEEP` rules
/// it leaves. Returns the (name, port, id) of the kept ones, or the first
/// failure.
fn client(
    socket: &std::path::Path,
    c: usize,
    ops: usize,
    deadline: Instant,
) -> Result<Kept, String> {
    let base = 20_000 + 1000 * c as u16;
    let call = |method: &str, path: &str, body: Option<&Value>| -> Result<Value, String> {
        let text = body.map(Value::to_string);
        let mut req = Request::new(method, path);
        if let Some(t) = &text {
            req = req.body(t.as_bytes());
        }
        let r = unix_request(socket, &req).map_err(|e| format!("{method} {path}: {e}"))?;
        let want = if method == "POST" { 201 } else { 200 };
        if r.status != want {
            return Err(format!("{method} {path} {}: {r}", text.unwrap_or_default()));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("{method} {path}: {e}: {r}"))
    };
    let pairs = (ops - KEEP) / 2;
    assert_eq!(pairs * 2 + KEEP, ops);
    // hang on odd i, whose rules are TCP: hang refuses UDP (nothing to stall).
    let faults = ["blackhole", "hang", "reset", "corrupt"];
    for i in 0..pairs {
        if Instant::now() >= deadline {
            return Err(format!(
                "client {c}: only {i} of {pairs} pairs done in time"
            ));
        }
        let port = base + (i % 100) as u16;
        let spec = json!({
            "name": format!("c{c}-tmp{i}"),
            "fault": faults[i % faults.len()],
            "port": [port],
            "proto": if i % 2 == 0 { "udp" } else { "tcp" },
            "for": "10m",
        });
        let added = call("POST", "/v1/rules", Some(&spec))?;
        let id = added["id"]
            .as_u64()
            .ok_or_else(|| format!("no id in {added}"))?;
        let removed = call("DELETE", &format!("/v1/rules/{id}"), None)?;
        if removed["id"] != id || removed["name"] != spec["name"] {
            return Err(format!("DELETE {id} returned another rule: {removed}"));
        }
    }
    let mut kept = Vec::new();
    for k in 0..KEEP {
        let port = base + 900 + k as u16;
        let name = format!("c{c}-keep{k}");
        let added = call(
            "POST",
            "/v1/rules",
            Some(&json!({ "name": name, "fault": "blackhole", "port": [port], "proto": "udp" })),
        )?;
        let id = added["id"]
            .as_u64()
            .ok_or_else(|| format!("no id in {added}"))?;
        kept.push((name, port, id));
    }
    Ok(kept)
}

#[test]
fn ten_thousand_rule_changes_under_traffic() {
    let (ops, ops_limit) = if root_is_read_only() {
        eprintln!(
            "load: the VM lane (read-only root, emulated CPU): {OPS_PER_CLIENT_VM} operations per client"
        );
        (OPS_PER_CLIENT_VM, OPS_LIMIT_VM)
    } else {
        (OPS_PER_CLIENT, OPS_LIMIT)
    };
    let topo = Topology::new("dload");
    let d = Daemon::start(&topo.server, "load", &["--iface", SERVER_IF]);
    let busy = d
        .add_rule(&json!({ "name": "busy", "fault": "blackhole", "port": [BUSY], "proto": "udp" }));
    let busy_id = busy["id"].as_u64().unwrap();

    // The unmatched flood: a socket takes it (no ICMP storm), never read.
    let _sink = udp_bind(&topo.server, SocketAddr::new(SERVER_V4, FLOOD));
    let frame = frames::ethernet(
        topo.server.mac(SERVER_IF),
        topo.client.mac(CLIENT_IF),
        frames::ETH_P_IP,
        &frames::ipv4(
            Ipv4Addr::new(10, 200, 0, 1),
            Ipv4Addr::new(10, 200, 0, 2),
            frames::IPPROTO_UDP,
            &[],
            0,
            &frames::udp4(40000, FLOOD, b"faultbpf-load-test"),
        ),
    );
    let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
    let config = TempFile::new(
        "load-trafgen",
        ".cfg",
        &format!("{{ {} }}\n", bytes.join(", ")),
    );
    let rx_before = rx_packets(&topo.server, SERVER_IF);
    // Far more than the test needs; it is killed as soon as the clients finish.
    let mut flood = Trafgen::start(&topo.client, &config, 200_000_000);

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let hard_stop = started + ops_limit + Duration::from_secs(10);

    // The matched stream: ~5000 datagrams/s to the busy rule's port.
    let sent_busy = Arc::new(AtomicU64::new(0));
    let tx = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    let streamer = {
        let (stop, sent) = (stop.clone(), sent_busy.clone());
        thread::spawn(move || {
            let to = SocketAddr::new(SERVER_V4, BUSY);
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                for _ in 0..5 {
                    if tx.send_to(b"busy", to).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_millis(1));
            }
        })
    };

    // The sampler: the busy rule's counters, from /v1/stats and /metrics
    // in turn, must never go backwards.
    let regressions = Arc::new(Mutex::new(Vec::<String>::new()));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, regressions, samples) = (stop.clone(), regressions.clone(), samples.clone());
        let socket = d.socket().to_path_buf();
        thread::spawn(move || {
            let mut last = [0u64; 4];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                let now = if n.is_multiple_of(2) {
                    stats_counters(&socket, busy_id)
                } else {
                    metrics_counters(&socket, busy_id)
                };
                match now {
                    Ok(now) => {
                        if now.iter().zip(&last).any(|(a, b)| a < b) {
                            regressions
                                .lock()
                                .unwrap()
                                .push(format!("sample {n}: {last:?} -> {now:?}"));
                        }
                        last = now;
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => regressions.lock().unwrap().push(format!("sample {n}: {e}")),
                }
                n += 1;
                thread::sleep(Duration::from_millis(20));
            }
            last
        })
    };

    // Let the flood get going, then the 8 clients.
    thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + ops_limit;
    let ops_started = Instant::now();
    let results: Vec<Result<Kept, String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let socket = d.socket();
                s.spawn(move || client(socket, c, ops, deadline))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ops_took = ops_started.elapsed();
    let flood_alive = flood.is_running();
    stop.store(true, Ordering::Relaxed);
    drop(flood);
    streamer.join().unwrap();
    let last_sample = sampler.join().unwrap();
    let flooded = rx_packets(&topo.server, SERVER_IF) - rx_before;
    eprintln!(
        "load: {} ops by {CLIENTS} clients in {ops_took:?}; {flooded} packets received by {SERVER_IF}; \
         {} busy datagrams; {} samples",
        CLIENTS * ops,
        sent_busy.load(Ordering::Relaxed),
        samples.load(Ordering::Relaxed)
    );

    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "operations failed: {failures:#?}");
    assert!(
        flood_alive,
        "trafgen stopped before the clients finished: the operations did not all run under the flood"
    );
    assert!(
        flooded > 100_000,
        "only {flooded} packets reached {SERVER_IF}: the flood did not flow"
    );
    let regressions = regressions.lock().unwrap();
    assert!(
        regressions.is_empty(),
        "the busy rule's counters went backwards or could not be read: {regressions:#?}"
    );
    let samples = samples.load(Ordering::Relaxed);
    assert!(samples >= 20, "only {samples} samples of the busy rule");

    // Exactly what the clients left, plus the busy rule.
    let mut want: BTreeSet<(String, u16, u64)> =
        results.into_iter().flat_map(Result::unwrap).collect();
    want.insert(("busy".into(), BUSY, busy_id));
    let got: BTreeSet<(String, u16, u64)> = d
        .rules()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                r["spec"]["port"][0].as_u64().unwrap() as u16,
                r["id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "the final rule set");
    assert_eq!(got.len(), CLIENTS * KEEP + 1);

    // The busy rule counted the stream. Under the flood the server's
    // backlog queue may drop some datagrams before the tc hook sees them,
    // so "every datagram" is an upper bound, not an equality.
    let sent = sent_busy.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(300));
    let end = stats_counters(d.socket(), busy_id).unwrap();
    assert!(
        last_sample[2] > 0,
        "the busy rule saw no traffic while sampled"
    );
    assert!(
        end.iter().zip(&last_sample).all(|(a, b)| a >= b),
        "counters went backwards after the last sample: {last_sample:?} -> {end:?}"
    );
    assert_eq!(
        end[0], end[2],
        "pct 100: every matched packet is acted on: {end:?}"
    );
    assert_eq!(end[1], end[3], "{end:?}");
    assert!(
        end[2] <= sent && end[2] >= sent / 10,
        "the busy rule acted on {} of {sent} datagrams",
        end[2]
    );
    assert_eq!(
        end[3],
        end[2] * (14 + 20 + 8 + 4),
        "acted bytes of 4-byte datagrams"
    );

    // The kernel's table agrees: kept ports are blackholed, ports that only
    // had deleted rules are not.
    for c in [0, CLIENTS - 1] {
        let base = 20_000 + 1000 * c as u16;
        assert_eq!(
            UdpPath::new(&topo, base + 900).probe(5),
            0,
            "client {c}'s kept rule must act"
        );
        assert_eq!(
            UdpPath::new(&topo, base + 1).probe(5),
            5,
            "client {c}'s deleted rules must not act"
        );
    }
    d.assert_healthy("the load");
}

/// [matched packets, matched bytes, acted packets, acted bytes] of `id`
/// from /v1/stats.
fn stats_counters(socket: &std::path::Path, id: u64) -> Result<[u64; 4], String> {
    let r = unix_request(socket, &Request::new("GET", "/v1/stats")).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("/v1/stats: {r}"));
    }
    let v: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
    let rule = v["rules"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id))
        .ok_or_else(|| format!("no rule {id} in /v1/stats"))?;
    Ok([
        "matched_packets",
        "matched_bytes",
        "acted_packets",
        "acted_bytes",
    ]
    .map(|k| rule[k].as_u64().unwrap_or(0)))
}

/// The same four counters from /metrics, read by their `id` label (the
/// full text is checked with a real parser in daemon_api.rs; here it is
/// sampled too often to start a parser each time).
fn metrics_counters(socket: &std::path::Path, id: u64) -> Result<[u64; 4], String> {
    let r = unix_request(socket, &Request::new("GET", "/metrics")).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("/metrics: {r}"));
    }
    let text = r.text();
    let label = format!("{{id=\"{id}\",");
    let mut out = [0u64; 4];
    for (slot, name) in [
        "faultbpf_matched_packets_total",
        "faultbpf_matched_bytes_total",
        "faultbpf_acted_packets_total",
        "faultbpf_acted_bytes_total",
    ]
    .iter()
    .enumerate()
    {
        let prefix = format!("{name}{label}");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .ok_or_else(|| format!("no {prefix} in /metrics"))?;
        out[slot] = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad sample line {line:?}"))?;
    }
    Ok(out)
}
