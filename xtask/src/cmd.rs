//! Running child processes, shared by every task: one place that gives each
//! child the environment it needs (cargo's bin dir on `PATH`, for the
//! `bpf-linker` and `rustup` that aya-build looks up) and that turns a failure
//! into an error naming the command and how it ended.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The cargo workspace root (the parent of `xtask/`), where cargo runs.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, else `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Result<PathBuf> {
    let home = match env::var_os("CARGO_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => home_dir()?.join(".cargo"),
    };
    Ok(home.join("bin"))
}

/// `$HOME`, which every other per-user path here hangs off.
pub fn home_dir() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// `PATH` for children: ours, with cargo's bin dir in front unless already
/// there (a fresh root shell on Debian often lacks it, and `bpf-linker` lives
/// there).
fn child_path() -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let Ok(bin) = cargo_bin_dir() else {
        return current;
    };
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if dirs.contains(&bin) {
        return current;
    }
    dirs.insert(0, bin);
    env::join_paths(dirs).unwrap_or(current)
}

/// A [`Command`] for `program` with the children's `PATH` (std also uses that
/// `PATH` to find `program` itself).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", child_path());
    cmd
}

/// `cargo`, run from the workspace root so the workspace's config applies.
pub fn cargo() -> Command {
    let mut cmd = command("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// The command line as a user would type it, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| {
            let word = word.to_string_lossy();
            if word.is_empty()
                || word.contains(|c: char| c.is_whitespace() || "'\"$%{}".contains(c))
            {
                format!("'{}'", word.replace('\'', r"'\''"))
            } else {
                word.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with its output streamed to ours, after echoing it, and fails
/// unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("+ {line}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; on failure the error carries
/// its stderr, since nobody saw it.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("`{line}` failed ({}): {}", output.status, stderr.trim());
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{line}` printed non-UTF-8"))
}

/// Whether we run with effective uid 0, read from `/proc` to avoid `unsafe`.
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    effective_uid(&status)
        .map(|uid| uid == 0)
        .context("no `Uid:` line in /proc/self/status")
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn describe_quotes_only_what_needs_it() {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-w", "%{http_code} x", "it's"]);
        assert_eq!(describe(&cmd), r"curl -sS -w '%{http_code} x' 'it'\''s'");
    }
}
