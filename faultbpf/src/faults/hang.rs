//! `hang`: connections open, then nothing more gets through (Vaurien's
//! `hang`).
//!
//! What the application sees: `connect()` succeeds, because SYN, SYN|ACK
//! and pure ACKs pass; every TCP segment that carries payload, in either
//! direction, vanishes, so the first `recv()` waits until the
//! application's read timeout. The server never sees the request. This is
//! the fault that proves read timeouts exist. UDP is not affected (a UDP
//! datagram is all payload: use `blackhole`).
//!
//! Hooks: tc ingress and egress; egress drops look like network loss.
//!
//! Knobs: `--pct` (percent of payload segments dropped).

use faultbpf_common::FaultKind;

pub const KIND: FaultKind = FaultKind::Hang;
