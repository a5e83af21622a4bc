//! A `faultbpf daemon` of the bench's own, in the server namespace, and the
//! few HTTP calls the bench makes to its Unix-socket API (add a rule, delete
//! it, health). The socket lives in a private directory, never at the default
//! `/run/faultbpf.sock`, so the bench neither uses nor disturbs a daemon that
//! someone else runs on the machine; for the same reason every standalone
//! faultbpf the bench starts gets [`NO_DAEMON_SOCKET`].

use std::{
    fs,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    http,
    topo::{self, Netns, Proc},
};

/// `FAULTBPF_SOCKET` for standalone runs: a path that cannot exist, so a
/// fault command never hands its rule to some daemon on the machine.
pub const NO_DAEMON_SOCKET: &str = "/nonexistent/faultbpf-bench/no-daemon.sock";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running daemon; killed by PID on drop (its programs go with it).
pub struct Daemon {
    proc: Proc,
    socket: PathBuf,
    _dir: TempDir,
}

impl Daemon {
    /// `faultbpf daemon --socket PRIVATE --iface IFACE` in `ns`, once its
    /// `/healthz` answers.
    pub fn start(bin: &Path, ns: &Netns, iface: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "fbb-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = TempDir(dir);
        let socket = dir.0.join("daemon.sock");
        let proc = Proc::spawn(
            "faultbpf daemon",
            ns.exec(bin)
                .arg("daemon")
                .arg("--socket")
                .arg(&socket)
                .args(["--iface", iface])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let mut daemon = Self {
            proc,
            socket,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            topo::check_interrupted()?;
            if let Ok((200, _)) = daemon.request("GET", "/healthz", None) {
                return Ok(daemon);
            }
            if let Some(status) = daemon.proc.child.try_wait()? {
                bail!("faultbpf daemon exited ({status}) before answering /healthz");
            }
            if Instant::now() > end {
                bail!("faultbpf daemon did not answer /healthz within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// One HTTP/1.1 request over the Unix socket; returns status and body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let mut s = UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        http::write_request(&mut s, method, path, Some(body.unwrap_or("")), true)?;
        let resp = http::read_response(&mut s, &mut Vec::new())?;
        Ok((resp.status, resp.body))
    }

    /// POST /v1/rules; returns the new rule's id.
    pub fn add_rule(&self, spec: &str) -> Result<u64> {
        let (status, body) = self.request("POST", "/v1/rules", Some(spec))?;
        if status != 201 {
            bail!("POST /v1/rules {spec}: HTTP {status}: {body}");
        }
        let v: serde_json::Value =
            serde_json::from_str(body.trim()).with_context(|| format!("rule JSON: {body}"))?;
        v["id"].as_u64().with_context(|| format!("no id in {body}"))
    }

    /// DELETE /v1/rules/ID.
    pub fn delete_rule(&self, id: u64) -> Result<()> {
        let (status, body) = self.request("DELETE", &format!("/v1/rules/{id}"), None)?;
        if !(200..300).contains(&status) {
            bail!("DELETE /v1/rules/{id}: HTTP {status}: {body}");
        }
        Ok(())
    }

    /// SIGTERM, and waits for it to exit.
    pub fn stop(mut self) -> Result<()> {
        let status = self.proc.stop(libc::SIGTERM, Duration::from_secs(15))?;
        if !status.success() {
            bail!("faultbpf daemon ended with {status}");
        }
        Ok(())
    }
}
