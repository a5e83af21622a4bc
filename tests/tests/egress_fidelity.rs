//! Issue 2, test 2: a blackhole at the sender's own egress must look like a
//! silent network, not like a local drop. With a plain `TC_ACT_SHOT` the
//! kernel reports the failure to TCP, which then neither backs off nor gives
//! up like it does on a real black hole; these tests catch that, on both the
//! TCX and the netlink (clsact) attach paths.

use std::{io::Write, net::SocketAddr, os::fd::AsFd, thread, time::Duration};

use faultbpf_tests::{
    CLIENT_IF, Launch, Proc, SERVER_V4, Topology, connect_finished, socket_error, tcp_connect,
    tcp_connect_nonblocking, tcp_info, tcp_listen,
};

const P: u16 = 5000;
/// Linux `TCP_ESTABLISHED` / `TCP_SYN_SENT` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;

fn egress_blackhole(topo: &Topology, attach: &str) -> Proc {
    Launch::new(&topo.client, ["blackhole"])
        .args([
            "--port",
            &P.to_string(),
            "--iface",
            CLIENT_IF,
            "--direction",
            "egress",
            "--attach",
            attach,
            "--json",
        ])
        .standalone()
        .start()
}

/// An established connection keeps accepting `send()`s, and its
/// retransmission timer backs off exponentially as if the peer were gone.
fn established_connection_backs_off(tag: &str, attach: &str) {
    let topo = Topology::new(tag);
    let _listener = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, P));
    let mut stream = tcp_connect(
        &topo.client,
        SocketAddr::new(SERVER_V4, P),
        Duration::from_secs(2),
    )
    .expect("connect before the fault");
    stream.write_all(b"before the fault").unwrap();
    thread::sleep(Duration::from_millis(200));
    let before = tcp_info(stream.as_fd());
    assert_eq!(before.tcpi_backoff, 0, "no backoff on a healthy connection");

    let mut fb = egress_blackhole(&topo, attach);
    // The application sees no error: the data is queued and "sent".
    for _ in 0..3 {
        stream
            .write_all(&[b'x'; 1000])
            .expect("send() under the blackhole");
    }
    // RTO starts at ~200 ms and doubles: 0.2+0.4+0.8+1.6+3.2 s, so after
    // 6 s there were about 4 backoffs. After a local drop it would stay 0.
    thread::sleep(Duration::from_secs(6));
    let info = tcp_info(stream.as_fd());
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    assert_eq!(info.tcpi_state, TCP_ESTABLISHED);
    assert!(
        info.tcpi_backoff >= 3,
        "tcpi_backoff {} after 6 s of blackhole (rto {} us, retransmits {})",
        info.tcpi_backoff,
        info.tcpi_rto,
        info.tcpi_retransmits
    );
    assert!(
        info.tcpi_rto > 1_000_000,
        "tcpi_rto {} us should have grown past 1 s (initial {} us)",
        info.tcpi_rto,
        before.tcpi_rto
    );
    let rule = exit.rule(0);
    assert!(
        rule.acted_packets >= 3,
        "retransmissions must be counted: {rule:?}"
    );
}

/// A connect started under the blackhole keeps retrying its SYN like against
/// an unreachable host (SYN retries go on for minutes), instead of failing
/// within seconds as it would after local drops.
fn connect_stays_pending(tag: &str, attach: &str) {
    let topo = Topology::new(tag);
    let _listener = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, P));
    tcp_connect(
        &topo.client,
        SocketAddr::new(SERVER_V4, P),
        Duration::from_secs(2),
    )
    .expect("connect before the fault");

    let mut fb = egress_blackhole(&topo, attach);
    let socket = tcp_connect_nonblocking(&topo.client, SocketAddr::new(SERVER_V4, P));
    let finished = connect_finished(socket.as_fd(), Duration::from_secs(20));
    let info = tcp_info(socket.as_fd());
    let error = socket_error(socket.as_fd());
    assert!(fb.is_running(), "faultbpf died:\n{}", fb.stderr());
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    assert!(
        !finished,
        "connect ended within 20 s (SO_ERROR {error}: {}, state {})",
        std::io::Error::from_raw_os_error(error),
        info.tcpi_state
    );
    assert_eq!(info.tcpi_state, TCP_SYN_SENT, "still in SYN_SENT");
    // SYN retransmits at 1, 3, 7 and 15 s.
    assert!(
        info.tcpi_backoff >= 3,
        "tcpi_backoff {} after 20 s",
        info.tcpi_backoff
    );
    let rule = exit.rule(0);
    assert!(
        rule.acted_packets >= 4,
        "SYN and retries must be counted: {rule:?}"
    );
}

#[test]
fn established_connection_backs_off_tcx() {
    established_connection_backs_off("eg-est-tcx", "tcx");
}

#[test]
fn established_connection_backs_off_netlink() {
    established_connection_backs_off("eg-est-nl", "netlink");
}

#[test]
fn connect_stays_pending_tcx() {
    connect_stays_pending("eg-syn-tcx", "tcx");
}

#[test]
fn connect_stays_pending_netlink() {
    connect_stays_pending("eg-syn-nl", "netlink");
}
