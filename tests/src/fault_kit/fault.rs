//! A running `faultbpf SUBCOMMAND ..` of any kind (reset, hang, corrupt,
//! mark, chaos, blackhole), inside a test namespace. Same contract as
//! [`crate::Faultbpf`] (which only runs `blackhole`): wait for the
//! `faultbpf: active:` line, stop with a signal, read the `--json` counters.
//! Always runs standalone: `--standalone` is added to every command line and
//! `FAULTBPF_SOCKET` points to a path that does not exist, so a daemon
//! listening on the default socket is never involved.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{Exit, Netns, faultbpf::ACTIVE_PREFIX, faultbpf::faultbpf_bin};

/// How long loading and attaching may take before a test gives up.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long faultbpf may take to detach and exit after a signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// A socket path that never exists: no daemon can answer there.
const NO_DAEMON: &str = "/nonexistent/faultbpf-tests.sock";

/// A running faultbpf; killed (by pid) on drop.
pub struct Fault {
    child: Child,
    command: String,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
    stderr_thread: Option<JoinHandle<()>>,
    stdout_thread: Option<JoinHandle<String>>,
    done: bool,
}

impl Fault {
    /// Starts `faultbpf SUBCOMMAND ARGS.. --standalone` in `ns` and returns
    /// once it printed `faultbpf: active:`; panics (after killing it) if it
    /// exits or times out first.
    pub fn start(ns: &Netns, subcommand: &str, args: &[&str]) -> Self {
        crate::require_root();
        let command = format!(
            "ip netns exec {} faultbpf {subcommand} {} --standalone",
            ns.name(),
            args.join(" ")
        );
        let mut child = ns
            .command(faultbpf_bin())
            .arg(subcommand)
            .args(args)
            .arg("--standalone")
            .env("FAULTBPF_SOCKET", NO_DAEMON)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let log = Arc::clone(&stderr_lines);
        // Both pipes are drained all the time, so faultbpf never blocks.
        let stderr_thread = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let stdout_thread = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let mut fault = Fault {
            child,
            command,
            stderr_lines,
            lines,
            stderr_thread: Some(stderr_thread),
            stdout_thread: Some(stdout_thread),
            done: false,
        };
        fault.wait_active();
        fault
    }

    fn wait_active(&mut self) {
        let deadline = Instant::now() + ACTIVE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(ACTIVE_PREFIX) => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let exit = self.wait(STOP_TIMEOUT);
                    panic!(
                        "`{}` exited before `{ACTIVE_PREFIX}`: {exit:#?}",
                        self.command
                    );
                }
                Err(RecvTimeoutError::Timeout) => {
                    let exit = self.stop(libc::SIGKILL);
                    panic!(
                        "`{}`: no `{ACTIVE_PREFIX}` line within {ACTIVE_TIMEOUT:?}: {exit:#?}",
                        self.command
                    );
                }
            }
        }
    }

    /// The command line, for failure messages.
    pub fn command(&self) -> &str {
        &self.command
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

    /// Sends `signal` (e.g. `libc::SIGTERM`) to this faultbpf's pid and
    /// waits for the exit.
    pub fn stop(&mut self, signal: libc::c_int) -> Exit {
        assert!(!self.done, "`{}` was already reaped", self.command);
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
        self.wait(STOP_TIMEOUT)
    }

    /// SIGTERM, then the exit, which must be a success; the usual end of a test.
    pub fn finish(&mut self) -> Exit {
        let exit = self.stop(libc::SIGTERM);
        exit.assert_success();
        exit
    }

    fn wait(&mut self, timeout: Duration) -> Exit {
        let Some(status) = crate::wait_within(&mut self.child, timeout) else {
            self.kill();
            panic!(
                "`{}` (pid {}) still running after {timeout:?}; killed it\nstderr:\n{}",
                self.command,
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

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if !self.done {
            self.kill();
        }
    }
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
