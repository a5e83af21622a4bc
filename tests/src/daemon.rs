//! Drives `faultbpf daemon` the way its users do: start it inside a test
//! namespace on a throwaway Unix socket, talk HTTP/1.1 to it (over that
//! socket, or over TCP from inside the namespace), run the CLI against it,
//! parse its Prometheus output with a real parser, and stop or kill it.
//!
//! The daemon attaches to every interface that is up in the namespace it
//! runs in, so it is only ever started inside a namespace the test created
//! ([`Daemon::start`] takes a [`Netns`]), and CLI commands aimed at it also
//! run inside that namespace: if the daemon were gone, a fault command would
//! fall back to running standalone, and must then attach there, not in the
//! root namespace.

use std::{
    collections::BTreeMap,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsFd,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    CLIENT_V4, Exit, Netns, SERVER_V4, Topology, faultbpf::faultbpf_bin, force_rcvbuf,
    net::RecvRetry,
};

/// How long the daemon may take to load, attach and answer `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Read and write timeout of one HTTP exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one CLI command may run before it is killed.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes socket and file names unique between the threads of one binary.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A path under /tmp unique to this process and call: `fbt-<tag>-<pid>-<n><suffix>`.
pub fn temp_path(tag: &str, suffix: &str) -> PathBuf {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/tmp/fbt-{tag}-{}-{n}{suffix}", std::process::id()))
}

/// A file under /tmp removed on drop (configs, token files, trafgen configs).
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Writes `contents` to a fresh `/tmp/fbt-<tag>-..<suffix>`, mode 0600.
    pub fn new(tag: &str, suffix: &str, contents: &str) -> Self {
        let file = TempFile {
            path: temp_path(tag, suffix),
        };
        file.write(contents);
        file
    }

    /// Replaces the contents (atomically, by rename, as an editor would).
    pub fn write(&self, contents: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("partial");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
        f.write_all(contents.as_bytes()).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a `&str`, for command lines.
    pub fn as_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the response) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }

    /// Panics unless the status is `status`; returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self.json()
    }

    /// Panics unless this is an RFC 9457 problem with `status`: that status,
    /// `Content-Type: application/problem+json`, and a JSON object with the
    /// same `status`, a `title` and a non-empty `detail`. Returns the detail.
    pub fn expect_problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "unexpected status: {self}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "a problem needs Content-Type application/problem+json: {self}"
        );
        let body = self.json();
        assert_eq!(body["status"], status, "problem body status: {self}");
        assert!(body["title"].is_string(), "problem without title: {self}");
        assert!(body["type"].is_string(), "problem without type: {self}");
        let detail = body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("problem without detail: {self}"));
        assert!(!detail.trim().is_empty(), "empty problem detail: {self}");
        detail.to_string()
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = self.text();
        let shown: String = body.chars().take(2000).collect();
        write!(f, "HTTP {} {:?} {shown}", self.status, self.headers)
    }
}

/// One HTTP/1.1 request.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<&'a [u8]>,
    /// Send the body with `Transfer-Encoding: chunked` instead of a length.
    pub chunked: bool,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Request {
            method,
            path,
            headers: Vec::new(),
            body: None,
            chunked: false,
        }
    }

    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

/// Sends `req` on `stream` (one request, `Connection: close`) and reads the
/// response. Write errors are tolerated once the head is out: a server may
/// answer (413) and close before it has read a large body, and that answer
/// is what the test wants to see.
pub fn exchange<S: Read + Write>(mut stream: S, req: &Request<'_>) -> io::Result<Response> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: faultbpf\r\nConnection: close\r\n",
        req.method, req.path
    );
    for (k, v) in &req.headers {
        head += &format!("{k}: {v}\r\n");
    }
    if let Some(body) = req.body {
        if req.chunked {
            head += "Transfer-Encoding: chunked\r\n";
        } else {
            head += &format!("Content-Length: {}\r\n", body.len());
        }
        if !req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            head += "Content-Type: application/json\r\n";
        }
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    if let Some(body) = req.body {
        let sent = if req.chunked {
            body.chunks(64 * 1024)
                .try_for_each(|c| {
                    stream.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
                    stream.write_all(c)?;
                    stream.write_all(b"\r\n")
                })
                .and_then(|()| stream.write_all(b"0\r\n\r\n"))
        } else {
            stream.write_all(body)
        };
        match sent {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let _ = stream.flush();
    read_response(BufReader::new(stream))
}

fn read_response(mut r: impl BufRead) -> io::Result<Response> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = find("content-length") {
        let n: usize = n
            .parse()
            .map_err(|_| bad(format!("bad content-length {n:?}")))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One request over the Unix socket at `path`.
pub fn unix_request(path: &Path, req: &Request<'_>) -> io::Result<Response> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    exchange(s, req)
}

/// One request over TCP to `addr`, from inside `ns` (the daemon's TCP
/// listeners bind the namespace's own loopback).
pub fn tcp_request(ns: &Netns, addr: SocketAddr, req: &Request<'_>) -> io::Result<Response> {
    let s = ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    exchange(s, req)
}

/// A running `faultbpf daemon`, inside a test namespace; killed (by pid)
/// on drop, and its socket file removed.
pub struct Daemon {
    child: Child,
    socket: PathBuf,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    done: bool,
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
        crate::require_root();
        let mut child = ns
            .command(faultbpf_bin())
            .arg("daemon")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env_remove("FAULTBPF_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start faultbpf daemon: {e}"));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&stderr_lines);
        let stderr = child.stderr.take().unwrap();
        let stderr_thread = thread::spawn(move || drain(stderr, log));
        Daemon {
            child,
            socket,
            stderr_lines,
            stderr_thread: Some(stderr_thread),
            done: false,
        }
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
            if let Some(status) = self.child.try_wait().unwrap() {
                self.done = true;
                self.join_stderr();
                panic!(
                    "faultbpf daemon exited ({status}) before answering /healthz\nstderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                self.kill();
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
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// The number of stderr lines so far (to wait for a line after a mark).
    pub fn log_len(&self) -> usize {
        self.stderr_lines.lock().unwrap().len()
    }

    /// Waits up to `timeout` for a stderr line, after the first `from`
    /// lines, that contains `needle`; returns it.
    pub fn wait_log(&self, from: usize, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .stderr_lines
                .lock()
                .unwrap()
                .iter()
                .skip(from)
                .find(|l| l.contains(needle))
            {
                return Some(line.clone());
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
        !self.done && self.child.try_wait().unwrap().is_none()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: plain syscall; the pid is our own unreaped child, so it
        // cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}): {}",
            io::Error::last_os_error()
        );
    }

    /// Sends `signal` and waits (15 s at most) for the exit.
    pub fn stop(&mut self, signal: libc::c_int) -> (ExitStatus, String) {
        self.signal(signal);
        self.wait(STOP_TIMEOUT)
    }

    /// Waits up to `timeout` for the daemon to exit; kills it and panics if
    /// it does not. Returns the status and the whole log.
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        assert!(!self.done, "the daemon was already reaped");
        let Some(status) = crate::wait_within(&mut self.child, timeout) else {
            self.kill();
            panic!(
                "faultbpf daemon still running {timeout:?} after it was told to stop; killed it\nstderr:\n{}",
                self.stderr()
            );
        };
        self.done = true;
        self.join_stderr();
        (status, self.stderr())
    }

    fn join_stderr(&mut self) {
        if let Some(h) = self.stderr_thread.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }

    fn kill(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.done = true;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        // The daemon removes it on a clean stop; not after SIGKILL.
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn drain(stderr: ChildStderr, log: Arc<Mutex<Vec<String>>>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        log.lock().unwrap().push(line);
    }
}

/// Runs `faultbpf ARGS..` to completion inside `ns` with `FAULTBPF_SOCKET`
/// set to `socket`; kills it and panics after 30 s.
pub fn cli(ns: &Netns, socket: &str, args: &[&str]) -> Exit {
    let mut cmd = ns.command(faultbpf_bin());
    cmd.args(args).env("FAULTBPF_SOCKET", socket);
    run_bounded(&mut cmd, CLI_TIMEOUT)
}

/// Runs `cmd` to completion with stdin closed; kills it (by pid) and panics
/// after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Exit {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
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
    let Some(status) = crate::wait_within(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} still running after {timeout:?}; killed it");
    };
    Exit {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric family's type as declared by `# TYPE`.
    pub family_type: String,
    /// The sample's own name (with `_total` for counters).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Debian's interpreter, where python3-prometheus-client installs (a
/// pyenv or venv `python3` earlier on PATH would not see it).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

const PARSE_SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        out.append({"type": f.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// Parses a Prometheus text exposition with the reference client library's
/// parser (`prometheus_client.parser.text_string_to_metric_families`, from
/// Debian's python3-prometheus-client); panics if it does not parse.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut child = Command::new(SYSTEM_PYTHON)
        .args(["-c", PARSE_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {SYSTEM_PYTHON} (install python3-prometheus-client): {e}")
        });
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_string();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Prometheus parser ran for 30 s; killed it");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = writer.join();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "{SYSTEM_PYTHON} has no prometheus_client: apt-get install python3-prometheus-client"
    );
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics ({}): {stderr}\n--- text ---\n{text}",
        out.status
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.into_iter()
        .map(|s| Sample {
            family_type: s["type"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The value of sample `name` whose label `label` is `value`, if any.
pub fn sample_value(samples: &[Sample], name: &str, label: &str, value: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get(label).map(String::as_str) == Some(value))
        .map(|s| s.value)
}

/// A system user made for one test (`useradd --system --no-create-home`),
/// deleted on drop. Where /etc cannot be written (the VM lane mounts the
/// host's root read-only) it is only a uid and gid that no account uses,
/// which is all `setpriv` needs.
pub struct TestUser {
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    pub fn create() -> Self {
        if root_is_read_only() {
            // An id no account in /etc/passwd has.
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let used: Vec<u32> = passwd
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect();
            let uid = (61_000..62_000)
                .find(|u| !used.contains(u))
                .expect("a free uid");
            return TestUser {
                name: None,
                uid,
                gid: uid,
            };
        }
        let name = format!("fbtest-{}", std::process::id());
        crate::run_checked(
            Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name),
        );
        // The guard first, so a failure below still deletes the user.
        let mut user = TestUser {
            name: Some(name.clone()),
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> u32 {
            crate::run_checked(Command::new("id").args([flag, &name]))
                .trim()
                .parse()
                .unwrap()
        };
        user.uid = id("-u");
        user.gid = id("-g");
        assert_ne!(user.uid, 0, "useradd made a root user");
        user
    }

    /// A command that runs `program` as this user, with no supplementary
    /// groups, inside `ns`.
    pub fn command(&self, ns: &Netns, program: &str) -> Command {
        let mut cmd = ns.command("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .arg(program);
        cmd
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            match Command::new("userdel").arg(name).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "warning: userdel {name}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("warning: userdel {name}: {e}"),
            }
        }
    }
}

/// A UDP path from the client namespace to one port of the server's IPv4
/// address, to see whether a fault is in force: datagrams sent while it is
/// vanish, the others arrive.
pub struct UdpPath {
    pub tx: UdpSocket,
    pub rx: UdpSocket,
    pub to: SocketAddr,
}

impl UdpPath {
    pub fn new(topo: &Topology, port: u16) -> Self {
        let to = SocketAddr::new(SERVER_V4, port);
        let rx = crate::udp_bind(&topo.server, to);
        force_rcvbuf(rx.as_fd(), 8 << 20);
        let tx = crate::udp_bind(&topo.client, SocketAddr::new(CLIENT_V4, 0));
        UdpPath { tx, rx, to }
    }

    /// Sends `n` datagrams of `len` bytes of payload.
    pub fn send(&self, n: usize, len: usize) {
        let payload = vec![b'x'; len];
        for _ in 0..n {
            self.tx.send_to(&payload, self.to).unwrap();
        }
    }

    /// Counts the datagrams that arrive until none has for 300 ms.
    pub fn drain(&self) -> usize {
        crate::count_datagrams(&self.rx, usize::MAX, Duration::from_millis(300)).len()
    }

    /// Sends `n` small datagrams and returns how many arrived.
    pub fn probe(&self, n: usize) -> usize {
        self.drain();
        self.send(n, 16);
        self.drain()
    }

    /// Sends one datagram every 50 ms until one arrives or `deadline`
    /// passes; returns when the first one that arrived was sent.
    pub fn wait_flowing(&self, deadline: Instant) -> Option<Instant> {
        self.drain();
        self.rx
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let sent = Instant::now();
            self.tx.send_to(b"probe", self.to).unwrap();
            if self.rx.recv_retry(&mut buf).is_ok() {
                return Some(sent);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Like [`UdpPath::wait_flowing`], for the fault coming (back) into
    /// force: returns when the first probe that vanished was sent.
    pub fn wait_blocked(&self, deadline: Instant) -> Option<Instant> {
        self.drain();
        self.rx
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        loop {
            let sent = Instant::now();
            self.tx.send_to(b"probe", self.to).unwrap();
            if self.rx.recv_retry(&mut buf).is_err() {
                return Some(sent);
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }
}

/// One exchange to check against docs/openapi.yaml.
#[derive(Debug, Clone)]
pub enum ApiCheck {
    /// An answer: route template (`/v1/rules/{id}`), method, status, the
    /// Content-Type without parameters, and the JSON body (if it has one).
    Response {
        route: String,
        method: String,
        status: u16,
        content_type: String,
        body: Option<Value>,
    },
    /// A POST /v1/rules body and whether the daemon accepted it: the
    /// document's `RuleSpec` must agree.
    RuleSpec { body: Value, accepted: bool },
}

const OPENAPI_SCRIPT: &str = r#"
import json, sys, yaml, jsonschema
doc = yaml.safe_load(open(sys.argv[1]))
resolver = jsonschema.RefResolver.from_schema(doc)
def deref(x):
    while isinstance(x, dict) and "$ref" in x:
        x = resolver.resolve(x["$ref"])[1]
    return x
def errors(schema, value):
    v = jsonschema.Draft202012Validator(schema, resolver=resolver)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(value)]
out = []
for c in json.load(sys.stdin):
    if c["kind"] == "spec":
        schema = doc["paths"]["/v1/rules"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        errs = errors(schema, c["body"])
        if c["accepted"] and errs:
            out.append(f"accepted body {json.dumps(c['body'])} does not fit RuleSpec: {errs}")
        if not c["accepted"] and not errs:
            out.append(f"refused body {json.dumps(c['body'])} fits RuleSpec")
        continue
    what = f"{c['method']} {c['route']} -> {c['status']}"
    op = doc["paths"].get(c["route"], {}).get(c["method"].lower())
    if op is None:
        out.append(f"{what}: no such operation in the document")
        continue
    resp = op["responses"].get(str(c["status"]))
    if resp is None:
        out.append(f"{what}: status not documented")
        continue
    content = deref(resp).get("content", {})
    media = next((v for k, v in content.items() if k.split(";")[0].strip() == c["content_type"]), None)
    if media is None:
        out.append(f"{what}: content type {c['content_type']} not documented (has {list(content)})")
        continue
    if c["body"] is not None:
        for e in errors(media["schema"], c["body"]):
            out.append(f"{what}: {e}; body {json.dumps(c['body'])[:300]}")
print(json.dumps(out))
"#;

/// Checks exchanges against the OpenAPI document at `doc` with Debian's
/// python3-yaml and python3-jsonschema; returns every disagreement.
pub fn check_openapi(doc: &Path, checks: &[ApiCheck]) -> Vec<String> {
    let input: Vec<Value> = checks
        .iter()
        .map(|c| match c {
            ApiCheck::Response {
                route,
                method,
                status,
                content_type,
                body,
            } => serde_json::json!({
                "kind": "response", "route": route, "method": method, "status": status,
                "content_type": content_type, "body": body,
            }),
            ApiCheck::RuleSpec { body, accepted } => {
                serde_json::json!({ "kind": "spec", "body": body, "accepted": accepted })
            }
        })
        .collect();
    let mut child = Command::new(SYSTEM_PYTHON)
        .args(["-c", OPENAPI_SCRIPT])
        .arg(doc)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {SYSTEM_PYTHON}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let text = Value::Array(input).to_string();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the OpenAPI check ran for 60 s; killed it");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = writer.join();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the OpenAPI check failed ({}; needs python3-yaml and python3-jsonschema): {stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("OpenAPI check output: {e}: {stderr}"))
}

/// True in the VM lane (`cargo xtask vm`), whose root filesystem is the
/// host's, mounted read-only, and whose CPU is emulated: load tests scale
/// down there.
pub fn root_is_read_only() -> bool {
    let root = std::ffi::CString::new("/").unwrap();
    // SAFETY: statvfs is plain data; all-zero is a valid value to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a live statvfs to write into.
    let rc = unsafe { libc::statvfs(root.as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}
