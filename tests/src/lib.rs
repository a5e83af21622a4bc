//! Helpers for faultbpf's privileged end-to-end tests.
//!
//! Every test builds its own client and server network namespaces joined by a
//! veth pair ([`Topology`]), runs the real `faultbpf` binary inside one of them
//! ([`Faultbpf`]) and checks what the sockets on the other side see. Nothing
//! here ever touches an interface or address of the root namespace: the only
//! addresses used are 10.200.0.0/16 and fd00:200::/64 inside the test's own
//! namespaces, and every namespace and process is removed on `Drop`, so a
//! failing test cleans up too.
//!
//! The tests need root; they panic (never pass silently) when run without it.

pub mod attach;
pub mod daemon;
pub mod delay_kit;
pub mod deps;
pub mod fault_kit;
pub mod faultbpf;
pub mod frames;
pub mod net;
pub mod netns;

pub use attach::{
    EGRESS_PROGRAM, INGRESS_PROGRAM, assert_nothing_attached, has_clsact, program_name, tc_filters,
    tcx_program_names,
};
pub use aya::programs::tc::TcAttachType;
pub use faultbpf::{Counters, Exit, Faultbpf};
pub use net::*;
pub use netns::*;

use std::{
    process::ExitStatus,
    thread,
    time::{Duration, Instant},
};

/// Panics with a clear message unless the tests run as root: creating
/// namespaces and loading BPF programs both need it, and a test that skipped
/// itself here would hide a broken CI setup.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "faultbpf-tests must run as root (use `cargo xtask test`); euid is {euid}"
    );
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still
/// running then (the caller kills it and says why).
pub fn wait_within(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
