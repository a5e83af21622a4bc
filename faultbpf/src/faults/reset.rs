//! `reset`: the port answers like a closed port or an iptables REJECT.
//!
//! What the application sees: a TCP `connect()` fails at once with
//! ECONNREFUSED (a RST|ACK answers the SYN); on an established connection
//! the next `send()`/`recv()` fails with ECONNRESET (a RST with exactly the
//! sequence number the sender expects). A connected UDP socket gets
//! ECONNREFUSED from an ICMP / ICMPv6 port unreachable. Answers take about
//! 0.1 ms: this is the fast failure, the opposite of `blackhole`.
//!
//! Hooks: tc ingress (the answer leaves by the same interface) and egress
//! (the answer is handed to the local stack), and XDP ingress (`XDP_TX`).
//! IPv4 and IPv6. Never answers a RST. UDP with IPv4 options or IPv6
//! extension headers is dropped without an answer.
//!
//! Knobs: `--pct` (percent of matched packets reset).

use faultbpf_common::FaultKind;

use super::{Fault, FaultDef};

pub static DEF: FaultDef = FaultDef {
    name: "reset",
    command: "reset",
    about: "Refuse connections and reset established ones, like a closed port or REJECT",
    long_about: "Refuse connections and reset established ones, like a closed port or REJECT\n\n\
        TCP: connect() fails at once with ECONNREFUSED; on an open connection the next \
        send()/recv() fails with ECONNRESET. UDP: a connected socket gets ECONNREFUSED \
        (an ICMP port unreachable answers). Answers come from the kernel in about \
        0.1 ms: the fast failure, where blackhole is the slow one.",
    examples: "Examples:\n  \
        faultbpf reset --port 5432                   Postgres refuses and drops every connection\n  \
        faultbpf reset --port 443 --pct 30 --per flow   30 % of connections fail, the rest are clean\n  \
        faultbpf reset --port 53 --proto udp         DNS queries get port unreachable",
    verb: "reset",
    kind: FaultKind::Reset,
    xdp: true,
    xdp_refusal: "",
    udp: true,
    params: &[],
    mix_action: Some("reset"),
    build: |_| Ok(Fault::Reset),
};
