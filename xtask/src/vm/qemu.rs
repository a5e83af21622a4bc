//! Runs one guest: virtiofsd exporting the host's root read-only, then qemu
//! booting the kernel and initramfs, with the serial console streamed to our
//! stdout (each line prefixed `[vm] `) and kept in a log file.
//!
//! Why these choices: `/dev/kvm` on these machines cannot boot a stock
//! kernel, so qemu emulates the CPU (TCG); virtiofs (Rust virtiofsd, as
//! bookworm's C daemon does not work for this) needs the guest's memory in a
//! shared memfd that is also its NUMA node. The guest has no network
//! (`-nic none`).
//!
//! Safety: both children are killed by PID when their guard drops (on every
//! return path, including errors, timeouts and Ctrl-C/SIGTERM), and are
//! started under `setpriv --pdeathsig KILL` so they die with xtask even when
//! it is killed outright. Every wait is bounded.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::initramfs::{BOOTED_MARKER, EXIT_MARKER, ROOT_TAG};
use crate::cmd::{self, command};

/// The emulated CPU. A plain x86-64-v2 model rather than `max`: loading
/// faultbpf (mostly the kernel's verifier) took ~12 s instead of ~17 s in
/// repeated A/B runs, and the guest then keeps the TSC as its clocksource
/// (with `max` it falls back to the HPET).
const CPU_MODEL: &str = "Nehalem";

/// Set by the Ctrl-C/SIGTERM handler; the wait loop checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What to boot and how big the guest is.
pub struct Machine<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    /// The kernel command line (at most 2048 bytes).
    pub cmdline: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Where the serial console is also written, for after the fact.
    pub serial_log: &'a Path,
}

/// Hard limits on one guest.
pub struct Limits {
    /// From qemu's start to [`BOOTED_MARKER`].
    pub boot: Duration,
    /// From qemu's start to the guest powering off.
    pub total: Duration,
}

/// How a guest ended: it reported its script's exit status, or not.
pub struct Outcome {
    /// The script's exit status, from [`EXIT_MARKER`].
    pub exit: Option<i32>,
    /// The serial console, line by line, without the `[vm] ` prefix.
    pub serial: Vec<String>,
    /// From qemu's start to [`BOOTED_MARKER`], if it got there.
    pub boot_time: Option<Duration>,
    /// From qemu's start to its exit.
    pub run_time: Duration,
    /// Why the guest was killed, when it hit a limit: what it printed until
    /// then is still worth reading.
    pub killed: Option<String>,
    /// How qemu itself ended, when it did by itself.
    pub qemu_status: Option<ExitStatus>,
}

/// Boots the guest and waits, at most `limits`, for it to power off.
pub fn run(machine: &Machine, limits: &Limits) -> Result<Outcome> {
    if machine.cmdline.len() >= 2048 {
        bail!(
            "the kernel command line is {} bytes, the limit is 2048",
            machine.cmdline.len()
        );
    }
    watch_interrupts();
    let socket = Socket::new()?;
    // `--cache always` lets the guest keep file data across opens: with the
    // default (`auto`) every exec re-read its binary over virtiofs, which
    // doubled the boot (each busybox call in init took 0.5-1 s). It is safe
    // here because a guest lives for one run and reads what was built before
    // it booted. No sandbox: the export is the whole root, read-only, so a
    // namespace or chroot around it would protect nothing more.
    let mut virtiofsd = Guard::spawn(
        "virtiofsd",
        supervised("virtiofsd")
            .args(["--shared-dir", "/", "--readonly", "--cache", "always"])
            .args(["--sandbox", "none", "--log-level", "error"])
            .arg("--socket-path")
            .arg(&socket.path)
            .stdout(Stdio::null()),
    )
    .context("virtiofsd (`cargo install virtiofsd`; `cargo xtask setup` does it)")?;
    socket.wait_listening(&mut virtiofsd)?;

    let memory = format!("{}M", machine.memory_mib);
    let mut qemu_cmd = supervised("qemu-system-x86_64");
    qemu_cmd
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            CPU_MODEL,
        ])
        .args(["-smp", &machine.cpus.to_string(), "-m", &memory])
        .arg("-object")
        .arg(format!(
            "memory-backend-memfd,id=mem,size={memory},share=on"
        ))
        .args(["-numa", "node,memdev=mem"])
        .arg("-chardev")
        .arg(format!("socket,id=rootfs,path={}", socket.path.display()))
        .arg("-device")
        .arg(format!("vhost-user-fs-pci,chardev=rootfs,tag={ROOT_TAG}"))
        .arg("-kernel")
        .arg(machine.kernel)
        .arg("-initrd")
        .arg(machine.initramfs)
        .args(["-append", &machine.cmdline])
        .args(["-nic", "none", "-display", "none", "-vga", "none"])
        .args(["-monitor", "none", "-serial", "stdio", "-no-reboot"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ {}", cmd::describe(&qemu_cmd));
    let started = Instant::now();
    let mut qemu = Guard::spawn("qemu", &mut qemu_cmd)
        .context("qemu (package qemu-system-x86; `cargo xtask setup` installs it)")?;

    let (tx, rx) = mpsc::channel();
    let stdout = qemu.child.stdout.take().context("qemu's stdout")?;
    let stderr = qemu.child.stderr.take().context("qemu's stderr")?;
    forward_lines(stdout, Stream::Serial, tx.clone());
    forward_lines(stderr, Stream::Qemu, tx);

    let mut log = File::create(machine.serial_log)
        .with_context(|| format!("creating {}", machine.serial_log.display()))?;
    let mut outcome = Outcome {
        exit: None,
        serial: Vec::new(),
        boot_time: None,
        run_time: Duration::ZERO,
        killed: None,
        qemu_status: None,
    };
    let mut open_streams = 2;
    while open_streams > 0 {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted; the VM is being stopped");
        }
        let elapsed = started.elapsed();
        if outcome.boot_time.is_none() && elapsed > limits.boot {
            outcome.killed = Some(format!(
                "the guest did not boot within {}s (no `{BOOTED_MARKER}` on its console)",
                limits.boot.as_secs()
            ));
            break;
        }
        if elapsed > limits.total {
            outcome.killed = Some(format!(
                "the guest was still running after {}s and was killed",
                limits.total.as_secs()
            ));
            break;
        }
        let (stream, line) = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((stream, Some(line))) => (stream, line),
            Ok((_, None)) => {
                open_streams -= 1;
                continue;
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match stream {
            Stream::Qemu => eprintln!("[qemu] {line}"),
            Stream::Serial => {
                println!("[vm] {line}");
                let _ = writeln!(log, "{line}");
                if outcome.boot_time.is_none() && line.contains(BOOTED_MARKER) {
                    outcome.boot_time = Some(started.elapsed());
                }
                if let Some(status) = exit_status(&line) {
                    outcome.exit = Some(status);
                }
                outcome.serial.push(line);
            }
        }
    }
    if outcome.killed.is_none() {
        // Both pipes closed: qemu is exiting; give it a moment, then the
        // guard kills it anyway.
        outcome.qemu_status = qemu.wait_exit(Duration::from_secs(10));
    }
    drop(qemu);
    outcome.run_time = started.elapsed();
    Ok(outcome)
}

/// The status in a `FAULTBPF_VM_EXIT=<n>` line, wherever on the line it is
/// (kernel messages can share a console line with it).
fn exit_status(line: &str) -> Option<i32> {
    let rest = &line[line.find(EXIT_MARKER)? + EXIT_MARKER.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Installs (once) a Ctrl-C/SIGTERM handler that makes the wait loop stop,
/// so the guards kill the children. If another task already installed one,
/// the terminal's Ctrl-C still reaches qemu, which then exits.
fn watch_interrupts() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if !INSTALLED.swap(true, Ordering::SeqCst)
        && let Err(err) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
    {
        eprintln!("vm: no Ctrl-C handler ({err}); Ctrl-C still stops qemu directly");
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Serial,
    Qemu,
}

/// Sends `reader`'s lines (lossy UTF-8, without `\r\n`), then `None` at EOF.
fn forward_lines(
    reader: impl Read + Send + 'static,
    stream: Stream,
    tx: mpsc::Sender<(Stream, Option<String>)>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send((stream, Some(line))).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send((stream, None));
    });
}

/// `program` under `setpriv --pdeathsig KILL`, so it also dies if xtask is
/// killed without a chance to drop its [`Guard`].
fn supervised(program: &str) -> Command {
    let mut cmd = command("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--", program]);
    cmd
}

/// A child process of the VM; killed by PID on drop if still running.
struct Guard {
    what: &'static str,
    child: Child,
}

impl Guard {
    fn spawn(what: &'static str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start `{}`", cmd::describe(cmd)))?;
        Ok(Self { what, child })
    }

    /// Waits up to `limit` for the child to exit by itself.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Ok(Some(status)) => return Some(status),
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Err(err) = self.child.kill() {
                eprintln!(
                    "vm: could not kill {} (pid {}): {err}",
                    self.what,
                    self.child.id()
                );
            }
            let _ = self.child.wait();
        }
    }
}

/// virtiofsd's vhost-user socket, in the temp dir (socket paths are limited
/// to 108 bytes, which a deep checkout could exceed); removed on drop, with
/// the `.pid` file virtiofsd writes beside it.
struct Socket {
    path: PathBuf,
}

impl Socket {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("faultbpf-vm-{}.sock", std::process::id()));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", path.display())),
        }
        Ok(Self { path })
    }

    /// Waits (at most 10 s) until virtiofsd has created the socket.
    fn wait_listening(&self, virtiofsd: &mut Guard) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let is_socket = fs::metadata(&self.path)
                .map(|meta| meta.file_type().is_socket())
                .unwrap_or(false);
            if is_socket {
                return Ok(());
            }
            if let Ok(Some(status)) = virtiofsd.child.try_wait() {
                bail!("virtiofsd exited before listening ({status})");
            }
            if Instant::now() > deadline {
                bail!(
                    "virtiofsd did not create {} within 10s",
                    self.path.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let mut pid_file = self.path.clone().into_os_string();
        pid_file.push(".pid");
        let _ = fs::remove_file(pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_anywhere_on_the_line() {
        assert_eq!(exit_status("FAULTBPF_VM_EXIT=0"), Some(0));
        assert_eq!(
            exit_status("[   9.1] veth: x FAULTBPF_VM_EXIT=101 "),
            Some(101)
        );
        assert_eq!(exit_status("FAULTBPF_VM_EXIT="), None);
        assert_eq!(exit_status("test result: ok"), None);
    }
}
