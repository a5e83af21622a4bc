//! Sockets made inside a test namespace, and the kernel-side views of them the
//! tests assert on (`TCP_INFO`, raw frames on an AF_PACKET socket), read with
//! syscalls rather than by parsing `ss` or `tcpdump` output.

use std::{
    ffi::CString,
    io,
    mem::{self, MaybeUninit},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::Netns;

/// Not exported by the `libc` crate for Linux/glibc; the value in
/// asm-generic/socket.h, used by x86_64 and arm64.
const SO_RCVBUFFORCE: libc::c_int = 33;

/// `recv` and `recv_from` that try again when a signal interrupts them.
///
/// With a read timeout set, Linux never restarts a socket call cut short by a
/// signal, and a stop/continue or a cgroup freeze of the test run is enough
/// to cut it short: an `EINTR` there is neither a datagram nor silence.
pub trait RecvRetry {
    /// [`UdpSocket::recv`], retried on `EINTR`.
    fn recv_retry(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// [`UdpSocket::recv_from`], retried on `EINTR`.
    fn recv_from_retry(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

impl RecvRetry for UdpSocket {
    fn recv_retry(&self, buf: &mut [u8]) -> io::Result<usize> {
        retry(|| self.recv(buf))
    }

    fn recv_from_retry(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        retry(|| self.recv_from(buf))
    }
}

/// Runs `call` until it ends with anything but `EINTR`.
pub fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// `poll(2)` on one descriptor, retried on `EINTR` (with the full timeout
/// again: the callers' deadlines are loose). Returns the number of ready
/// descriptors (0 or 1).
pub fn poll_one(pfd: &mut libc::pollfd, ms: libc::c_int) -> io::Result<libc::c_int> {
    retry(|| {
        // SAFETY: one live pollfd.
        let rc = unsafe { libc::poll(pfd, 1, ms) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    })
}

/// A listening TCP socket in `ns`. Connections complete in the kernel
/// without `accept`, which is all the tests need.
pub fn tcp_listen(ns: &Netns, addr: SocketAddr) -> TcpListener {
    ns.run(|| TcpListener::bind(addr).unwrap_or_else(|e| panic!("listen on {addr}: {e}")))
}

/// A TCP connection from `ns` to `addr`, giving up after `timeout`.
pub fn tcp_connect(ns: &Netns, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    ns.run(|| TcpStream::connect_timeout(&addr, timeout))
}

/// A UDP socket in `ns` bound to `addr`.
pub fn udp_bind(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    ns.run(|| UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}")))
}

/// Raises a socket's receive buffer past `rmem_max` (needs CAP_NET_ADMIN),
/// so a burst of datagrams is not lost to buffer overflow and counted as a
/// fault.
pub fn force_rcvbuf(socket: BorrowedFd<'_>, bytes: libc::c_int) {
    // SAFETY: the pointer and length describe a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
}

/// Reads datagrams until none arrives for `idle` (or `limit` were read) and
/// returns their payloads.
pub fn count_datagrams(socket: &UdpSocket, limit: usize, idle: Duration) -> Vec<Vec<u8>> {
    socket.set_read_timeout(Some(idle)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < limit {
        match socket.recv_retry(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => panic!("udp recv: {e}"),
        }
    }
    got
}

/// The kernel's `TCP_INFO` for a TCP socket.
pub fn tcp_info(socket: BorrowedFd<'_>) -> libc::tcp_info {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is
    // zeroed first, so a shorter answer from an older kernel is still valid.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    // SAFETY: zero-initialised plain integers, partly overwritten by the kernel.
    unsafe { info.assume_init() }
}

/// Starts a non-blocking TCP connect from `ns` and returns the socket while
/// the handshake is still in flight, so a test can look at it later without
/// a thread blocked in `connect`.
pub fn tcp_connect_nonblocking(ns: &Netns, addr: SocketAddr) -> OwnedFd {
    ns.run(|| {
        let SocketAddr::V4(v4) = addr else {
            panic!("tcp_connect_nonblocking: IPv4 only, got {addr}")
        };
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: fd is a fresh socket we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: the pointer and length describe a live sockaddr_in.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const sin).cast(),
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        let err = io::Error::last_os_error();
        assert!(
            rc == -1 && err.raw_os_error() == Some(libc::EINPROGRESS),
            "non-blocking connect to {addr} should be in progress, got rc {rc}: {err}"
        );
        fd
    })
}

/// True if a non-blocking connect finished (writable or failed) within `wait`.
pub fn connect_finished(socket: BorrowedFd<'_>, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap();
    let rc = poll_one(&mut pfd, ms).unwrap_or_else(|e| panic!("poll: {e}"));
    rc == 1
}

/// `SO_ERROR` of a socket (0 = no pending error).
pub fn socket_error(socket: BorrowedFd<'_>) -> libc::c_int {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the pointer and length describe a live c_int.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_ERROR: {}", io::Error::last_os_error());
    err
}

/// An AF_PACKET raw socket bound to one interface: sends whole Ethernet
/// frames (through the interface's tc egress hook, since it does not set
/// PACKET_QDISC_BYPASS) and receives every frame the interface sees.
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    pub fn open(ns: &Netns, ifname: &str) -> Self {
        ns.run(|| {
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain syscall; the result is checked before use.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::c_int::from(all),
                )
            };
            assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: fd is a fresh socket we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = CString::new(ifname).unwrap();
            // SAFETY: a valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "no interface {ifname} in {}", ns.name());
            // SAFETY: sockaddr_ll is plain integers; all-zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = all;
            sll.sll_ifindex = libc::c_int::try_from(ifindex).unwrap();
            // SAFETY: the pointer and length describe a live sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(
                rc,
                0,
                "bind AF_PACKET to {ifname}: {}",
                io::Error::last_os_error()
            );
            PacketSocket { fd }
        })
    }

    /// Sends one frame exactly as given (Ethernet header included).
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: the pointer and length describe `frame`.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "AF_PACKET send of {} bytes: {}",
            frame.len(),
            io::Error::last_os_error()
        );
    }

    /// Every frame seen until `until` returns true for the frames so far, or
    /// `timeout` passes.
    pub fn capture(
        &self,
        timeout: Duration,
        mut until: impl FnMut(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !until(&frames) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap();
            let rc = poll_one(&mut pfd, ms).unwrap_or_else(|e| panic!("poll: {e}"));
            if rc == 0 {
                continue;
            }
            // SAFETY: the pointer and length describe `buf`.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            assert!(n >= 0, "AF_PACKET recv: {}", io::Error::last_os_error());
            frames.push(buf[..n as usize].to_vec());
        }
        frames
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
