//! `hang`: connections open (the handshake and pure ACKs pass), then no
//! data gets through: the application's reads time out on a connection
//! that looks alive. TCP segments with payload are dropped as `drop.rs`
//! drops them; tc (both directions) and XDP.

use crate::{flow::Flow, packet::Packet, parse};

/// True for a TCP segment carrying payload: the only packets `hang` drops.
#[inline(always)]
pub fn applies<P: Packet>(ctx: &P, flow: &Flow) -> bool {
    matches!(parse::tcp_payload_len(ctx, flow), Some(n) if n > 0)
}
