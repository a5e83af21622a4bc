//! The command `faultbpf run FAULT ... -- CMD` runs under the fault.
//!
//! Two promises live here (issue 12):
//! - **The command dies with faultbpf.** A `kill -9` of faultbpf lifts the
//!   fault (links die with us, the reaper removes netlink filters), so a
//!   command left running would carry on unfaulted and a test suite would
//!   report a pass it never earned. The child asks the kernel for SIGKILL
//!   when its parent dies (`PR_SET_PDEATHSIG`), set between fork and exec,
//!   and checks the parent did not die before that took effect.
//! - **A command that cannot run fails before anything is attached**, with
//!   the shell's codes: 127 (not found), 126 (found, not executable).
//!
//! Limits: the kernel sends the death signal when the *thread* that forked
//! the child ends (faultbpf forks from its main thread, which lives as
//! long as the process), it is cleared when the command execs a set-uid or
//! set-gid program, and it reaches the command itself, not the processes
//! the command started in turn.

use std::{
    ffi::OsStr,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
};

/// Why the command cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotRunnable {
    /// No such file, or no such program on `PATH`.
    #[error("`{0}`: command not found (nothing was attached)")]
    NotFound(String),
    /// The file exists but is a directory or lacks execute permission.
    #[error("`{0}`: not an executable file (nothing was attached)")]
    NotExecutable(String),
}

impl NotRunnable {
    /// The exit code a shell gives for the same failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotFound(_) => 127,
            Self::NotExecutable(_) => 126,
        }
    }
}

/// The file `program` names: itself if it holds a `/`, else the first
/// match on `PATH`, as `execvp` would pick it.
pub fn resolve(program: &str) -> Result<PathBuf, NotRunnable> {
    if program.is_empty() {
        return Err(NotRunnable::NotFound(program.to_string()));
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return match runnable(&p) {
            Some(true) => Ok(p),
            Some(false) => Err(NotRunnable::NotExecutable(program.to_string())),
            None => Err(NotRunnable::NotFound(program.to_string())),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let mut found_unrunnable = false;
    for dir in std::env::split_paths(&path) {
        let p = dir.join(program);
        match runnable(&p) {
            Some(true) => return Ok(p),
            Some(false) => found_unrunnable = true,
            None => {}
        }
    }
    if found_unrunnable {
        Err(NotRunnable::NotExecutable(program.to_string()))
    } else {
        Err(NotRunnable::NotFound(program.to_string()))
    }
}

/// `Some(true)`: an executable file; `Some(false)`: exists but not that;
/// `None`: nothing there.
fn runnable(p: &Path) -> Option<bool> {
    let meta = std::fs::metadata(p).ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The command, ready to spawn, that dies (SIGKILL) when this process
/// dies: `path` from [`resolve`], `argv0` as the user typed it (what the
/// program sees as its name).
pub fn command(
    path: &Path,
    argv0: impl AsRef<OsStr>,
    args: &[impl AsRef<OsStr>],
) -> tokio::process::Command {
    let mut cmd = std::process::Command::new(path);
    cmd.arg0(argv0).args(args);
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (prctl, getppid), allocating
    // nothing but the error on the failure path, where the child ends.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl, and then
            // no signal comes: we were reparented, so end now.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    tokio::process::Command::from(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_command_is_127_and_named() {
        for p in ["/nonexistent/cmd", "faultbpf-no-such-command-xyz", ""] {
            let e = resolve(p).unwrap_err();
            assert_eq!(e.exit_code(), 127, "{p}");
            assert!(e.to_string().contains(&format!("`{p}`")), "{e}");
            assert!(e.to_string().contains("not found"), "{e}");
        }
    }

    #[test]
    fn a_directory_or_plain_file_is_126() {
        let e = resolve("/").unwrap_err();
        assert_eq!(e.exit_code(), 126);
        let f = std::env::temp_dir().join(format!("faultbpf-child-{}", std::process::id()));
        std::fs::write(&f, "not a program").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = resolve(f.to_str().unwrap()).unwrap_err();
        std::fs::remove_file(&f).unwrap();
        assert_eq!(e.exit_code(), 126, "{e}");
    }

    #[test]
    fn a_command_on_path_is_found() {
        assert!(resolve("sh").unwrap().is_absolute());
        assert_eq!(resolve("/bin/sh").unwrap(), PathBuf::from("/bin/sh"));
    }
}
