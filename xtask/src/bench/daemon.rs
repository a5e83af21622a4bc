//! A `faultbpf daemon` of the bench's own, in the server namespace, and the
//! few HTTP calls the bench makes to its Unix-socket API (add a rule, delete
//! it, health). The socket lives in a private directory, never at the default
//! `/run/faultbpf.sock`, so the bench neither uses nor disturbs a daemon that
//! someone else runs on the machine; for the same reason every standalone
//! faultbpf the bench starts gets [`NO_DAEMON_SOCKET`].

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::topo::{self, Netns, Proc};

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
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: faultbpf\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no HTTP status in {text:?}"))?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Ok((
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_owned()
            },
        ))
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

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
        assert_eq!(dechunk(""), "");
    }
}
