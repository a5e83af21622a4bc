//! `duplicate`: each hit packet is delivered twice, as a network that
//! duplicates would (netem's `duplicate`, with no sch_netem: the kernel
//! clones the packet, see `faultbpf-ebpf/src/fault/duplicate.rs`).
//!
//! What the application sees: UDP datagrams arrive twice (an application
//! that is not idempotent processes a request twice); TCP hides it, but the
//! receiver answers each duplicate segment with a D-SACK
//! (`TcpExtTCPDSACKOldSent` there, `TcpExtTCPDSACKRecv` at the sender). A
//! duplicate is never duplicated again.
//!
//! Hooks: tc ingress and egress (not XDP). The clone leaves with skb mark 0.
//!
//! Knobs: `--pct` (percent of matched packets duplicated).

use faultbpf_common::FaultKind;

use super::{Fault, FaultDef};

pub static DEF: FaultDef = FaultDef {
    name: "duplicate",
    command: "duplicate",
    about: "Deliver matched packets twice, as a network that duplicates would",
    long_about: "Deliver matched packets twice, as a network that duplicates would\n\n\
        Each hit packet is cloned in the kernel and both copies go on: UDP \
        applications receive the datagram twice, TCP receivers see duplicate segments \
        (and answer them with D-SACKs). A copy is never copied again. No netem needed.",
    examples: "Examples:\n  \
        faultbpf duplicate --port 5353 --proto udp       every datagram arrives twice\n  \
        faultbpf duplicate --port 8080 --pct 10          10 % of the packets twice",
    verb: "duplicated",
    kind: FaultKind::Duplicate,
    xdp: false,
    xdp_refusal: "cannot duplicate packets: faultbpf clones them on tc only, where the \
        kernel has an skb to clone",
    udp: true,
    params: &[],
    mix_action: Some("duplicate"),
    build: |_| Ok(Fault::Duplicate),
};
