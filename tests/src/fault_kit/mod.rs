//! Helpers for the end-to-end tests of the fault kinds beyond blackhole
//! (reset, hang, corrupt, mark, chaos) and of the rule options they share
//! (`--peer`, `--per flow`, port ranges, concurrent invocations).
//!
//! - [`Star`]: a server namespace with two client namespaces on two veth
//!   pairs, for `--peer`.
//! - [`EchoServer`] and socket helpers (timed connect, TOS/traffic class
//!   of received datagrams).
//! - Kernel-side views: checksum-error counters (`nstat`), transmit
//!   checksum offload (`ethtool`), nftables counters.

mod kernel;
mod sockets;
mod star;

pub use kernel::{CsumErrors, nft, nft_counter_packets, nstat, tx_checksum_off};
pub use sockets::{
    EchoServer, connect_timed, exchange, recv_with_tos, set_recv_tos, set_tos, udp_connect,
};
pub use star::{STAR_A_IF, STAR_B_IF, Star, StarClient};
