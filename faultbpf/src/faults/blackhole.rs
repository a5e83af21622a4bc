//! `blackhole`: the dependency's packets vanish, as if its host were
//! unplugged or a firewall silently dropped them.
//!
//! What the application sees: a `connect()` hangs until its own timeout (or
//! the kernel's, about 2 minutes for TCP) and an established connection
//! stalls, its sends still "succeed" while TCP retransmits with exponential
//! backoff; UDP datagrams are lost. Nothing is answered, so no error comes
//! back quickly: this is the failure that finds missing timeouts.
//!
//! Hooks: tc ingress and egress. At egress the drop is hidden from the local
//! stack (see `faultbpf-ebpf/src/actions.rs`), so the local sender backs off
//! as after real loss instead of seeing a local send error.
//!
//! Knobs: `--pct` (percent of matched packets dropped, 0 to 100, default
//! 100: below 100 this is packet loss rather than a blackhole).

use faultbpf_common::FaultKind;

/// The kernel action behind `blackhole`.
pub const KIND: FaultKind = FaultKind::Drop;
