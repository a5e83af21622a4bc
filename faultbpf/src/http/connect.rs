//! Client-side steering (`faultbpf http --side client`): loads the cgroup
//! programs of `faultbpf-ebpf/src/steer_out.rs` and attaches them to a
//! cgroup v2 (the root by default), restricted in the kernel to this
//! process's network namespace by its cookie, since cgroup programs see
//! every process in the cgroup. Selected connects to the port reach the
//! responder on loopback; the responder learns where each was going from
//! `ORIG_BY_PORT` and forwards there.
//!
//! The links are owned by this process's file descriptors, as with
//! `sk_lookup`: when faultbpf exits, however it exits, the kernel detaches
//! the programs and new connects go where they were sent.

use std::{
    fs::File,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Mutex,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr, SockOps},
};
use faultbpf_common::{
    CONNECT_EXEMPT_MAP, CONNECT_MAP, CONNECT4_PROGRAM, CONNECT6_PROGRAM, ConnectConf,
    ORIG_BY_PORT_MAP, ORIG_DST_MAP, OrigDst, PEERNAME4_PROGRAM, PEERNAME6_PROGRAM, SOCKOPS_PROGRAM,
    THRESHOLD_ALWAYS, threshold_from_pct,
};

use super::{Options, Per, StartError, responder::Listeners};

/// `Single`, which is not exclusive: aya attaches with a BPF link (Linux
/// 5.7 and later), and links always share the cgroup with other programs;
/// the kernel refuses a link with any flag (EINVAL for `AllowMultiple`).
const ATTACH_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// The attached programs and the maps the responder reads and writes.
pub struct Steering {
    ebpf: Mutex<Option<Ebpf>>,
    maps: Mutex<Maps>,
    port: u16,
}

struct Maps {
    by_port: HashMap<MapData, u16, OrigDst>,
    orig: HashMap<MapData, u64, OrigDst>,
    exempt: HashMap<MapData, u64, u8>,
}

fn err(
    port: u16,
    what: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StartError {
    StartError::Steer {
        port,
        what: what.into(),
        source: Some(source.into()),
    }
}

fn missing(port: u16, name: &str) -> StartError {
    StartError::Steer {
        port,
        what: format!("the kernel object has no `{name}` (a build from another version?)"),
        source: None,
    }
}

impl Steering {
    /// Writes what to steer, then attaches the five programs to the cgroup
    /// `opts.cgroup` (a cgroup v2 path such as `/` or
    /// `/system.slice/app.service`).
    pub fn attach(opts: &Options, listeners: &Listeners) -> Result<Self, StartError> {
        let port = opts.port;
        let cgroup = opts.cgroup.as_str();
        let cgroup_fd = open_cgroup(cgroup)
            .map_err(|e| err(port, format!("could not open cgroup `{cgroup}`"), e))?;
        let netns_cookie =
            netns_cookie().map_err(|e| err(port, "could not read this network namespace's cookie (SO_NETNS_COOKIE needs Linux >= 5.14)", e))?;
        let mut ebpf = crate::load::loader()
            .load(crate::loader::OBJECT)
            .map_err(|e| err(port, "could not load the kernel object", e))?;
        {
            let mut conf: Array<_, ConnectConf> = ebpf
                .map_mut(CONNECT_MAP)
                .ok_or_else(|| missing(port, CONNECT_MAP))?
                .try_into()
                .map_err(|e| err(port, "bad connect map", e))?;
            let threshold = match opts.per {
                Per::Connection => threshold_from_pct(opts.pct),
                Per::Request => THRESHOLD_ALWAYS,
            };
            let local_port = |l: Option<&tokio::net::TcpListener>| {
                l.and_then(|l| l.local_addr().ok()).map_or(0, |a| a.port())
            };
            let value = ConnectConf {
                netns_cookie,
                port,
                resp_port4: local_port(Some(listeners.v4())),
                resp_port6: local_port(listeners.v6()),
                _pad: [0; 2],
                threshold,
                _pad2: [0; 4],
            };
            conf.set(0, value, 0)
                .map_err(|e| err(port, "could not write the connect map", e))?;
        }
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or_else(|| missing(port, name));
        let maps = Maps {
            by_port: take(ORIG_BY_PORT_MAP)?
                .try_into()
                .map_err(|e| err(port, "bad map", e))?,
            orig: take(ORIG_DST_MAP)?
                .try_into()
                .map_err(|e| err(port, "bad map", e))?,
            exempt: take(CONNECT_EXEMPT_MAP)?
                .try_into()
                .map_err(|e| err(port, "bad map", e))?,
        };
        // The sock_ops program first, then getpeername, then connect: a
        // connect is steered only once everything it needs is in place.
        let refused = |name: &str, e| {
            err(
                port,
                format!(
                    "the kernel refused `{name}` (cgroup connect/getpeername/sock_ops programs \
                     need Linux >= 5.8 and CAP_BPF + CAP_NET_ADMIN)"
                ),
                e,
            )
        };
        let not_attached = |name: &str, e| {
            err(
                port,
                format!("could not attach `{name}` to cgroup `{cgroup}`"),
                e,
            )
        };
        {
            let prog: &mut SockOps = ebpf
                .program_mut(SOCKOPS_PROGRAM)
                .ok_or_else(|| missing(port, SOCKOPS_PROGRAM))?
                .try_into()
                .map_err(|e| err(port, "bad program type", e))?;
            prog.load().map_err(|e| refused(SOCKOPS_PROGRAM, e))?;
            prog.attach(&cgroup_fd, ATTACH_MODE)
                .map_err(|e| not_attached(SOCKOPS_PROGRAM, e))?;
        }
        for name in [
            PEERNAME4_PROGRAM,
            PEERNAME6_PROGRAM,
            CONNECT4_PROGRAM,
            CONNECT6_PROGRAM,
        ] {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| missing(port, name))?
                .try_into()
                .map_err(|e| err(port, "bad program type", e))?;
            prog.load().map_err(|e| refused(name, e))?;
            prog.attach(&cgroup_fd, ATTACH_MODE)
                .map_err(|e| not_attached(name, e))?;
        }
        Ok(Self {
            ebpf: Mutex::new(Some(ebpf)),
            maps: Mutex::new(maps),
            port,
        })
    }

    pub fn detach(&self) {
        let mut e = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        drop(e.take());
    }

    /// Where the steered connection from loopback port `peer_port` was
    /// going, and its socket cookie (for [`Self::forget`]); the port's
    /// entry is taken out.
    pub fn destination(&self, peer_port: u16) -> Option<(SocketAddr, u64)> {
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let orig = m.by_port.get(&peer_port, 0).ok()?;
        let _ = m.by_port.remove(&peer_port);
        let addr = match orig.family {
            4 => {
                let a: [u8; 4] = orig.addr[..4].try_into().ok()?;
                SocketAddr::from((Ipv4Addr::from(a), u16::from_be(orig.port_be)))
            }
            6 => SocketAddr::from((Ipv6Addr::from(orig.addr), u16::from_be(orig.port_be))),
            _ => return None,
        };
        Some((addr, orig.cookie))
    }

    /// Forgets a steered socket once its connection is over.
    pub fn forget(&self, cookie: u64) {
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let _ = m.orig.remove(&cookie);
    }

    /// Lets the responder's own connect on the socket with `cookie` go
    /// where it is sent.
    pub fn exempt(&self, cookie: u64) -> io::Result<()> {
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        m.exempt
            .insert(cookie, 1, 0)
            .map_err(|e| io::Error::other(format!("port {}: {e}", self.port)))
    }

    pub fn unexempt(&self, cookie: u64) {
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let _ = m.exempt.remove(&cookie);
    }
}

/// `SO_COOKIE` of a socket: the key the kernel programs see.
pub fn socket_cookie(fd: &impl AsRawFd) -> io::Result<u64> {
    getsockopt_u64(fd.as_raw_fd(), libc::SO_COOKIE)
}

/// `SO_NETNS_COOKIE` of a socket opened here: this network namespace's
/// cookie, as `bpf_get_netns_cookie` gives it.
fn netns_cookie() -> io::Result<u64> {
    // SAFETY: plain syscall; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    getsockopt_u64(fd.as_raw_fd(), libc::SO_NETNS_COOKIE)
}

fn getsockopt_u64(fd: i32, opt: libc::c_int) -> io::Result<u64> {
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &raw mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Opens the cgroup v2 directory `path` (relative to the cgroup2 root).
/// Where no cgroup2 is mounted in our view (under `ip netns exec`, which
/// mounts a fresh /sys), one is mounted on a thread of its own, in a
/// mount namespace nobody else sees; the open directory outlives it.
fn open_cgroup(path: &str) -> io::Result<File> {
    if !path.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "give the cgroup as a path from the cgroup v2 root, e.g. / or /system.slice/app.service",
        ));
    }
    let rel = path.trim_start_matches('/');
    if let Some(root) = cgroup2_mount()? {
        return File::open(root.join(rel));
    }
    crate::mountns::with_fresh_mount(c"cgroup2", c"/sys/fs/cgroup", || {
        File::open(std::path::Path::new("/sys/fs/cgroup").join(rel))
    })?
}

/// Where cgroup v2 is mounted in this mount namespace, if anywhere.
fn cgroup2_mount() -> io::Result<Option<std::path::PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().find_map(|line| {
        // "... mount_point options - fstype source super_options"
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
    }))
}
