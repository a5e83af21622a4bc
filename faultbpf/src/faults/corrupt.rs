//! `corrupt`: delivered data is wrong (Vaurien's `errors`, at packet level).
//!
//! What the application sees: reads return bytes that differ from what the
//! peer sent, one damaged 16-bit word per hit packet (0x5555 added, so an
//! echo through the rule both ways never comes back intact). The checksums are
//! fixed, so no layer below the application notices and the kernel's
//! checksum-error counters stay still: only end-to-end checks (TLS, an
//! application CRC) can catch it. TLS connections fail with a MAC error.
//!
//! Hooks: tc ingress and egress (not XDP). Packets with under 2 payload
//! bytes pass.
//!
//! Knobs: `--pct` (percent of matched packets corrupted).

use faultbpf_common::FaultKind;

use super::{Fault, FaultDef};

pub static DEF: FaultDef = FaultDef {
    name: "corrupt",
    command: "corrupt",
    about: "Deliver damaged data: flip bytes in payloads and fix the checksums",
    long_about: "Deliver damaged data: flip bytes in payloads and fix the checksums\n\n\
        One 16-bit word of each hit packet's payload is damaged (0x5555 added, so hits \
        on the way in and back never cancel out) and the TCP/UDP checksum corrected, so \
        nothing below the application notices: reads return wrong bytes, TLS fails with \
        a bad record MAC, an application CRC catches it.",
    examples: "Examples:\n  \
        faultbpf corrupt --port 11211 --pct 5        5 % of memcached packets damaged\n  \
        faultbpf corrupt --dport 8080 --pct 100      every request body to port 8080",
    verb: "corrupted",
    kind: FaultKind::Corrupt,
    xdp: false,
    xdp_refusal: "cannot rewrite packets it lets through (corrupt, ecn): faultbpf does \
        that on tc only, where the skb says how to fix their checksums",
    udp: true,
    params: &[],
    mix_action: Some("corrupt"),
    build: |_| Ok(Fault::Corrupt),
};
