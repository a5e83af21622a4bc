//! `blackhole` (`FaultKind::Drop`): the packet vanishes, as if lost in the
//! network. The application sees a `connect()` or read that times out,
//! never an error from its own host. tc (both directions) and XDP
//! (`XDP_DROP`, in `xdp.rs`).
//!
//! The tc verdict depends on the hook:
//! - Ingress: `TC_ACT_SHOT`. The sender is remote; the packet is just gone.
//! - Egress: `TC_ACT_SHOT` would be seen by the local sender (the hook
//!   returns NET_XMIT_DROP: TCP re-sends every 0.5 s without backoff and a
//!   `connect()` fails after ~6 s instead of ~135 s after real loss).
//!   `TC_ACT_STOLEN` hides the drop on the netlink (cls_bpf) path, but under
//!   TCX (kernel >= 6.6) it is no verdict at all and the packet passes. What
//!   works on both: `bpf_redirect` to an ifindex that cannot exist and
//!   return its `TC_ACT_REDIRECT`; the egress hook reports NET_XMIT_SUCCESS,
//!   the redirect finds no device and frees the packet, and TCP backs off on
//!   its RTO exactly as after loss in the network.

use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::bpf_redirect};

use crate::hook::Hook;

/// ifindex 0 is never given to a device, so a redirect there always drops.
const NOWHERE_IFINDEX: u32 = 0;

/// The tc verdict that drops a packet on `hook` as the network would.
#[inline(always)]
pub fn tc_verdict(hook: Hook) -> i32 {
    match hook {
        Hook::Ingress => TC_ACT_SHOT as i32,
        // SAFETY: helper without preconditions; flags 0 is valid.
        Hook::Egress => unsafe { bpf_redirect(NOWHERE_IFINDEX, 0) as i32 },
    }
}
