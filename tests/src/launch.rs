//! The one way a test starts the `faultbpf` binary.
//!
//! A developer's machine (or a CI runner) may have a real daemon listening
//! on the default socket, `/run/faultbpf.sock`. A fault command that finds
//! it adds its rule there: a test that forgot `--standalone` would cut a
//! port on the host. So every invocation built here says where its rules
//! go, and [`Launch::command`] panics unless it does:
//! - [`Launch::standalone`] adds `--standalone` (fault commands and `run`),
//! - [`Launch::socket`] passes the test's own `--socket PATH` (its daemon,
//!   or [`NO_DAEMON`] through [`Launch::no_daemon`] where none may answer).
//!
//! Whatever the test chose, the child also gets `FAULTBPF_SOCKET` pointing
//! to [`NO_DAEMON`], a path that cannot exist, so nothing it starts in turn
//! (the command of `faultbpf run`, a Python client) finds the host's daemon.
//!
//! Commands run inside a test namespace ([`Launch::new`]); only those that
//! touch no network at all (`check FILE`, `--help`) may run without one
//! ([`Launch::offline`]).

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{Exit, Netns, Proc, run_bounded};

/// A socket path that never exists: no daemon can answer there.
pub const NO_DAEMON: &str = "/nonexistent/faultbpf-tests.sock";

/// Prefix of the one stderr line that says the fault is in force.
pub const ACTIVE_PREFIX: &str = "faultbpf: active:";

/// How long [`Launch::run`] lets a command run before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Subcommands that take no `--standalone` (it is a fault command's flag).
const NOT_STANDALONE: &[&str] = &[
    "daemon", "rules", "rm", "stats", "check", "scenario", "__reap",
];

/// Subcommands that may run outside a test namespace: they read a file or
/// print help, and touch neither interfaces nor a daemon.
const OFFLINE: &[&str] = &[
    "check",
    "scenario check",
    "--help",
    "-h",
    "--version",
    "help",
];

/// The binary under test: `$FAULTBPF_BIN`, else `<workspace>/target/debug/faultbpf`.
/// Panics if it does not exist, so a missing build fails instead of skipping.
pub fn faultbpf_bin() -> PathBuf {
    let path = match std::env::var_os("FAULTBPF_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/faultbpf"),
    };
    assert!(
        path.is_file(),
        "faultbpf binary not found at {} (run `cargo build -p faultbpf` or set FAULTBPF_BIN)",
        path.display()
    );
    path
}

/// One `faultbpf ARGS..` invocation, built up and then run to its end
/// ([`Launch::run`]), started in the background ([`Launch::spawn`]), or
/// started and waited on until its fault is in force ([`Launch::start`]).
#[derive(Debug, Clone)]
#[must_use = "a Launch does nothing until it is run, spawned or started"]
pub struct Launch {
    /// The namespace it runs in; `None` only for [`Launch::offline`].
    ns: Option<String>,
    args: Vec<OsString>,
    standalone: bool,
    socket: Option<PathBuf>,
    envs: Vec<(OsString, OsString)>,
    stdin_piped: bool,
    current_dir: Option<PathBuf>,
}

impl Launch {
    /// `faultbpf ARGS..` inside `ns`; say where its rules go next
    /// ([`Launch::standalone`] or [`Launch::socket`]).
    pub fn new<I, S>(ns: &Netns, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        crate::require_root();
        Self::in_namespace(Some(ns.name().to_string()), args)
    }

    /// `faultbpf ARGS..` outside any test namespace, for the commands that
    /// touch no network (`check FILE`, `scenario check FILE`, `--help`,
    /// `--version`); [`Launch::command`] panics for any other. Gets
    /// `--socket` [`NO_DAEMON`].
    pub fn offline<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::in_namespace(None, args).no_daemon()
    }

    fn in_namespace<I, S>(ns: Option<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Launch {
            ns,
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            standalone: false,
            socket: None,
            envs: Vec::new(),
            stdin_piped: false,
            current_dir: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds `--standalone` (before a `--`, for `run`): the rule lives in
    /// this process, whatever daemon listens anywhere.
    pub fn standalone(mut self) -> Self {
        self.standalone = true;
        self
    }

    /// Passes `--socket PATH`: the test's own daemon (or a path where none
    /// listens).
    pub fn socket(mut self, path: impl AsRef<Path>) -> Self {
        self.socket = Some(path.as_ref().to_owned());
        self
    }

    /// `--socket` [`NO_DAEMON`]: for commands without `--standalone`
    /// (`scenario run`, `rules`) that must find no daemon.
    pub fn no_daemon(self) -> Self {
        self.socket(NO_DAEMON)
    }

    /// Sets an environment variable of the child (after the defaults, so
    /// it wins).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// A pipe on stdin ([`Proc::send`]) instead of `/dev/null`; for
    /// [`Launch::spawn`] and [`Launch::start`].
    pub fn stdin_piped(mut self) -> Self {
        self.stdin_piped = true;
        self
    }

    /// The child's working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// The full argument list after `faultbpf`: `--socket PATH` first (a
    /// global flag), `--standalone` before any `--`. Panics unless the
    /// invocation says where its rules go, or if it cannot run where asked.
    pub fn argv(&self) -> Vec<OsString> {
        let subcommand = self.subcommand();
        if let Some(flag) = self
            .args
            .iter()
            .take_while(|a| *a != "--")
            .find(|a| *a == "--standalone" || *a == "--socket")
        {
            panic!(
                "`faultbpf {}`: pass {} through Launch::standalone / Launch::socket, not in the \
                 arguments",
                self.shown_args(),
                flag.to_string_lossy()
            );
        }
        assert!(
            self.standalone || self.socket.is_some(),
            "`faultbpf {}`: a test must pass --standalone (Launch::standalone) or its own \
             --socket (Launch::socket / Launch::no_daemon), or it could add a rule to the \
             host's daemon on /run/faultbpf.sock",
            self.shown_args()
        );
        assert!(
            !(self.standalone && NOT_STANDALONE.contains(&subcommand.as_str())),
            "`faultbpf {}`: `{subcommand}` takes no --standalone; use Launch::socket or \
             Launch::no_daemon",
            self.shown_args()
        );
        if self.ns.is_none() {
            let two = self.two_words();
            assert!(
                OFFLINE.contains(&subcommand.as_str()) || OFFLINE.contains(&two.as_str()),
                "`faultbpf {}` must run inside a test namespace (Launch::new): only {OFFLINE:?} \
                 may run outside one",
                self.shown_args()
            );
        }
        let mut argv = Vec::new();
        if let Some(socket) = &self.socket {
            argv.push("--socket".into());
            argv.push(socket.clone().into_os_string());
        }
        let dashes = self.args.iter().position(|a| a == "--");
        let (before, after) = self.args.split_at(dashes.unwrap_or(self.args.len()));
        argv.extend(before.iter().cloned());
        if self.standalone {
            argv.push("--standalone".into());
        }
        argv.extend(after.iter().cloned());
        argv
    }

    /// The command, ready to spawn (see [`Launch::argv`] for the checks).
    pub fn command(&self) -> Command {
        let argv = self.argv();
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(faultbpf_bin());
                cmd
            }
            None => Command::new(faultbpf_bin()),
        };
        cmd.args(argv).env("FAULTBPF_SOCKET", NO_DAEMON);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// The command line as a user would type it, for failure messages.
    pub fn describe(&self) -> String {
        let argv: Vec<String> = self
            .argv()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        match &self.ns {
            Some(ns) => format!("ip netns exec {ns} faultbpf {}", argv.join(" ")),
            None => format!("faultbpf {}", argv.join(" ")),
        }
    }

    /// Runs to completion (a refusal, `--for`, a CLI query); kills it and
    /// panics after 30 s.
    pub fn run(&self) -> Exit {
        self.run_within(RUN_TIMEOUT)
    }

    /// Runs to completion; kills it and panics after `timeout`.
    pub fn run_within(&self, timeout: Duration) -> Exit {
        run_bounded(&mut self.command(), timeout)
    }

    /// Starts it without waiting for anything.
    pub fn spawn(&self) -> Proc {
        Proc::spawn_with(&mut self.command(), &self.describe(), self.stdin_piped)
    }

    /// Starts it and returns once it printed `faultbpf: active:`; panics
    /// (after killing it) if it exits or times out first.
    pub fn start(&self) -> Proc {
        let mut proc = self.spawn();
        proc.wait_active();
        proc
    }

    fn subcommand(&self) -> String {
        self.args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn two_words(&self) -> String {
        let words: Vec<String> = self
            .args
            .iter()
            .take(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        words.join(" ")
    }

    fn shown_args(&self) -> String {
        let words: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_ns(args: &[&str]) -> Launch {
        Launch::in_namespace(Some("fbt-unit".into()), args)
    }

    fn argv(l: &Launch) -> Vec<String> {
        l.argv()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    #[should_panic(expected = "must pass --standalone")]
    fn a_launch_that_names_no_placement_panics() {
        in_ns(&["blackhole", "--port", "5000"]).argv();
    }

    #[test]
    fn standalone_goes_before_the_command_of_run() {
        let l = in_ns(&[
            "run",
            "blackhole",
            "--port",
            "5000",
            "--",
            "sh",
            "-c",
            "true",
        ])
        .standalone();
        assert_eq!(
            argv(&l),
            [
                "run",
                "blackhole",
                "--port",
                "5000",
                "--standalone",
                "--",
                "sh",
                "-c",
                "true"
            ]
        );
    }

    #[test]
    fn socket_comes_first_and_the_environment_points_nowhere() {
        let l = in_ns(&["rules", "--json"]).socket("/tmp/d.sock");
        assert_eq!(argv(&l), ["--socket", "/tmp/d.sock", "rules", "--json"]);
        let cmd = l.command();
        let env: Vec<_> = cmd.get_envs().collect();
        assert!(
            env.contains(&(OsStr::new("FAULTBPF_SOCKET"), Some(OsStr::new(NO_DAEMON)))),
            "{env:?}"
        );
        assert!(!Path::new(NO_DAEMON).exists());
    }

    #[test]
    #[should_panic(expected = "not in the arguments")]
    fn placement_flags_in_the_arguments_panic() {
        in_ns(&["blackhole", "--port", "1", "--standalone"])
            .standalone()
            .argv();
    }

    #[test]
    #[should_panic(expected = "takes no --standalone")]
    fn standalone_on_a_daemon_command_panics() {
        in_ns(&["daemon"]).standalone().argv();
    }

    #[test]
    #[should_panic(expected = "must run inside a test namespace")]
    fn a_fault_command_cannot_run_outside_a_namespace() {
        Launch::offline(["blackhole", "--port", "5000"])
            .standalone()
            .argv();
    }

    #[test]
    fn check_runs_offline_with_no_daemon() {
        let l = Launch::offline(["check", "/tmp/x.toml"]);
        assert_eq!(argv(&l), ["--socket", NO_DAEMON, "check", "/tmp/x.toml"]);
    }
}
