//! Real dependencies for the end-to-end tests: Debian's RabbitMQ and
//! PostgreSQL, and Python's `http.server`, each started by the test inside
//! its server namespace and bound only to 10.200.0.2 (or that namespace's
//! loopback); and Python clients (Debian's `/usr/bin/python3`, with
//! python3-pika and python3-psycopg2) run in the client namespace, speaking
//! JSON lines to the test. The stories the seeds tell (a publisher that must
//! reconnect to RabbitMQ, a query that must time out, a retry policy that
//! must not amplify) are tested against the real thing, not a stub.
//!
//! Clean-up is by process id only: each server guard, on drop, kills every
//! process left in its namespace (`ip netns pids`), which catches the
//! daemons these servers start on their own (epmd, the postmaster), and
//! removes its temporary directory. Every wait is bounded.

use std::{
    io::Write,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    Netns, Proc, SERVER_V4, kill_all_in_name, root_is_read_only, tcp_connect, temp::TempDir,
};

/// Debian's interpreter, where python3-pika, python3-psycopg2 and
/// python3-pytest install (a pyenv `python3` earlier on PATH lacks them).
pub const PYTHON: &str = "/usr/bin/python3";

/// RabbitMQ's AMQP port, on the server address.
pub const AMQP_PORT: u16 = 5672;
/// PostgreSQL's port, on the server address.
pub const PG_PORT: u16 = 5432;

/// How long RabbitMQ may take to accept connections (it boots an Erlang VM:
/// 15 to 30 s here).
const RABBITMQ_START: Duration = Duration::from_secs(60);
/// How long PostgreSQL's initdb and start may each take.
const PG_START: Duration = Duration::from_secs(60);

/// Panics unless Debian's servers can run here: every `(path, package)`
/// installed, and a writable root (the VM lane mounts the host's root
/// read-only, and its emulated CPU makes RabbitMQ's and PostgreSQL's start
/// take minutes, so it does not run these tests: `VM_SUITE` in
/// xtask/src/vm/suite.rs). A test that cannot run here fails; it never
/// reports a pass it did not earn.
pub fn require_heavy_deps(packages: &[(&str, &str)]) {
    assert!(
        !root_is_read_only(),
        "the root filesystem is read-only (the VM lane?): Debian's servers cannot start \
         here; run this test on a writable root, or leave it out by name (`--skip`)"
    );
    for (path, package) in packages {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: install Debian's {package} (`cargo xtask setup` does)"
        );
    }
}

/// Kills (SIGKILL, by pid) every process in `ns`, except this test process,
/// and waits up to 5 s until none is left.
pub fn kill_all_in(ns: &Netns) {
    kill_all_in_name(ns.name()).unwrap_or_else(|e| panic!("{e}"));
}

/// `python3 -u -B -c SCRIPT ARGS..` inside `ns`, with `extra_path` on
/// PYTHONPATH (the Python client's directory, say).
pub fn python(ns: &Netns, script: &str, args: &[&str], extra_path: Option<&Path>) -> Proc {
    let mut cmd = python_command(ns, script, args);
    if let Some(p) = extra_path {
        cmd.env("PYTHONPATH", p);
    }
    Proc::spawn(&mut cmd, &format!("python3 in {}", ns.name()))
}

/// The command [`python`] spawns, for a caller that adds to it first.
pub fn python_command(ns: &Netns, script: &str, args: &[&str]) -> Command {
    let mut cmd = ns.command(PYTHON);
    cmd.args(["-u", "-B", "-c", script]).args(args);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// Waits until a TCP connect from `from` to `addr` succeeds; panics after
/// `timeout`, calling `why` for the message (a server's log).
pub fn wait_tcp(
    from: &Netns,
    addr: SocketAddr,
    timeout: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if tcp_connect(from, addr, Duration::from_millis(500)).is_ok() {
            return;
        }
        if let Err(why) = alive() {
            panic!("{addr} never answered: {why}");
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not accept connections within {timeout:?}: {}",
            alive().err().unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Debian's RabbitMQ, one node, inside `server`: AMQP on 10.200.0.2:5672
/// only, its Erlang distribution and epmd inside that namespace too, its
/// data, logs and Erlang cookie in a temporary directory. The `guest` user
/// may connect from the client namespace (`loopback_users.guest = false`).
pub struct RabbitMq {
    // Dropped in this order: everything in the namespace (the VM, epmd),
    // then the launcher, then the directory.
    _ns_guard: NsProcesses,
    server: Proc,
    dir: TempDir,
    ns: String,
}

impl RabbitMq {
    /// Starts it and waits (60 s at most) until `client` can connect.
    pub fn start(server: &Netns, client: &Netns) -> Self {
        let dir = TempDir::new("rabbitmq");
        for d in ["mnesia", "log", "home"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        dir.write(
            "rabbitmq.conf",
            &format!(
                "loopback_users.guest = false\nlisteners.tcp.default = {SERVER_V4}:{AMQP_PORT}\n"
            ),
        );
        dir.write("enabled_plugins", "[].\n");
        let mut cmd = server.command("/usr/lib/rabbitmq/bin/rabbitmq-server");
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", dir.join("home"))
            .env("RABBITMQ_NODENAME", "rabbit@localhost")
            .env("RABBITMQ_NODE_IP_ADDRESS", SERVER_V4.to_string())
            .env("RABBITMQ_NODE_PORT", AMQP_PORT.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
            // epmd: only on the namespace's loopback.
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .process_group(0);
        let mut rabbit = RabbitMq {
            _ns_guard: NsProcesses(server.name().to_string()),
            server: Proc::spawn(&mut cmd, "rabbitmq-server"),
            dir,
            ns: server.name().to_string(),
        };
        let started = Instant::now();
        let addr = SocketAddr::new(SERVER_V4, AMQP_PORT);
        wait_tcp(client, addr, RABBITMQ_START, || rabbit.alive());
        eprintln!(
            "rabbitmq-server accepted connections after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        rabbit
    }

    fn alive(&mut self) -> Result<(), String> {
        match self.server.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(s)) => Err(format!(
                "rabbitmq-server exited ({s})\nlog:\n{}",
                self.log()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Its console log so far.
    pub fn log(&self) -> String {
        format!("{}\n{}", self.server.stdout(), self.server.stderr())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn netns(&self) -> &str {
        &self.ns
    }
}

/// Kills every process left in a namespace when dropped (see
/// [`kill_all_in`]); fails the test if one survives.
pub struct NsProcesses(pub String);

impl Drop for NsProcesses {
    fn drop(&mut self) {
        if let Err(e) = kill_all_in_name(&self.0) {
            if thread::panicking() {
                eprintln!("leak (the test is failing already): {e}");
            } else {
                panic!("leak: {e}");
            }
        }
    }
}

/// A throwaway PostgreSQL cluster inside `server`: `initdb` as the
/// postgres user into a temporary directory, listening on 10.200.0.2:5432
/// and a socket in that directory, trust authentication for
/// 10.200.0.0/16.
pub struct Postgres {
    // After `drop` stops the server: whatever is left in the namespace,
    // then the directory.
    _ns_guard: NsProcesses,
    dir: TempDir,
    bin: PathBuf,
    ns: String,
}

impl Postgres {
    pub fn start(server: &Netns) -> Self {
        let bin = postgres_bin()
            .expect("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql");
        let dir = TempDir::new("pg");
        let status = Command::new("chown")
            .args(["postgres:postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "chown postgres {}", dir.path().display());
        let data = dir.join("data");
        let run = |cmd: &mut Command, what: &str| {
            let exit = crate::run_bounded(cmd, PG_START);
            assert!(exit.status.success(), "{what} failed: {exit:#?}");
        };
        run(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .args([
                    "-D",
                    &data,
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]),
            "initdb",
        );
        let hba = format!("{data}/pg_hba.conf");
        let mut f = std::fs::OpenOptions::new().append(true).open(&hba).unwrap();
        writeln!(f, "host all all 10.200.0.0/16 trust").unwrap();
        let pg = Postgres {
            _ns_guard: NsProcesses(server.name().to_string()),
            dir,
            bin: bin.clone(),
            ns: server.name().to_string(),
        };
        let opts = format!(
            "-k {} -h {SERVER_V4} -p {PG_PORT} -c fsync=off -c listen_addresses={SERVER_V4}",
            pg.dir.path().display()
        );
        run(
            server
                .command("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .args([
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    &data,
                    "-l",
                    &pg.dir.join("log"),
                    "-o",
                    &opts,
                ]),
            "pg_ctl start",
        );
        pg
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "runuser", "-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "stop",
                "-m",
                "immediate",
                "-t",
                "10",
                "-D",
                &self.dir.join("data"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = cmd.spawn() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // `_ns_guard` then kills whatever is left, and `dir` goes.
    }
}

/// `/usr/lib/postgresql/<newest>/bin`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Whether PostgreSQL's server binaries are installed.
pub fn postgres_installed() -> bool {
    postgres_bin().is_some()
}

/// `python3 -m http.server PORT --bind 10.200.0.2` inside `server`,
/// serving a temporary directory with one small file, `/hello.txt`.
pub struct HttpServer {
    _ns_guard: NsProcesses,
    server: Proc,
    _dir: TempDir,
}

impl HttpServer {
    /// Starts it and waits (10 s at most) until `client` can connect.
    pub fn start(server: &Netns, client: &Netns, port: u16) -> Self {
        let dir = TempDir::new("http");
        dir.write("hello.txt", "hello from the server namespace\n");
        let mut cmd = server.command(PYTHON);
        cmd.args(["-B", "-m", "http.server", &port.to_string(), "--bind"])
            .arg(SERVER_V4.to_string())
            .arg("--directory")
            .arg(dir.path())
            .process_group(0);
        let mut s = HttpServer {
            _ns_guard: NsProcesses(server.name().to_string()),
            server: Proc::spawn(&mut cmd, "python3 -m http.server"),
            _dir: dir,
        };
        let addr = SocketAddr::new(SERVER_V4, port);
        wait_tcp(client, addr, Duration::from_secs(10), || {
            match s.server.try_wait() {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "http.server exited: {other:?}: {}",
                    s.server.stderr()
                )),
            }
        });
        s
    }
}

/// True if a TCP connect from `from` to `addr` succeeds within `wait`.
pub fn connects(from: &Netns, addr: SocketAddr, wait: Duration) -> bool {
    tcp_connect(from, addr, wait).is_ok()
}

/// Waits up to `timeout` until a connect from `from` to `addr` succeeds;
/// returns how long it took, or panics.
pub fn wait_connects(from: &Netns, addr: SocketAddr, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if connects(from, addr, Duration::from_millis(300)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{addr} still unreachable from {} after {timeout:?}",
            from.name()
        );
        thread::sleep(Duration::from_millis(50));
    }
}
