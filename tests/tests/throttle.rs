//! Issue 15, `throttle`: a per-rule token bucket in the kernel, which
//! shapes where the kernel has sch_fq and sch_netem (faultbpf's delay
//! device holds packets over the rate until their departure time) and
//! polices elsewhere (drops them), and says which on its `active:` line
//! and in `--json`. As in `delay.rs`, the tests that need the qdiscs are
//! in `needs_qdiscs` (run in the 6.1 VM lane) and those that need their
//! absence in `without_qdiscs` (run on this machine's 6.18); `cargo xtask
//! test` probes and skips the other group by name.
//!
//! Both: iperf3 TCP through `--rate 10mbit` must measure 8.5-10.5 Mbit/s;
//! the control, measured in the same test, is tc's own `tbf rate 10mbit`
//! on the same veth pair, and the two are compared as a ratio. Without a
//! bucket per direction (the data used it up and the ACKs were dropped)
//! policing measured 1.1 Mbit/s; with a 100 ms default burst TCP idled in
//! retransmission timeouts at 6 Mbit/s.
//! UDP through a small bucket: policing, what arrived plus what the rule
//! dropped is what was sent; shaping, a burst within 200 ms of queue all
//! arrives, spread out at the rate, against a control burst measured
//! unthrottled in the same test, and a longer one is cut at the queue.
//! After kill -9 of faultbpf the whole burst arrives again within a second.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, Exit, Launch, Proc, SERVER_IF, SERVER_V4, Topology,
    delay_kit::{require_delay_qdiscs, require_no_delay_qdiscs},
    run_bounded, udp_bind,
};

/// The measuring tests take this, so that libtest's threads do not
/// disturb each other's numbers (the VM lane's CPU is emulated).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const P: u16 = 5201;
/// Seconds iperf3 measures a limited link, after `OMIT` seconds of slow
/// start it ignores; the unlimited control needs only a glance (it runs at
/// line rate, which a shared machine should not pay for 10 s).
const SECONDS: &str = "10";
const OMIT: &str = "2";
const FREE_SECONDS: &str = "1";

/// One iperf3 TCP run from the client to the server, `seconds` long after
/// `omit`: bits per second the receiver got.
fn iperf(topo: &Topology, seconds: &str, omit: &str) -> f64 {
    let mut server = Proc::spawn(
        topo.server.command("iperf3").args([
            "-s",
            "-1",
            "-p",
            &P.to_string(),
            "-B",
            &SERVER_V4.to_string(),
        ]),
        "iperf3 server",
    );
    std::thread::sleep(Duration::from_millis(300));
    let exit: Exit = run_bounded(
        topo.client.command("iperf3").args([
            "-c",
            &SERVER_V4.to_string(),
            "-p",
            &P.to_string(),
            "-t",
            seconds,
            "-O",
            omit,
            "-J",
        ]),
        Duration::from_secs(30),
    );
    exit.assert_success();
    let _ = server.wait(Duration::from_secs(5));
    let v: serde_json::Value = serde_json::from_str(&exit.stdout)
        .unwrap_or_else(|e| panic!("iperf3 -J ({e}): {}", exit.stdout));
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no end.sum_received.bits_per_second in {v}"))
}

/// `tc ARGS..` in the client namespace, which must succeed.
fn client_tc(topo: &Topology, args: &[&str]) {
    let out = topo
        .client
        .command("tc")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tc {args:?}: {e}"));
    assert!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One throttled iperf3 run against its controls, measured in the same test.
struct TcpRun {
    /// Unlimited, bits per second.
    free: f64,
    /// Through `tbf rate 10mbit`.
    tbf: f64,
    /// Through `throttle --rate 10mbit`.
    throttled: f64,
    /// faultbpf's `active:` line and exit.
    active: String,
    exit: Exit,
}

/// iperf3 TCP unlimited, through tbf and through `throttle --rate 10mbit`
/// on the server's veth, one after another.
fn tcp_against_tbf(topo: &Topology) -> TcpRun {
    let free = iperf(topo, FREE_SECONDS, "0");
    // The control: tc's token bucket filter on the sender's veth (the
    // data flows client -> server), built into this kernel.
    client_tc(
        topo,
        &[
            "qdisc", "add", "dev", CLIENT_IF, "root", "tbf", "rate", "10mbit", "burst", "32kb",
            "latency", "100ms",
        ],
    );
    let tbf = iperf(topo, SECONDS, OMIT);
    client_tc(topo, &["qdisc", "del", "dev", CLIENT_IF, "root"]);

    let mut fb = Launch::new(&topo.server, ["throttle"])
        .args([
            "--port",
            &P.to_string(),
            "--rate",
            "10mbit",
            "--iface",
            SERVER_IF,
            "--json",
        ])
        .standalone()
        .start();
    let active = fb.stderr();
    let throttled = iperf(topo, SECONDS, OMIT);
    let exit = fb.finish();
    eprintln!(
        "iperf3: free {:.1} Mbit/s, tbf 10mbit {:.2}, throttle 10mbit {:.2} (ratio to tbf {:.3}); {:?}",
        free / 1e6,
        tbf / 1e6,
        throttled / 1e6,
        throttled / tbf,
        exit.rule(0)
    );
    TcpRun {
        free,
        tbf,
        throttled,
        active,
        exit,
    }
}

impl TcpRun {
    /// The rate held like tbf's, and the mode said on the `active:` line
    /// and in `--json`.
    fn assert_rate_and_mode(&self, mode: &str) {
        assert!(
            self.active.contains(&format!("{mode} 10mbit")),
            "the active: line says it is {mode}: {}",
            self.active
        );
        let json = self.exit.json();
        let r = &json["rules"][0];
        assert!(
            r["mode"] == mode && r["rate"] == "10mbit" && r["burst"] == "250000b",
            "--json says it is {mode}, at what rate and burst: {json}"
        );
        assert!(
            self.free > 2.0 * self.tbf,
            "without a limit the veth carries far more: {}",
            self.free
        );
        assert!(
            (8.5e6..=10.5e6).contains(&self.throttled),
            "throttle --rate 10mbit measured {:.2} Mbit/s (tbf: {:.2})",
            self.throttled / 1e6,
            self.tbf / 1e6
        );
        assert!(
            (0.85..=1.1).contains(&(self.throttled / self.tbf)),
            "throttle / tbf = {:.3}",
            self.throttled / self.tbf
        );
    }
}

/// `throttle` of UDP to P at 1mbit with a 16 KB bucket on the server's
/// veth, plus `extra`, once active.
fn udp_throttle(topo: &Topology, extra: &[&str]) -> Proc {
    let port = P.to_string();
    Launch::new(
        &topo.server,
        ["throttle", "--port", &port, "--proto", "udp"],
    )
    .args(["--rate", "1mbit", "--burst", "16kb", "--iface", SERVER_IF])
    .args(extra)
    .standalone()
    .start()
}

/// A UDP pair, the receiver with a buffer for every burst a test sends.
fn udp_pair(topo: &Topology) -> (UdpSocket, UdpSocket) {
    let rx = udp_bind(&topo.server, SocketAddr::new(SERVER_V4, P));
    faultbpf_tests::force_rcvbuf(std::os::fd::AsFd::as_fd(&rx), 8 << 20);
    let tx = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    tx.connect(SocketAddr::new(SERVER_V4, P)).unwrap();
    (rx, tx)
}

/// Sends `n` datagrams of 1000 bytes at once; returns how many arrived
/// within `wait` of the last arrival, and the time from the send to the
/// last of them.
fn udp_burst(rx: &UdpSocket, tx: &UdpSocket, n: usize, wait: Duration) -> (usize, Duration) {
    let start = Instant::now();
    for i in 0..n {
        tx.send(&[i as u8; 1000]).unwrap();
    }
    rx.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    let (mut got, mut last) = (0, Duration::ZERO);
    while got < n && rx.recv(&mut buf).is_ok() {
        got += 1;
        last = start.elapsed();
    }
    (got, last)
}

/// Where the kernel has no sch_fq/sch_netem (this machine's 6.18): the
/// throttle polices.
mod without_qdiscs {
    use super::*;

    #[test]
    fn throttle_polices_tcp_to_the_rate_like_tbf() {
        let topo = Topology::new("thr-tcp");
        require_no_delay_qdiscs(&topo.server, SERVER_IF);
        let run = tcp_against_tbf(&topo);
        run.assert_rate_and_mode("policing");
        let rule = run.exit.rule(0);
        assert!(rule.acted_packets > 0, "policing dropped packets: {rule:?}");
    }

    #[test]
    fn throttle_udp_counters_add_up_to_what_was_sent() {
        const N: usize = 200;
        let topo = Topology::new("thr-udp");
        require_no_delay_qdiscs(&topo.server, SERVER_IF);
        let (rx, tx) = udp_pair(&topo);
        let mut fb = udp_throttle(&topo, &["--json"]);
        // 200 KB at once through a 16 KB bucket filling at 125 KB/s.
        let (got, _) = udp_burst(&rx, &tx, N, Duration::from_millis(500));
        let exit = fb.finish();
        let rule = exit.rule(0);
        assert_eq!(exit.json()["rules"][0]["mode"], "policing");
        assert_eq!(rule.matched_packets, N as u64, "{rule:?}");
        assert_eq!(
            got as u64 + rule.acted_packets,
            N as u64,
            "received {got}, {rule:?}"
        );
        assert!(
            (10..N / 2).contains(&got),
            "about the bucket's 16 datagrams get through a burst, got {got}"
        );
    }
}

/// Where the kernel has sch_fq and sch_netem (the 6.1 VM lane): the
/// throttle shapes, through faultbpf's delay device.
mod needs_qdiscs {
    use super::*;

    #[test]
    fn throttle_shapes_tcp_to_the_rate_like_tbf() {
        let topo = Topology::new("thr-shp");
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let run = tcp_against_tbf(&topo);
        run.assert_rate_and_mode("shaping");
    }

    /// 30 datagrams of 1000 bytes through 1mbit with a 16 KB burst: the
    /// burst's 16 go at once, the other 14 at 8 ms each, so the last is
    /// about 110 ms late, and none is lost (policing drops those 14). 200
    /// datagrams overflow the 200 ms queue: about 16 + 25 arrive.
    #[test]
    fn throttle_shaping_holds_a_burst_instead_of_dropping_it() {
        const N: usize = 30;
        const LONG: usize = 200;
        let topo = Topology::new("thr-shu");
        require_delay_qdiscs(&topo.server, SERVER_IF);
        let _serial = serial();
        let (rx, tx) = udp_pair(&topo);
        // Control, same window: the burst without a throttle.
        let (free_got, free_last) = udp_burst(&rx, &tx, N, Duration::from_millis(500));
        assert_eq!(free_got, N, "unthrottled, the whole burst arrives");

        let mut fb = udp_throttle(&topo, &["--json"]);
        assert!(fb.stderr().contains("shaping 1mbit"), "{}", fb.stderr());
        let (got, last) = udp_burst(&rx, &tx, N, Duration::from_millis(500));
        // Let the bucket fill again (16 KB at 125 KB/s is 131 ms).
        std::thread::sleep(Duration::from_millis(300));
        let (long_got, _) = udp_burst(&rx, &tx, LONG, Duration::from_millis(500));
        let exit = fb.finish();
        let rule = exit.rule(0);
        eprintln!(
            "burst of {N}: unthrottled last after {free_last:?}, shaped {got} arrived, last after \
             {last:?}; burst of {LONG}: {long_got} arrived; {rule:?}"
        );
        assert_eq!(exit.json()["rules"][0]["mode"], "shaping");
        assert_eq!(got, N, "shaping loses nothing within its queue");
        assert!(
            last >= free_last + Duration::from_millis(80),
            "the datagrams past the burst left at the rate (about 110 ms for the last): \
             {last:?}, unthrottled {free_last:?}"
        );
        assert!(
            (25..=60).contains(&long_got),
            "past 200 ms of queue the rest is dropped: {long_got} of {LONG} arrived"
        );
        assert_eq!(rule.matched_packets, (N + LONG) as u64, "{rule:?}");
    }
}

#[test]
fn throttle_sigkill_heals_within_a_second() {
    const N: usize = 200;
    let topo = Topology::new("thr-kill");
    let (rx, tx) = udp_pair(&topo);
    let burst = || udp_burst(&rx, &tx, N, Duration::from_millis(300)).0;
    let mut fb = udp_throttle(&topo, &[]);
    let during = burst();
    assert!(
        during < N / 2,
        "in force before the kill: {during} of {N} arrived"
    );
    let exit = fb.stop(libc::SIGKILL);
    assert!(!exit.status.success(), "{exit:?}");
    let killed = std::time::Instant::now();
    loop {
        let after = burst();
        if after == N {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "still throttled {:?} after kill -9: {after} of {N} arrived",
            killed.elapsed()
        );
    }
}
