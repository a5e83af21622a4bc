//! Issue 2, test 8: frames the kernel program cannot or should not parse as a
//! match (truncated headers, IP options, IPv6 extension headers, runts) must
//! pass untouched: a parser bug must never drop unmatched traffic. The frames
//! are sent with an AF_PACKET socket on the client, whose transmit path runs
//! the client's tc egress hook, where faultbpf sits.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use faultbpf_tests::{
    CLIENT_IF, CLIENT_V4, Launch, PacketSocket, Proc, SERVER_IF, SERVER_V4, Topology,
    count_datagrams, frames, udp_bind,
};

/// The blackholed port. 257 is 0x0101, the bytes of two IPv4 NOP options or
/// of a 1-byte IPv6 PadN option: a parser that skips IHL or the extension
/// headers would read those bytes as this port and drop the packet.
const A: u16 = 257;
/// The port the malformed traffic goes to.
const B: u16 = 5001;

const C4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const S4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
const S6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2);

/// Four NOP options: IHL 6.
const IPV4_OPTIONS: [u8; 4] = [1, 1, 1, 1];
/// A destination-options header carrying two 1-byte PadN options, then UDP.
const DSTOPTS: [u8; 8] = [frames::IPPROTO_UDP, 0, 1, 1, 0, 1, 1, 0];

/// Builds client-to-server frames with the veths' real MAC addresses.
struct Frames {
    dst: [u8; 6],
    src: [u8; 6],
}

impl Frames {
    fn new(topo: &Topology) -> Self {
        Frames {
            dst: topo.server.mac(SERVER_IF),
            src: topo.client.mac(CLIENT_IF),
        }
    }

    fn v4(&self, packet: &[u8]) -> Vec<u8> {
        frames::ethernet(self.dst, self.src, frames::ETH_P_IP, packet)
    }

    fn v6(&self, packet: &[u8]) -> Vec<u8> {
        frames::ethernet(self.dst, self.src, frames::ETH_P_IPV6, packet)
    }

    /// A well-formed IPv4/UDP datagram with IP options.
    fn v4_options_udp(&self, port: u16, payload: &[u8]) -> Vec<u8> {
        let udp = frames::udp4(40002, port, payload);
        self.v4(&frames::ipv4(
            C4,
            S4,
            frames::IPPROTO_UDP,
            &IPV4_OPTIONS,
            0,
            &udp,
        ))
    }

    /// A well-formed IPv6/UDP datagram behind a destination-options header.
    fn v6_dstopts_udp(&self, port: u16, payload: &[u8]) -> Vec<u8> {
        let mut next = DSTOPTS.to_vec();
        next.extend(frames::udp6(C6, S6, 40003, port, payload));
        self.v6(&frames::ipv6(C6, S6, frames::IPPROTO_DSTOPTS, &next))
    }
}

/// Starts the blackhole on port A at the client's veth (both directions).
fn blackhole_a(topo: &Topology) -> Proc {
    Launch::new(&topo.client, ["blackhole"])
        .args(["--port", &A.to_string(), "--iface", CLIENT_IF, "--json"])
        .standalone()
        .start()
}

/// Sends the `cases`' frames from the client's veth and returns the names of
/// those that did not reach the server's veth (exact bytes) within 3 s.
fn send_and_capture(topo: &Topology, cases: &[(&'static str, Vec<u8>)]) -> Vec<&'static str> {
    let capture = PacketSocket::open(&topo.server, SERVER_IF);
    let sender = PacketSocket::open(&topo.client, CLIENT_IF);
    for (_, frame) in cases {
        sender.send(frame);
    }
    let seen = |got: &[Vec<u8>], frame: &Vec<u8>| got.iter().any(|g| g == frame);
    let got = capture.capture(Duration::from_secs(3), |got| {
        cases.iter().all(|(_, f)| seen(got, f))
    });
    cases
        .iter()
        .filter(|(_, f)| !seen(&got, f))
        .map(|(name, _)| *name)
        .collect()
}

fn payloads(socket: &UdpSocket) -> Vec<Vec<u8>> {
    count_datagrams(socket, 100, Duration::from_millis(500))
}

#[test]
fn malformed_and_unusual_frames_pass_untouched() {
    let topo = Topology::new("malf");
    let f = Frames::new(&topo);
    let rx_a = udp_bind(&topo.server, SocketAddr::new("::".parse().unwrap(), A));
    let rx_b = udp_bind(&topo.server, SocketAddr::new("::".parse().unwrap(), B));
    let mut fb = blackhole_a(&topo);

    let whole_udp = frames::udp4(40001, B, b"fbt-truncated");
    let truncated = frames::ipv4(C4, S4, frames::IPPROTO_UDP, &[], 0, &whole_udp[..4]);
    let mut padded = f.v4(&truncated);
    padded.resize(60, 0); // Ethernet padding after the IP packet's end
    let mut ihl4 = frames::ipv4(C4, S4, frames::IPPROTO_UDP, &[], 0, &whole_udp);
    ihl4[0] = 0x44;
    let v6 = frames::ipv6(
        C6,
        S6,
        frames::IPPROTO_UDP,
        &frames::udp6(C6, S6, 40004, B, b"x"),
    );
    let cases = [
        (
            "IPv4, UDP header cut to 4 bytes, frame ends there",
            f.v4(&truncated),
        ),
        ("IPv4, UDP header cut to 4 bytes, Ethernet padding", padded),
        (
            "IPv4/UDP with IP options (IHL 6)",
            f.v4_options_udp(B, b"fbt-ipv4-options"),
        ),
        (
            "IPv6/UDP after a destination-options header",
            f.v6_dstopts_udp(B, b"fbt-ipv6-dstopts"),
        ),
        (
            "Ethernet frame shorter than an IPv4 header",
            f.v4(&[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17]),
        ),
        ("IPv4 header with IHL 4 (< 5)", f.v4(&ihl4)),
        ("IPv6 frame shorter than its fixed header", f.v6(&v6[..20])),
    ];
    let missing = send_and_capture(&topo, &cases);
    assert!(
        missing.is_empty(),
        "dropped although not matching port {A}: {missing:?}"
    );

    // The well-formed ones also get through the kernel stack to the socket.
    let got = payloads(&rx_b);
    for want in [&b"fbt-ipv4-options"[..], b"fbt-ipv6-dstopts"] {
        assert!(
            got.iter().any(|p| p == want),
            "{} did not reach port {B}: got {got:?}",
            String::from_utf8_lossy(want)
        );
    }

    // The program is still alive and still drops port A.
    assert!(fb.is_running(), "faultbpf died:\n{}", fb.stderr());
    let tx = udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
    tx.send_to(b"to A", SocketAddr::new(SERVER_V4, A)).unwrap();
    tx.send_to(b"to B", SocketAddr::new(SERVER_V4, B)).unwrap();
    assert_eq!(
        payloads(&rx_b),
        vec![b"to B".to_vec()],
        "port {B} must still work"
    );
    assert!(
        payloads(&rx_a).is_empty(),
        "port {A} must still be blackholed"
    );
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    let rule = exit.rule(0);
    assert_eq!(
        rule.acted_packets, 1,
        "only the datagram to A is dropped: {rule:?}"
    );
}

/// Sends `frame` (UDP to port A) from the client: it must reach the server's
/// socket without faultbpf (so it is valid) and be dropped and counted with.
fn assert_dropped(tag: &str, frame: impl Fn(&Frames) -> Vec<u8>) {
    let topo = Topology::new(tag);
    let frame = frame(&Frames::new(&topo));
    let rx_a = udp_bind(&topo.server, SocketAddr::new("::".parse().unwrap(), A));
    let sender = PacketSocket::open(&topo.client, CLIENT_IF);
    sender.send(&frame);
    assert_eq!(payloads(&rx_a).len(), 1, "control: the frame must be valid");

    let mut fb = blackhole_a(&topo);
    sender.send(&frame);
    let got = payloads(&rx_a);
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    assert!(
        got.is_empty(),
        "reached port {A} under the blackhole: {got:?}"
    );
    let rule = exit.rule(0);
    assert_eq!(rule.acted_packets, 1, "{rule:?}");
}

/// Beyond the issue's list, from the contract ("a packet matches when its
/// TCP/UDP destination OR source port equals P"): the port is found behind
/// IP options.
#[test]
fn udp_behind_ip_options_is_matched() {
    assert_dropped("malf-opt4", |f| f.v4_options_udp(A, b"fbt-ipv4-options"));
}

/// Beyond the list, like the one above for IPv6 extension headers.
#[test]
fn udp_behind_ipv6_ext_header_is_matched() {
    assert_dropped("malf-opt6", |f| f.v6_dstopts_udp(A, b"fbt-ipv6-dstopts"));
}

/// Beyond the list: a non-first IPv4 fragment carries no UDP header;
/// bytes where a header would be must not be read as ports. Here they read
/// as port A.
#[test]
fn non_first_fragment_is_not_matched_by_its_payload() {
    let topo = Topology::new("malf-frag");
    let f = Frames::new(&topo);
    let mut fb = blackhole_a(&topo);
    let mut payload = A.to_be_bytes().repeat(2); // "ports" A and A
    payload.extend_from_slice(b"fbt-fragment-tail");
    // Fragment offset 185 * 8 = 1480 bytes, no more fragments.
    let fragment = f.v4(&frames::ipv4(
        C4,
        S4,
        frames::IPPROTO_UDP,
        &[],
        185,
        &payload,
    ));
    let missing = send_and_capture(&topo, &[("non-first IPv4 fragment", fragment)]);
    assert!(missing.is_empty(), "dropped: {missing:?}");
    assert!(fb.is_running(), "faultbpf died:\n{}", fb.stderr());
    fb.stop(libc::SIGTERM).assert_success();
}
