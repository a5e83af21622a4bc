//! Internet checksums built from `bpf_csum_diff`, for headers we write from
//! scratch (`answer.rs`) and the tc RST's incremental update
//! (`fault/reset.rs`). Words are summed as they lie in memory, so the
//! folded result is stored back with native byte order.

use aya_ebpf::helpers::bpf_csum_diff;

/// A 4-byte aligned buffer, as `bpf_csum_diff` reads 32-bit words.
#[repr(C, align(4))]
#[derive(Clone, Copy)]
pub struct Words<const N: usize>(pub [u8; N]);

/// One's complement sum of `len` bytes at `ptr` (a multiple of 4, in a
/// map value or on the stack) added to `seed` (unfolded).
#[inline(always)]
pub fn sum_raw(ptr: *mut u8, len: u32, seed: u32) -> Result<u32, ()> {
    // SAFETY: the caller passes `len` valid bytes at `ptr`; the helper
    // rejects sizes that are not a multiple of 4.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, ptr.cast(), len, seed) };
    if r < 0 { Err(()) } else { Ok(r as u32) }
}

/// Sum of the bytes `to` minus the bytes `from`, for an incremental update
/// with `bpf_l4_csum_replace(.., 0, diff, 0)`.
#[inline(always)]
pub fn diff<const N: usize>(from: &mut Words<N>, to: &mut Words<N>) -> Result<u32, ()> {
    // SAFETY: both buffers are N bytes of aligned stack memory; N is a
    // multiple of 4 at every call site (the helper rejects anything else).
    let r = unsafe {
        bpf_csum_diff(
            from.0.as_mut_ptr().cast(),
            N as u32,
            to.0.as_mut_ptr().cast(),
            N as u32,
            0,
        )
    };
    if r < 0 { Err(()) } else { Ok(r as u32) }
}

/// The checksum field value for a sum: folded to 16 bits and inverted,
/// as native-order bytes.
#[inline(always)]
pub fn finish(sum: u32) -> [u8; 2] {
    let mut s = (sum & 0xffff) + (sum >> 16);
    s = (s & 0xffff) + (s >> 16);
    (!(s as u16)).to_ne_bytes()
}
