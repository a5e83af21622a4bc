//! Issue 3, `mark`: packets pass, tagged.
//! - `--value 0x42`: an nftables rule counting `meta mark 0x42` in the
//!   server's input hook counts exactly the port's packets (none before the
//!   fault, none of another port), and all of them are still delivered.
//! - `--ecn`: an ECN-capable datagram (ECT(0) or ECT(1)) arrives with
//!   Congestion Experienced and its DSCP intact, as a congested router would
//!   leave it; a Not-ECT datagram stays Not-ECT (and is delivered: a router
//!   would have to drop it, `mark` never does). IPv4 and IPv6.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsFd,
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_V4, CLIENT_V6, Launch, SERVER_IF, SERVER_V4, SERVER_V6, Topology, count_datagrams,
    fault_kit::{nft, nft_counter_packets, recv_with_tos, set_recv_tos, set_tos},
    udp_bind,
};

/// The marked port.
const P: u16 = 5000;
/// Another port, never marked.
const Q: u16 = 5001;
/// Datagrams per port and address family.
const K: usize = 20;

const NOT_ECT: u8 = 0b00;
const ECT_1: u8 = 0b01;
const ECT_0: u8 = 0b10;
const CE: u8 = 0b11;
/// DSCP EF (46) in the upper six bits of the TOS byte.
const DSCP_EF: u8 = 46 << 2;

#[test]
fn mark_value_is_seen_by_nftables() {
    let topo = Topology::new("mark-val");
    nft(&topo.server, &["add", "table", "inet", "t"]);
    nft(
        &topo.server,
        &[
            "add",
            "chain",
            "inet",
            "t",
            "c",
            "{ type filter hook input priority 0; }",
        ],
    );
    nft(
        &topo.server,
        &[
            "add", "rule", "inet", "t", "c", "meta", "mark", "0x42", "counter",
        ],
    );
    let any = |port| SocketAddr::new("::".parse().unwrap(), port);
    let rx_p = udp_bind(&topo.server, any(P));
    let rx_q = udp_bind(&topo.server, any(Q));
    let tx4 = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    let tx6 = udp_bind(&topo.client, SocketAddr::new(CLIENT_V6, 0));
    let send = |port: u16| {
        for i in 0..K {
            let msg = format!("datagram {i} to {port}");
            tx4.send_to(msg.as_bytes(), SocketAddr::new(SERVER_V4, port))
                .unwrap();
            tx6.send_to(msg.as_bytes(), SocketAddr::new(SERVER_V6, port))
                .unwrap();
        }
    };
    let delivered =
        |socket: &UdpSocket| count_datagrams(socket, 2 * K + 1, Duration::from_millis(500)).len();

    // Control: nothing carries the mark without faultbpf.
    send(P);
    assert_eq!(delivered(&rx_p), 2 * K);
    assert_eq!(
        nft_counter_packets(&topo.server),
        0,
        "marked before the fault"
    );

    let mut fb = Launch::new(&topo.server, ["mark"])
        .args([
            "--port",
            &P.to_string(),
            "--value",
            "0x42",
            "--direction",
            "ingress",
            "--iface",
            SERVER_IF,
            "--json",
        ])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    send(P);
    send(Q);
    assert_eq!(
        delivered(&rx_p),
        2 * K,
        "marked datagrams must be delivered under `{cmd}`"
    );
    assert_eq!(
        delivered(&rx_q),
        2 * K,
        "the other port must get everything"
    );
    assert_eq!(
        nft_counter_packets(&topo.server),
        2 * K as u64,
        "nft must count exactly the port's datagrams with mark 0x42 under `{cmd}`"
    );
    let exit = fb.finish();
    let rule = exit.rule(0);
    assert_eq!(rule.matched_packets, 2 * K as u64, "{rule:?}");
    assert_eq!(rule.acted_packets, 2 * K as u64, "{rule:?}");
}

#[test]
fn mark_ecn_sets_congestion_experienced() {
    let topo = Topology::new("mark-ecn");
    // One receiver per family, each reporting the TOS byte / traffic class.
    let receivers: Vec<(IpAddr, IpAddr, UdpSocket)> =
        [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)]
            .into_iter()
            .map(|(client, server)| {
                let rx = udp_bind(&topo.server, SocketAddr::new(server, P));
                set_recv_tos(rx.as_fd(), server.is_ipv6());
                (client, server, rx)
            })
            .collect();
    // What each datagram is sent with, and what it must arrive with.
    let send_and_check = |cases: &[(u8, u8)], what: &str| {
        for (client, server, rx) in &receivers {
            for &(sent_tos, want_tos) in cases {
                let tx = udp_bind(&topo.client, SocketAddr::new(*client, 0));
                set_tos(tx.as_fd(), client.is_ipv6(), sent_tos);
                tx.send_to(b"ecn", SocketAddr::new(*server, P)).unwrap();
                let (payload, tos) =
                    recv_with_tos(rx, Duration::from_secs(2)).unwrap_or_else(|e| {
                        panic!("{what}: datagram with TOS {sent_tos:#04x} to {server}: {e}")
                    });
                assert_eq!(payload, b"ecn");
                assert_eq!(
                    tos,
                    Some(want_tos),
                    "{what}: sent to {server} with TOS {sent_tos:#04x}, expected {want_tos:#04x}"
                );
            }
        }
    };

    // Control: the TOS byte arrives as sent.
    send_and_check(
        &[
            (ECT_0, ECT_0),
            (ECT_1, ECT_1),
            (DSCP_EF | ECT_0, DSCP_EF | ECT_0),
            (NOT_ECT, NOT_ECT),
        ],
        "without faultbpf",
    );

    let mut fb = Launch::new(&topo.server, ["mark"])
        .args([
            "--port",
            &P.to_string(),
            "--ecn",
            "--direction",
            "ingress",
            "--iface",
            SERVER_IF,
            "--json",
        ])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    send_and_check(
        &[
            (ECT_0, CE),
            (ECT_1, CE),
            (DSCP_EF | ECT_0, DSCP_EF | CE),
            (NOT_ECT, NOT_ECT),
            (DSCP_EF | NOT_ECT, DSCP_EF | NOT_ECT),
        ],
        &cmd,
    );
    let exit = fb.finish();
    let rule = exit.rule(0);
    // Three ECN-capable datagrams per family were marked.
    assert!(rule.acted_packets >= 6, "{rule:?}");
}
