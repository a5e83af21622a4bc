//! The VM lane: the same e2e suite as on the host, run on Debian's 6.1 LTS
//! kernel in a qemu guest, because faultbpf must work on the LTS kernels
//! people run (no TCX, older verifier) and not only on this machine's newer
//! one. `cargo xtask test` runs it after the host suite (unless `--no-vm`);
//! `cargo xtask vm --e2e` runs it alone, and `cargo xtask vm -- CMD...` runs
//! any command in the guest, for debugging.
//!
//! The guest boots Debian's cloud kernel with a small busybox initramfs
//! ([`initramfs`]), mounts the host's root read-only over virtiofs, and runs
//! one script written under `target/vm/`. Everything is built on the host;
//! the guest runs the built binaries at the same paths ([`suite`]). It has
//! no network device, and its tests make their own namespaces, so nothing
//! touches the host's interfaces. qemu and virtiofsd are killed by PID on
//! every way out and have hard time limits ([`qemu`]).

mod initramfs;
mod kernel;
mod qemu;
mod suite;

use std::{
    env, fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, cmd, setup};

/// Guest size: the e2e tests run with `--test-threads 2`, and each test's
/// namespaces, servers and faultbpf fit easily in this.
const MEMORY_MIB: u32 = 4096;
const CPUS: u32 = 2;

/// From qemu's start to the guest's init reporting in; it takes 5-15 s
/// under TCG (more on a busy machine), so this only catches a boot that
/// hangs.
const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// The whole e2e suite in the guest, boot included. The VM lane's share of
/// CI's 90 minutes is about 10.
const E2E_LIMIT: Duration = Duration::from_secs(600);

/// `cargo xtask vm -- CMD` when no `--timeout` is given.
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// `cargo xtask vm`: `--e2e`, or one command, in the guest.
pub fn run(e2e: bool, timeout: Option<u64>, command: &[String]) -> Result<()> {
    require_root()?;
    setup::run(setup::Scope::Test)?;
    let limit = timeout.map(Duration::from_secs);
    if e2e {
        let bin = build::build_faultbpf()?;
        return run_e2e(&bin, limit.unwrap_or(E2E_LIMIT));
    }
    if command.is_empty() {
        bail!("nothing to run: give `--e2e` or a command (`cargo xtask vm -- uname -r`)");
    }
    capture(command, limit.unwrap_or(COMMAND_LIMIT)).map(|_| ())
}

/// Runs `command` in the guest and returns its console, line by line; an
/// error if it did not exit 0 within `limit`. The bench's delay accuracy
/// reads its results from there.
pub fn capture(command: &[String], limit: Duration) -> Result<Vec<String>> {
    require_root()?;
    let words: Vec<String> = command
        .iter()
        .map(|word| suite::shell_quote(word))
        .collect();
    let script = format!("{}{}\n", prelude()?, words.join(" "));
    let outcome = boot(&script, limit)?;
    if let Some(killed) = outcome.killed {
        bail!("{killed}");
    }
    match outcome.exit {
        Some(0) => Ok(outcome.serial),
        Some(status) => bail!(
            "`{}` exited {status} in the VM; its last lines: {}",
            command.join(" "),
            outcome.serial[outcome.serial.len().saturating_sub(5)..].join(" / ")
        ),
        None => bail!(
            "the VM stopped without reporting the command's exit status ({})",
            qemu_ending(&outcome)
        ),
    }
}

/// The VM lane of `cargo xtask test`, after the host suite: the e2e tests
/// against `faultbpf` (the host-built binary) in the guest.
pub fn e2e(faultbpf: &Path) -> Result<()> {
    require_root()?;
    run_e2e(faultbpf, E2E_LIMIT)
}

fn run_e2e(faultbpf: &Path, limit: Duration) -> Result<()> {
    let started = Instant::now();
    let exes = suite::build_test_exes()?;
    let dir = vm_dir()?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_stale(&dir, "bin-");
    let pinned = suite::Pinned::new(
        dir.join(format!("bin-{}", std::process::id())),
        faultbpf,
        exes,
    )?;
    let script = prelude()? + &suite::script(&pinned.faultbpf, &pinned.exes);
    eprintln!(
        "vm: running {} e2e test executables on Linux {}.x in a VM",
        pinned.exes.len(),
        kernel::SERIES
    );
    let outcome = boot(&script, limit)?;
    let results = suite::results(&outcome.serial);
    eprintln!(
        "vm: e2e lane took {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    for failure in &results.failures {
        eprintln!("vm: FAILED {failure}");
    }
    for unfinished in &results.unfinished {
        eprintln!("vm: {unfinished} stopped without a `test result:` line");
    }
    let not_run: Vec<&str> = pinned
        .exes
        .iter()
        .map(|exe| exe.name.as_str())
        .filter(|name| !results.started.iter().any(|started| started == name))
        .collect();
    if !not_run.is_empty() {
        eprintln!("vm: never started: {}", not_run.join(", "));
    }
    // The lane's closing line, in the form CI reads for any runner.
    let skipped = match results.ignored {
        0 => String::new(),
        n => format!(", {n} skipped"),
    };
    println!(
        "vm: {} passed, {} failed{skipped}",
        results.passed, results.failed
    );
    if let Some(killed) = outcome.killed {
        bail!(
            "{killed}: the e2e suite on Linux {}.x did not finish ({} of {} test executables \
             never started; console in {})",
            kernel::SERIES,
            not_run.len(),
            pinned.exes.len(),
            vm_dir()?.join("serial.log").display()
        );
    }
    match outcome.exit {
        Some(0) if results.failed == 0 && results.unfinished.is_empty() => Ok(()),
        Some(0) => bail!("the e2e suite in the VM reported failures but exited 0"),
        Some(status) => bail!(
            "the e2e suite failed on Linux {}.x in the VM (exit status {status}; {} of {} \
             tests failed, listed above; console in {})",
            kernel::SERIES,
            results.failed,
            results.passed + results.failed,
            vm_dir()?.join("serial.log").display()
        ),
        None => bail!(
            "the VM stopped without reporting the suite's exit status ({})",
            qemu_ending(&outcome)
        ),
    }
}

/// Boots the guest to run `script` and waits for it, at most `limit`.
fn boot(script: &str, limit: Duration) -> Result<qemu::Outcome> {
    let kernel = kernel::Kernel::find()?;
    let dir = vm_dir()?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    remove_stale(&dir, "run-");
    remove_stale(&env::temp_dir(), "faultbpf-vm-");
    let initramfs = dir.join(format!("initramfs-{}.cpio", kernel.version));
    initramfs::build(&kernel, &initramfs)?;
    let script = ScriptFile::write(&dir, script)?;
    let script_path = script.0.to_string_lossy();
    if script_path.contains(char::is_whitespace) {
        bail!(
            "{script_path} contains whitespace, which the kernel command line cannot carry; \
             use a checkout or CARGO_TARGET_DIR without spaces"
        );
    }
    let machine = qemu::Machine {
        kernel: &kernel.image,
        initramfs: &initramfs,
        cmdline: format!(
            "console=ttyS0 quiet panic=-1 {}={script_path}",
            initramfs::SCRIPT_PARAM
        ),
        memory_mib: MEMORY_MIB,
        cpus: CPUS,
        serial_log: &dir.join("serial.log"),
    };
    eprintln!(
        "vm: booting Linux {} ({} MiB, {} CPUs, TCG, no network), limit {}s",
        kernel.version,
        MEMORY_MIB,
        CPUS,
        limit.as_secs()
    );
    let limits = qemu::Limits {
        boot: BOOT_LIMIT.min(limit),
        total: limit,
    };
    let outcome = qemu::run(&machine, &limits)?;
    let boot = outcome.boot_time.map_or("never booted".to_owned(), |t| {
        format!("booted in {:.1}s", t.as_secs_f64())
    });
    let end = match outcome.killed {
        Some(_) => "killed",
        None => "powered off",
    };
    eprintln!(
        "vm: {boot}, {end} after {:.1}s",
        outcome.run_time.as_secs_f64()
    );
    Ok(outcome)
}

/// How qemu ended, for a guest that did not report its script's status.
fn qemu_ending(outcome: &qemu::Outcome) -> String {
    match outcome.qemu_status {
        Some(status) => format!("qemu {status}; its messages are above, prefixed [qemu]"),
        None => "qemu did not exit by itself".to_owned(),
    }
}

/// How every guest script starts: the environment (see [`guest_path`]; no
/// colours, as the console is a terminal but ends up in a log), then the
/// workspace made writable and entered. The host's root is read-only in the
/// guest, but tests may write where they run, as under `cargo test` (trafgen
/// creates its `.tmp_mmap.*` in the current directory), so the workspace
/// gets an overlay whose writes stay in the guest's memory (/run is tmpfs).
fn prelude() -> Result<String> {
    let root = cmd::workspace_root().to_string_lossy();
    if root.contains([',', ':']) {
        bail!("{root} contains `,` or `:`, which overlayfs options cannot carry");
    }
    let workspace = suite::shell_quote(&root);
    Ok(format!(
        "#!/bin/sh\n# Generated by `cargo xtask vm`; runs in the guest.\n\
         export PATH={path} HOME=/root TERM=dumb NO_COLOR=1 RUST_BACKTRACE=1\n\
         mkdir -p /run/faultbpf-vm/upper /run/faultbpf-vm/work\n\
         mount -t overlay overlay -o lowerdir={workspace},upperdir=/run/faultbpf-vm/upper,\
         workdir=/run/faultbpf-vm/work {workspace} || exit 125\n\
         cd {workspace} || exit 125\n",
        path = suite::shell_quote(&guest_path()),
    ))
}

/// The guest's PATH: the host's (the guest runs the host's tools), less
/// pyenv's shims (a shell script that runs several programs per call, which
/// costs seconds under TCG; Debian's `python3` is there instead), plus the
/// sbin dirs that `ip`, `tc` and `modprobe` live in.
fn guest_path() -> String {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.retain(|dir| !dir.ends_with(".pyenv/shims"));
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|known| known == Path::new(dir)) {
            dirs.push(dir.into());
        }
    }
    env::join_paths(dirs)
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".to_owned())
}

/// `target/vm`, next to the `target/debug` xtask runs from (so it follows
/// `CARGO_TARGET_DIR`).
fn vm_dir() -> Result<PathBuf> {
    let exe = env::current_exe().context("locating the running xtask binary")?;
    let target = match exe.parent() {
        Some(debug) if debug.ends_with("debug") => debug.parent().map(Path::to_owned),
        _ => None,
    };
    let target = target.unwrap_or_else(|| cmd::workspace_root().join("target"));
    Ok(target.join("vm"))
}

/// The guest's script, a host file (the guest sees it at the same path);
/// removed on drop.
struct ScriptFile(PathBuf);

impl ScriptFile {
    fn write(dir: &Path, text: &str) -> Result<Self> {
        let path = dir.join(format!("run-{}.sh", std::process::id()));
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Removes `<prefix><pid>...` files and dirs in `dir` whose xtask is gone: what a
/// run killed outright (SIGKILL) left behind; its qemu and virtiofsd died
/// with it (see [`qemu`]).
fn remove_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|entry| entry.ok()) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| owner_pid(name, prefix)) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let path = entry.path();
            let _ = match path.is_dir() {
                true => fs::remove_dir_all(&path),
                false => fs::remove_file(&path),
            };
        }
    }
}

/// The pid in `<prefix><pid>[.<ext...>]`, e.g. 42 in `run-42.sh`.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let pid = rest.split_once('.').map_or(rest, |(pid, _)| pid);
    pid.parse().ok()
}

fn require_root() -> Result<()> {
    if !cmd::is_root()? {
        bail!(
            "the VM lane must run as root: virtiofsd exports the whole root filesystem \
             (read-only) to the guest"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_of_leftovers() {
        assert_eq!(owner_pid("run-42.sh", "run-"), Some(42));
        assert_eq!(owner_pid("faultbpf-vm-7.sock.pid", "faultbpf-vm-"), Some(7));
        assert_eq!(owner_pid("initramfs-6.1.0.cpio", "run-"), None);
        assert_eq!(owner_pid("run-x.sh", "run-"), None);
        assert_eq!(owner_pid("bin-42", "bin-"), Some(42));
    }

    #[test]
    fn guest_path_has_sbin_and_no_pyenv_shims() {
        let path = guest_path();
        assert!(path.split(':').any(|dir| dir == "/usr/sbin"), "{path}");
        assert!(!path.contains(".pyenv/shims"), "{path}");
    }
}
