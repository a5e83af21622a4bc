//! Where a fault goes: this process's network namespace, or another one
//! named by `--netns`, `--pid` or `--container`. Entering it is a
//! `setns(CLONE_NEWNET)` of the calling thread, done before anything else
//! runs, so the programs, the interface list and the reaper all live there.

use std::{fs::File, io, os::fd::AsRawFd, path::PathBuf, process::Command};

/// A network namespace to enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `ip netns` name or a path to a namespace file.
    Netns(String),
    Pid(u32),
    /// Docker or Podman container name or id.
    Container(String),
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
        "--container needs docker or podman to find the container's process, and neither is installed"
    )]
    NoContainerTool,
    #[error("{tool} could not find a running container `{name}`: {detail}")]
    NoContainer {
        tool: &'static str,
        name: String,
        detail: String,
    },
    #[error("could not enter the network namespace {path}")]
    Enter {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl Target {
    /// The namespace file to open.
    pub fn path(&self) -> Result<PathBuf, TargetError> {
        match self {
            Self::Netns(n) if n.contains('/') => Ok(PathBuf::from(n)),
            Self::Netns(n) => Ok(PathBuf::from("/var/run/netns").join(n)),
            Self::Pid(p) => Ok(PathBuf::from(format!("/proc/{p}/ns/net"))),
            Self::Container(c) => Ok(PathBuf::from(format!("/proc/{}/ns/net", container_pid(c)?))),
        }
    }

    /// Moves the calling thread into the target's network namespace.
    pub fn enter(&self) -> Result<(), TargetError> {
        let path = self.path()?;
        let file = File::open(&path).map_err(|source| match self {
            Self::Pid(p) => TargetError::NoPid(*p, source),
            _ => TargetError::NoNetns {
                name: match self {
                    Self::Netns(n) | Self::Container(n) => n.clone(),
                    Self::Pid(p) => p.to_string(),
                },
                path: path.display().to_string(),
                source,
            },
        })?;
        // SAFETY: a valid fd of a namespace file; only this thread moves.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(TargetError::Enter {
                path: path.display().to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// The container's main process, asked of docker, then podman.
fn container_pid(name: &str) -> Result<u32, TargetError> {
    let mut found_tool = false;
    let mut last = None;
    for tool in ["docker", "podman"] {
        let out = match Command::new(tool)
            .args(["inspect", "--format", "{{.State.Pid}}", name])
            .output()
        {
            Ok(o) => o,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                found_tool = true;
                last = Some((tool, e.to_string()));
                continue;
            }
        };
        found_tool = true;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse::<u32>() {
            Ok(pid) if out.status.success() && pid > 0 => return Ok(pid),
            _ => {
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                last = Some((
                    tool,
                    if err.is_empty() {
                        "not running".into()
                    } else {
                        err
                    },
                ));
            }
        }
    }
    match (found_tool, last) {
        (false, _) => Err(TargetError::NoContainerTool),
        (true, Some((tool, detail))) => Err(TargetError::NoContainer {
            tool,
            name: name.to_string(),
            detail,
        }),
        (true, None) => Err(TargetError::NoContainerTool),
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
    fn missing_namespace_is_named() {
        let e = Target::Netns("fbt-no-such-ns".into()).enter().unwrap_err();
        assert!(e.to_string().contains("fbt-no-such-ns"), "{e}");
    }
}
