//! Opening the kernel object and verifying its programs, fast: time to
//! apply a fault is part of the product (`faultbpf blackhole` should bite
//! in well under 150 ms, see `cargo xtask bench`).
//!
//! Two costs dominate a start-up and neither needs paying in sequence:
//! - aya 0.14's `EbpfLoader::new()` always parses the kernel's BTF
//!   (`/sys/kernel/btf/vmlinux`, ~220 ms measured here) to apply CO-RE
//!   relocations, and our object has none. [`loader`] builds the loader in
//!   a thread of its own with the file hidden by a private mount, so the
//!   parse fails fast and aya goes on without kernel BTF (as it does on
//!   kernels without BTF). If that thread cannot get its own mount
//!   namespace (no CAP_SYS_ADMIN, a seccomp filter), it parses as usual.
//! - The verifier walks each tc program (~100 ms each here); [`programs`]
//!   verifies them on separate threads, so two CPUs halve the wait.

use std::{ffi::CStr, thread};

use aya::{
    EbpfLoader,
    programs::{Program, ProgramError},
};

/// An `EbpfLoader` that does not parse the kernel's BTF when it can help it.
pub fn loader() -> EbpfLoader<'static> {
    thread::scope(|s| {
        s.spawn(|| {
            hide_kernel_btf();
            EbpfLoader::new()
        })
        .join()
        .unwrap_or_else(|_| EbpfLoader::new())
    })
}

/// Puts the calling thread (only) in a mount namespace of its own where
/// /sys/kernel/btf is an empty tmpfs. True on success; on failure nothing
/// is hidden and the caller parses as usual.
fn hide_kernel_btf() -> bool {
    const ROOT: &CStr = c"/";
    const BTF_DIR: &CStr = c"/sys/kernel/btf";
    const TMPFS: &CStr = c"tmpfs";
    // SAFETY: plain syscalls with valid C strings; CLONE_NEWNS unshares
    // this thread's filesystem context only, the other threads keep theirs.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                ROOT.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                TMPFS.as_ptr(),
                BTF_DIR.as_ptr(),
                TMPFS.as_ptr(),
                0,
                std::ptr::null(),
            ) == 0
    }
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
