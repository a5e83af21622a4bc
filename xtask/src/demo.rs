//! `cargo xtask demo`: shows a newcomer what faultbpf does, end to end, in
//! half a minute. A client and a web server live in two network namespaces
//! created for the demo and joined by a veth pair; requests succeed, then
//! time out while `faultbpf blackhole` runs in the server's namespace, then
//! succeed again once it ends by itself. Exits 0 only if exactly that
//! happened.
//!
//! Safety: nothing is attached to, or sent over, the root namespace's
//! interfaces; every process is killed by PID and every namespace deleted by
//! guards that also run on errors and after Ctrl-C; every wait is bounded.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build,
    cmd::{self, command},
};

// Addresses come from the ranges reserved for faultbpf's tests and demo
// (10.200.0.0/16); they only exist inside the demo's namespaces.
const CLIENT_ADDR: &str = "10.200.0.1/24";
const SERVER_ADDR: &str = "10.200.0.2/24";
const SERVER_IP: &str = "10.200.0.2";
const PORT: &str = "8080";
const URL: &str = "http://10.200.0.2:8080/";
const CLIENT_DEV: &str = "veth-c";
const SERVER_DEV: &str = "veth-s";

/// How long the fault lasts, as a `Duration` and as passed to `--for`.
const FAULT_FOR: Duration = Duration::from_secs(6);
const FAULT_FOR_ARG: &str = "6s";
/// Requests shown in each phase.
const REQUESTS: usize = 3;
/// curl's whole-request limit (`-m`), so a blackholed request ends quickly.
const CURL_TIMEOUT_S: &str = "1";
/// Room left in the fault window before starting a request that should fail.
const REQUEST_ROOM: Duration = Duration::from_millis(1500);

const SERVER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Loading and attaching BPF programs takes well under a second; this also
/// covers a slow first run.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long past `--for` faultbpf may take to detach and exit.
const EXIT_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// Set by the Ctrl-C/SIGTERM handler; every wait checks it so the guards run.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// `cargo xtask demo`.
pub fn run() -> Result<()> {
    if !cmd::is_root()? {
        bail!(
            "`cargo xtask demo` must run as root: it creates network namespaces and \
             loads BPF programs"
        );
    }
    crate::setup::run(crate::setup::Scope::Build)?;
    let bin = build::build_faultbpf()?;
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let pid = std::process::id();
    let names = [
        format!("fbdemo-client-{pid}"),
        format!("fbdemo-server-{pid}"),
    ];
    let result = show(&bin, &names);
    // `show`'s guards are gone by now; check that they did their job.
    let left: Vec<&str> = names
        .iter()
        .filter(|name| Path::new("/run/netns").join(name).exists())
        .map(String::as_str)
        .collect();
    if left.is_empty() {
        println!("Cleaned up: the web server is stopped and both namespaces are deleted.");
    } else {
        eprintln!(
            "demo: namespaces left behind: {}; remove them with `ip netns delete NAME`",
            left.join(", ")
        );
    }
    result
}

/// The demo proper; everything it creates is owned by a guard local to it.
fn show(bin: &Path, [client_name, server_name]: &[String; 2]) -> Result<()> {
    println!("faultbpf demo: a client and a web server, each in its own network namespace, talk");
    println!("over a virtual cable (a veth pair). faultbpf will blackhole the server's port 8080");
    println!("for 6 s. Nothing here touches this machine's own network.");
    println!();

    println!(
        "[1/6] Creating namespaces {client_name} ({CLIENT_ADDR}) and {server_name} ({SERVER_ADDR})."
    );
    let client = Netns::create(client_name)?;
    let server = Netns::create(server_name)?;
    // Both ends are created inside the client namespace and one is then moved
    // into the server's, so the pair never exists in the root namespace.
    client.ip(&[
        "link", "add", CLIENT_DEV, "type", "veth", "peer", "name", SERVER_DEV,
    ])?;
    client.ip(&["link", "set", SERVER_DEV, "netns", &server.name])?;
    for (ns, dev, addr) in [
        (&client, CLIENT_DEV, CLIENT_ADDR),
        (&server, SERVER_DEV, SERVER_ADDR),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
        ns.ip(&["link", "set", "lo", "up"])?;
    }

    println!(
        "[2/6] Starting a web server in {server_name}: python3 -m http.server {PORT} --bind {SERVER_IP}"
    );
    let mut web = Proc::spawn(
        "web server",
        server
            .exec("python3")
            .args(["-m", "http.server", PORT, "--bind", SERVER_IP])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_for_server(&client, &mut web)?;

    println!(
        "[3/6] Before any fault, the client fetches {URL} {REQUESTS} times; each gets HTTP 200 in a few ms:"
    );
    expect_answers(&client, "before the fault")?;

    let shown_bin = bin.strip_prefix(cmd::workspace_root()).unwrap_or(bin);
    println!(
        "[4/6] Starting faultbpf in {server_name}; it drops every packet to or from port {PORT} for {FAULT_FOR_ARG}:"
    );
    println!(
        "      $ ip netns exec {server_name} {} blackhole --port {PORT} --for {FAULT_FOR_ARG}",
        shown_bin.display()
    );
    let mut fault = Fault::start(&server, bin)?;
    let active_at = fault.wait_active()?;
    println!(
        "      The fault is in force. The client's requests now get no answer, and curl gives up after {CURL_TIMEOUT_S} s:"
    );
    let mut failed = 0;
    for i in 1..=REQUESTS {
        // Each request must end inside the fault window to prove anything.
        if active_at.elapsed() + REQUEST_ROOM > FAULT_FOR {
            break;
        }
        let reply = request(&client)?;
        println!("      request {i}: {}", reply.text);
        if reply.ok {
            bail!(
                "request {i} got an answer while port {PORT} was blackholed: the fault did not take effect"
            );
        }
        failed += 1;
    }
    if failed == 0 {
        bail!("no request fit in the {FAULT_FOR_ARG} fault window");
    }

    println!(
        "[5/6] Waiting for faultbpf to end by itself after {FAULT_FOR_ARG}. It detaches and prints its counters:"
    );
    let counters = fault.wait_exit(active_at + FAULT_FOR + EXIT_GRACE)?;
    for line in counters.lines() {
        println!("      {line}");
    }

    println!("[6/6] The fault is healed: the same requests get answers again:");
    expect_answers(&client, "after faultbpf ended")?;

    println!();
    println!(
        "Demo OK: requests succeeded, failed while port 8080 was blackholed, then succeeded again."
    );
    Ok(())
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// The outcome of one curl from the client namespace.
struct Reply {
    ok: bool,
    /// `HTTP 200 in 0.002s`, or why it failed.
    text: String,
}

fn request(client: &Netns) -> Result<Reply> {
    check_interrupted()?;
    let mut curl = client.exec("curl");
    curl.args(["-sS", "-m", CURL_TIMEOUT_S, "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{time_total}s", URL])
        .stdin(Stdio::null());
    let out = curl
        .output()
        .with_context(|| format!("could not start `{}`", cmd::describe(&curl)))?;
    // A Ctrl-C also reaches curl; that failure is not the fault's doing.
    check_interrupted()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (code, time) = stdout.trim().split_once(' ').unwrap_or(("000", "?"));
    if out.status.success() && code == "200" {
        return Ok(Reply {
            ok: true,
            text: format!("HTTP {code} in {time}"),
        });
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr.lines().next().unwrap_or("").trim();
    let why = if why.is_empty() {
        format!("HTTP {code}")
    } else {
        why.to_owned()
    };
    Ok(Reply {
        ok: false,
        text: format!("no answer after {time} ({why})"),
    })
}

/// Shows [`REQUESTS`] requests and fails unless all succeed.
fn expect_answers(client: &Netns, when: &str) -> Result<()> {
    for i in 1..=REQUESTS {
        let reply = request(client)?;
        println!("      request {i}: {}", reply.text);
        if !reply.ok {
            bail!("request {i} {when} failed: {}", reply.text);
        }
    }
    Ok(())
}

/// Polls until the web server answers, so step 3 shows only real requests.
fn wait_for_server(client: &Netns, web: &mut Proc) -> Result<()> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    loop {
        if request(client)?.ok {
            return Ok(());
        }
        if let Some(status) = web.child.try_wait()? {
            bail!("the web server exited ({status}) before answering");
        }
        if Instant::now() > deadline {
            bail!("the web server did not answer within {SERVER_START_TIMEOUT:?}");
        }
        thread::sleep(POLL * 2);
    }
}

/// A network namespace this demo created; deleted on drop, which also
/// destroys its end of the veth pair and anything attached to it.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> Result<Self> {
        cmd::stdout_of(command("ip").args(["netns", "add", name]))?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    /// `ip -n NAME ARGS...`, quietly.
    fn ip(&self, args: &[&str]) -> Result<()> {
        cmd::stdout_of(command("ip").args(["-n", &self.name]).args(args)).map(drop)
    }

    /// `ip netns exec NAME PROGRAM` (which execs, so the child's PID is the
    /// program's).
    fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = command("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = cmd::stdout_of(command("ip").args(["netns", "delete", &self.name])) {
            eprintln!("demo: could not delete namespace {}: {err:#}", self.name);
        }
    }
}

/// A child process this demo started; killed by PID on drop if still running.
struct Proc {
    what: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(what: &'static str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start the {what}: `{}`", cmd::describe(cmd)))?;
        Ok(Self { what, child })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL is enough even for faultbpf: whatever it leaves attached
        // hangs off interfaces of a namespace that is deleted right after.
        if let Ok(None) = self.child.try_wait() {
            if let Err(err) = self.child.kill() {
                eprintln!(
                    "demo: could not kill the {} (pid {}): {err}",
                    self.what,
                    self.child.id()
                );
            }
            let _ = self.child.wait();
        }
    }
}

/// A running `faultbpf blackhole`: its stderr is echoed as it comes, its
/// stdout (the final counters) collected for when it exits.
struct Fault {
    proc: Proc,
    active: mpsc::Receiver<()>,
    stdout: mpsc::Receiver<String>,
}

impl Fault {
    fn start(server: &Netns, bin: &Path) -> Result<Self> {
        let mut proc = Proc::spawn(
            "faultbpf",
            server
                .exec(bin)
                .args(["blackhole", "--port", PORT, "--for", FAULT_FOR_ARG])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?;
        let stderr = proc.child.stderr.take().context("faultbpf's stderr")?;
        let mut stdout = proc.child.stdout.take().context("faultbpf's stdout")?;
        let (active_tx, active) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                println!("      (faultbpf stderr) {line}");
                if line.starts_with("faultbpf: active:") {
                    let _ = active_tx.send(());
                }
            }
        });
        let (stdout_tx, stdout_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            let _ = stdout_tx.send(text);
        });
        Ok(Self {
            proc,
            active,
            stdout: stdout_rx,
        })
    }

    /// Waits for the `faultbpf: active:` line; returns when it came.
    fn wait_active(&mut self) -> Result<Instant> {
        let deadline = Instant::now() + ACTIVE_TIMEOUT;
        loop {
            check_interrupted()?;
            match self.active.recv_timeout(POLL) {
                Ok(()) => return Ok(Instant::now()),
                // A closed stderr means faultbpf is exiting: fall through to
                // collect its status.
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => thread::sleep(POLL),
            }
            if let Some(status) = self.proc.child.try_wait()? {
                bail!(
                    "faultbpf exited ({status}) before saying `faultbpf: active:`; see its stderr above"
                );
            }
            if Instant::now() > deadline {
                bail!("faultbpf did not say `faultbpf: active:` within {ACTIVE_TIMEOUT:?}");
            }
        }
    }

    /// Waits until faultbpf exits on its own, at the latest by `deadline`,
    /// and returns what it printed on stdout.
    fn wait_exit(&mut self, deadline: Instant) -> Result<String> {
        loop {
            check_interrupted()?;
            if let Some(status) = self.proc.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "faultbpf exited with {status} at the end of --for {FAULT_FOR_ARG}; see its stderr above"
                    );
                }
                return self
                    .stdout
                    .recv_timeout(Duration::from_secs(5))
                    .context("faultbpf exited but its stdout stayed open");
            }
            if Instant::now() > deadline {
                bail!(
                    "faultbpf was still running {EXIT_GRACE:?} after its --for {FAULT_FOR_ARG} ended"
                );
            }
            thread::sleep(POLL);
        }
    }
}
