//! Opening the kernel object and verifying its programs, fast: time to
//! apply a fault is part of the product (`faultbpf blackhole` should bite
//! in well under 150 ms, see `cargo xtask bench`).
//!
//! Two costs dominate a start-up and neither needs paying in sequence:
//! - aya 0.14's `EbpfLoader::new()` always parses the kernel's BTF
//!   (`/sys/kernel/btf/vmlinux`, ~220 ms measured here) to apply CO-RE
//!   relocations, and our object has none. [`loader`] builds the loader on
//!   a thread with the file hidden by a private mount (`mountns`), so the
//!   parse fails fast and aya goes on without kernel BTF (as it does on
//!   kernels without BTF). If that thread cannot get its own mount
//!   namespace (no CAP_SYS_ADMIN, a seccomp filter), it parses as usual.
//! - The verifier walks each tc program (~100 ms each here); [`programs`]
//!   verifies them on separate threads, so two CPUs halve the wait.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use aya::{
    EbpfLoader,
    programs::{Program, ProgramError},
};
use faultbpf_common::TRACEABLE_GLOBAL;

use crate::mountns;

/// Whether programs loaded from now on can be traced (`faultbpf trace`).
static TRACEABLE: AtomicBool = AtomicBool::new(false);

/// Loads the programs to come traceable (`--traceable`; the daemon always
/// does): their trace points are kept, which doubles the verifier's work
/// at start; off, the verifier drops them as dead code.
pub fn set_traceable(on: bool) {
    TRACEABLE.store(on, Ordering::Relaxed);
}

pub fn traceable() -> bool {
    TRACEABLE.load(Ordering::Relaxed)
}

/// An `EbpfLoader` that does not parse the kernel's BTF when it can help
/// it: built where /sys/kernel/btf is an empty tmpfs.
pub fn loader() -> EbpfLoader<'static> {
    let mut loader = mountns::with_fresh_mount(c"tmpfs", c"/sys/kernel/btf", EbpfLoader::new)
        .unwrap_or_else(|_| EbpfLoader::new());
    if traceable() {
        loader.override_global(TRACEABLE_GLOBAL, &1u8, true);
    }
    loader
}

/// Loads (verifies) `programs` at once, one thread each, and gives each
/// one's result, by name.
pub fn programs<'a>(
    programs: Vec<(&'a str, &'a mut Program)>,
) -> Vec<(&'a str, Result<(), ProgramError>)> {
    thread::scope(|s| {
        let handles: Vec<_> = programs
            .into_iter()
            .map(|(name, p)| (name, s.spawn(move || load(p))))
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| (name, h.join().expect("a verifier thread panicked")))
            .collect()
    })
}

fn load(program: &mut Program) -> Result<(), ProgramError> {
    match program {
        Program::SchedClassifier(p) => p.load(),
        Program::Xdp(p) => p.load(),
        other => unreachable!("faultbpf has no {:?} program", other.prog_type()),
    }
}
