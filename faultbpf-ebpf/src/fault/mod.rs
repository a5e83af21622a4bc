//! The faults, one file each, on the kernel side: what each does to a
//! matched packet that the draw selected. The hooks' verdict code
//! (`actions.rs` for tc, `xdp.rs` for XDP) calls into these and turns what
//! they report into its own return value. User space has its twin,
//! `faultbpf/src/faults/<kind>.rs`, with the wire names and knobs.

pub mod corrupt;
pub mod delay;
pub mod dns;
pub mod drop;
pub mod duplicate;
pub mod ecn;
pub mod hang;
pub mod mark;
pub mod reset;
pub mod throttle;
