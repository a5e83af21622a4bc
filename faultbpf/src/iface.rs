//! The interfaces of the calling thread's network namespace.
//!
//! Read through the socket API (`if_nameindex`, `SIOCGIFFLAGS`) rather than
//! /sys, which shows the namespace of whoever mounted it: a library user
//! that entered a namespace with `setns` would see the wrong list.

use std::{ffi::CStr, ffi::CString, io};

use crate::error::Error;

/// Every interface whose administrative state is up, lo included, sorted.
pub fn up() -> Result<Vec<String>, Error> {
    let sock = Socket::new()?;
    let mut out: Vec<String> = all()?
        .into_iter()
        .filter(|name| sock.flags(name).is_ok_and(|f| f & libc::IFF_UP as u32 != 0))
        .collect();
    out.sort();
    Ok(out)
}

/// Every interface name, sorted.
pub fn all() -> Result<Vec<String>, Error> {
    // SAFETY: if_nameindex returns an array terminated by a zeroed entry,
    // freed below with if_freenameindex.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(Error::Io {
            what: "could not list the interfaces of this network namespace".into(),
            source: io::Error::last_os_error(),
        });
    }
    let mut names = Vec::new();
    let mut p = list;
    // SAFETY: walk until the terminating entry; names are NUL-terminated.
    unsafe {
        while (*p).if_index != 0 {
            names.push(CStr::from_ptr((*p).if_name).to_string_lossy().into_owned());
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    names.sort();
    Ok(names)
}

/// The ifindex of `name`, if it exists now.
pub fn index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The MTU of `name`, if it exists.
pub fn mtu(name: &str) -> Option<u32> {
    let sock = Socket::new().ok()?;
    let mut req = ifreq(name).ok()?;
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_mtu.
    if unsafe { libc::ioctl(sock.0, libc::SIOCGIFMTU as libc::Ioctl, &mut req) } < 0 {
        return None;
    }
    // SAFETY: the kernel filled the mtu member of the union.
    u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}

/// An ifreq naming `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

/// A datagram socket, only for interface ioctls.
struct Socket(libc::c_int);

impl Socket {
    fn new() -> Result<Self, Error> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::Io {
                what: "could not open a socket to read interface flags".into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self(fd))
    }

    fn flags(&self, name: &str) -> io::Result<u32> {
        let mut req = ifreq(name)?;
        // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags.
        if unsafe { libc::ioctl(self.0, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel filled the flags member of the union.
        Ok(unsafe { req.ifr_ifru.ifru_flags } as u16 as u32)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lo_exists_and_nonsense_does_not() {
        assert!(all().unwrap().iter().any(|n| n == "lo"));
        assert!(index("lo").is_some());
        assert!(index("nosuchif0").is_none());
    }
}
