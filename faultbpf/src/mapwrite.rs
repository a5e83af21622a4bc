//! Raw `bpf(2)` writes to array maps, for the two places where aya's one
//! syscall per element is the wrong shape:
//!
//! - Wide port ranges. `9461-65535` on both protocols touches ~28 000
//!   `RULE_INDEX` words; one `BPF_MAP_UPDATE_ELEM` each took ~0.14 s (and
//!   a read before each write as much again). [`update_batch`] writes them
//!   with `BPF_MAP_UPDATE_BATCH` (Linux >= 5.6) in a handful of syscalls,
//!   falling back to one update per element on older kernels.
//! - The heartbeat. [`ArrayFd`] is a second file descriptor of a map
//!   (`LEASE`) that a thread of its own can write without the `Injector`,
//!   so no lock and no request stands between the daemon and its lease.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Elements per batch syscall: the kernel copies keys and values in one go
/// per element anyway; this bounds one syscall's time (~1 ms).
const BATCH: usize = 8_192;

/// `union bpf_attr` as `BPF_MAP_UPDATE_ELEM` reads it.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` as `BPF_MAP_*_BATCH` reads it.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a live, properly laid out `bpf_attr` prefix of
    // `size_of::<T>()` bytes; the kernel zero-extends the rest and reads
    // only the pointers in it, which the callers keep alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `value` at `index` of the array map `fd`.
pub fn update<V: aya::Pod>(fd: i32, index: u32, value: &V) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: &index as *const u32 as u64,
        value: value as *const V as u64,
        flags: 0,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
}

/// Writes `values[i]` at `indices[i]` of the array map `fd`, a batch at a
/// time; one element at a time where the kernel has no batch updates.
pub fn update_batch<V: aya::Pod>(fd: i32, indices: &[u32], values: &[V]) -> io::Result<()> {
    assert_eq!(indices.len(), values.len());
    for (keys, vals) in indices.chunks(BATCH).zip(values.chunks(BATCH)) {
        let mut attr = BatchAttr {
            in_batch: 0,
            out_batch: 0,
            keys: keys.as_ptr() as u64,
            values: vals.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
            Ok(()) => {}
            // Before 5.6: no batch command. Arrays never fail half-way for
            // another reason than a bad index, which `update` reports too.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524)
                ) =>
            {
                for (k, v) in keys.iter().zip(vals) {
                    update(fd, *k, v)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file descriptor of its own for one array map, writable from any
/// thread.
#[derive(Debug)]
pub struct ArrayFd(OwnedFd);

impl ArrayFd {
    pub fn new(fd: OwnedFd) -> Self {
        Self(fd)
    }

    pub fn set<V: aya::Pod>(&self, index: u32, value: &V) -> io::Result<()> {
        update(self.0.as_raw_fd(), index, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_match_the_kernel_layout() {
        // include/uapi/linux/bpf.h: the elem part is 32 bytes, the batch
        // part 56.
        assert_eq!(std::mem::size_of::<ElemAttr>(), 32);
        assert_eq!(std::mem::size_of::<BatchAttr>(), 56);
    }
}
