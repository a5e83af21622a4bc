//! Child processes of a test, and how they ended: [`Proc`] runs one in the
//! background with its output read line by line (faultbpf, a Python client,
//! a server), [`run_bounded`] runs one to completion, and [`Exit`] is what
//! both hand back, with the `--json` counters faultbpf's CLI contract
//! (docs/cli-contract.md) promises.
//!
//! Every wait is bounded, and a process still running when its guard drops
//! is killed by its own pid, never by name.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::launch::ACTIVE_PREFIX;

/// How long loading and attaching may take before a test gives up.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after a signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How a process ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Exit {
    /// The `--json` line parsed; the contract says stdout is exactly one line.
    pub fn json(&self) -> Value {
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

    /// Panics unless the process exited with code 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "exited with {}\nstdout:\n{}\nstderr:\n{}",
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

/// Waits up to `timeout` for `child` to exit; `None` if it is still
/// running then (the caller kills it and says why).
pub fn wait_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` to completion with stdin closed; kills it (by pid) and panics
/// after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Exit {
    run_inner(cmd, None, timeout)
}

/// Runs `cmd` to completion with `input` on its stdin (a filter such as a
/// Python parser); kills it (by pid) and panics after `timeout`.
pub fn run_with_input(cmd: &mut Command, input: &[u8], timeout: Duration) -> Exit {
    run_inner(cmd, Some(input.to_vec()), timeout)
}

fn run_inner(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration) -> Exit {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Written and read on their own threads: a child that fills one pipe
    // while we wait on another must not deadlock the test.
    let writer = child.stdin.take().zip(input).map(|(mut stdin, input)| {
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let Some(status) = wait_within(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} still running after {timeout:?}; killed it");
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Exit {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// A process started by a test, its stdout and stderr read line by line
/// (all the time, so it never blocks on a full pipe); killed by pid on drop.
pub struct Proc {
    child: Child,
    what: String,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
    /// Set once the child has been reaped, so drop does nothing.
    done: bool,
}

impl Proc {
    /// Spawns `cmd` with piped stdin, stdout and stderr; `what` names it in
    /// failure messages.
    pub fn spawn(cmd: &mut Command, what: &str) -> Self {
        Self::spawn_with(cmd, what, true)
    }

    /// Like [`Proc::spawn`]; stdin is a pipe if `stdin_piped`, else
    /// `/dev/null`.
    pub fn spawn_with(cmd: &mut Command, what: &str, stdin_piped: bool) -> Self {
        let stdin = if stdin_piped {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, out) = mpsc::channel();
        let (etx, err) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out_log = Arc::clone(&stdout_lines);
        let err_log = Arc::clone(&stderr_lines);
        let threads = vec![
            thread::spawn(move || pump(stdout, tx, out_log)),
            thread::spawn(move || pump(stderr, etx, err_log)),
        ];
        Proc {
            stdin: child.stdin.take(),
            child,
            what: what.to_string(),
            out,
            err,
            stdout_lines,
            stderr_lines,
            threads,
            done: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line (or name) it was started with, for failure messages.
    pub fn command(&self) -> &str {
        &self.what
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        !self.done && self.child.try_wait().unwrap().is_none()
    }

    /// Its exit status if it has exited ([`std::process::Child::try_wait`]).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends one line on its stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin closed or not piped");
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "{}: cannot write to stdin: {e}\nstderr:\n{}",
                    self.what,
                    self.stderr()
                )
            });
    }

    /// The next stdout line, parsed as JSON; panics (with stderr) on EOF,
    /// on a line that is not JSON, or after `timeout`.
    pub fn next_json(&mut self, timeout: Duration) -> Value {
        let line = self.next_line(timeout);
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "{}: stdout line is not JSON ({e}): {line:?}\nstderr:\n{}",
                self.what,
                self.stderr()
            )
        })
    }

    /// The next stdout line.
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.out.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no output line within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout(),
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                self.done = true;
                panic!(
                    "{}: exited ({status:?}) before the expected output\nstdout:\n{}\nstderr:\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                )
            }
        }
    }

    /// Waits (up to `timeout`) for a stderr line starting with `prefix`;
    /// returns it.
    pub fn wait_stderr(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!(
                    "{}: no stderr line starting with {prefix:?} ({e:?})\nstderr:\n{}",
                    self.what,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for faultbpf's `faultbpf: active:` line; panics (after
    /// reaping or killing it) if it exits or 30 s pass first.
    pub fn wait_active(&mut self) {
        let deadline = Instant::now() + ACTIVE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) if line.starts_with(ACTIVE_PREFIX) => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let exit = self.wait(STOP_TIMEOUT);
                    panic!("`{}` exited before `{ACTIVE_PREFIX}`: {exit:#?}", self.what);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let exit = self.stop(libc::SIGKILL);
                    panic!(
                        "`{}`: no `{ACTIVE_PREFIX}` line within {ACTIVE_TIMEOUT:?}: {exit:#?}",
                        self.what
                    );
                }
            }
        }
    }

    /// Stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout_lines.lock().unwrap().join("\n")
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// The number of stderr lines so far (to wait for a line after a mark).
    pub fn stderr_len(&self) -> usize {
        self.stderr_lines.lock().unwrap().len()
    }

    /// The first stderr line after the first `from` that contains `needle`.
    pub fn stderr_line_after(&self, from: usize, needle: &str) -> Option<String> {
        self.stderr_lines
            .lock()
            .unwrap()
            .iter()
            .skip(from)
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Sends `signal` to the process (by its pid).
    pub fn signal(&self, signal: libc::c_int) {
        assert!(!self.done, "`{}` was already reaped", self.what);
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: plain kill(2); the pid is our own unreaped child, so it
        // cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits (15 s at most) for
    /// the exit.
    pub fn stop(&mut self, signal: libc::c_int) -> Exit {
        self.signal(signal);
        self.wait(STOP_TIMEOUT)
    }

    /// SIGTERM, then the exit, which must be a success; the usual end of a
    /// faultbpf run.
    pub fn finish(&mut self) -> Exit {
        let exit = self.stop(libc::SIGTERM);
        exit.assert_success();
        exit
    }

    /// Closes stdin, waits up to `timeout` for the exit (killing it and
    /// panicking after that), and returns status and output.
    pub fn wait(&mut self, timeout: Duration) -> Exit {
        assert!(!self.done, "`{}` was already reaped", self.what);
        drop(self.stdin.take());
        let Some(status) = wait_within(&mut self.child, timeout) else {
            self.kill();
            panic!(
                "`{}` (pid {}) still running after {timeout:?}; killed it\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.pid(),
                self.stdout(),
                self.stderr()
            );
        };
        self.done = true;
        // The pipes close at exit (unless a grandchild inherited them).
        let until = Instant::now() + Duration::from_secs(5);
        for h in self.threads.drain(..) {
            while !h.is_finished() && Instant::now() < until {
                thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                eprintln!(
                    "warning: `{}`: output pipe still open 5 s after exit",
                    self.what
                );
            }
        }
        let stdout: String = self
            .stdout_lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        Exit {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }

    /// SIGKILL and reap, if it is still running.
    pub fn kill(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.done = true;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pump(r: impl Read, tx: mpsc::Sender<String>, log: Arc<Mutex<Vec<String>>>) {
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        log.lock().unwrap().push(line.clone());
        // The receiver may be gone (test finished); keep draining anyway.
        let _ = tx.send(line);
    }
}
