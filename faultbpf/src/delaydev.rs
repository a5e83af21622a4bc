//! The delay device: a veth pair owned by faultbpf through which delayed
//! packets take a detour, held by an `fq` qdisc until the delivery time the
//! program stamped on them (EDT), then sent back where they came from by
//! the return program on the far end.
//!
//! Why this shape (each point measured on Debian's 6.1 kernel):
//! - A veth pair, not an ifb: packets reaching an ifb through `bpf_redirect`
//!   lack the redirected flag and ifb drops them all.
//! - One per network namespace (ours carries our pid in its name): the mark
//!   that tells the return program where a packet came from does not
//!   survive a namespace crossing.
//! - Root `netem delay 1us` with `fq` as its child, not `fq` alone: netem
//!   orphans the packets, so TCP Small Queues does not throttle a local
//!   sender whose socket still owns held packets (fq alone: 2.3 Mbit/s at
//!   20 ms against 1160 Mbit/s through netem).
//! - fq sized from the rules: `horizon` above the largest delay + jitter
//!   (fq drops packets stamped beyond it; default 10 s), `flow_limit` and
//!   `limit` high enough for a fast flow held for the whole delay (the
//!   default 100 packets per flow cut a 200 ms flow to 5-10 Mbit/s).
//! - fq with `nopacing`: it still holds each packet until its delivery
//!   time, but does not pace flows by their socket's rate, which at long
//!   delays held a bulk flow far below what netem gives.
//! - RPS on the far end to one CPU (see [`steer_to_one_cpu`]): without it
//!   fq's releases from two CPUs landed in two backlogs and a flow could
//!   come out reordered; at 200 ms a bulk TCP flow then fell to 7-17
//!   Mbit/s now and then from spurious fast retransmits, with it 69-74
//!   (netem 22-73 in the same runs).
//!   (NAPI on the far end keeps order too, but its 256-slot ring overflows
//!   when fq releases a burst: 20 ms bulk fell from ~980 to 120 Mbit/s.)
//! - Both ends up, no addresses, no IPv6 address generation (so nothing of
//!   the host's own traffic ever uses them), MTU at least that of every
//!   attached device (a 1500 device drops a 9000 device's 8000-byte packets).
//!
//! The pair and its qdiscs go when faultbpf exits; a pair left by a
//! faultbpf that died is removed by the next one that starts.

use std::{io, process::Command, time::Duration};

use crate::{error::Error, iface, mountns};

/// Name prefix; the rest is the owner's pid and `a` (sending end, with the
/// qdiscs) or `b` (far end, with the return program).
const PREFIX: &str = "fbd";

/// Packets fq may hold per flow and in all; a 1 Gbit/s flow held 1 s is
/// about 85 000 full-size packets.
const FLOW_LIMIT: u32 = 100_000;
const LIMIT: u32 = 1_000_000;
/// fq drops packets stamped further out than its horizon.
const MIN_HORIZON: Duration = Duration::from_secs(10);

/// A delay device in this network namespace; removed on drop.
#[derive(Debug)]
pub struct DelayDevice {
    pub send: String,
    pub far: String,
    pub send_ifindex: u32,
}

impl DelayDevice {
    /// Creates the pair with MTU `mtu` and qdiscs holding up to
    /// `max_delay`; removes leftovers of dead owners first.
    pub fn create(mtu: u32, max_delay: Duration) -> Result<Self, Error> {
        remove_leftovers();
        let pid = std::process::id();
        let mut dev = Self {
            send: format!("{PREFIX}{pid}a"),
            far: format!("{PREFIX}{pid}b"),
            send_ifindex: 0,
        };
        let mtu = mtu.to_string();
        ip(&[
            "link", "add", &dev.send, "mtu", &mtu, "type", "veth", "peer", "name", &dev.far, "mtu",
            &mtu,
        ])?;
        // From here on, dropping `dev` removes the pair.
        for end in [&dev.send, &dev.far] {
            ip(&["link", "set", "dev", end, "addrgenmode", "none"])?;
            ip(&["link", "set", "dev", end, "up"])?;
        }
        dev.set_horizon(max_delay)?;
        // Without it delays still work, but a delayed flow may come out
        // reordered now and then: say so rather than refuse.
        if let Err(e) = steer_to_one_cpu(&dev.far) {
            eprintln!(
                "faultbpf: warning: {}; packets of a delayed flow may now and then arrive \
                 out of order",
                crate::error::chain(&e)
            );
        }
        dev.send_ifindex =
            iface::index(&dev.send).ok_or_else(|| Error::NoSuchInterface(dev.send.clone()))?;
        Ok(dev)
    }

    /// (Re)sizes the qdiscs for delays up to `max_delay`.
    pub fn set_horizon(&self, max_delay: Duration) -> Result<(), Error> {
        let horizon = (max_delay + Duration::from_secs(1)).max(MIN_HORIZON);
        let horizon = format!("{}ms", horizon.as_millis());
        tc(&[
            "qdisc",
            "replace",
            "dev",
            &self.send,
            "root",
            "handle",
            "1:",
            "netem",
            "delay",
            "1us",
            "limit",
            &LIMIT.to_string(),
        ])
        .map_err(missing_qdisc)?;
        tc(&[
            "qdisc",
            "replace",
            "dev",
            &self.send,
            "parent",
            "1:1",
            "handle",
            "10:",
            "fq",
            "nopacing",
            "horizon",
            &horizon,
            "flow_limit",
            &FLOW_LIMIT.to_string(),
            "limit",
            &LIMIT.to_string(),
        ])
        .map_err(missing_qdisc)
    }
}

impl Drop for DelayDevice {
    fn drop(&mut self) {
        // Deleting one end deletes the pair and its qdiscs.
        let _ = ip(&["link", "del", "dev", &self.send]);
    }
}

/// RPS on the far end's receive queue, to CPU 0 alone: fq releases held
/// packets from whichever CPU runs the qdisc, and each CPU would queue what
/// it sends to its own backlog, where two packets of a flow can be
/// processed side by side and swap. One backlog keeps fq's order.
///
/// sysfs shows the devices of the namespace it was mounted in: under `ip
/// netns exec` that is ours; otherwise (a library user in a namespace it
/// entered with setns) this runs on a thread with a mount namespace of its
/// own and a fresh sysfs.
fn steer_to_one_cpu(far: &str) -> Result<(), Error> {
    let path = format!("/sys/class/net/{far}/queues/rx-0/rps_cpus");
    let write = || std::fs::write(&path, "1");
    let result = if std::path::Path::new(&path).exists() {
        write()
    } else {
        mountns::with_fresh_mount(c"sysfs", c"/sys", write).and_then(|r| r)
    };
    result.map_err(|source| Error::Io {
        what: format!("could not steer {far}'s receive queue to one CPU ({path})"),
        source,
    })
}

/// A tc/ip failure that comes from a missing qdisc becomes the message a
/// user can act on.
fn missing_qdisc(e: Error) -> Error {
    match &e {
        Error::Io { what, .. } if what.contains("qdisc kind is unknown") => Error::Unsupported(
            "delay needs the kernel's fq and netem qdiscs (modules sch_fq and sch_netem), \
             and this kernel has neither: `modprobe sch_fq sch_netem`, or install the \
             kernel's module package (Debian: linux-modules or linux-image-$(uname -r)); \
             every other fault works without them"
                .into(),
        ),
        _ => e,
    }
}

/// Deletes pairs whose owner pid is gone.
fn remove_leftovers() {
    let Ok(names) = iface::all() else { return };
    for n in names {
        let Some(pid) = n
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_suffix('a'))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = ip(&["link", "del", "dev", &n]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", args)
}

fn tc(args: &[&str]) -> Result<(), Error> {
    run("tc", args)
}

fn run(prog: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|source| Error::Io {
            what: format!("could not run `{prog}` (iproute2 is needed for delay)"),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(Error::Io {
        what: format!("`{prog} {}` failed: {err}", args.join(" ")),
        source: io::Error::other(err.clone()),
    })
}
