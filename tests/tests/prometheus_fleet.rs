//! Issue 14, "Prometheus across daemons": three daemons in three
//! namespaces, each with `--metrics`, scraped by a real Prometheus
//! (Debian's package) that the test starts in a fourth, hub namespace
//! joined to each by a veth pair. The test blackholes a UDP port on each
//! daemon, sends each a different number of packets, and asks Prometheus's
//! HTTP API: every target up, and each daemon's `acted` counter equal to
//! the packets sent to it.

use std::{
    collections::BTreeMap,
    net::UdpSocket,
    time::{Duration, Instant},
};

use faultbpf_tests::{Netns, Proc, Star, daemon::Daemon, run_bounded, temp::TempDir};
use serde_json::{Value, json};

const PROM: &str = "127.0.0.1:9090";
const PORT: u16 = 7100;

/// `GET /api/v1/query?query=Q` on the hub's Prometheus; the result vector.
fn query(hub: &Netns, q: &str) -> Vec<Value> {
    let exit = run_bounded(
        hub.command("curl")
            .args(["-sf", "--max-time", "5", "-G"])
            .arg(format!("http://{PROM}/api/v1/query"))
            .args(["--data-urlencode", &format!("query={q}")]),
        Duration::from_secs(10),
    );
    if !exit.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&exit.stdout).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// instance -> value of each series of `q`.
fn by_instance(hub: &Netns, q: &str) -> BTreeMap<String, f64> {
    query(hub, q)
        .iter()
        .filter_map(|r| {
            let inst = r["metric"]["instance"].as_str()?.to_string();
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((inst, value))
        })
        .collect()
}

#[test]
fn prometheus_scrapes_three_daemons_and_counts_the_traffic_sent() {
    let star = Star::new("pf", 40, 3);
    let (hub, nodes) = (&star.hub, &star.nodes);
    let daemons: Vec<Daemon> = nodes
        .iter()
        .map(|n| {
            Daemon::start(
                &n.ns,
                "pf",
                &["--iface", &n.iface, "--metrics", &format!("{}:9464", n.ip)],
            )
        })
        .collect();
    for d in &daemons {
        d.add_rule(&json!({ "fault": "blackhole", "port": [PORT], "proto": "udp" }));
    }

    let dir = TempDir::new("pf-prom");
    let targets: Vec<String> = nodes.iter().map(|n| format!("'{}:9464'", n.ip)).collect();
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: \
             faultbpf\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    );
    let mut prom = Proc::spawn(
        hub.command("prometheus")
            .arg(format!("--config.file={config}"))
            .arg(format!("--storage.tsdb.path={}", dir.join("data")))
            .arg(format!("--web.listen-address={PROM}")),
        "prometheus",
    );

    // Different counts per daemon, so a mixed-up target shows.
    let sent: BTreeMap<String, f64> = nodes
        .iter()
        .zip([10u32, 20, 30])
        .map(|(node, n)| {
            let ip = &node.ip;
            let to = format!("{ip}:{PORT}");
            hub.run(|| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                // Resolve the neighbour first (a port nobody blackholes),
                // so none of the counted packets waits in the ARP queue.
                s.send_to(b"warm", format!("{ip}:9")).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                for _ in 0..n {
                    s.send_to(b"x", &to).unwrap();
                }
            });
            (format!("{ip}:9464"), f64::from(n))
        })
        .collect();

    let start = Instant::now();
    let (mut up, mut acted);
    loop {
        up = by_instance(hub, "up");
        acted = by_instance(hub, "sum by (instance) (faultbpf_acted_packets_total)");
        let all_up = up.len() == 3 && up.values().all(|v| *v == 1.0);
        if all_up && acted == sent {
            break;
        }
        assert!(prom.is_running(), "prometheus exited: {}", prom.stderr());
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "prometheus did not see it: up {up:?}, acted {acted:?}, sent {sent:?}; {}",
            prom.stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The daemons' own view agrees with what Prometheus stored.
    for (d, node) in daemons.iter().zip(nodes) {
        let rules = d.rules();
        let id = rules[0]["id"].as_u64().unwrap();
        let stats = d.stats_of(id).unwrap();
        let own = stats["acted_packets"].as_f64().unwrap_or(-1.0);
        assert_eq!(
            Some(&own),
            sent.get(&format!("{}:9464", node.ip)),
            "{stats}"
        );
    }
    prom.kill();
}
