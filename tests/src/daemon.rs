//! Drives `faultbpf daemon` the way its users do: start it inside a test
//! namespace on a throwaway Unix socket, talk HTTP to it ([`crate::http`]),
//! run the CLI against it ([`Daemon::launch`]), and stop or kill it.
//!
//! The daemon attaches to every interface that is up in the namespace it
//! runs in, so it is only ever started inside a namespace the test created
//! ([`Daemon::start`] takes a [`Netns`]), and CLI commands aimed at it also
//! run inside that namespace: if the daemon were gone, a fault command would
//! fall back to running standalone, and must then attach there, not in the
//! root namespace.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::ExitStatus,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Launch, Netns, Proc,
    http::{Request, Response, unix_request},
    temp::temp_path,
};

/// How long the daemon may take to load, attach and answer `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `faultbpf daemon`, inside a test namespace; killed (by pid)
/// on drop, and its socket file removed.
pub struct Daemon {
    proc: Proc,
    socket: PathBuf,
}

impl Daemon {
    /// Starts `faultbpf daemon --socket /tmp/fbt-<tag>-..sock ARGS..` in
    /// `ns` and returns once `/healthz` answers 200.
    pub fn start(ns: &Netns, tag: &str, args: &[&str]) -> Self {
        let mut d = Self::spawn(ns, tag, args);
        d.wait_ready();
        d
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(ns: &Netns, tag: &str, args: &[&str]) -> Self {
        Self::spawn_at(ns, temp_path(tag, ".sock"), args)
    }

    /// Like [`Daemon::start`] on a socket path of the caller's choosing
    /// (e.g. the one a killed daemon left behind).
    pub fn start_at(ns: &Netns, socket: PathBuf, args: &[&str]) -> Self {
        let mut d = Self::spawn_at(ns, socket, args);
        d.wait_ready();
        d
    }

    /// Starts the daemon on `socket` without waiting for it.
    pub fn spawn_at(ns: &Netns, socket: PathBuf, args: &[&str]) -> Self {
        Self::spawn_env(ns, socket, args, &[])
    }

    /// Like [`Daemon::start`] with `env` added to its environment (e.g.
    /// `DOCKER_HOST` for a daemon that finds containers).
    pub fn start_env(ns: &Netns, tag: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut d = Self::spawn_env(ns, temp_path(tag, ".sock"), args, env);
        d.wait_ready();
        d
    }

    fn spawn_env(ns: &Netns, socket: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut launch = Launch::new(ns, ["daemon"]).args(args).socket(&socket);
        for (k, v) in env {
            launch = launch.env(k, v);
        }
        Daemon {
            proc: launch.spawn(),
            socket,
        }
    }

    /// `faultbpf ARGS..` in `ns`, aimed at this daemon (`--socket`); run it
    /// with [`Launch::run`] or start it with [`Launch::start`].
    pub fn launch<I, S>(&self, ns: &Netns, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Launch::new(ns, args).socket(&self.socket)
    }

    /// Waits until `/healthz` answers 200; panics (with the log) if the
    /// daemon exits or does not answer within 30 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(r) = unix_request(&self.socket, &Request::new("GET", "/healthz"))
                && r.status == 200
            {
                return;
            }
            if !self.proc.is_running() {
                let exit = self.proc.wait(STOP_TIMEOUT);
                panic!(
                    "faultbpf daemon exited ({}) before answering /healthz\nstderr:\n{}",
                    exit.status, exit.stderr
                );
            }
            if Instant::now() >= deadline {
                self.proc.kill();
                panic!(
                    "faultbpf daemon did not answer /healthz within {READY_TIMEOUT:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The socket path as a `&str`, for command lines and environments.
    pub fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    /// The number of stderr lines so far (to wait for a line after a mark).
    pub fn log_len(&self) -> usize {
        self.proc.stderr_len()
    }

    /// Waits up to `timeout` for a stderr line, after the first `from`
    /// lines, that contains `needle`; returns it.
    pub fn wait_log(&self, from: usize, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.proc.stderr_line_after(from, needle) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like [`Daemon::wait_log`] but panics (with the log) if no such line.
    pub fn expect_log(&self, from: usize, needle: &str, timeout: Duration) -> String {
        self.wait_log(from, needle, timeout).unwrap_or_else(|| {
            panic!(
                "no daemon log line containing {needle:?} within {timeout:?}\nstderr:\n{}",
                self.stderr()
            )
        })
    }

    /// One request over the Unix socket; panics if the exchange fails.
    pub fn request(&self, req: &Request<'_>) -> Response {
        unix_request(&self.socket, req).unwrap_or_else(|e| {
            panic!(
                "{} {} over {}: {e}\ndaemon stderr:\n{}",
                req.method,
                req.path,
                self.socket.display(),
                self.stderr()
            )
        })
    }

    pub fn get(&self, path: &str) -> Response {
        self.request(&Request::new("GET", path))
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request(&Request::new("DELETE", path))
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.request(&Request::new("POST", path).body(body))
    }

    /// POST /v1/rules with `spec`; panics unless 201; returns the rule.
    pub fn add_rule(&self, spec: &Value) -> Value {
        let r = self.post("/v1/rules", spec.to_string().as_bytes());
        assert_eq!(r.status, 201, "POST /v1/rules {spec}: {r}");
        r.json()
    }

    /// The `rules` array of GET /v1/rules.
    pub fn rules(&self) -> Vec<Value> {
        let v = self.get("/v1/rules").expect(200);
        v["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("no rules array: {v}"))
            .clone()
    }

    /// Rule `id`'s entry of GET /v1/stats.
    pub fn stats_of(&self, id: u64) -> Option<Value> {
        let v = self.get("/v1/stats").expect(200);
        v["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("no rules array: {v}"))
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
    }

    /// Panics unless `/healthz` answers 200 with `"status": "ok"`.
    pub fn assert_healthy(&self, after: &str) {
        let r = unix_request(&self.socket, &Request::new("GET", "/healthz")).unwrap_or_else(|e| {
            panic!(
                "daemon stopped answering after {after}: {e}\nstderr:\n{}",
                self.stderr()
            )
        });
        assert_eq!(r.status, 200, "/healthz after {after}: {r}");
        assert_eq!(r.json()["status"], "ok", "/healthz after {after}: {r}");
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        self.proc.signal(signal);
    }

    /// Sends `signal` and waits (15 s at most) for the exit.
    pub fn stop(&mut self, signal: libc::c_int) -> (ExitStatus, String) {
        self.signal(signal);
        self.wait(STOP_TIMEOUT)
    }

    /// Waits up to `timeout` for the daemon to exit; kills it and panics if
    /// it does not. Returns the status and the whole log.
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let exit = self.proc.wait(timeout);
        (exit.status, exit.stderr)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.proc.kill();
        // The daemon removes it on a clean stop; not after SIGKILL.
        let _ = std::fs::remove_file(&self.socket);
    }
}
