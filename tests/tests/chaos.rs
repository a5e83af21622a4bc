//! Issue 3, `chaos --mix drop:20,reset:10,corrupt:5`: one draw per packet
//! picks at most one fault, in the requested shares. Over 100 000 paced UDP
//! datagrams to a server running faultbpf at its ingress, each outcome is
//! observed on its own:
//! - reset: the ICMP port unreachables the client receives (its kernel's
//!   `IcmpInDestUnreachs`; the client socket is unconnected, so they do not
//!   disturb the sending);
//! - corrupt: datagrams delivered with different bytes;
//! - drop: the rest of what was not delivered;
//! - pass: datagrams delivered intact.
//!
//! Each share must be within 4 binomial standard deviations of the mix,
//! faultbpf's counters must agree exactly (matched = sent, acted = sent -
//! intact, and per action, issue 12: `actions` in `--json` holds exactly
//! the drops, resets and corruptions observed), the receiver must have lost
//! nothing to its own buffer, and no checksum error may appear on either
//! side.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    os::fd::AsFd,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, Launch, RecvRetry, SERVER_IF, SERVER_V4, Topology,
    fault_kit::{CsumErrors, nstat, tx_checksum_off},
    force_rcvbuf, udp_bind,
};

const P: u16 = 5000;
const N: u64 = 100_000;
/// Sending rate: 100 000 datagrams in about 4 s.
const PACKETS_PER_SEC: u64 = 25_000;
const PAYLOAD: [u8; 64] = *b"faultbpf chaos mix: drop 20, reset 10, corrupt 5, pass the rest.";

/// Sets the flag when dropped, so the receiver stops even if sending panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Panics unless `count` of `n` trials is within 4 standard deviations of a
/// binomial with probability `p`.
fn assert_share(what: &str, count: u64, n: u64, p: f64, details: &str) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let z = (count as f64 - mean) / sd;
    eprintln!(
        "{what}: {count} of {n} ({:.3} %, expected {:.1} %, z = {z:.2})",
        100.0 * count as f64 / n as f64,
        100.0 * p
    );
    assert!(
        z.abs() <= 4.0,
        "{what}: {count} of {n} is {z:.2} standard deviations from {mean} (sd {sd:.1}); {details}"
    );
}

#[test]
fn chaos_mix_shares() {
    let topo = Topology::new("chaos");
    tx_checksum_off(&topo.client, CLIENT_IF);
    tx_checksum_off(&topo.server, SERVER_IF);
    let rx = udp_bind(&topo.server, SocketAddr::new(SERVER_V4, P));
    force_rcvbuf(rx.as_fd(), 64 << 20);
    let tx = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    let to = SocketAddr::new(SERVER_V4, P);

    // Control: the path delivers intact without the fault.
    tx.send_to(&PAYLOAD, to).unwrap();
    let mut buf = [0u8; 2048];
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let n = rx.recv_retry(&mut buf).expect("control datagram");
    assert_eq!(&buf[..n], &PAYLOAD);

    let mut fb = Launch::new(&topo.server, ["chaos"])
        .args([
            "--port",
            &P.to_string(),
            "--mix",
            "drop:20,reset:10,corrupt:5",
            "--direction",
            "ingress",
            "--iface",
            SERVER_IF,
            "--json",
        ])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    let client_before = nstat(&topo.client);
    let server_before = nstat(&topo.server);
    let csum_client = CsumErrors::snapshot(&topo.client);
    let csum_server = CsumErrors::snapshot(&topo.server);

    let sent_all = AtomicBool::new(false);
    let (delivered, corrupted) = thread::scope(|s| {
        let receiver = s.spawn(|| {
            rx.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let (mut delivered, mut corrupted) = (0u64, 0u64);
            let mut buf = [0u8; 2048];
            let mut last = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(120);
            // Until 1 s without a datagram once everything was sent.
            while Instant::now() < deadline
                && !(sent_all.load(Ordering::Relaxed) && last.elapsed() > Duration::from_secs(1))
            {
                match rx.recv_retry(&mut buf) {
                    Ok(n) => {
                        last = Instant::now();
                        delivered += 1;
                        if buf[..n] != PAYLOAD {
                            corrupted += 1;
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("receiver: {e}"),
                }
            }
            (delivered, corrupted)
        });
        let done = SetOnDrop(&sent_all);
        let start = Instant::now();
        for i in 0..N {
            tx.send_to(&PAYLOAD, to)
                .unwrap_or_else(|e| panic!("send {i}: {e}"));
            if i % 100 == 99 {
                let due = start + Duration::from_micros(i * 1_000_000 / PACKETS_PER_SEC);
                thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
        eprintln!("sent {N} datagrams in {:?}", start.elapsed());
        drop(done);
        receiver.join().unwrap()
    });

    let exit = fb.finish();
    let rule = exit.rule(0);
    let client_after = nstat(&topo.client);
    let server_after = nstat(&topo.server);
    let delta = |before: &std::collections::BTreeMap<String, u64>,
                 after: &std::collections::BTreeMap<String, u64>,
                 name: &str| after[name] - before[name];
    let rcvbuf_errors = delta(&server_before, &server_after, "UdpRcvbufErrors");
    assert_eq!(
        rcvbuf_errors, 0,
        "the receiver lost datagrams to its own buffer: the shares below would be wrong"
    );
    let resets = delta(&client_before, &client_after, "IcmpInDestUnreachs");
    assert!(
        delivered + resets <= N,
        "delivered {delivered} + reset {resets} > sent {N}"
    );
    let dropped = N - delivered - resets;
    let intact = delivered - corrupted;
    let details = format!(
        "sent {N}, delivered {delivered} (corrupted {corrupted}), ICMP unreachables {resets}, \
         missing {dropped}; {rule:?}; `{cmd}`"
    );
    eprintln!("{details}");
    assert_eq!(rule.matched_packets, N, "{details}");
    assert_eq!(
        rule.acted_packets,
        N - intact,
        "every datagram not delivered intact was acted on, and only those: {details}"
    );
    let actions = &exit.json()["rules"][0]["actions"];
    for (action, seen) in [("drop", dropped), ("reset", resets), ("corrupt", corrupted)] {
        assert_eq!(
            actions[action].as_u64(),
            Some(seen),
            "the `{action}` counter must equal the {action}s observed: actions {actions}; {details}"
        );
    }
    assert_share("drop", dropped, N, 0.20, &details);
    assert_share("reset", resets, N, 0.10, &details);
    assert_share("corrupt", corrupted, N, 0.05, &details);
    assert_share("pass", intact, N, 0.65, &details);
    csum_client.assert_unchanged(&topo.client);
    csum_server.assert_unchanged(&topo.server);
}
