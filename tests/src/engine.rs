//! A real container engine for the container tests: Debian's `dockerd`,
//! started inside a network namespace of the test's own, so its bridge, its
//! iptables rules and every container's veth live there and never in the
//! root namespace (started there, dockerd would create `docker0` with
//! 172.17.0.1/16 on the host).
//!
//! It is entered with `nsenter --net=` rather than `ip netns exec`: the
//! latter remounts /sys, which hides the cgroup mounts dockerd needs
//! ("Devices cgroup isn't mounted"). Its data root, exec root and socket
//! sit under `target/engine/`, one directory per engine, removed on drop.
//! Images are imported from a local busybox-static root filesystem (built
//! once, cached as `target/engine/busybox-rootfs.tar`), never pulled.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{Exit, Netns, run_bounded, wait_within};

/// The image every container here runs: busybox (sh, nc, sleep) only.
pub const IMAGE: &str = "fbt-busybox:1";

/// A server for [`IMAGE`] that answers `hi` to every connection on 5672
/// (run it as container `srv`).
pub const HI_SERVER: &str = "while true; do echo hi | nc -l -p 5672; done";

/// `nc -w 2 srv 5672` run in container `cli` by an engine's `run` (`exec
/// cli ...`): what it printed, ending `rc=N`, and how long it took.
pub fn cli_to_srv(run: impl Fn(&[&str]) -> Exit) -> (String, Duration) {
    let start = Instant::now();
    let exit = run(&[
        "exec",
        "cli",
        "sh",
        "-c",
        "nc -w 2 srv 5672 </dev/null; echo rc=$?",
    ]);
    (exit.stdout.trim().to_string(), start.elapsed())
}

/// Asserts that a connect from `cli` to `srv` ([`cli_to_srv`]) waits out
/// its timeout, where the control (measured in the same run) answered.
pub fn assert_cut(run: impl Fn(&[&str]) -> Exit, control: Duration, what: &str) {
    let (said, took) = cli_to_srv(run);
    assert!(
        !said.contains("hi") && said.contains("rc=1"),
        "{what}: the connect should time out: {said}"
    );
    assert!(
        took > control + Duration::from_secs(1),
        "{what}: a cut connect waits for its 2 s timeout: took {took:?}, control {control:?}"
    );
}

/// Waits (30 s at most) until [`cli_to_srv`] reads `hi` (the server's loop
/// has started); returns how long that connect took, a control for the
/// timings that follow.
pub fn wait_srv_answers(run: impl Fn(&[&str]) -> Exit) -> Duration {
    let start = Instant::now();
    loop {
        let (said, took) = cli_to_srv(&run);
        if said.contains("hi") {
            return took;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "srv never answered: {said}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bridge dockerd creates in its namespace (`--bip`).
const BIP: &str = "10.200.250.1/24";

/// The user-defined network containers join, so their names resolve.
pub const NETWORK: &str = "fbtnet";
const NETWORK_SUBNET: &str = "10.200.251.0/24";

/// How long dockerd gets to answer, and to stop, on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `<workspace>/target/engine`, canonical (mounts under it are found by
/// prefix in /proc/self/mounts).
fn engine_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/engine");
    fs::create_dir_all(&root).unwrap();
    root.canonicalize().unwrap()
}

/// The busybox root filesystem as a tar, built once per machine.
fn rootfs_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let root = engine_root();
        let tar = root.join("busybox-rootfs.tar");
        if tar.is_file() {
            return tar;
        }
        let dir = root.join(format!("rootfs-{}", std::process::id()));
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::copy("/bin/busybox", dir.join("bin/busybox"))
            .expect("/bin/busybox (Debian's busybox-static; run `cargo xtask setup --test`)");
        for applet in ["sh", "nc", "sleep", "cat", "echo", "true", "date"] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
        let partial = root.join(format!("busybox-rootfs.tar.{}", std::process::id()));
        let exit = run_bounded(
            Command::new("tar")
                .arg("-C")
                .arg(&dir)
                .arg("-cf")
                .arg(&partial)
                .arg("."),
            Duration::from_secs(60),
        );
        exit.assert_success();
        fs::rename(&partial, &tar).unwrap();
        let _ = fs::remove_dir_all(&dir);
        tar
    })
}

/// A dockerd in its own namespace, stopped (containers removed first) and
/// its directories removed on drop. Field order: the daemon goes before
/// the namespace it runs in.
pub struct Docker {
    daemon: Option<Child>,
    dir: PathBuf,
    ns: Netns,
}

impl Docker {
    /// Starts dockerd in a new namespace `fbt-<tag>-..`, waits until it
    /// answers, imports [`IMAGE`] and creates [`NETWORK`].
    pub fn start(tag: &str) -> Self {
        let ns = Netns::new(tag);
        ns.ip(&["link", "set", "lo", "up"]);
        let dir = engine_root().join(ns.name());
        fs::create_dir_all(&dir).unwrap();
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let daemon = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", ns.name()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--bip", BIP])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian's docker.io; run `cargo xtask setup --test`)");
        let mut docker = Docker {
            daemon: Some(daemon),
            dir,
            ns,
        };
        docker.wait_ready();
        // The CLI streams the file to the engine (no registry involved).
        let exit = run_bounded(
            docker.cli().arg("import").arg(rootfs_tar()).arg(IMAGE),
            Duration::from_secs(60),
        );
        exit.assert_success();
        docker.ok(&["network", "create", "--subnet", NETWORK_SUBNET, NETWORK]);
        docker
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let out = self.cli().arg("version").output().unwrap();
            if out.status.success() {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited ({status}) before answering: {}", self.log());
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "dockerd did not answer within {START_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The namespace dockerd (and its bridge) lives in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// `DOCKER_HOST` for this engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// A `docker` command talking to this engine only.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", self.host())
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    /// Runs `docker ARGS..` (bounded) and returns what it did.
    pub fn run(&self, args: &[&str]) -> Exit {
        run_bounded(self.cli().args(args), Duration::from_secs(60))
    }

    /// Runs `docker ARGS..`, panics unless it succeeds, returns its stdout
    /// trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let exit = self.run(args);
        assert!(exit.status.success(), "docker {args:?}: {exit:#?}");
        exit.stdout.trim().to_string()
    }

    /// Starts a detached container `name` on [`NETWORK`] running `sh -c
    /// script`; returns its id.
    pub fn container(&self, name: &str, script: &str) -> String {
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            IMAGE,
            "sh",
            "-c",
            script,
        ])
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let ids = self.cli().args(["ps", "-aq"]).output();
        if let Ok(out) = ids {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = run_bounded(
                    self.cli().args(["rm", "-f"]).args(&ids),
                    Duration::from_secs(60),
                );
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            if wait_within(&mut daemon, STOP_TIMEOUT).is_none() {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        // dockerd bind-mounts its data root onto itself and leaves that
        // mount behind when it exits.
        remove_engine_dir(&self.dir);
    }
}

/// Unmounts whatever an engine left mounted under `dir` (deepest first),
/// then removes it.
fn remove_engine_dir(dir: &Path) {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &under {
        let _ = run_bounded(Command::new("umount").arg(m), Duration::from_secs(30));
    }
    let left: Vec<String> = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    let removed = fs::remove_dir_all(dir);
    if left.is_empty() && removed.is_ok() {
        return;
    }
    let text = format!(
        "engine left {left:?} mounted, removing {}: {removed:?}",
        dir.display()
    );
    if std::thread::panicking() {
        eprintln!("leak (the test is failing already): {text}");
    } else {
        panic!("leak: {text}");
    }
}

/// Podman, daemonless: its store, run directory and network configs sit
/// under `target/engine/<ns>/`, named by a `containers.conf` and a
/// `storage.conf` that [`Podman::env`] hands to faultbpf too, so its
/// `podman inspect` finds the same containers. Every podman command runs
/// under `nsenter --net=` into the test's namespace, where the bridge is
/// created. Default ulimits are set explicitly: podman's own (nofile and
/// nproc 1048576) exceed this machine's hard limits and runc refuses them
/// ("error setting rlimit type 7: operation not permitted").
pub struct Podman {
    dir: PathBuf,
    ns: Netns,
}

impl Podman {
    /// Writes the configs in a new namespace `fbt-<tag>-..`, imports
    /// [`IMAGE`] and creates [`NETWORK`].
    pub fn start(tag: &str) -> Self {
        let ns = Netns::new(tag);
        ns.ip(&["link", "set", "lo", "up"]);
        let dir = engine_root().join(ns.name());
        fs::create_dir_all(dir.join("networks")).unwrap();
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .unwrap();
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [engine]\ntmp_dir = \"{0}/tmp\"\nevents_logger = \"file\"\n\
                 [network]\nnetwork_config_dir = \"{0}/networks\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let podman = Podman { dir, ns };
        podman.ok(&["import", &rootfs_tar().to_string_lossy(), IMAGE]);
        podman.ok(&["network", "create", "--subnet", NETWORK_SUBNET, NETWORK]);
        podman
    }

    /// The environment that points podman at this store.
    pub fn env(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("CONTAINERS_CONF", self.dir.join("containers.conf")),
            ("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf")),
        ]
    }

    /// Runs `podman ARGS..` in the namespace (bounded).
    pub fn run(&self, args: &[&str]) -> Exit {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.ns.name()))
            .arg("podman")
            .args(args)
            .env_remove("CONTAINER_HOST");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        run_bounded(&mut cmd, Duration::from_secs(60))
    }

    /// Runs `podman ARGS..`, panics unless it succeeds, returns its stdout
    /// trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let exit = self.run(args);
        assert!(exit.status.success(), "podman {args:?}: {exit:#?}");
        exit.stdout.trim().to_string()
    }

    /// Starts a detached container `name` on [`NETWORK`] running `sh -c
    /// script`; returns its id.
    pub fn container(&self, name: &str, script: &str) -> String {
        self.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NETWORK,
            IMAGE,
            "sh",
            "-c",
            script,
        ])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-f", "-a", "-t", "0"]);
        let _ = self.run(&["network", "rm", "-f", NETWORK]);
        remove_engine_dir(&self.dir);
    }
}
