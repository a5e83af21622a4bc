//! Issue 12, "Nothing slips past": both hooks parse the same headers, and
//! what cannot be parsed completely passes untouched.
//!
//! Raw frames to a blackholed port are sent with an AF_PACKET socket on
//! the client, once with faultbpf at the client's egress and once at the
//! server's ingress, and faultbpf's counters say which it acted on:
//! - matched on both hooks: QinQ (802.1ad + 802.1Q) over IPv4 and IPv6, one
//!   802.1Q tag, and IPv6 with 8 extension headers (the documented limit);
//! - passed untouched on both hooks: IPv4 total length past the frame,
//!   IPv4 total length 0 and IPv6 payload length 0 on packets that are not
//!   BIG TCP, IPv6 with 9 extension headers, and three VLAN tags. At the
//!   client's egress those frames must also reach the server's veth.
//!
//! On main, egress let QinQ through while ingress dropped it, 7 or 8
//! extension headers passed, and the three malformed lengths were dropped.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use faultbpf_tests::{CLIENT_IF, Launch, PacketSocket, SERVER_IF, Topology, frames};

/// The blackholed port.
const A: u16 = 257;
const C4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const S4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
const S6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2);
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// Where faultbpf runs.
#[derive(Clone, Copy, Debug)]
enum Hook {
    ClientEgress,
    ServerIngress,
}

struct Frames {
    dst: [u8; 6],
    src: [u8; 6],
}

impl Frames {
    /// An Ethernet frame with VLAN tags (outermost first) before `ethertype`.
    fn tagged(&self, tags: &[u16], ethertype: u16, packet: &[u8]) -> Vec<u8> {
        let Some((&outer, inner)) = tags.split_first() else {
            return frames::ethernet(self.dst, self.src, ethertype, packet);
        };
        let mut payload = Vec::new();
        for (i, tpid) in inner.iter().chain([&ethertype]).enumerate() {
            payload.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI: VLAN id
            payload.extend_from_slice(&tpid.to_be_bytes());
        }
        payload.extend_from_slice(packet);
        frames::ethernet(self.dst, self.src, outer, &payload)
    }

    fn udp4_packet(&self, payload: &[u8]) -> Vec<u8> {
        let udp = frames::udp4(40001, A, payload);
        frames::ipv4(C4, S4, frames::IPPROTO_UDP, &[], 0, &udp)
    }

    /// IPv6/UDP behind `ext` destination-options headers.
    fn udp6_packet(&self, ext: usize, payload: &[u8]) -> Vec<u8> {
        let mut next = Vec::new();
        for i in 0..ext {
            let nh = if i + 1 == ext {
                frames::IPPROTO_UDP
            } else {
                frames::IPPROTO_DSTOPTS
            };
            // Next header, length 0 (8 bytes), a 4-byte PadN option.
            next.extend_from_slice(&[nh, 0, 1, 4, 0, 0, 0, 0]);
        }
        next.extend(frames::udp6(C6, S6, 40002, A, payload));
        let first = if ext == 0 {
            frames::IPPROTO_UDP
        } else {
            frames::IPPROTO_DSTOPTS
        };
        frames::ipv6(C6, S6, first, &next)
    }

    fn v4(&self, tags: &[u16], packet: &[u8]) -> Vec<u8> {
        self.tagged(tags, frames::ETH_P_IP, packet)
    }

    fn v6(&self, tags: &[u16], packet: &[u8]) -> Vec<u8> {
        self.tagged(tags, frames::ETH_P_IPV6, packet)
    }

    /// Frames every hook must match (and the blackhole drop).
    fn must_match(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (
                "QinQ (802.1ad + 802.1Q) IPv4/UDP",
                self.v4(&[ETH_P_8021AD, ETH_P_8021Q], &self.udp4_packet(b"qinq4")),
            ),
            (
                "QinQ (802.1ad + 802.1Q) IPv6/UDP",
                self.v6(&[ETH_P_8021AD, ETH_P_8021Q], &self.udp6_packet(0, b"qinq6")),
            ),
            (
                "802.1Q IPv4/UDP",
                self.v4(&[ETH_P_8021Q], &self.udp4_packet(b"dot1q")),
            ),
            (
                "IPv6/UDP behind 8 extension headers",
                self.v6(&[], &self.udp6_packet(8, b"ext8")),
            ),
        ]
    }

    /// Frames no hook may touch.
    fn must_pass(&self) -> Vec<(&'static str, Vec<u8>)> {
        let with_tot_len = |tot_len: u16| {
            let mut ip = self.udp4_packet(b"bad-length");
            ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let sum = frames::checksum(&ip[..20]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            self.v4(&[], &ip)
        };
        let long = u16::try_from(self.udp4_packet(b"bad-length").len() + 200).unwrap();
        let mut v6_zero = self.udp6_packet(0, b"zero-payload-length");
        v6_zero[4..6].copy_from_slice(&[0, 0]);
        vec![
            ("IPv4 total length past the frame", with_tot_len(long)),
            ("IPv4 total length 0 (not BIG TCP)", with_tot_len(0)),
            (
                "IPv6 payload length 0 (not BIG TCP)",
                self.v6(&[], &v6_zero),
            ),
            (
                "IPv6/UDP behind 9 extension headers",
                self.v6(&[], &self.udp6_packet(9, b"ext9")),
            ),
            (
                "three VLAN tags",
                self.v4(
                    &[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
                    &self.udp4_packet(b"three-tags"),
                ),
            ),
        ]
    }
}

/// Sends `cases` from the client under a blackhole on A at `hook`; returns
/// faultbpf's (matched, acted) and the cases not seen on the server's veth.
fn run(topo: &Topology, hook: Hook, cases: &[(&'static str, Vec<u8>)]) -> (u64, u64, Vec<String>) {
    let port = A.to_string();
    let (ns, ifname, direction) = match hook {
        Hook::ClientEgress => (&topo.client, CLIENT_IF, "egress"),
        Hook::ServerIngress => (&topo.server, SERVER_IF, "ingress"),
    };
    let mut fb = Launch::new(ns, ["blackhole"])
        .args([
            "--port",
            &port,
            "--iface",
            ifname,
            "--direction",
            direction,
            "--json",
        ])
        .standalone()
        .start();
    let capture = PacketSocket::open(&topo.server, SERVER_IF);
    let sender = PacketSocket::open(&topo.client, CLIENT_IF);
    for (_, frame) in cases {
        sender.send(frame);
    }
    // The receiving stack moves a frame's outer VLAN tag out of the data
    // before the capture sees it (`skb_vlan_untag`): either form counts.
    let untagged = |frame: &[u8]| -> Vec<u8> {
        let mut v = frame[..12].to_vec();
        v.extend_from_slice(&frame[16..]);
        v
    };
    let seen =
        |got: &[Vec<u8>], frame: &Vec<u8>| got.iter().any(|g| g == frame || *g == untagged(frame));
    let got = capture.capture(Duration::from_secs(2), |got| {
        cases.iter().all(|(_, f)| seen(got, f))
    });
    let missing = cases
        .iter()
        .filter(|(_, f)| !seen(&got, f))
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(fb.is_running(), "faultbpf died:\n{}", fb.stderr());
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    let rule = exit.rule(0);
    (rule.matched_packets, rule.acted_packets, missing)
}

fn both_hooks_parse_the_same(tag: &str, hook: Hook) {
    let topo = Topology::new(tag);
    let f = Frames {
        dst: topo.server.mac(SERVER_IF),
        src: topo.client.mac(CLIENT_IF),
    };
    let mut failures = Vec::new();

    let cases = f.must_match();
    let names: Vec<_> = cases.iter().map(|(n, _)| *n).collect();
    let (matched, acted, missing) = run(&topo, hook, &cases);
    if matched != cases.len() as u64 || acted != cases.len() as u64 {
        failures.push(format!(
            "of {names:?}, {matched} matched and {acted} dropped, not all {}",
            cases.len()
        ));
    }
    if let Hook::ClientEgress = hook {
        let through: Vec<_> = names
            .iter()
            .filter(|n| !missing.iter().any(|m| m == *n))
            .collect();
        if !through.is_empty() {
            failures.push(format!("passed the egress blackhole: {through:?}"));
        }
    }

    let cases = f.must_pass();
    let names: Vec<_> = cases.iter().map(|(n, _)| *n).collect();
    let (matched, acted, missing) = run(&topo, hook, &cases);
    if matched != 0 || acted != 0 {
        failures.push(format!(
            "of {names:?}, which must pass untouched, {matched} matched and {acted} were dropped"
        ));
    }
    if let Hook::ClientEgress = hook
        && !missing.is_empty()
    {
        failures.push(format!("never reached the server's veth: {missing:?}"));
    }
    assert!(
        failures.is_empty(),
        "{hook:?}:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn qinq_ext_headers_and_bad_lengths_at_egress() {
    both_hooks_parse_the_same("slip-eg", Hook::ClientEgress);
}

#[test]
fn qinq_ext_headers_and_bad_lengths_at_ingress() {
    both_hooks_parse_the_same("slip-in", Hook::ServerIngress);
}
