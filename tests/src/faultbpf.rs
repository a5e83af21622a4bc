//! Runs the real `faultbpf` binary inside a test namespace, the way a user
//! would, and reads back what the CLI contract (docs/cli-contract.md) promises:
//! the `faultbpf: active:` readiness line, the exit code and the `--json`
//! counters.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, ChildStderr, ChildStdout, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::Netns;

/// Prefix of the one stderr line that says the fault is in force.
pub const ACTIVE_PREFIX: &str = "faultbpf: active:";

/// How long loading and attaching may take before a test gives up.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long faultbpf may take to detach and exit after a signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The binary under test: `$FAULTBPF_BIN`, else `<workspace>/target/debug/faultbpf`.
/// Panics if it does not exist, so a missing build fails instead of skipping.
pub fn faultbpf_bin() -> PathBuf {
    let path = match std::env::var_os("FAULTBPF_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/faultbpf"),
    };
    assert!(
        path.is_file(),
        "faultbpf binary not found at {} (run `cargo build -p faultbpf` or set FAULTBPF_BIN)",
        path.display()
    );
    path
}

/// How a faultbpf run ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Exit {
    /// The `--json` line parsed; the contract says stdout is exactly one line.
    pub fn json(&self) -> serde_json::Value {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "--json must print exactly one line on stdout, got {:?}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", lines[0]))
    }

    /// The counters of rule `id` from the `--json` line.
    pub fn rule(&self, id: u64) -> Counters {
        let json = self.json();
        let rule = json["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("no \"rules\" array in {json}"))
            .iter()
            .find(|r| r["id"].as_u64() == Some(id))
            .unwrap_or_else(|| panic!("no rule {id} in {json}"));
        let field = |name: &str| {
            rule[name]
                .as_u64()
                .unwrap_or_else(|| panic!("rule {id} has no integer {name:?}: {rule}"))
        };
        Counters {
            matched_packets: field("matched_packets"),
            matched_bytes: field("matched_bytes"),
            acted_packets: field("acted_packets"),
            acted_bytes: field("acted_bytes"),
        }
    }

    /// Panics unless faultbpf exited with code 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "faultbpf exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// One rule's final counters (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub matched_packets: u64,
    pub matched_bytes: u64,
    pub acted_packets: u64,
    pub acted_bytes: u64,
}

/// A running `faultbpf blackhole ..`; killed (by pid) on drop.
pub struct Faultbpf {
    child: Child,
    /// Every stderr line so far, for failure messages.
    stderr_lines: Arc<Mutex<Vec<String>>>,
    /// Stderr lines as they arrive, to wait for readiness.
    lines: Receiver<String>,
    stderr_thread: Option<JoinHandle<()>>,
    stdout_thread: Option<JoinHandle<String>>,
    /// Set once the child has been reaped, so drop does nothing.
    done: bool,
}

impl Faultbpf {
    /// Starts `faultbpf blackhole ARGS..` in `ns` without waiting for it.
    pub fn spawn(ns: &Netns, args: &[&str]) -> Self {
        crate::require_root();
        let mut child = ns
            .command(faultbpf_bin())
            .arg("blackhole")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start faultbpf: {e}"));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let log = Arc::clone(&stderr_lines);
        // Drained all the time, so faultbpf never blocks on a full pipe.
        let stderr_thread = thread::spawn(move || drain_stderr(stderr, tx, log));
        let stdout_thread = thread::spawn(move || read_stdout(stdout));
        Faultbpf {
            child,
            stderr_lines,
            lines,
            stderr_thread: Some(stderr_thread),
            stdout_thread: Some(stdout_thread),
            done: false,
        }
    }

    /// Starts faultbpf and returns once it printed `faultbpf: active:`;
    /// panics (after killing it) if it exits or times out first.
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        let mut fb = Self::spawn(ns, args);
        fb.wait_active();
        fb
    }

    /// Waits for the readiness line (see [`Faultbpf::start`]).
    pub fn wait_active(&mut self) {
        let deadline = Instant::now() + ACTIVE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(ACTIVE_PREFIX) => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let exit = self.wait(STOP_TIMEOUT);
                    panic!("faultbpf exited before `{ACTIVE_PREFIX}`: {exit:#?}");
                }
                Err(RecvTimeoutError::Timeout) => {
                    let exit = self.stop(libc::SIGKILL);
                    panic!("no `{ACTIVE_PREFIX}` line within {ACTIVE_TIMEOUT:?}: {exit:#?}");
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits for the exit.
    pub fn stop(&mut self, signal: libc::c_int) -> Exit {
        self.signal(signal);
        self.wait(STOP_TIMEOUT)
    }

    /// Waits up to `timeout` for faultbpf to exit by itself; kills it and
    /// panics if it does not.
    pub fn wait(&mut self, timeout: Duration) -> Exit {
        assert!(!self.done, "faultbpf was already reaped");
        let Some(status) = crate::wait_within(&mut self.child, timeout) else {
            self.kill();
            panic!(
                "faultbpf (pid {}) still running after {timeout:?}; killed it\nstderr:\n{}",
                self.pid(),
                self.stderr()
            );
        };
        self.done = true;
        let stdout = join_bounded(self.stdout_thread.take().unwrap());
        join_bounded(self.stderr_thread.take().unwrap());
        Exit {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: plain syscall; the pid is our own unreaped child, so it
        // cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Faultbpf {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
}

fn drain_stderr(stderr: ChildStderr, tx: mpsc::Sender<String>, log: Arc<Mutex<Vec<String>>>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        log.lock().unwrap().push(line.clone());
        // The receiver may be gone (test finished); keep draining anyway.
        let _ = tx.send(line);
    }
}

fn read_stdout(mut stdout: ChildStdout) -> String {
    let mut text = String::new();
    let _ = stdout.read_to_string(&mut text);
    text
}

/// Joins a pipe-reading thread, which ends at EOF once faultbpf has exited;
/// bounded in case something else inherited the pipe.
fn join_bounded<T: Default>(handle: JoinHandle<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !handle.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    if handle.is_finished() {
        handle.join().unwrap()
    } else {
        eprintln!("warning: faultbpf's output pipe still open 5 s after exit");
        T::default()
    }
}
