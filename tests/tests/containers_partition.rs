//! The seed scenario side by side (issue 14): partition an `api` container
//! from its broker `srv` on 5672 with `docker network disconnect`, then
//! with `faultbpf blackhole --container api --port 5672`, and record what
//! the application in `api` sees: a new connect (errno and how long it
//! took) and an established connection (a write, then a read).
//!
//! The application's sockets are real sockets in `api`'s network namespace
//! (made by a thread that entered it), so what they report is what any
//! program in that container would get.
//!
//! What the kernel does (asserted below): disconnect removes `api`'s
//! interface, so a new connect fails at once with ENETUNREACH — a loud,
//! instant error no real partition produces — and the address the
//! established connection was bound to is gone. A blackhole drops the
//! packets on the wire: a new connect hangs until the application's own
//! timeout, an established connection's read waits, and when the fault
//! heals the same connection carries on, as after a real network blip.

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    Launch, Netns,
    engine::{Docker, NETWORK},
};

/// The application's connect timeout and read timeout.
const APP_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `f` on a thread that entered the network namespace of `pid`.
fn in_netns_of<T: Send>(pid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(format!("/proc/{pid}/ns/net")).unwrap();
            // SAFETY: a namespace fd we own; only this thread moves.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// What one connect attempt got: `Ok` or the error's kind and errno, and
/// how long it took.
#[derive(Debug)]
struct Attempt {
    result: Result<(), (ErrorKind, Option<i32>)>,
    took: Duration,
}

fn connect(api_pid: u32, to: SocketAddr) -> Attempt {
    in_netns_of(api_pid, || {
        let start = Instant::now();
        let result = TcpStream::connect_timeout(&to, APP_TIMEOUT)
            .map(drop)
            .map_err(|e| (e.kind(), e.raw_os_error()));
        Attempt {
            result,
            took: start.elapsed(),
        }
    })
}

/// An echo connection made from `api` before the fault.
fn establish(api_pid: u32, to: SocketAddr) -> TcpStream {
    let mut s = in_netns_of(api_pid, || TcpStream::connect_timeout(&to, APP_TIMEOUT)).unwrap();
    s.set_read_timeout(Some(APP_TIMEOUT)).unwrap();
    assert_eq!(echo(&mut s), Ok(()), "the echo works before the fault");
    s
}

/// Writes a line and reads it back: `Ok`, or the error's kind and errno.
fn echo(s: &mut TcpStream) -> Result<(), (ErrorKind, Option<i32>)> {
    let err = |e: std::io::Error| (e.kind(), e.raw_os_error());
    s.write_all(b"ping\n").map_err(err)?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).map_err(err)?;
    assert_eq!(&buf, b"ping\n");
    Ok(())
}

struct Scene {
    docker: Docker,
    api_pid: u32,
    srv: SocketAddr,
}

fn scene(tag: &str) -> Scene {
    let docker = Docker::start(tag);
    // A persistent echo server (busybox: -ll with -e forks per connection).
    docker.container("srv", "nc -ll -p 5672 -e cat");
    docker.container("api", "sleep 600");
    let ip = docker.ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"),
        "srv",
    ]);
    let api_pid: u32 = docker
        .ok(&["inspect", "-f", "{{.State.Pid}}", "api"])
        .parse()
        .unwrap();
    let srv: SocketAddr = format!("{ip}:5672").parse().unwrap();
    let start = Instant::now();
    while connect(api_pid, srv).result.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "srv never listened"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Scene {
        docker,
        api_pid,
        srv,
    }
}

#[test]
fn disconnect_fails_fast_with_enetunreach_where_a_blackhole_times_out() {
    // docker network disconnect.
    let d = scene("part-d");
    let control = connect(d.api_pid, d.srv);
    assert!(control.result.is_ok(), "control: {control:?}");
    let mut held = establish(d.api_pid, d.srv);
    d.docker.ok(&["network", "disconnect", NETWORK, "api"]);
    let disc_new = connect(d.api_pid, d.srv);
    let disc_held = echo(&mut held);
    d.docker.ok(&["network", "connect", NETWORK, "api"]);
    let disc_after = echo(&mut held);
    let disc_new_after = connect(d.api_pid, d.srv);
    eprintln!(
        "disconnect: control {control:?}; new connect {disc_new:?}; established {disc_held:?}; \
         established after reconnect {disc_after:?}; new connect after {disc_new_after:?}"
    );

    // faultbpf blackhole --container api --port 5672, same setup.
    let b = scene("part-b");
    let origin = Netns::new("part-b-o");
    let mut held = establish(b.api_pid, b.srv);
    let mut fault = Launch::new(
        &origin,
        [
            "blackhole",
            "--port",
            "5672",
            "--container",
            "api",
            "--for",
            "60s",
        ],
    )
    .standalone()
    .env("DOCKER_HOST", b.docker.host())
    .start();
    let bh_new = connect(b.api_pid, b.srv);
    let bh_held = echo(&mut held);
    let exit = fault.stop(libc::SIGINT);
    assert_eq!(exit.status.code(), Some(0), "{exit:#?}");
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let bh_after = read_back_after_heal(&mut held);
    let bh_new_after = connect(b.api_pid, b.srv);
    eprintln!(
        "blackhole: new connect {bh_new:?}; established {bh_held:?}; established after heal \
         {bh_after:?}; new connect after {bh_new_after:?}"
    );

    // Disconnect: an instant ENETUNREACH on connect, far quicker than the
    // application's timeout.
    assert_eq!(
        disc_new.result.map_err(|e| e.1),
        Err(Some(libc::ENETUNREACH)),
        "{disc_new:?}"
    );
    // Blackhole: the connect hangs until the application gives up, as in
    // a real partition.
    assert_eq!(
        bh_new.result.map_err(|e| e.0),
        Err(ErrorKind::TimedOut),
        "{bh_new:?}"
    );
    assert!(
        bh_new.took >= disc_new.took + Duration::from_secs(2),
        "the blackholed connect waits ({:?}), the disconnected one fails at once ({:?})",
        bh_new.took,
        disc_new.took
    );
    // Established, blackhole: the write is accepted, the read waits; once
    // healed, the same connection delivers the echo (TCP retransmits).
    assert!(
        matches!(
            bh_held,
            Err((ErrorKind::WouldBlock | ErrorKind::TimedOut, _))
        ),
        "{bh_held:?}"
    );
    assert_eq!(bh_after, Ok(()), "the connection survives the blackhole");
    assert!(bh_new_after.result.is_ok(), "{bh_new_after:?}");
    assert!(disc_new_after.result.is_ok(), "{disc_new_after:?}");
    drop(fault);
    faultbpf_tests::assert_nothing_attached(&origin, &["lo"]);
}

/// After a heal the echo of the `ping` written during the fault arrives
/// (retransmitted); read it, then check a fresh round trip.
fn read_back_after_heal(s: &mut TcpStream) -> Result<(), (ErrorKind, Option<i32>)> {
    let err = |e: std::io::Error| (e.kind(), e.raw_os_error());
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).map_err(err)?;
    assert_eq!(&buf, b"ping\n");
    echo(s)
}
