//! The bench's sandbox and its guards: a client and a server namespace joined
//! by a veth pair, threads that run inside one of them, child processes that
//! are killed by PID, and commands that cannot run forever. Everything the
//! bench creates is owned by a value here whose `Drop` removes it, so an
//! error or a Ctrl-C leaves nothing behind.
//!
//! Addresses are 10.200.0.1 (client) and 10.200.0.2 (server): the range
//! reserved for faultbpf's tests, and they only exist inside the namespaces.

use std::{
    ffi::OsStr,
    fs::File,
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, command};

/// Set by the Ctrl-C/SIGTERM handler; every wait checks it.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The veth end in the client namespace.
pub const CLIENT_IF: &str = "fbb-c";
/// The veth end in the server namespace, where injectors attach.
pub const SERVER_IF: &str = "fbb-s";
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

/// Fails once Ctrl-C was pressed, so loops unwind and guards run.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` in short slices, failing early on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Pins the calling thread to `cpu`; a failure only costs precision.
pub fn pin_thread(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it,
    // and sched_setaffinity(0, ..) applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A network namespace the bench created; deleted on drop, which also
/// destroys its veth end and everything attached to it.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Result<Self> {
        cmd::stdout_of(command("ip").args(["netns", "add", &name]))?;
        Ok(Self { name })
    }

    /// `ip -n NAME ARGS...`, quietly, bounded.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        output_within(
            command("ip").args(["-n", &self.name]).args(args),
            None,
            Duration::from_secs(10),
        )
    }

    /// `ip netns exec NAME PROGRAM` (ip execs, so the child's PID is the
    /// program's).
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = command("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Moves the calling thread into this namespace. Only for threads the
    /// bench spawns for that purpose: they never go back.
    pub fn enter(&self) -> Result<()> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns(2) on an fd we own; with CLONE_NEWNET it changes the
        // network namespace of the calling thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setns into {}", self.name));
        }
        Ok(())
    }

    /// Runs `f` on a fresh thread inside this namespace (pinned to `cpu`)
    /// and returns its result.
    pub fn run<T: Send>(
        &self,
        cpu: Option<usize>,
        f: impl FnOnce() -> Result<T> + Send,
    ) -> Result<T> {
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter()?;
                    if let Some(cpu) = cpu {
                        pin_thread(cpu);
                    }
                    f()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("a thread in {} panicked", self.name))?
        })
    }

    /// Spawns a long-running thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        what: &str,
        cpu: Option<usize>,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T>>> {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let name = self.name.clone();
        thread::Builder::new()
            .name(what.to_owned())
            .spawn(move || {
                // SAFETY: as in `enter`.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("setns into {name}"));
                }
                drop(file);
                if let Some(cpu) = cpu {
                    pin_thread(cpu);
                }
                f()
            })
            .with_context(|| format!("spawning the {what} thread"))
    }

    /// A file under `/proc/thread-self/net/` as this namespace sees it
    /// (`dev`, `snmp`), read from a thread inside it.
    pub fn proc_net(&self, file: &str) -> Result<String> {
        let path = format!("/proc/thread-self/net/{file}");
        self.run(None, || {
            std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
        })
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let json = self.ip(&["-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&json).context("ip -j link")?;
        let text = v[0]["address"]
            .as_str()
            .with_context(|| format!("no address for {dev} in {json}"))?;
        parse_mac(text).with_context(|| format!("bad MAC `{text}`"))
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = cmd::stdout_of(command("ip").args(["netns", "delete", &self.name])) {
            eprintln!("bench: could not delete namespace {}: {err:#}", self.name);
        }
    }
}

/// Client and server namespaces joined by a veth pair, with addresses.
pub struct Topology {
    pub client: Netns,
    pub server: Netns,
    pub client_mac: [u8; 6],
    pub server_mac: [u8; 6],
}

static NEXT_TOPOLOGY: AtomicUsize = AtomicUsize::new(0);

impl Topology {
    /// Creates `fbb-c-<pid>-<n>` and `fbb-s-<pid>-<n>`.
    pub fn new() -> Result<Self> {
        let pid = std::process::id();
        let n = NEXT_TOPOLOGY.fetch_add(1, Ordering::SeqCst);
        let client = Netns::create(format!("fbb-c-{pid}-{n}"))?;
        let server = Netns::create(format!("fbb-s-{pid}-{n}"))?;
        // Both ends are created in the client namespace and one is moved, so
        // the pair never exists in the root namespace.
        client.ip(&[
            "link", "add", CLIENT_IF, "type", "veth", "peer", "name", SERVER_IF,
        ])?;
        client.ip(&["link", "set", SERVER_IF, "netns", &server.name])?;
        for (ns, dev, addr) in [
            (&client, CLIENT_IF, CLIENT_IP),
            (&server, SERVER_IF, SERVER_IP),
        ] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
            ns.ip(&["link", "set", "lo", "up"])?;
        }
        let client_mac = client.mac(CLIENT_IF)?;
        let server_mac = server.mac(SERVER_IF)?;
        // Static neighbours: no ARP in the middle of a measurement, and
        // trafgen's raw frames need no resolution either.
        let fmt = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        client.ip(&[
            "neigh",
            "replace",
            &SERVER_IP.to_string(),
            "lladdr",
            &fmt(server_mac),
            "dev",
            CLIENT_IF,
            "nud",
            "permanent",
        ])?;
        server.ip(&[
            "neigh",
            "replace",
            &CLIENT_IP.to_string(),
            "lladdr",
            &fmt(client_mac),
            "dev",
            SERVER_IF,
            "nud",
            "permanent",
        ])?;
        Ok(Self {
            client,
            server,
            client_mac,
            server_mac,
        })
    }

    /// Segmentation/receive offloads (TSO, GSO, GRO) on or off at both ends.
    pub fn set_offloads(&self, on: bool) -> Result<()> {
        let state = if on { "on" } else { "off" };
        for (ns, dev) in [(&self.client, CLIENT_IF), (&self.server, SERVER_IF)] {
            output_within(
                ns.exec("ethtool")
                    .args(["-K", dev, "tso", state, "gso", state, "gro", state]),
                None,
                Duration::from_secs(10),
            )?;
        }
        Ok(())
    }

    /// The offload state of the server's veth, for the report
    /// (`tso on, gso on, gro off, ...`).
    pub fn offload_summary(&self) -> String {
        let Ok(text) = output_within(
            self.server.exec("ethtool").args(["-k", SERVER_IF]),
            None,
            Duration::from_secs(10),
        ) else {
            return "unknown (ethtool -k failed)".into();
        };
        let wanted = [
            ("tcp-segmentation-offload", "tso"),
            ("generic-segmentation-offload", "gso"),
            ("generic-receive-offload", "gro"),
            ("tx-checksumming", "tx-csum"),
            ("rx-checksumming", "rx-csum"),
        ];
        wanted
            .iter()
            .filter_map(|(long, short)| {
                let line = text.lines().find(|l| l.starts_with(&format!("{long}:")))?;
                let value = line.split(':').nth(1)?.split_whitespace().next()?;
                Some(format!("{short} {value}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A child process the bench started; killed by PID on drop if still running.
pub struct Proc {
    pub what: String,
    pub child: Child,
    /// Signals go to the process group the child leads (for programs that
    /// fork workers and do not pass signals on, like trafgen).
    group: bool,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start the {what}: `{}`", cmd::describe(cmd)))?;
        Ok(Self {
            what: what.to_owned(),
            child,
            group: false,
        })
    }

    /// Like [`Proc::spawn`], in a new process group that the child leads,
    /// so stopping it also stops the processes it forks.
    pub fn spawn_group(what: &str, cmd: &mut Command) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let mut proc = Self::spawn(what, cmd.process_group(0))?;
        proc.group = true;
        Ok(proc)
    }

    /// kill(2) on our child's PID (or its group), which cannot have been
    /// reused while the child is unwaited.
    fn kill(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        let target = if self.group { -pid } else { pid };
        // SAFETY: a plain kill(2) on a process (group) we started.
        unsafe { libc::kill(target, sig) };
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` unless the process already exited.
    pub fn signal(&mut self, sig: libc::c_int) {
        if let Ok(None) = self.child.try_wait() {
            self.kill(sig);
        }
    }

    /// Waits until the process exits, at most `timeout`.
    pub fn wait_for(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// `sig`, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Result<ExitStatus> {
        self.signal(sig);
        if let Some(status) = self.wait_for(grace)? {
            return Ok(status);
        }
        eprintln!(
            "bench: the {} (pid {}) ignored signal {sig} for {grace:?}; killing it",
            self.what,
            self.pid()
        );
        self.kill(libc::SIGKILL);
        Ok(self.child.wait()?)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {
                self.kill(libc::SIGKILL);
                let _ = self.child.wait();
            }
            // The leader is gone; its workers may not be.
            _ if self.group => self.kill(libc::SIGKILL),
            _ => {}
        }
    }
}

/// Runs `cmd` (with `input` on its stdin) and returns its stdout; fails with
/// its stderr if it exits non-zero, and kills it if it runs past `timeout`.
pub fn output_within(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> Result<String> {
    let line = cmd::describe(cmd);
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let feeder = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => {
            let text = text.to_owned();
            Some(thread::spawn(move || stdin.write_all(text.as_bytes())))
        }
        _ => None,
    };
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let out_reader = thread::spawn(move || {
        let mut s = Vec::new();
        out.read_to_end(&mut s).map(|_| s)
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        err.read_to_end(&mut s).map(|_| s)
    });
    let end = Instant::now() + timeout;
    let mut polls = 0u32;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            child.kill().ok();
            child.wait().ok();
            bail!("interrupted");
        }
        if Instant::now() >= end {
            child.kill().ok();
            child.wait().ok();
            bail!("`{line}` did not finish within {timeout:?}; killed it");
        }
        polls += 1;
        thread::sleep(Duration::from_micros(if polls < 200 {
            500
        } else {
            10_000
        }));
    };
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let stdout = out_reader
        .join()
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let stderr = err_reader
        .join()
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    if !status.success() {
        bail!(
            "`{line}` failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    String::from_utf8(stdout).with_context(|| format!("`{line}` printed non-UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("02:00:0a:c8:00:ff"),
            Some([2, 0, 10, 200, 0, 255])
        );
        assert_eq!(parse_mac("02:00"), None);
        assert_eq!(parse_mac("02:00:0a:c8:00:ff:01"), None);
    }
}
