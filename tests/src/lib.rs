//! Helpers for faultbpf's privileged end-to-end tests.
//!
//! Every test builds its own client and server network namespaces joined by a
//! veth pair ([`Topology`]), runs the real `faultbpf` binary inside one of them
//! (always through [`Launch`], which makes every invocation say where its
//! rules go) and checks what the sockets on the other side see. Nothing
//! here ever touches an interface or address of the root namespace: the only
//! addresses used are 10.200.0.0/16 and fd00:200::/64 inside the test's own
//! namespaces, and every namespace and process is removed on `Drop`, so a
//! failing test cleans up too.
//!
//! The tests need root; they panic (never pass silently) when run without it.

pub mod attach;
pub mod cgroup;
pub mod daemon;
pub mod delay_kit;
pub mod deps;
pub mod dist;
pub mod engine;
pub mod fault_kit;
pub mod frames;
pub mod http;
pub mod launch;
pub mod net;
pub mod netns;
pub mod openapi;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod temp;
pub mod user;

pub use attach::{
    EGRESS_PROGRAM, INGRESS_PROGRAM, assert_nothing_attached, has_clsact, program_name, tc_filters,
    tcx_program_names,
};
pub use aya::programs::tc::TcAttachType;
pub use launch::{ACTIVE_PREFIX, Launch, NO_DAEMON, faultbpf_bin};
pub use net::*;
pub use netns::*;
pub use process::{Counters, Exit, Proc, run_bounded, wait_within};

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

/// True in the VM lane (`cargo xtask vm`), whose root filesystem is the
/// host's, mounted read-only, and whose CPU is emulated: load tests scale
/// down there.
pub fn root_is_read_only() -> bool {
    let root = std::ffi::CString::new("/").unwrap();
    // SAFETY: statvfs is plain data; all-zero is a valid value to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a live statvfs to write into.
    let rc = unsafe { libc::statvfs(root.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}
