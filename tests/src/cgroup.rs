//! A cgroup v2 of the test's own (`faultbpf-test-<pid>-<n>` under the
//! cgroup2 mount), for faultbpf's cgroup programs (`http --side client`):
//! attached there they see only the processes the test puts in it, never
//! the machine's. Removed on drop; a cgroup that cannot be removed (a
//! process left in it) fails the test.

use std::{
    ffi::CString,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Cgroup {
    dir: PathBuf,
    rel: String,
}

impl Cgroup {
    pub fn new() -> Self {
        let root = cgroup2_mount().expect("no cgroup2 mount in /proc/self/mountinfo");
        let rel = format!(
            "/faultbpf-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir, rel }
    }

    /// Its path from the cgroup2 root, as `--cgroup` takes it.
    pub fn path(&self) -> &str {
        &self.rel
    }

    /// Makes `cmd`'s process start in this cgroup (it moves itself there
    /// between fork and exec, so everything it runs is inside from the
    /// first instruction).
    pub fn enter<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let procs = CString::new(
            self.dir
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("no NUL in a path");
        // SAFETY: the closure only makes async-signal-safe calls (open,
        // write, close) on memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if ok { Ok(()) } else { Err(err) }
            })
        }
    }

    /// Moves a running process in (its sockets opened from now on are
    /// the cgroup's).
    pub fn add(&self, pid: u32) {
        let procs = self.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", procs.display()));
    }
}

impl Default for Cgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes may take a moment to be reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    let msg = format!("leak: cgroup {} not removed: {e}", self.dir.display());
                    if std::thread::panicking() {
                        eprintln!("{msg}");
                    } else {
                        panic!("{msg}");
                    }
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid host).
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}
