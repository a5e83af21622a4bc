//! `delay`: every matched packet arrives `--ms` (± `--jitter`) later, held
//! by the kernel (EDT through faultbpf's own veth delay device with netem
//! and fq).
//!
//! Each test first asks the kernel whether it has sch_fq and sch_netem (a
//! `tc qdisc add ... root fq` / `netem` on a veth of the test's own
//! namespace). The tests in `needs_qdiscs` need both and FAIL without them:
//! `cargo xtask test` probes the kernel first and, where they are missing
//! (this repository's CI host), sets `FAULTBPF_TEST_NO_NETEM=1` and passes
//! `--skip needs_qdiscs::`, so libtest counts them as filtered out rather
//! than passed. There, `without_qdiscs` checks the refusal with each of
//! their option sets: exit 1, a message naming both modules, no `fbd*`
//! link, no qdisc or program left, the port untouched, and a blackhole on
//! the same port still works. Where the qdiscs exist (the Debian 6.1 VM
//! lane, `cargo xtask vm`), `without_qdiscs` is skipped and `needs_qdiscs`
//! checks the delay itself:
//! - `--ms 50` at ingress, egress and both (45-60, 45-60, 90-120 ms more per
//!   round trip, medians against a baseline measured first); another port
//!   gains < 5 ms; IPv6 too; `netem delay 50ms` on the same device in the
//!   same run gives the same median (±2 ms);
//! - `--jitter 20ms --dist uniform`: one-way times of a 300-datagram burst
//!   on one flow stay in 30-70 ms plus the baseline, in order; with
//!   `--reorder` they spread over the band and many arrive out of order;
//! - bulk TCP at 20 ms, sent and received by the faulted host, reaches at
//!   least half of what netem gives (the TCP-small-queues trap); 200 ms
//!   does not collapse;
//! - 12 s delays are held, not dropped (fq's default horizon is 10 s);
//! - priority-7 traffic is delayed too (fq's highest band ignores delivery
//!   times);
//! - nothing is left after SIGTERM; a `kill -9` leftover (`fbd<pid>a`) is
//!   removed by the next run; two runs at once keep each other's devices.
//!
//! Timing: the VM is an emulated (TCG) CPU with ~1 ms timers, so every
//! latency bound is relative to a baseline measured in the same test, and
//! the measuring tests take one lock so that the libtest threads do not
//! disturb each other's numbers.

use std::{
    net::SocketAddr,
    os::fd::AsFd,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use faultbpf_tests::{
    ACTIVE_PREFIX, CLIENT_IF, Exit, Launch, Netns, RecvRetry, SERVER_IF, SERVER_V4, SERVER_V6,
    Topology, assert_nothing_attached,
    delay_kit::{
        Arrival, Sender, UdpEcho, UdpProbe, bulk_mbps, burst, delay_links, late_arrivals, median,
        ms, no_duplicates, percentile, qdiscs, require_delay_qdiscs, require_no_delay_qdiscs,
        set_priority, wait_clean,
    },
    udp_bind,
};

/// The delayed UDP port.
const P: u16 = 7000;
/// Another port on the same server, never delayed.
const Q: u16 = 7001;
/// A third port, for a second faultbpf next to the delay.
const R: u16 = 7002;
/// The bulk TCP port.
const T: u16 = 5201;

/// Round trips per median.
const SAMPLES: usize = 15;
/// Pause between round trips.
const GAP: Duration = Duration::from_millis(5);
/// A round trip that takes longer than this is lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Datagrams per burst, and their spacing.
const BURST: u32 = 300;
const SPACING: Duration = Duration::from_millis(1);

/// Bulk TCP window per measurement.
const BULK_20MS: Duration = Duration::from_secs(3);
const BULK_200MS: Duration = Duration::from_secs(4);

/// Serializes the measuring parts of the tests (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER_V4, port)
}

fn any(port: u16) -> SocketAddr {
    SocketAddr::new("::".parse().unwrap(), port)
}

// ---------------------------------------------------------------------------
// Where the kernel lacks the qdiscs: the refusal.
// ---------------------------------------------------------------------------

/// `faultbpf delay ARGS --iface veth-s` in the server namespace must refuse
/// (exit 1, naming sch_fq and sch_netem) and leave nothing behind: no
/// `fbd*` link, the same qdiscs, no program. The port still answers, and a
/// blackhole on it afterwards acts.
fn assert_refused(topo: &Topology, args: &[&str]) {
    let ns = &topo.server;
    let _echo_p = UdpEcho::start(ns, any(P));
    let _echo_q = UdpEcho::start(ns, any(Q));
    let mut probe_p = UdpProbe::new(&topo.client, v4(P));
    let mut probe_q = UdpProbe::new(&topo.client, v4(Q));
    assert!(
        probe_p.rtt(PROBE_TIMEOUT).is_some(),
        "port {P} must answer before faultbpf"
    );
    let before = qdiscs(ns);
    let mut full = args.to_vec();
    full.extend(["--iface", SERVER_IF]);
    let cmd = format!("faultbpf delay {}", full.join(" "));
    let started = Instant::now();
    let exit = Launch::new(ns, ["delay"])
        .args(&full)
        .standalone()
        .run_within(Duration::from_secs(60));
    eprintln!(
        "`{cmd}` refused in {:?}: {}",
        started.elapsed(),
        exit.stderr.trim()
    );
    assert_eq!(
        exit.status.code(),
        Some(1),
        "`{cmd}` on a kernel without sch_fq/sch_netem must exit 1: {exit:#?}"
    );
    for module in ["sch_fq", "sch_netem"] {
        assert!(
            exit.stderr.contains(module),
            "`{cmd}`: the message must name {module}: {:?}",
            exit.stderr
        );
    }
    assert!(
        !exit.stderr.contains(ACTIVE_PREFIX),
        "`{cmd}` must not claim to be active: {:?}",
        exit.stderr
    );
    let left = delay_links(ns);
    assert!(left.is_empty(), "`{cmd}` left delay links: {left:?}");
    assert_eq!(qdiscs(ns), before, "`{cmd}` changed the qdiscs");
    assert_nothing_attached(ns, &[SERVER_IF]);
    assert!(
        probe_p.rtt(PROBE_TIMEOUT).is_some(),
        "port {P} must still answer after `{cmd}` refused"
    );

    // The other faults keep working: a blackhole on the same port.
    let port = P.to_string();
    let mut bh = Launch::new(ns, ["blackhole"])
        .args(["--port", &port, "--iface", SERVER_IF, "--json"])
        .standalone()
        .start();
    assert!(
        probe_p.rtt(Duration::from_millis(500)).is_none(),
        "a blackhole on port {P} after the refused delay must drop"
    );
    assert!(
        probe_q.rtt(PROBE_TIMEOUT).is_some(),
        "port {Q} must answer under the blackhole on {P}"
    );
    let rule = bh.finish().rule(0);
    assert!(rule.acted_packets >= 1, "blackhole counters: {rule:?}");
    assert!(
        probe_p.rtt(PROBE_TIMEOUT).is_some(),
        "port {P} must answer after the blackhole"
    );
    assert_nothing_attached(ns, &[SERVER_IF]);
}

// ---------------------------------------------------------------------------
// Helpers for the tests that delay.
// ---------------------------------------------------------------------------

/// Median round trip in ms of `SAMPLES` probes.
fn median_rtt(probe: &mut UdpProbe, what: &str) -> f64 {
    median(&probe.rtts_ms(SAMPLES, GAP, PROBE_TIMEOUT, what))
}

/// Runs `f` under `faultbpf delay ARGS --json` in `ns` and returns its
/// result with faultbpf's exit (SIGTERM; must succeed).
fn under_delay<T>(ns: &Netns, args: &[&str], f: impl FnOnce() -> T) -> (T, Exit) {
    let mut full = args.to_vec();
    full.push("--json");
    let mut fb = Launch::new(ns, ["delay"]).args(&full).standalone().start();
    let value = f();
    let exit = fb.finish();
    (value, exit)
}

/// Runs `f` with `netem delay DELAY` as the root qdisc of `ifname` in `ns`.
fn under_netem<T>(ns: &Netns, ifname: &str, delay: &str, f: impl FnOnce() -> T) -> T {
    ns.tc(&[
        "qdisc", "add", "dev", ifname, "root", "netem", "delay", delay,
    ]);
    let value = f();
    ns.tc(&["qdisc", "del", "dev", ifname, "root"]);
    value
}

fn one_way(arrivals: &[Arrival]) -> Vec<f64> {
    arrivals.iter().map(|a| a.one_way_ms).collect()
}

fn summary(v: &[f64]) -> String {
    format!(
        "min {:.1} p10 {:.1} p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ms",
        percentile(v, 0.0),
        percentile(v, 10.0),
        percentile(v, 50.0),
        percentile(v, 90.0),
        percentile(v, 99.0),
        percentile(v, 100.0)
    )
}

/// The one test that runs where the kernel has no sch_fq/sch_netem (this
/// repository's CI host): every option set the delay tests use is refused
/// cleanly. Skipped by name (`--skip without_qdiscs::`) where the qdiscs
/// exist (the VM lane), as it cannot see a refusal there.
mod without_qdiscs {
    use super::*;

    /// Each set of options the `needs_qdiscs` tests use (the port, then
    /// the rest; `--iface veth-s` is added): all refused the same way.
    #[test]
    fn delay_is_refused_cleanly_with_every_option_set() {
        let (p, t) = (P.to_string(), T.to_string());
        let cases: [&[&str]; 8] = [
            &["--port", &p, "--ms", "50", "--direction", "ingress"],
            &["--port", &p, "--ms", "50", "--direction", "egress"],
            &[
                "--port",
                &p,
                "--ms",
                "50",
                "--jitter",
                "20ms",
                "--dist",
                "uniform",
                "--reorder",
            ],
            &["--port", &t, "--ms", "20", "--direction", "egress"],
            &["--port", &t, "--ms", "200", "--direction", "egress"],
            &["--port", &p, "--ms", "12000", "--direction", "ingress"],
            // On the netlink path too: the clsact qdisc faultbpf added
            // before the delay device failed must go as well.
            &["--port", &p, "--ms", "50", "--attach", "netlink"],
            &["--port", &p, "--ms", "50"],
        ];
        for (i, args) in cases.iter().enumerate() {
            let topo = Topology::new(&format!("dly-no{i}"));
            require_no_delay_qdiscs(&topo.server, SERVER_IF);
            assert_refused(&topo, args);
        }
    }

    /// A refused delay must not disturb a faultbpf already running on the
    /// same interface.
    #[test]
    fn refused_delay_leaves_a_running_blackhole_alone() {
        let topo = Topology::new("dly-notwo");
        let ns = &topo.server;
        require_no_delay_qdiscs(ns, SERVER_IF);
        let (p, r) = (P.to_string(), R.to_string());
        let blackhole_r = ["--port", r.as_str(), "--iface", SERVER_IF];
        let delay_p = ["--port", p.as_str(), "--ms", "50", "--iface", SERVER_IF];
        let echoes = [P, R].map(|port| UdpEcho::start(ns, any(port)));
        let mut probe_p = UdpProbe::new(&topo.client, v4(P));
        let mut probe_r = UdpProbe::new(&topo.client, v4(R));
        assert!(
            probe_r.rtt(PROBE_TIMEOUT).is_some(),
            "port {R} before faultbpf"
        );
        let mut bh = Launch::new(ns, ["blackhole"])
            .args(blackhole_r)
            .standalone()
            .start();
        let links = delay_links(ns);
        let exit = Launch::new(ns, ["delay"])
            .args(delay_p)
            .standalone()
            .run_within(Duration::from_secs(60));
        assert_eq!(exit.status.code(), Some(1), "{exit:#?}");
        assert_eq!(delay_links(ns), links);
        assert!(
            probe_r.rtt(Duration::from_millis(500)).is_none(),
            "the blackhole on {R} must still act after a refused delay"
        );
        assert!(probe_p.rtt(PROBE_TIMEOUT).is_some());
        bh.finish();
        drop(echoes);
    }
}

/// The qdiscs of `ns` other than those of the delay devices and clsact
/// (which belongs to the attachment, checked separately).
fn host_qdiscs(ns: &Netns) -> Vec<String> {
    qdiscs(ns)
        .into_iter()
        .filter(|q| !q.starts_with("fbd") && !q.contains(" clsact "))
        .collect()
}

/// The tests that need sch_fq and sch_netem: they fail on a kernel without
/// them, unless skipped by name (`--skip needs_qdiscs::`), which `cargo
/// xtask test` does after probing, so libtest counts them as filtered out,
/// never as passed.
mod needs_qdiscs {
    use super::*;

    /// `--ms 50` at ingress, egress and both directions of the server's veth,
    /// against a baseline; another port unaffected; IPv6; netem reference.
    #[test]
    fn latency_by_direction_and_netem_reference() {
        let topo = Topology::new("dly-lat");
        let port = P.to_string();
        let args = |dir| {
            [
                "--port",
                &port,
                "--ms",
                "50",
                "--direction",
                dir,
                "--iface",
                SERVER_IF,
            ]
            .map(str::to_owned)
        };
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let _echo_p = UdpEcho::start(&topo.server, any(P));
        let _echo_q = UdpEcho::start(&topo.server, any(Q));
        let mut p4 = UdpProbe::new(&topo.client, v4(P));
        let mut q4 = UdpProbe::new(&topo.client, v4(Q));
        let mut p6 = UdpProbe::new(&topo.client, SocketAddr::new(SERVER_V6, P));
        // Warm-up: resolves the neighbours (ARP, NDP) both ways.
        for probe in [&mut p4, &mut q4, &mut p6] {
            assert!(probe.rtt(PROBE_TIMEOUT).is_some(), "warm-up");
        }
        let base_p = median_rtt(&mut p4, "baseline v4");
        let base_q = median_rtt(&mut q4, "baseline other port");
        let base_p6 = median_rtt(&mut p6, "baseline v6");
        eprintln!(
            "baseline RTT medians: {base_p:.2} ms (v4), {base_q:.2} ms (other port), {base_p6:.2} ms (v6)"
        );

        let mut egress_median = 0.0;
        for (dir, lo, hi, per_probe) in [
            ("ingress", 45.0, 60.0, 1),
            ("egress", 45.0, 60.0, 1),
            ("both", 90.0, 120.0, 2),
        ] {
            let a = args(dir);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let ((p, q, p6_median), exit) = under_delay(&topo.server, &a, || {
                let p = median_rtt(&mut p4, dir);
                let q = median_rtt(&mut q4, dir);
                let p6_median = (dir == "both").then(|| median_rtt(&mut p6, dir));
                (p, q, p6_median)
            });
            eprintln!(
                "{dir}: RTT median {p:.2} ms on {P} (+{:.2}), {q:.2} ms on {Q} (+{:.2})",
                p - base_p,
                q - base_q
            );
            assert!(
                (lo..=hi).contains(&(p - base_p)),
                "delay --ms 50 --direction {dir}: the round trip must grow by {lo}-{hi} ms, \
             grew by {:.2} ({base_p:.2} -> {p:.2} ms)",
                p - base_p
            );
            assert!(
                q - base_q < 5.0,
                "delay on {P} ({dir}) must leave {Q} alone: {base_q:.2} -> {q:.2} ms"
            );
            if let Some(p6m) = p6_median {
                eprintln!("{dir}: IPv6 RTT median {p6m:.2} ms (+{:.2})", p6m - base_p6);
                assert!(
                    (lo..=hi).contains(&(p6m - base_p6)),
                    "IPv6, {dir}: the round trip must grow by {lo}-{hi} ms: {base_p6:.2} -> {p6m:.2} ms"
                );
            }
            let rule = exit.rule(0);
            assert!(
                rule.acted_packets >= SAMPLES as u64 * per_probe,
                "{dir}: every probe's packets must be counted as delayed: {rule:?}"
            );
            if dir == "egress" {
                egress_median = p;
            }
        }

        // The reference: netem on the same device and direction (the server's
        // egress), in the same run.
        let netem = under_netem(&topo.server, SERVER_IF, "50ms", || {
            median_rtt(&mut p4, "netem")
        });
        eprintln!(
            "netem delay 50ms: RTT median {netem:.2} ms; faultbpf egress {egress_median:.2} ms \
         (difference {:.2})",
            egress_median - netem
        );
        assert!(
            (egress_median - netem).abs() <= 2.0,
            "delay --ms 50 at egress ({egress_median:.2} ms) and netem delay 50ms ({netem:.2} ms) \
         must give the same median round trip within 2 ms"
        );
        assert!(delay_links(&topo.server).is_empty());
    }

    /// 50 ± 20 ms uniform at the server's ingress: a 300-datagram burst on one
    /// flow arrives complete, in order, each 30-70 ms (plus the baseline) late;
    /// with `--reorder` the times spread over the band and many arrive out of
    /// order.
    #[test]
    fn jitter_stays_in_band_and_in_order_unless_reorder() {
        let topo = Topology::new("dly-jit");
        let port = P.to_string();
        let args = [
            "--port",
            &port,
            "--ms",
            "50",
            "--jitter",
            "20ms",
            "--dist",
            "uniform",
            "--direction",
            "ingress",
            "--iface",
            SERVER_IF,
        ];
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let idle = Duration::from_secs(1);
        let run = |what: &str| {
            let got = burst(&topo.client, &topo.server, v4(P), BURST, SPACING, idle);
            assert_eq!(
                got.len(),
                BURST as usize,
                "{what}: every datagram of the burst must arrive"
            );
            assert!(no_duplicates(&got), "{what}: duplicates");
            got
        };
        let base = run("baseline");
        let b = one_way(&base);
        eprintln!("baseline one-way: {}", summary(&b));
        let (b50, b99, bmax) = (median(&b), percentile(&b, 99.0), percentile(&b, 100.0));

        let (ordered, exit) = under_delay(&topo.server, &args, || run("in order"));
        assert!(exit.rule(0).acted_packets >= u64::from(BURST));
        let o = one_way(&ordered);
        eprintln!("50 ± 20 ms in order: {}", summary(&o));
        let out_of_order: Vec<(u32, u32)> = ordered
            .windows(2)
            .filter(|w| w[1].seq <= w[0].seq)
            .map(|w| (w[0].seq, w[1].seq))
            .collect();
        assert!(
            out_of_order.is_empty(),
            "without --reorder the flow's datagrams must arrive in order; out of order: {:?}",
            &out_of_order[..out_of_order.len().min(10)]
        );
        // A datagram is never delivered before its own delay (>= 30 ms), and
        // waiting for an earlier one never takes it past that one's 70 ms.
        let in_band = |what: &str, one_way: &[f64]| {
            assert!(
                percentile(one_way, 0.0) >= 29.5,
                "{what}: a datagram arrived before 50 - 20 ms: {}",
                summary(one_way)
            );
            assert!(
                percentile(one_way, 99.0) <= 70.0 + b99 + 3.0
                    && percentile(one_way, 100.0) <= 70.0 + bmax + 10.0,
                "{what}: datagrams later than 50 + 20 ms plus the baseline: {} (baseline {})",
                summary(one_way),
                summary(&b)
            );
        };
        in_band("in order", &o);

        let mut reorder = args.to_vec();
        reorder.push("--reorder");
        let (shuffled, exit) = under_delay(&topo.server, &reorder, || run("--reorder"));
        assert!(exit.rule(0).acted_packets >= u64::from(BURST));
        let s = one_way(&shuffled);
        let late = late_arrivals(&shuffled);
        eprintln!(
            "50 ± 20 ms --reorder: {}; {late} of {BURST} arrived after a later one",
            summary(&s)
        );
        assert!(
            late >= BURST as usize / 10,
            "with --reorder and 40 ms of jitter at 1 ms spacing many datagrams must overtake \
         each other; only {late} of {BURST} arrived late"
        );
        in_band("--reorder", &s);
        // Uniform on [30, 70]: median 50, p10 34, p90 66.
        let m = median(&s) - b50;
        assert!(
            (45.0..=55.0).contains(&m),
            "--reorder: the median one-way delay must be 50 ± 5 ms above the baseline, \
         is {m:.1}: {}",
            summary(&s)
        );
        assert!(
            percentile(&s, 10.0) - b50 <= 40.0 && percentile(&s, 90.0) - b50 >= 60.0,
            "--reorder: uniform ± 20 ms must spread over the band: {}",
            summary(&s)
        );
    }

    /// Bulk TCP under 20 ms, sent and then received by the faulted host (the
    /// client namespace), against netem's 20 ms on the same link in the same
    /// run: at least half as fast.
    #[test]
    fn tcp_bulk_at_20ms_keeps_up_with_netem() {
        let topo = Topology::new("dly-t20");
        let port = T.to_string();
        let args = |dir| {
            [
                "--port",
                port.as_str(),
                "--ms",
                "20",
                "--direction",
                dir,
                "--iface",
                CLIENT_IF,
            ]
        };
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let (c, s) = (&topo.client, &topo.server);
        let bulk = |sender| bulk_mbps(c, s, v4(T), sender, BULK_20MS);
        let base = bulk(Sender::Connector);
        // Sent by the host: its own egress is delayed.
        let netem_send = under_netem(c, CLIENT_IF, "20ms", || bulk(Sender::Connector));
        let (fb_send, _) = under_delay(c, &args("egress"), || bulk(Sender::Connector));
        // Received by the host: its ingress is delayed. netem cannot sit on an
        // ingress, so the reference delays the same packets on the far end of
        // the link (the server's egress).
        let netem_recv = under_netem(s, SERVER_IF, "20ms", || bulk(Sender::Listener));
        let (fb_recv, _) = under_delay(c, &args("ingress"), || bulk(Sender::Listener));
        eprintln!(
            "bulk TCP Mbit/s: no delay {base:.0}; 20 ms sent: netem {netem_send:.0}, faultbpf \
         {fb_send:.0}; 20 ms received: netem {netem_recv:.0}, faultbpf {fb_recv:.0}"
        );
        assert!(
            fb_send >= netem_send / 2.0,
            "a flow sent by the delayed host must reach half of netem's rate: {fb_send:.1} vs \
         {netem_send:.1} Mbit/s (TCP small queues throttling a sender whose packets are held?)"
        );
        assert!(
            fb_recv >= netem_recv / 2.0,
            "a flow received by the delayed host must reach half of netem's rate: {fb_recv:.1} vs \
         {netem_recv:.1} Mbit/s"
        );
    }

    /// 200 ms on a bulk TCP flow sent by the host: it must not collapse to a
    /// few Mbit/s (fq's default per-flow limit of 100 packets would).
    #[test]
    fn tcp_bulk_at_200ms_does_not_collapse() {
        let topo = Topology::new("dly-t200");
        let port = T.to_string();
        let args = [
            "--port",
            &port,
            "--ms",
            "200",
            "--direction",
            "egress",
            "--iface",
            CLIENT_IF,
        ];
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let (c, s) = (&topo.client, &topo.server);
        let bulk = || bulk_mbps(c, s, v4(T), Sender::Connector, BULK_200MS);
        let netem = under_netem(c, CLIENT_IF, "200ms", bulk);
        let (fb, _) = under_delay(c, &args, bulk);
        eprintln!("bulk TCP Mbit/s at 200 ms: netem {netem:.1}, faultbpf {fb:.1}");
        assert!(
            fb >= 20.0 || fb >= netem / 4.0,
            "at 200 ms a bulk flow must not collapse: {fb:.1} Mbit/s (netem: {netem:.1})"
        );
    }

    /// A 12 s delay: the datagram is held and delivered, not dropped by fq's
    /// default 10 s horizon.
    #[test]
    fn twelve_second_delay_is_held() {
        let topo = Topology::new("dly-12s");
        let port = P.to_string();
        let args = [
            "--port",
            &port,
            "--ms",
            "12000",
            "--direction",
            "ingress",
            "--iface",
            SERVER_IF,
        ];
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let rx = udp_bind(&topo.server, v4(P));
        let tx = udp_bind(&topo.client, "0.0.0.0:0".parse().unwrap());
        tx.connect(v4(P)).unwrap();
        // Warm-up: resolves the neighbours.
        tx.send(b"warm-up").unwrap();
        rx.set_read_timeout(Some(PROBE_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(rx.recv_retry(&mut buf).expect("warm-up"), 7);
        // Only the start is heavy (loading the programs); the 12 s wait can
        // overlap another test.
        let mut fb = {
            let _serial = serial();
            let mut full = args.to_vec();
            full.push("--json");
            Launch::new(&topo.server, ["delay"])
                .args(&full)
                .standalone()
                .start()
        };
        let sent = Instant::now();
        tx.send(b"late").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let got = rx.recv_retry(&mut buf);
        let took = sent.elapsed();
        eprintln!("12 s delay: {got:?} after {took:?}");
        assert!(
            matches!(got, Ok(4)),
            "a datagram delayed 12 s must arrive (fq's default horizon of 10 s drops it): \
         {got:?} after {took:?}"
        );
        assert!(
            took >= Duration::from_secs(12) && took < Duration::from_millis(13_500),
            "--ms 12000: arrived after {took:?}"
        );
        let rule = fb.finish().rule(0);
        assert!(rule.acted_packets >= 1, "{rule:?}");
    }

    /// Priority-7 packets go to fq's highest band, which ignores delivery
    /// times: faultbpf must put them back at priority 0 so they are delayed
    /// like the rest. The priority is set on the client socket, and the delay
    /// is at the client's egress (a veth crossing resets the priority).
    #[test]
    fn priority_7_is_delayed_too() {
        let topo = Topology::new("dly-prio");
        let port = P.to_string();
        let args = [
            "--port",
            &port,
            "--ms",
            "50",
            "--direction",
            "egress",
            "--iface",
            CLIENT_IF,
        ];
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let _echo = UdpEcho::start(&topo.server, any(P));
        let mut probe = UdpProbe::new(&topo.client, v4(P));
        set_priority(probe.socket().as_fd(), 7);
        assert!(probe.rtt(PROBE_TIMEOUT).is_some(), "warm-up");
        let base = median_rtt(&mut probe, "baseline, priority 7");
        let (with, exit) =
            under_delay(&topo.client, &args, || median_rtt(&mut probe, "priority 7"));
        eprintln!("priority 7: RTT median {base:.2} -> {with:.2} ms");
        assert!(
            (45.0..=60.0).contains(&(with - base)),
            "SO_PRIORITY 7 packets must be delayed 50 ms too: {base:.2} -> {with:.2} ms"
        );
        assert!(exit.rule(0).acted_packets >= SAMPLES as u64);
    }

    /// While active, faultbpf owns `fbd<pid>a`/`fbd<pid>b` with netem and fq
    /// on the sending end, and leaves the interface's own qdiscs alone; SIGTERM
    /// removes everything; after `kill -9` the pair stays until the next
    /// `delay` run, which removes it.
    #[test]
    fn nothing_left_after_exit_and_kill9_leftover_removed() {
        let topo = Topology::new("dly-left");
        let port = P.to_string();
        let args = ["--port", port.as_str(), "--ms", "50", "--iface", SERVER_IF];
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let ns = &topo.server;
        let before = qdiscs(ns);
        let pair = |pid: u32| {
            let mut v = vec![format!("fbd{pid}a"), format!("fbd{pid}b")];
            v.sort();
            v
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };

        // SIGTERM.
        let mut fb = Launch::new(ns, ["delay"]).args(args).standalone().start();
        assert_eq!(sorted(delay_links(ns)), pair(fb.pid()), "the delay device");
        let dev = format!("fbd{}a", fb.pid());
        let held = ns.tc(&["qdisc", "show", "dev", &dev]);
        assert!(
            held.contains("netem") && held.contains("fq"),
            "{dev} must carry netem and fq: {held}"
        );
        assert_eq!(
            host_qdiscs(ns),
            before,
            "delay must not touch the interfaces' own qdiscs"
        );
        fb.finish();
        assert!(
            delay_links(ns).is_empty(),
            "after SIGTERM: {:?}",
            delay_links(ns)
        );
        assert_eq!(qdiscs(ns), before, "qdiscs after SIGTERM");
        assert_nothing_attached(ns, &[SERVER_IF]);

        // kill -9: nothing runs the cleanup.
        let mut fb = Launch::new(ns, ["delay"]).args(args).standalone().start();
        let dead = fb.pid();
        let exit = fb.stop(libc::SIGKILL);
        assert!(!exit.status.success());
        let leftover = format!("fbd{dead}a");
        let left = delay_links(ns);
        eprintln!("after kill -9 of {dead}: {left:?}");
        if !left.contains(&leftover) {
            // Something removed it already (a reaper); make the leftover the
            // next run must still deal with.
            eprintln!(
                "no leftover after kill -9; creating {leftover} as a dead run would leave it"
            );
            ns.ip(&[
                "link",
                "add",
                &leftover,
                "type",
                "veth",
                "peer",
                "name",
                &format!("fbd{dead}b"),
            ]);
        }
        wait_clean(ns, SERVER_IF);
        let mut fb = Launch::new(ns, ["delay"]).args(args).standalone().start();
        assert_eq!(
            sorted(delay_links(ns)),
            pair(fb.pid()),
            "the next delay run must remove the dead run's {leftover} and have its own"
        );
        fb.finish();
        assert!(delay_links(ns).is_empty(), "{:?}", delay_links(ns));
        assert_eq!(qdiscs(ns), before);
        assert_nothing_attached(ns, &[SERVER_IF]);
    }

    /// A delay next to other faultbpf runs on the same interface: a blackhole
    /// started before it and another delay started after it (so one of them is
    /// ahead of it in the hook's chain on both TCX and netlink). Its delayed
    /// packets must come back once, delayed once; the second delay run must
    /// not remove the first one's (live) device; each stop leaves the others.
    #[test]
    fn delay_beside_other_runs_on_the_same_interface() {
        let topo = Topology::new("dly-two");
        let ns = &topo.server;
        let (p, q, r) = (P.to_string(), Q.to_string(), R.to_string());
        let blackhole_r = ["--port", r.as_str(), "--iface", SERVER_IF];
        let delay_p = ["--port", p.as_str(), "--ms", "50", "--iface", SERVER_IF];
        let delay_q = ["--port", q.as_str(), "--ms", "20", "--iface", SERVER_IF];
        let _echoes = [P, Q, R].map(|port| UdpEcho::start(ns, any(port)));
        let mut probes = [P, Q, R].map(|port| UdpProbe::new(&topo.client, v4(port)));
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        for probe in &mut probes {
            assert!(probe.rtt(PROBE_TIMEOUT).is_some(), "warm-up");
        }
        let base_p = median_rtt(&mut probes[0], "baseline P");
        let base_q = median_rtt(&mut probes[1], "baseline Q");

        let mut bh = Launch::new(ns, ["blackhole"])
            .args(blackhole_r)
            .standalone()
            .start();
        let mut first = Launch::new(ns, ["delay"])
            .args(delay_p)
            .standalone()
            .start();
        let mut second = Launch::new(ns, ["delay"])
            .args(delay_q)
            .standalone()
            .start();
        let mut want = [pair_of(first.pid()), pair_of(second.pid())].concat();
        want.sort();
        let mut links = delay_links(ns);
        links.sort();
        assert_eq!(
            links, want,
            "a second delay run must not remove the first one's device (its owner is alive)"
        );
        let check_p = |probe: &mut UdpProbe, when: &str| {
            let rtts: Vec<Option<Duration>> =
                (0..SAMPLES).map(|_| probe.rtt(PROBE_TIMEOUT)).collect();
            let lost = rtts.iter().filter(|r| r.is_none()).count();
            assert_eq!(
                lost, 0,
                "{when}: {lost} of {SAMPLES} round trips to the delayed port {P} never came back \
             (another faultbpf program on the interface cleared the delay mark of a returning \
             packet, which was then delayed again and again?)"
            );
            let m = median(&rtts.iter().map(|r| ms(r.unwrap())).collect::<Vec<_>>());
            assert!(
                (90.0..=120.0).contains(&(m - base_p)),
                "{when}: --ms 50 both ways must add 90-120 ms to {P}: {base_p:.2} -> {m:.2} ms"
            );
            m
        };
        let m_p = check_p(&mut probes[0], "three runs");
        let m_q = median_rtt(&mut probes[1], "second delay");
        eprintln!("three runs: RTT {P} {m_p:.2} ms, {Q} {m_q:.2} ms");
        assert!(
            (36.0..=50.0).contains(&(m_q - base_q)),
            "the second delay (--ms 20 both ways) must add 36-50 ms to {Q}: {base_q:.2} -> {m_q:.2}"
        );
        assert!(probes[2].rtt(Duration::from_millis(500)).is_none());

        second.finish();
        assert_eq!(delay_links(ns), pair_of(first.pid()));
        check_p(&mut probes[0], "after the second delay stopped");
        let m_q = median_rtt(&mut probes[1], "second delay stopped");
        assert!(m_q - base_q < 5.0, "{Q} healed: {base_q:.2} -> {m_q:.2}");
        first.finish();
        bh.finish();
        assert!(delay_links(ns).is_empty());
        assert_nothing_attached(ns, &[SERVER_IF]);
    }
}

fn pair_of(pid: u32) -> Vec<String> {
    vec![format!("fbd{pid}a"), format!("fbd{pid}b")]
}
