//! `mark`: tag the matched packets and let them pass.
//!
//! `--value N` sets `skb->mark` to N, so the host's own tc or nftables
//! rules act on exactly these packets (e.g. a netem class, a policy route).
//! The application sees nothing by itself.
//!
//! `--ecn` sets ECN Congestion Experienced on ECN-capable IP packets, as a
//! congested router would: an ECN-enabled TCP sender halves its window
//! without losing a packet. Not-ECT packets pass unmarked (uncounted).
//!
//! Hooks: tc ingress and egress. A mark set at ingress is visible to
//! nftables prerouting/input; one set at egress only to what runs after tc
//! egress (the qdisc).

use faultbpf_common::FaultKind;

pub const KIND: FaultKind = FaultKind::Mark;
pub const ECN_KIND: FaultKind = FaultKind::Ecn;
