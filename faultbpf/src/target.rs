//! Where a fault goes: this process's network namespace, or another one
//! named by `--netns`, `--pid` or `--container`. Entering it is a
//! `setns(CLONE_NEWNET)` of the calling thread, done before anything else
//! runs, so the programs, the interface list and the reaper all live there.
//!
//! A container is found through its engine's CLI (`docker inspect`,
//! `podman inspect`), which honours the engine's own environment
//! (`DOCKER_HOST`, `CONTAINER_HOST`), so a user reaches the same engine as
//! their `docker ps`. Where the CLI is not installed (faultbpf's own image,
//! run with the engine's socket mounted in), the engine's HTTP API is asked
//! on its Unix socket instead (`GET /containers/NAME/json`, which Docker
//! and Podman's compatible API both serve). An engine that answers "no
//! such container" is a bad name (exit 2); one that cannot be reached is a
//! machine problem (exit 1).

use std::{
    fs::File,
    io::{self, Read},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How long an engine's CLI may take to answer before it counts as
/// unreachable (a daemon re-checks its targets every second and must not
/// wait forever on a hung engine).
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(15);

/// A network namespace to enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ip netns` name or a path to a namespace file.
    Netns(String),
    Pid(u32),
    /// Docker or Podman container name or id, and the engine to ask
    /// (`None`: docker, then podman).
    Container {
        name: String,
        engine: Option<Engine>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no network namespace `{name}` ({path})")]
    NoNetns {
        name: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("no process {0} (or its network namespace is not readable)")]
    NoPid(u32, #[source] io::Error),
    #[error(
        "--container needs docker or podman to find the container's process: neither is installed, \
         and no engine socket is at /var/run/docker.sock or /run/podman/podman.sock \
         (set DOCKER_HOST or CONTAINER_HOST to where it is)"
    )]
    NoContainerTool,
    /// `--engine` names a CLI that is not installed.
    #[error("--engine {engine}: `{engine}` is not installed (Debian: apt-get install {package})")]
    NoEngine {
        engine: &'static str,
        package: &'static str,
    },
    /// An engine answered, and knows no container by that name or id.
    #[error("no container `{name}` ({detail}); `docker ps` or `podman ps` lists the running ones")]
    NoContainer { name: String, detail: String },
    /// The container exists but has no process (stopped or created).
    #[error("container `{name}` is not running ({engine} knows it); start it first")]
    NotRunning { engine: &'static str, name: String },
    /// No engine could be asked (the daemon is down, the socket is wrong).
    #[error(
        "could not ask about container `{name}` ({detail}); check DOCKER_HOST or CONTAINER_HOST, or choose the engine with --engine"
    )]
    Unreachable { name: String, detail: String },
    #[error("could not enter the network namespace {path}")]
    Enter {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl TargetError {
    /// A bad name on the command line (exit 2), rather than a machine that
    /// cannot answer (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::NoContainer { .. } | Self::NotRunning { .. })
    }
}

impl Target {
    /// The target the command-line flags name, if any (clap lets at most
    /// one of `--netns`, `--pid`, `--container` through).
    pub fn from_flags(
        netns: Option<String>,
        pid: Option<u32>,
        container: Option<String>,
        engine: Option<Engine>,
    ) -> Option<Self> {
        match (netns, pid, container) {
            (Some(n), _, _) => Some(Self::Netns(n)),
            (_, Some(p), _) => Some(Self::Pid(p)),
            (_, _, Some(name)) => Some(Self::Container { name, engine }),
            _ => None,
        }
    }

    /// The namespace file to open.
    pub fn path(&self) -> Result<PathBuf, TargetError> {
        match self {
            Self::Netns(n) if n.contains('/') => Ok(PathBuf::from(n)),
            Self::Netns(n) => Ok(PathBuf::from("/var/run/netns").join(n)),
            Self::Pid(p) => Ok(PathBuf::from(format!("/proc/{p}/ns/net"))),
            Self::Container { name, engine } => Ok(PathBuf::from(format!(
                "/proc/{}/ns/net",
                container_pid(name, *engine)?
            ))),
        }
    }

    /// Opens the target's network namespace file, for a later
    /// [`enter_file`] (a daemon keeps it to enter the namespace again).
    pub fn open(&self) -> Result<File, TargetError> {
        let path = self.path()?;
        File::open(&path).map_err(|source| match self {
            Self::Pid(p) => TargetError::NoPid(*p, source),
            _ => TargetError::NoNetns {
                name: match self {
                    Self::Netns(n) | Self::Container { name: n, .. } => n.clone(),
                    Self::Pid(p) => p.to_string(),
                },
                path: path.display().to_string(),
                source,
            },
        })
    }

    /// Moves the calling thread into the target's network namespace.
    pub fn enter(&self) -> Result<(), TargetError> {
        let file = self.open()?;
        enter_file(&file).map_err(|source| TargetError::Enter {
            path: self
                .path()
                .map_or_else(|_| "?".into(), |p| p.display().to_string()),
            source,
        })
    }
}

/// Moves the calling thread into the network namespace `file` refers to
/// (an open `/proc/PID/ns/net` or `ip netns` file). Only this thread
/// moves: `setns` is per thread.
pub fn enter_file(file: &File) -> io::Result<()> {
    // SAFETY: a valid fd of a namespace file; only this thread moves.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A container engine whose CLI knows where a container's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// `docker`, which honours `DOCKER_HOST` (and `DOCKER_CONTEXT`).
    Docker,
    /// `podman`; with `CONTAINER_HOST` set, `podman --remote`, which
    /// honours it.
    Podman,
}

impl Engine {
    /// The CLI's name, also the value of `--engine`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }

    /// The Debian package that brings the CLI, for the error that says it
    /// is missing.
    fn package(self) -> &'static str {
        match self {
            Self::Docker => "docker.io",
            Self::Podman => "podman",
        }
    }

    /// `docker inspect ...` or `podman [--remote] inspect ...`: the
    /// container's main process id (0 when it is not running) and its id.
    fn inspect(self, name: &str) -> Command {
        let mut cmd = Command::new(self.name());
        if self == Self::Podman && std::env::var_os("CONTAINER_HOST").is_some() {
            cmd.arg("--remote");
        }
        cmd.args([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.State.Pid}} {{.Id}}",
            name,
        ]);
        cmd
    }
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "docker" => Ok(Self::Docker),
            "podman" => Ok(Self::Podman),
            _ => Err(format!("unknown engine `{s}`: use docker or podman")),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A running container, as its engine describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its main process, in the engine's (and our) pid namespace.
    pub pid: u32,
    /// The engine's id for it: the same across restarts, new for a new
    /// container of the same name.
    pub id: String,
    /// The engine that knows it.
    pub engine: Engine,
}

/// What one engine said when asked for a container.
enum Answer {
    /// Its main process and id.
    Pid(u32, String),
    /// The CLI is not installed.
    Missing,
    /// The engine answered: no container by that name or id.
    Unknown(String),
    /// The engine answered: the container exists but has no process.
    Stopped,
    /// The CLI ran but could not reach its engine (or failed otherwise).
    Unreachable(String),
}

/// What a command printed, and how it ended.
struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd` to its end, or kills it after `timeout` (`Ok(None)`). The
/// answers read here are a line or two: they fit in the pipes, so reading
/// after the exit cannot block the child. The command dies with the
/// thread that waits for it (a daemon killed mid-question leaves no engine
/// CLI behind).
fn output_within(cmd: &mut Command, timeout: Duration) -> io::Result<Option<Output>> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut out.stdout)?;
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut out.stderr)?;
    }
    Ok(Some(out))
}

fn ask(engine: Engine, name: &str) -> Answer {
    let out = match output_within(&mut engine.inspect(name), ENGINE_TIMEOUT) {
        Ok(Some(o)) => o,
        Ok(None) => {
            return Answer::Unreachable(format!(
                "`{} inspect` did not answer within {}",
                engine.name(),
                humantime::format_duration(ENGINE_TIMEOUT)
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ask_socket(engine, name),
        Err(e) => return Answer::Unreachable(e.to_string()),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        let (pid, id) = stdout.trim().split_once(' ').unwrap_or((stdout.trim(), ""));
        return match pid.parse::<u32>() {
            Ok(0) => Answer::Stopped,
            Ok(pid) => Answer::Pid(pid, id.to_string()),
            Err(_) => Answer::Unreachable(format!("unexpected answer `{}`", stdout.trim())),
        };
    }
    // docker: "No such container: x" (or "No such object"); podman:
    // "no such container x". Not any "no such": an unreachable podman
    // socket says "no such file or directory".
    let lower = stderr.to_lowercase();
    if lower.contains("no such container") || lower.contains("no such object") {
        Answer::Unknown(stderr)
    } else {
        Answer::Unreachable(if stderr.is_empty() {
            format!("{} exited with {}", engine.name(), out.status)
        } else {
            stderr
        })
    }
}

impl Engine {
    /// The engine's variable naming its socket, and where the socket is by
    /// default.
    fn socket_var(self) -> (&'static str, &'static str) {
        match self {
            Self::Docker => ("DOCKER_HOST", "/var/run/docker.sock"),
            Self::Podman => ("CONTAINER_HOST", "/run/podman/podman.sock"),
        }
    }

    /// The Unix socket to ask when the CLI is missing, and whether the user
    /// named it (then a missing socket is an engine that cannot be reached,
    /// not an engine that is not there). `None`: the variable names
    /// something other than a Unix socket (`tcp://`, `ssh://`), which only
    /// the CLI speaks.
    fn socket(self) -> Option<(PathBuf, bool)> {
        let (var, default) = self.socket_var();
        match std::env::var(var) {
            Ok(host) if !host.is_empty() => host
                .strip_prefix("unix://")
                .map(|p| (PathBuf::from(p), true)),
            _ => Some((PathBuf::from(default), false)),
        }
    }
}

/// Asks the engine's HTTP API on its Unix socket (the CLI is not
/// installed). Docker and Podman's compatible API answer
/// `GET /containers/NAME/json` with the container's `State`, or 404.
fn ask_socket(engine: Engine, name: &str) -> Answer {
    let Some((socket, named)) = engine.socket() else {
        let (var, _) = engine.socket_var();
        return Answer::Unreachable(format!(
            "`{}` is not installed, and {var} is not a unix:// socket it could be asked on",
            engine.name()
        ));
    };
    if !socket.exists() {
        return if named {
            Answer::Unreachable(format!(
                "`{}` is not installed, and no engine socket is at {}",
                engine.name(),
                socket.display()
            ))
        } else {
            Answer::Missing
        };
    }
    // Names and ids are [a-zA-Z0-9][a-zA-Z0-9_.-]*: nothing else may reach
    // the request line.
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !valid {
        return Answer::Unknown(format!("`{name}` is not a container name or id"));
    }
    let client = crate::api::Client::new(&socket);
    let (status, body) = match client.request("GET", &format!("/containers/{name}/json"), None) {
        Ok(answer) => answer,
        Err(e) => return Answer::Unreachable(format!("{}: {e}", socket.display())),
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let message = json["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    match status {
        200 => match (
            json["State"]["Running"].as_bool(),
            json["State"]["Pid"].as_u64(),
        ) {
            (Some(false), _) | (_, Some(0)) => Answer::Stopped,
            (_, Some(pid)) if pid <= u32::MAX as u64 => Answer::Pid(
                pid as u32,
                json["Id"].as_str().unwrap_or_default().to_string(),
            ),
            _ => Answer::Unreachable(format!(
                "{}: no State.Pid in the engine's answer",
                socket.display()
            )),
        },
        404 => Answer::Unknown(format!("{} (asked {})", message, socket.display())),
        _ => Answer::Unreachable(format!("{}: {status} {message}", socket.display())),
    }
}

/// The container's main process, asked of `engine`, or of docker then
/// podman (whichever knows the container).
fn container_pid(name: &str, engine: Option<Engine>) -> Result<u32, TargetError> {
    find_container(name, engine).map(|r| r.pid)
}

/// The running container `name` (name or id), asked of `engine`, or of
/// docker then podman (whichever knows it). Each engine's CLI gets
/// [`ENGINE_TIMEOUT`] to answer.
pub fn find_container(name: &str, engine: Option<Engine>) -> Result<Running, TargetError> {
    let engines = match engine {
        Some(e) => vec![e],
        None => vec![Engine::Docker, Engine::Podman],
    };
    let mut unknown = Vec::new();
    let mut unreachable = Vec::new();
    let mut stopped = None;
    for e in &engines {
        match ask(*e, name) {
            Answer::Pid(pid, id) => {
                return Ok(Running {
                    pid,
                    id,
                    engine: *e,
                });
            }
            Answer::Missing => {}
            Answer::Unknown(d) => unknown.push(format!("{e}: {d}")),
            Answer::Stopped => stopped = Some(*e),
            Answer::Unreachable(d) => unreachable.push(format!("{e}: {d}")),
        }
    }
    if let Some(engine) = stopped {
        return Err(TargetError::NotRunning {
            engine: engine.name(),
            name: name.to_string(),
        });
    }
    if !unknown.is_empty() {
        return Err(TargetError::NoContainer {
            name: name.to_string(),
            detail: unknown
                .into_iter()
                .chain(unreachable)
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    if !unreachable.is_empty() {
        return Err(TargetError::Unreachable {
            name: name.to_string(),
            detail: unreachable.join("; "),
        });
    }
    match engine {
        Some(e) => Err(TargetError::NoEngine {
            engine: e.name(),
            package: e.package(),
        }),
        None => Err(TargetError::NoContainerTool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            Target::Netns("app".into()).path().unwrap(),
            PathBuf::from("/var/run/netns/app")
        );
        assert_eq!(
            Target::Netns("/proc/1/ns/net".into()).path().unwrap(),
            PathBuf::from("/proc/1/ns/net")
        );
        assert_eq!(
            Target::Pid(7).path().unwrap(),
            PathBuf::from("/proc/7/ns/net")
        );
    }

    #[test]
    fn engines_parse_by_their_cli_name() {
        assert_eq!("docker".parse::<Engine>(), Ok(Engine::Docker));
        assert_eq!("podman".parse::<Engine>(), Ok(Engine::Podman));
        let e = "lxc".parse::<Engine>().unwrap_err();
        assert!(e.contains("`lxc`") && e.contains("docker or podman"), "{e}");
    }

    #[test]
    fn docker_is_asked_for_a_container_only() {
        let args = |c: &Command| {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let docker = Engine::Docker.inspect("api");
        assert_eq!(docker.get_program(), "docker");
        assert_eq!(args(&docker)[0], "inspect");
        assert_eq!(args(&docker).last().unwrap(), "api");
        // An image or volume named `api` must not answer for the container.
        assert!(
            args(&docker)
                .windows(2)
                .any(|w| w == ["--type", "container"])
        );
    }

    #[test]
    fn missing_namespace_is_named() {
        let e = Target::Netns("fbt-no-such-ns".into()).enter().unwrap_err();
        assert!(e.to_string().contains("fbt-no-such-ns"), "{e}");
    }
}
