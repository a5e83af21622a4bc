//! `hang`: connections open, then nothing more gets through (Vaurien's
//! `hang`).
//!
//! What the application sees: `connect()` succeeds, because SYN, SYN|ACK
//! and pure ACKs pass; every TCP segment that carries payload, in either
//! direction, vanishes, so the first `recv()` waits until the
//! application's read timeout. The server never sees the request. This is
//! the fault that proves read timeouts exist. UDP has no connection to
//! keep open, so `hang` refuses `--proto udp` (use `blackhole`); with
//! `--proto all` it acts on TCP only.
//!
//! Hooks: tc ingress and egress, XDP ingress; egress drops look like
//! network loss.
//!
//! Knobs: `--pct` (percent of payload segments dropped).

use faultbpf_common::FaultKind;

use super::{Fault, FaultDef};

pub static DEF: FaultDef = FaultDef {
    name: "hang",
    command: "hang",
    about: "Let connections open, then let no data through (reads time out)",
    long_about: "Let connections open, then let no data through (reads time out)\n\n\
        The TCP handshake completes, so connect() succeeds; every segment that carries \
        data, in either direction, vanishes, so the first read waits until the \
        application's read timeout. The server never sees the request. TCP only: UDP \
        has no connection to keep open (use blackhole).",
    examples: "Examples:\n  \
        faultbpf hang --port 5432 --for 30s          queries hang; does the client time out?\n  \
        faultbpf hang --port 6379 --pct 10           one data segment in ten vanishes",
    verb: "dropped",
    kind: FaultKind::Hang,
    xdp: true,
    xdp_refusal: "",
    udp: false,
    params: &[],
    mix_action: Some("hang"),
    build: |_| Ok(Fault::Hang),
};
