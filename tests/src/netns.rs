//! Throwaway network namespaces, so that no test ever attaches to or sends on
//! an interface of the root namespace, and tests can run in parallel threads.

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The client's end of the veth pair (lives in the client namespace).
pub const CLIENT_IF: &str = "veth-c";
/// The server's end of the veth pair (lives in the server namespace).
pub const SERVER_IF: &str = "veth-s";
pub const CLIENT_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1));
pub const SERVER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 2));
pub const CLIENT_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1));
pub const SERVER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2));

/// Makes names unique between the threads of one test binary; the pid makes
/// them unique between binaries.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `fbt-<tag>-<pid>-<n>`; `tag` is a short form of the test name.
    pub fn new(tag: &str) -> Self {
        crate::require_root();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("fbt-{tag}-{}-{id}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        Netns { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args..` and returns its stdout; panics if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `tc -n NAME args..` and returns its stdout; panics if it fails.
    pub fn tc(&self, args: &[&str]) -> String {
        run_checked(Command::new("tc").args(["-n", &self.name]).args(args))
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`,
    /// which execs the program, so the child's pid is the program's).
    /// `FAULTBPF_SOCKET` points nowhere ([`crate::NO_DAEMON`]), so nothing
    /// started here (a Python client, a script) finds the host's daemon.
    /// Run faultbpf itself with [`crate::Launch`].
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .env("FAULTBPF_SOCKET", crate::NO_DAEMON);
        cmd
    }

    /// Runs `f` on a new thread that has joined this namespace, and returns
    /// its result. Sockets created in `f` stay in this namespace wherever
    /// they are used afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                enter(&path);
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// The MAC address of `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let json = self.ip(&["-j", "link", "show", "dev", ifname]);
        let links: serde_json::Value = serde_json::from_str(&json).unwrap();
        let text = links[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {ifname} in {json}"));
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(text.split(':')) {
            *byte = u8::from_str_radix(part, 16).unwrap();
        }
        mac
    }
}

impl Drop for Netns {
    /// Deletes the namespace; a leak fails the test. Processes started
    /// inside are stopped by their own guards first (fields and locals drop
    /// before the topology that outlives them), so one still there is a
    /// process nothing owns: it is killed (by pid) and named. A failed
    /// `ip netns del` fails the test too. While a test is already panicking
    /// both are only reported, as a second panic would abort the run.
    fn drop(&mut self) {
        let mut leaks = Vec::new();
        // A helper that is exiting (faultbpf's netlink reaper after a kill,
        // running `tc` to check the filters are gone) gets a moment to go:
        // 3 s was too short on the VM lane's emulated CPU while the host
        // was busy compiling. Returns as soon as the namespace is empty.
        let left = wait_empty(&self.name, Duration::from_secs(10)).unwrap_or_else(|e| {
            leaks.push(e);
            Vec::new()
        });
        if !left.is_empty() {
            leaks.push(format!(
                "processes left in namespace {} (killed now): {}",
                self.name,
                left.iter()
                    .map(|&pid| describe(pid))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            if let Err(e) = kill_all_in_name(&self.name) {
                leaks.push(e);
            }
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => leaks.push(format!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => leaks.push(format!("ip netns del {}: {e}", self.name)),
        }
        if leaks.is_empty() {
            return;
        }
        let text = leaks.join("\n");
        if std::thread::panicking() {
            eprintln!("leak (the test is failing already): {text}");
        } else {
            panic!("leak: {text}");
        }
    }
}

/// The processes in namespace `name` (`ip netns pids`), other than this
/// test process; `Err` if `ip` cannot tell (an unchecked namespace would
/// hide a leak).
pub fn pids_in(name: &str) -> Result<Vec<i32>, String> {
    let me = std::process::id();
    let out = Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map_err(|e| format!("ip netns pids {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip netns pids {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p: &i32| p > 1 && p as u32 != me)
        .collect())
}

/// Waits up to `timeout` for namespace `name` to hold no process; returns
/// those still there.
fn wait_empty(name: &str, timeout: Duration) -> Result<Vec<i32>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = pids_in(name)?;
        if pids.is_empty() || Instant::now() >= deadline {
            return Ok(pids);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `PID (command line)`, for a leak report.
fn describe(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    format!("{pid} ({cmdline})")
}

/// Kills (SIGKILL, by pid) every process in namespace `name`, except this
/// test process, and waits up to 5 s until none is left; `Err` names those
/// still there then.
pub fn kill_all_in_name(name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids_in(name)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "processes still in namespace {name} 5 s after SIGKILL: {}",
                pids.iter()
                    .map(|&pid| describe(pid))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        for pid in pids {
            // SAFETY: plain kill(2) of a pid `ip netns pids` just listed in
            // the test's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client and a server namespace joined by one veth pair, with IPv4 and
/// IPv6 addresses on both ends and `lo` up.
pub struct Topology {
    pub client: Netns,
    pub server: Netns,
}

impl Topology {
    pub fn new(tag: &str) -> Self {
        let client = Netns::new(&format!("{tag}-c"));
        let server = Netns::new(&format!("{tag}-s"));
        // Created inside the client namespace with its peer placed directly in
        // the server namespace: no veth ever appears in the root namespace.
        client.ip(&[
            "link",
            "add",
            CLIENT_IF,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_IF,
            "netns",
            &server.name,
        ]);
        for (ns, ifname, v4, v6) in [
            (&client, CLIENT_IF, "10.200.0.1/24", "fd00:200::1/64"),
            (&server, SERVER_IF, "10.200.0.2/24", "fd00:200::2/64"),
        ] {
            ns.ip(&["link", "set", "lo", "up"]);
            ns.ip(&["addr", "add", v4, "dev", ifname]);
            // nodad: usable at once, no 1-2 s of "tentative" address.
            ns.ip(&["addr", "add", v6, "dev", ifname, "nodad"]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        client.wait_link_up(CLIENT_IF);
        server.wait_link_up(SERVER_IF);
        Topology { client, server }
    }
}

impl Netns {
    /// Waits (up to 5 s) until `ifname` is operationally up. Until the
    /// kernel's linkwatch has run, the device still has the `noop` qdisc and
    /// silently drops what is sent, which would look like a fault.
    pub fn wait_link_up(&self, ifname: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let json = self.ip(&["-j", "link", "show", "dev", ifname]);
            let link: serde_json::Value = serde_json::from_str(&json).unwrap();
            if link[0]["operstate"] == "UP" && link[0]["qdisc"] != "noop" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{ifname} in {} not up after 5 s: {json}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Moves the calling thread into the namespace bound at `path`.
fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: the fd is valid for the call; setns only changes this thread's
    // network namespace (threads may do that on their own for CLONE_NEWNET).
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
}

/// Runs a short command to completion, returning stdout; panics with its
/// stderr if it fails.
pub fn run_checked(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One node of a [`Star`]: its namespace, its end of the veth pair to the
/// hub and its address there.
pub struct StarNode {
    pub ns: Netns,
    pub iface: String,
    pub ip: String,
}

/// A hub namespace joined to `n` node namespaces by one veth pair each
/// (`hI` in the hub, `dI` in node I, 10.200.(BASE+I).0/24: hub .1, node
/// .2), for fleets of daemons. Each pair is made inside the hub and its far
/// end moved into the node, so neither end ever exists in the root
/// namespace. Nodes drop before the hub.
pub struct Star {
    pub nodes: Vec<StarNode>,
    pub hub: Netns,
}

impl Star {
    pub fn new(tag: &str, base: u8, n: u8) -> Self {
        let hub = Netns::new(&format!("{tag}-hub"));
        hub.ip(&["link", "set", "lo", "up"]);
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = Netns::new(&format!("{tag}-{i}"));
            ns.ip(&["link", "set", "lo", "up"]);
            let (h, d) = (format!("h{i}"), format!("d{i}"));
            let net = format!("10.200.{}", u16::from(base) + u16::from(i));
            hub.ip(&[
                "link",
                "add",
                &h,
                "type",
                "veth",
                "peer",
                "name",
                &d,
                "netns",
                ns.name(),
            ]);
            hub.ip(&["addr", "add", &format!("{net}.1/24"), "dev", &h]);
            ns.ip(&["addr", "add", &format!("{net}.2/24"), "dev", &d]);
            hub.ip(&["link", "set", &h, "up"]);
            ns.ip(&["link", "set", &d, "up"]);
            ns.wait_link_up(&d);
            nodes.push(StarNode {
                ns,
                iface: d,
                ip: format!("{net}.2"),
            });
        }
        Star { nodes, hub }
    }
}
