//! Issue 3, `corrupt`: damaged data is delivered, and nothing below the
//! application notices. Transmit checksum offload is off on both veths, so
//! every checksum is computed in software and verified by the receiver: a
//! packet faultbpf left with a wrong checksum would be dropped (and TCP
//! would stall retransmitting it) and counted in the kernel's checksum-error
//! counters, which must not grow.
//! - TCP echo, faultbpf in the server namespace (both directions): the
//!   client gets all its bytes back, promptly, but not the bytes it sent.
//! - TCP at the client's egress (where the stack has not finished the
//!   checksum yet): the server receives damaged data, and echoes exactly
//!   that back.
//! - UDP at the server's ingress: every datagram arrives, each with exactly
//!   one aligned 16-bit word of its payload damaged: 0x5555 added to it,
//!   big-endian.
//! - Damage never cancels out (issue 12): 20 two-byte echoes through a rule
//!   acting on both directions, between namespaces (two hits per echo) and
//!   on `lo` (four hits), all come back damaged. An inversion undid itself.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, CLIENT_V6, Launch, Netns, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    count_datagrams,
    fault_kit::{CsumErrors, EchoServer, connect_timed, exchange, tx_checksum_off},
    udp_bind,
};

const P: u16 = 5000;
/// Bytes per TCP echo: a dozen segments each way at MSS 1448.
const ECHO_BYTES: usize = 16 << 10;
/// Datagrams per address family.
const DATAGRAMS: usize = 50;

/// A 16-bit word after `hits` hits of `corrupt`: 0x5555 more each,
/// big-endian, wrapping.
fn damaged(word: [u8; 2], hits: u16) -> [u8; 2] {
    u16::from_be_bytes(word)
        .wrapping_add(0x5555u16.wrapping_mul(hits))
        .to_be_bytes()
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251 + seed) as u8).collect()
}

/// Indices of the 16-bit words (at even offsets) where `a` and `b` differ.
fn differing_words(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    a.chunks(2)
        .zip(b.chunks(2))
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i)
        .collect()
}

fn checksummed_topology(tag: &str) -> (Topology, CsumErrors, CsumErrors) {
    let topo = Topology::new(tag);
    tx_checksum_off(&topo.client, CLIENT_IF);
    tx_checksum_off(&topo.server, SERVER_IF);
    let client = CsumErrors::snapshot(&topo.client);
    let server = CsumErrors::snapshot(&topo.server);
    (topo, client, server)
}

/// Sends `ECHO_BYTES` to the echo server on `ip` and returns the reply, which
/// must be complete within 5 s.
fn echo_round(topo: &Topology, ip: IpAddr, sent: &[u8], cmd: &str) -> Vec<u8> {
    let (stream, _) = connect_timed(&topo.client, SocketAddr::new(ip, P), Duration::from_secs(2));
    let mut stream = stream.unwrap_or_else(|e| panic!("connect to {ip} under `{cmd}`: {e}"));
    exchange(&mut stream, sent, Duration::from_secs(5)).unwrap_or_else(|e| {
        panic!("under `{cmd}` the echo from {ip} must come back whole and promptly: {e}")
    })
}

#[test]
fn corrupt_tcp_echo_in_server() {
    let (topo, csum_client, csum_server) = checksummed_topology("cor-tcp-s");
    let echo = EchoServer::tcp(&topo.server, SocketAddr::new("::".parse().unwrap(), P));
    for (n, ip) in [SERVER_V4, SERVER_V6].into_iter().enumerate() {
        let sent = pattern(ECHO_BYTES, n);
        assert_eq!(echo_round(&topo, ip, &sent, "no fault"), sent, "control");
    }

    let mut fb = Launch::new(&topo.server, ["corrupt"])
        .args(["--port", &P.to_string(), "--iface", SERVER_IF, "--json"])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    for (n, ip) in [SERVER_V4, SERVER_V6].into_iter().enumerate() {
        let sent = pattern(ECHO_BYTES, 10 + n);
        let received_before = echo.data().len();
        let reply = echo_round(&topo, ip, &sent, &cmd);
        let words = differing_words(&sent, &reply);
        assert!(
            !words.is_empty(),
            "over {ip} the echo came back unchanged under `{cmd}`"
        );
        let at_server = echo.data()[received_before..].to_vec();
        assert_eq!(at_server.len(), sent.len(), "the server got every byte");
        assert!(
            !differing_words(&sent, &at_server).is_empty(),
            "over {ip} the server received the request undamaged under `{cmd}`"
        );
        eprintln!("{ip}: {} damaged 16-bit words in the echo", words.len());
    }
    let exit = fb.finish();
    let rule = exit.rule(0);
    assert!(rule.acted_packets >= 4, "{rule:?}");
    csum_client.assert_unchanged(&topo.client);
    csum_server.assert_unchanged(&topo.server);
}

#[test]
fn corrupt_tcp_at_client_egress() {
    let (topo, csum_client, csum_server) = checksummed_topology("cor-tcp-c");
    let echo = EchoServer::tcp(&topo.server, SocketAddr::new("::".parse().unwrap(), P));
    let mut fb = Launch::new(&topo.client, ["corrupt"])
        .args([
            "--port",
            &P.to_string(),
            "--iface",
            CLIENT_IF,
            "--direction",
            "egress",
            "--json",
        ])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    for (n, ip) in [SERVER_V4, SERVER_V6].into_iter().enumerate() {
        let sent = pattern(ECHO_BYTES, 20 + n);
        let received_before = echo.data().len();
        let reply = echo_round(&topo, ip, &sent, &cmd);
        let at_server = echo.data()[received_before..].to_vec();
        assert!(
            !differing_words(&sent, &at_server).is_empty(),
            "over {ip} the server received the request undamaged under `{cmd}`"
        );
        // Only the client's egress acts: the reply is what the server got.
        assert_eq!(
            reply, at_server,
            "over {ip} the reply must be exactly what the server received"
        );
    }
    let exit = fb.finish();
    let rule = exit.rule(0);
    assert!(rule.acted_packets >= 2, "{rule:?}");
    csum_client.assert_unchanged(&topo.client);
    csum_server.assert_unchanged(&topo.server);
}

#[test]
fn corrupt_udp_at_server_ingress() {
    let (topo, csum_client, csum_server) = checksummed_topology("cor-udp");
    let mut fb = Launch::new(&topo.server, ["corrupt"])
        .args([
            "--port",
            &P.to_string(),
            "--iface",
            SERVER_IF,
            "--direction",
            "ingress",
            "--json",
        ])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    for (client, server) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
        let rx = udp_bind(&topo.server, SocketAddr::new(server, P));
        let tx = udp_bind(&topo.client, SocketAddr::new(client, 0));
        let sent: Vec<Vec<u8>> = (0..DATAGRAMS).map(|i| pattern(200, i)).collect();
        for datagram in &sent {
            tx.send_to(datagram, SocketAddr::new(server, P)).unwrap();
        }
        let got = count_datagrams(&rx, DATAGRAMS + 1, Duration::from_millis(500));
        assert_eq!(
            got.len(),
            DATAGRAMS,
            "over {server} every datagram must be delivered under `{cmd}`"
        );
        for (i, (sent, got)) in sent.iter().zip(&got).enumerate() {
            let words = differing_words(sent, got);
            assert_eq!(
                words.len(),
                1,
                "datagram {i} over {server}: exactly one 16-bit word must differ, not {words:?}"
            );
            let w = words[0] * 2;
            assert_eq!(
                [got[w], got[w + 1]],
                damaged([sent[w], sent[w + 1]], 1),
                "datagram {i} over {server}: the word at {w} must hold 0x5555 more"
            );
        }
    }
    let exit = fb.finish();
    let rule = exit.rule(0);
    assert_eq!(rule.matched_packets, 2 * DATAGRAMS as u64, "{rule:?}");
    assert_eq!(rule.acted_packets, 2 * DATAGRAMS as u64, "{rule:?}");
    csum_client.assert_unchanged(&topo.client);
    csum_server.assert_unchanged(&topo.server);
}

/// Two-byte echoes: one word, so every hit lands on the same one.
const SHORT_ECHOES: usize = 20;

/// `SHORT_ECHOES` two-byte echoes to `ip` from `client` on one connection;
/// the replies.
fn short_echoes(client: &Netns, ip: IpAddr) -> Vec<([u8; 2], Vec<u8>)> {
    let (stream, _) = connect_timed(client, SocketAddr::new(ip, P), Duration::from_secs(2));
    let mut stream = stream.unwrap_or_else(|e| panic!("connect to {ip}: {e}"));
    (0..SHORT_ECHOES)
        .map(|i| {
            let sent = [i as u8, 0x80 | i as u8];
            let reply = exchange(&mut stream, &sent, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("echo {i} from {ip}: {e}"));
            (sent, reply)
        })
        .collect()
}

/// Every echo must differ from what was sent, by exactly `hits` hits.
fn assert_all_damaged(echoes: &[([u8; 2], Vec<u8>)], ip: IpAddr, hits: u16, cmd: &str) {
    let intact = echoes.iter().filter(|(sent, got)| got == sent).count();
    assert_eq!(
        intact, 0,
        "{intact} of {SHORT_ECHOES} echoes over {ip} came back intact under `{cmd}`: {echoes:?}"
    );
    for (sent, got) in echoes {
        assert_eq!(
            got.as_slice(),
            damaged(*sent, hits),
            "over {ip} under `{cmd}`, {sent:?} must come back with {hits} hits of damage"
        );
    }
}

#[test]
fn corrupt_both_directions_never_cancels_on_an_echo() {
    let (topo, csum_client, csum_server) = checksummed_topology("cor-2x");
    let _echo = EchoServer::tcp(&topo.server, SocketAddr::new("::".parse().unwrap(), P));
    for ip in [SERVER_V4, SERVER_V6] {
        for (sent, got) in short_echoes(&topo.client, ip) {
            assert_eq!(
                got, sent,
                "control: without the fault the echo from {ip} is intact"
            );
        }
    }
    let mut fb = Launch::new(&topo.server, ["corrupt"])
        .args(["--port", &P.to_string(), "--iface", SERVER_IF, "--json"])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    for ip in [SERVER_V4, SERVER_V6] {
        // In at the server's ingress, back at its egress: two hits.
        assert_all_damaged(&short_echoes(&topo.client, ip), ip, 2, &cmd);
    }
    fb.finish();
    csum_client.assert_unchanged(&topo.client);
    csum_server.assert_unchanged(&topo.server);
}

#[test]
fn corrupt_on_loopback_never_cancels_on_an_echo() {
    let ns = Netns::new("cor-lo");
    ns.ip(&["link", "set", "lo", "up"]);
    let _echo = EchoServer::tcp(&ns, SocketAddr::new("::".parse().unwrap(), P));
    let local: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let mut fb = Launch::new(&ns, ["corrupt"])
        .args(["--port", &P.to_string(), "--iface", "lo", "--json"])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    for ip in local {
        // lo's egress and ingress, each way: four hits.
        assert_all_damaged(&short_echoes(&ns, ip), ip, 4, &cmd);
    }
    fb.finish();
}
