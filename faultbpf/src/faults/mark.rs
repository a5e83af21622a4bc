//! `mark` and `ecn`: tag the matched packets and let them pass.
//!
//! `mark` (`--value N`) sets `skb->mark` to N, so the host's own tc or
//! nftables rules act on exactly these packets (e.g. a netem class, a
//! policy route). The application sees nothing by itself.
//!
//! `ecn` (`mark --ecn`) sets ECN Congestion Experienced on ECN-capable IP
//! packets, as a congested router would: an ECN-enabled TCP sender halves
//! its window without losing a packet. Not-ECT packets pass unmarked
//! (uncounted).
//!
//! Hooks: tc ingress and egress (not XDP). A mark set at ingress is
//! visible to nftables prerouting/input; one set at egress only to what
//! runs after tc egress (the qdisc).
//!
//! Knobs: `mark` (u32, the skb mark; required for `mark`).

use faultbpf_common::FaultKind;

use super::{Fault, FaultDef, Param};
use crate::spec::SpecError;

const ABOUT: &str = "Tag matched packets (skb mark or ECN CE) and let them pass";
const LONG_ABOUT: &str = "Tag matched packets (skb mark or ECN CE) and let them pass\n\n\
    --value N sets the packet mark, so your own tc/nftables rules (a netem class, \
    a policy route) act on exactly these packets. --ecn sets Congestion \
    Experienced on ECN-capable packets, as a congested router would.";
const EXAMPLES: &str = "Examples:\n  \
    faultbpf mark --port 5432 --value 0x42       then: nft add rule ... meta mark 0x42 counter\n  \
    faultbpf mark --port 8080 --ecn              congestion signals without loss";

pub static DEF: FaultDef = FaultDef {
    name: "mark",
    command: "mark",
    about: ABOUT,
    long_about: LONG_ABOUT,
    examples: EXAMPLES,
    verb: "marked",
    kind: FaultKind::Mark,
    xdp: false,
    xdp_refusal: "cannot mark packets: XDP runs before the kernel builds the skb that \
        carries the mark",
    udp: true,
    params: &[Param {
        field: "mark",
        unit: "a u32 skb mark",
    }],
    mix_action: None,
    build: |spec| {
        let value = spec.mark.ok_or_else(|| {
            SpecError::new("mark", "the mark fault needs a `mark` value, e.g. 66")
        })?;
        Ok(Fault::Mark { value })
    },
};

pub static ECN_DEF: FaultDef = FaultDef {
    name: "ecn",
    command: "mark --ecn",
    about: ABOUT,
    long_about: LONG_ABOUT,
    examples: EXAMPLES,
    verb: "marked",
    kind: FaultKind::Ecn,
    xdp: false,
    xdp_refusal: "cannot rewrite packets it lets through (corrupt, ecn): faultbpf does \
        that on tc only, where the skb says how to fix their checksums",
    udp: true,
    params: &[],
    mix_action: None,
    build: |_| Ok(Fault::Ecn),
};
