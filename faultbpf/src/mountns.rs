//! Work that needs a different view of the filesystem than the rest of the
//! process: a thread with a mount namespace of its own (CLONE_NEWNS
//! unshares the calling thread's filesystem context only) and one fresh
//! mount in it. The thread, its namespace and the mount end together; the
//! other threads and the host see nothing.

use std::{ffi::CStr, io, thread};

/// Runs `f` on such a thread with a new `fstype` mounted at `target`.
/// `Err` if the namespace or the mount is refused (no CAP_SYS_ADMIN, a
/// seccomp filter); `f` does not run then.
pub fn with_fresh_mount<T: Send>(
    fstype: &CStr,
    target: &CStr,
    f: impl FnOnce() -> T + Send,
) -> io::Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: plain syscalls with valid C strings. "/" is made
            // private first, so the mount never propagates to the host.
            let ok = unsafe {
                libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0
                    && libc::mount(
                        fstype.as_ptr(),
                        target.as_ptr(),
                        fstype.as_ptr(),
                        0,
                        std::ptr::null(),
                    ) == 0
            };
            if ok {
                Ok(f())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("a thread with its own mounts panicked")))
    })
}
