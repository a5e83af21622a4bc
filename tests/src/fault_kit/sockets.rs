//! Sockets for the fault-kind tests: a threaded TCP echo server, timed
//! connects, request/reply exchanges, and the TOS / traffic class byte of a
//! received datagram (for ECN).

use std::{
    io::{self, Read, Write},
    mem,
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, BorrowedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{Netns, tcp_listen, udp_bind};

/// How much of the received data an [`EchoServer`] keeps for inspection.
const KEEP_BYTES: usize = 4 << 20;
/// A connection handler gives up after this long without data.
const HANDLER_IDLE: Duration = Duration::from_secs(30);

/// A TCP echo server in a namespace: every connection gets back exactly the
/// bytes it sent, in a thread of its own. Counts connections and bytes, and
/// keeps the bytes received (up to 4 MiB) so a test can tell what the
/// server actually saw. Stopped and joined on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    data: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr` in `ns` (`[::]` is dual-stack) and starts serving.
    pub fn tcp(ns: &Netns, addr: SocketAddr) -> Self {
        let listener = tcp_listen(ns, addr);
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let data = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, accepted, received, data) = (
                Arc::clone(&stop),
                Arc::clone(&accepted),
                Arc::clone(&received),
                Arc::clone(&data),
            );
            thread::spawn(move || {
                let mut handlers: Vec<JoinHandle<()>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let (stop, received, data) =
                                (Arc::clone(&stop), Arc::clone(&received), Arc::clone(&data));
                            handlers.retain(|h| !h.is_finished());
                            handlers.push(thread::spawn(move || {
                                echo(stream, &stop, &received, &data);
                            }));
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) =>
                        {
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => {
                            eprintln!("echo server: accept: {e}");
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        EchoServer {
            stop,
            accepted,
            received,
            data,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Bytes received so far, over all connections.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The bytes received so far (the first 4 MiB), in arrival order.
    pub fn data(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Handlers wake every 100 ms to see the flag.
            let _ = thread.join();
        }
    }
}

fn echo(mut stream: TcpStream, stop: &AtomicBool, received: &AtomicU64, data: &Mutex<Vec<u8>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) && last.elapsed() < HANDLER_IDLE {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                last = Instant::now();
                received.fetch_add(n as u64, Ordering::Relaxed);
                {
                    let mut data = data.lock().unwrap();
                    let room = KEEP_BYTES.saturating_sub(data.len()).min(n);
                    data.extend_from_slice(&buf[..room]);
                }
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

/// A TCP connect from `ns` to `addr`, timed inside the namespace's thread
/// (so the time is the connect's alone), giving up after `timeout`.
pub fn connect_timed(
    ns: &Netns,
    addr: SocketAddr,
    timeout: Duration,
) -> (io::Result<TcpStream>, Duration) {
    ns.run(|| {
        let start = Instant::now();
        let result = TcpStream::connect_timeout(&addr, timeout);
        (result, start.elapsed())
    })
}

/// Sends `request` and reads back exactly as many bytes, waiting at most
/// `timeout` for each read. Returns the bytes read; an error if the reply
/// is incomplete (timeout, EOF, reset).
pub fn exchange(stream: &mut TcpStream, request: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut reply = vec![0u8; request.len()];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

/// A UDP socket in `ns` bound to `local` and connected to `remote`, so it
/// receives the ICMP errors about what it sends (ECONNREFUSED).
pub fn udp_connect(ns: &Netns, local: SocketAddr, remote: SocketAddr) -> UdpSocket {
    let socket = udp_bind(ns, local);
    socket
        .connect(remote)
        .unwrap_or_else(|e| panic!("connect udp to {remote}: {e}"));
    socket
}

fn setsockopt_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: the pointer and length describe a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}, {value}): {}",
        io::Error::last_os_error()
    );
}

/// Sets the TOS byte (IPv4 `IP_TOS`) or traffic class (IPv6 `IPV6_TCLASS`)
/// of what a UDP socket sends; the low two bits are the ECN field.
pub fn set_tos(fd: BorrowedFd<'_>, v6: bool, tos: u8) {
    if v6 {
        setsockopt_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_TCLASS,
            libc::c_int::from(tos),
        );
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TOS, libc::c_int::from(tos));
    }
}

/// Asks for the TOS byte / traffic class of every received datagram as a
/// control message (`IP_RECVTOS` / `IPV6_RECVTCLASS`).
pub fn set_recv_tos(fd: BorrowedFd<'_>, v6: bool) {
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1);
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
    }
}

/// Receives one datagram within `timeout`, with the TOS byte / traffic class
/// it arrived with (`None` if no such control message came with it; see
/// [`set_recv_tos`]).
pub fn recv_with_tos(socket: &UdpSocket, timeout: Duration) -> io::Result<(Vec<u8>, Option<u8>)> {
    let fd = socket.as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap();
    if crate::net::poll_one(&mut pfd, ms)? == 0 {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let mut buf = vec![0u8; 65536];
    let mut control = [0u64; 16]; // aligned room for a few cmsgs
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: msg points to live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    let mut tos = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // within msg_controllen; data is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let data = libc::CMSG_DATA(cmsg);
            if level == libc::IPPROTO_IP && kind == libc::IP_TOS {
                tos = Some(*data);
            } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_TCLASS {
                let class = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                tos = Some(class as u8);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((buf, tos))
}
