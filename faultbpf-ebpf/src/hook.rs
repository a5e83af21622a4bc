//! Which hook a program runs on. A tc program cannot ask the kernel, so
//! each entry point in `main.rs` passes its own; the matcher (a rule's
//! directions, which address is the remote one), the tc drop verdict and
//! the reset answer's way back all depend on it.

use faultbpf_common::{DIR_EGRESS, DIR_INGRESS};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Packets arriving on the interface (tc ingress or XDP).
    Ingress,
    /// Packets the host sends out of the interface (tc egress).
    Egress,
}

impl Hook {
    /// The `RuleValue::directions` bit of this hook.
    #[inline(always)]
    pub fn dir_bit(self) -> u8 {
        match self {
            Hook::Ingress => DIR_INGRESS,
            Hook::Egress => DIR_EGRESS,
        }
    }
}
