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
//! (the answer is handed to the local stack). IPv4 and IPv6. Never answers
//! a RST. UDP with IPv4 options or IPv6 extension headers is dropped
//! without an answer.
//!
//! Knobs: `--pct` (percent of matched packets reset).

use faultbpf_common::FaultKind;

pub const KIND: FaultKind = FaultKind::Reset;
