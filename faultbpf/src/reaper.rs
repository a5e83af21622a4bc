//! Netlink (cls_bpf) filters outlive the process that attached them, so a
//! `kill -9` of faultbpf would leave its filters (and the clsact qdisc it
//! added) on the interface. The reaper is a small child process,
//! `faultbpf __reap`, that holds the read end of a pipe from its parent: a
//! parent that exits cleanly writes `done` first; a parent that dies in
//! any way closes the pipe without it, and the reaper removes what the
//! parent attached. TCX links need none of this: they die with their file
//! descriptors.
//!
//! No moment is left uncovered (issue 12: a kill timed at the first filter
//! left filters and a qdisc forever, and a daemon killed while attaching
//! to a new interface left everything, because the old reaper was
//! dismissed before a new one existed):
//! - The reaper starts before the first kernel write, and one reaper lives
//!   as long as the [`crate::Injector`]: a new interface is one more line
//!   on the same pipe, never a hand-over between two reapers.
//! - The parent states each *intent* ([`Intent`]) before the write it
//!   announces, and the pipe holds it even if the reaper has not read it
//!   yet. A kill between the kernel's answer and any bookkeeping loses
//!   nothing: the reaper does not need the filter's handle, it finds our
//!   filters by the ids of the programs we loaded (known before any
//!   attach), so it never touches another process's filters.
//!
//! The same goes for XDP: aya attaches it with a bpf_link, which dies with
//! its file descriptor, except on kernels without XDP links (before 5.9)
//! where it falls back to netlink. Those attachments ([`XdpAttachment`])
//! are detached by the parent on exit and by the reaper if it dies.
//!
//! [`pause_point`] is the hook the kill tests use (`tests/tests/kill_leaks.rs`)
//! to SIGKILL the parent at an exact attach step.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::Mutex,
};

use aya::programs::{
    TcAttachType,
    tc::{SchedClassifierLink, TcHandle},
};

use faultbpf_common::XDP_PROGRAM;

use crate::error::Error;

/// One line on the pipe: something the parent is about to do, sent before
/// the kernel write it announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A program we loaded: filters and XDP attachments running it are ours.
    Prog(u32),
    /// We attach cls_bpf filters to this interface.
    Tc(String),
    /// We add a clsact qdisc to this interface (unless it has one).
    Clsact(String),
    /// The interface had a clsact qdisc already: it is not ours to delete.
    ClsactKept(String),
    /// We attach XDP to this interface (netlink only before Linux 5.9).
    Xdp(String),
}

impl Intent {
    /// The line sent for it, without the newline.
    pub fn to_line(&self) -> String {
        match self {
            Self::Prog(id) => format!("prog {id}"),
            Self::Tc(i) => format!("tc {i}"),
            Self::Clsact(i) => format!("clsact {i}"),
            Self::ClsactKept(i) => format!("clsact-kept {i}"),
            Self::Xdp(i) => format!("xdp {i}"),
        }
    }

    pub fn parse(line: &str) -> Result<Self, String> {
        let bad =
            || format!("bad reaper line `{line}`: expected prog|tc|clsact|clsact-kept|xdp ARG");
        let (word, arg) = line.trim().split_once(' ').ok_or_else(bad)?;
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            return Err(bad());
        }
        let name = arg.to_string();
        Ok(match word {
            "prog" => Self::Prog(arg.parse().map_err(|_| bad())?),
            "tc" => Self::Tc(name),
            "clsact" => Self::Clsact(name),
            "clsact-kept" => Self::ClsactKept(name),
            "xdp" => Self::Xdp(name),
            _ => return Err(bad()),
        })
    }
}

/// Everything the parent announced, gathered by the reaper.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    progs: BTreeSet<u32>,
    tc: BTreeSet<String>,
    clsact: BTreeSet<String>,
    xdp: BTreeSet<String>,
}

impl Plan {
    pub fn add(&mut self, i: Intent) {
        match i {
            Intent::Prog(id) => {
                self.progs.insert(id);
            }
            Intent::Tc(n) => {
                self.tc.insert(n);
            }
            Intent::Clsact(n) => {
                self.clsact.insert(n);
            }
            Intent::ClsactKept(n) => {
                self.clsact.remove(&n);
            }
            Intent::Xdp(n) => {
                self.xdp.insert(n);
            }
        }
    }

    /// Removes our filters, then the qdiscs we added if they are empty,
    /// then our netlink XDP attachments.
    fn clean(&self) {
        for iface in &self.tc {
            for (hook, name) in [
                (TcAttachType::Ingress, "ingress"),
                (TcAttachType::Egress, "egress"),
            ] {
                for (priority, handle) in our_filters(iface, name, &self.progs) {
                    // Dropping the rebuilt link detaches the filter.
                    let _ = SchedClassifierLink::attached(
                        iface,
                        hook,
                        priority,
                        TcHandle::from(handle),
                        None,
                    );
                }
            }
        }
        for iface in &self.clsact {
            remove_clsact(iface);
        }
        for iface in &self.xdp {
            remove_our_xdp(iface, &self.progs);
        }
    }
}

/// (priority, handle) of the filters on `iface`'s `hook` that run one of
/// `progs`, read from `tc -j filter show`.
fn our_filters(iface: &str, hook: &str, progs: &BTreeSet<u32>) -> Vec<(u16, u32)> {
    filters_running(&tc_filters(iface, hook), progs)
}

/// `tc -j filter show dev IFACE HOOK`, parsed; `Null` when `tc` cannot
/// say (missing, no such device).
pub fn tc_filters(iface: &str, hook: &str) -> serde_json::Value {
    Command::new("tc")
        .args(["-j", "filter", "show", "dev", iface, hook])
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice(&out.stdout).ok())
        .unwrap_or_default()
}

/// The (priority, handle) of each entry of `tc -j filter show` whose BPF
/// program is one of `progs`.
fn filters_running(filters: &serde_json::Value, progs: &BTreeSet<u32>) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    for f in filters.as_array().into_iter().flatten() {
        let opts = &f["options"];
        let Some(id) = opts["prog"]["id"].as_u64() else {
            continue;
        };
        if !u32::try_from(id).is_ok_and(|id| progs.contains(&id)) {
            continue;
        }
        let priority = f["pref"].as_u64().and_then(|p| u16::try_from(p).ok());
        let handle = opts["handle"]
            .as_str()
            .and_then(|h| u32::from_str_radix(h.trim_start_matches("0x"), 16).ok());
        if let (Some(p), Some(h)) = (priority, handle) {
            out.push((p, h));
        }
    }
    out
}

/// Detaches the XDP program(s) on `iface` that are ours by id.
fn remove_our_xdp(iface: &str, progs: &BTreeSet<u32>) {
    let Ok(out) = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
    else {
        return;
    };
    let Ok(links) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return;
    };
    let xdp = &links[0]["xdp"];
    let attached = xdp["attached"].as_array().cloned().unwrap_or_default();
    for a in std::iter::once(xdp).chain(attached.iter()) {
        let ours = a["prog"]["id"]
            .as_u64()
            .is_some_and(|id| u32::try_from(id).is_ok_and(|id| progs.contains(&id)));
        // XDP_ATTACHED_DRV = 1, SKB = 2 (linux/if_link.h).
        let mode = match a["mode"].as_u64() {
            Some(1) => "xdpdrv",
            Some(2) => "xdpgeneric",
            _ => continue,
        };
        if ours {
            let _ = Command::new("ip")
                .args(["link", "set", "dev", iface, mode, "off"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An XDP program attached through netlink (kernels before 5.9), which
/// the parent detaches on exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    pub iface: String,
    /// Generic (skb) mode; native (driver) mode otherwise.
    pub generic: bool,
}

impl XdpAttachment {
    /// Detaches the program, unless the one attached there now is not
    /// ours (someone replaced it). aya has no public netlink detach, hence
    /// `ip`.
    pub fn remove(&self) {
        if !xdp_program_is_ours(&self.iface) {
            return;
        }
        let mode = if self.generic { "xdpgeneric" } else { "xdpdrv" };
        let _ = Command::new("ip")
            .args(["link", "set", "dev", &self.iface, mode, "off"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether `ip -d -j link show` names faultbpf's XDP program on `iface`.
fn xdp_program_is_ours(iface: &str) -> bool {
    let Ok(out) = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", iface])
        .output()
    else {
        return false;
    };
    let Ok(links) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    let xdp = &links[0]["xdp"];
    // One program: `xdp.prog`; several modes at once: `xdp.attached[].prog`.
    let attached = xdp["attached"].as_array().cloned().unwrap_or_default();
    std::iter::once(xdp)
        .chain(attached.iter())
        .any(|a| a["prog"]["name"].as_str() == Some(XDP_PROGRAM))
}

/// The parent's end of the pipe.
pub struct Guard {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Guard {
    /// The reaper's pid (the kill tests wait for it to finish).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells the reaper what we are about to do; call it before the kernel
    /// write. A reaper that died (someone killed it) cannot be told: warn
    /// once and carry on, as without a reaper.
    pub fn tell(&mut self, intent: &Intent) {
        let Some(stdin) = &mut self.stdin else { return };
        let line = format!("{}\n", intent.to_line());
        if let Err(e) = stdin.write_all(line.as_bytes()) {
            eprintln!(
                "faultbpf: warning: the reaper (pid {}) is gone ({e}); a crash would leave \
                 tc filters behind",
                self.child.id()
            );
            self.stdin = None;
        }
    }

    /// The parent cleaned up itself: the reaper exits without acting.
    pub fn dismiss(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

/// Starts `faultbpf __reap`; tell it what to watch with [`Guard::tell`].
pub fn spawn() -> Result<Guard, Error> {
    let exe = reaper_exe().ok_or_else(|| Error::Io {
        what: "could not find the faultbpf executable to start the reaper \
               (put it on PATH or set FAULTBPF_BIN)"
            .into(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("__reap");
    // Its own process group: a Ctrl-C on the terminal must reach only the
    // parent, which then dismisses the reaper. No stdout/stderr: whoever
    // reads the parent's output to its end must not wait on the reaper.
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Error::Io {
            what: "could not start the reaper process".into(),
            source,
        })?;
    // Our end of the pipe is close-on-exec (std's pipes are), so no child
    // we start later (`faultbpf run`'s command, tc) keeps it open.
    let stdin = child.stdin.take();
    Ok(Guard { child, stdin })
}

/// The program that knows `__reap`: ourselves when we are faultbpf; for
/// the library inside another program (a test binary), `$FAULTBPF_BIN` or
/// `faultbpf` on PATH.
fn reaper_exe() -> Option<PathBuf> {
    let me = std::env::current_exe().ok();
    if me
        .as_ref()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "faultbpf")
    {
        return me;
    }
    if let Some(p) = std::env::var_os("FAULTBPF_BIN").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("faultbpf"))
            .find(|p| p.is_file())
    })
}

/// The reaper's body: gather the parent's intents until the pipe closes;
/// clean up unless the last word was `done`.
pub fn run() {
    let mut plan = Plan::default();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "done" {
            return;
        }
        if let Ok(i) = Intent::parse(&line) {
            plan.add(i);
        }
    }
    plan.clean();
}

/// What `FAULTBPF_TEST_PAUSE_AT` asks for: `POINT` (its first hit) or
/// `POINT#N` (its N-th hit). Points: `attach:start` (reaper started, no
/// kernel write yet), `attach:clsact:IF`, `attach:filter:IF` (once per
/// hook), `attach:xdp:IF` (each right after the kernel's answer, before
/// any bookkeeping) and `attach:done` (after each set of interfaces).
fn pause_wanted(spec: &str, point: &str, hit: u32) -> bool {
    match spec.split_once('#') {
        Some((p, n)) => p == point && n.parse() == Ok(hit),
        None => spec == point && hit == 1,
    }
}

/// A test hook: if `FAULTBPF_TEST_PAUSE_AT` names this hit of `point`,
/// say so on stderr (with the reaper's pid, or `none`) and stop here for
/// good, so a test can SIGKILL us at exactly this step. Costs one
/// environment lookup when unset; only tests set it.
pub fn pause_point(point: &str, reaper: Option<u32>) {
    static HITS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    let Some(spec) = std::env::var_os("FAULTBPF_TEST_PAUSE_AT") else {
        return;
    };
    let hit = {
        let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
        let n = hits
            .get_or_insert_with(HashMap::new)
            .entry(point.to_string())
            .or_insert(0);
        *n += 1;
        *n
    };
    if !pause_wanted(&spec.to_string_lossy(), point, hit) {
        return;
    }
    let reaper = reaper.map_or_else(|| "none".to_string(), |p| p.to_string());
    eprintln!("faultbpf: test pause at {point}#{hit} (reaper {reaper})");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Deletes the clsact qdisc of `iface`, unless someone else's filters now
/// sit on it. There is no netlink call for this in aya, hence `tc`.
pub fn remove_clsact(iface: &str) {
    let has_filters = ["ingress", "egress"].iter().any(|hook| {
        Command::new("tc")
            .args(["filter", "show", "dev", iface, hook])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(true)
    });
    if has_filters {
        return;
    }
    let _ = Command::new("tc")
        .args(["qdisc", "del", "dev", iface, "clsact"])
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_lines_round_trip() {
        for i in [
            Intent::Prog(42),
            Intent::Tc("veth0".into()),
            Intent::Clsact("veth0".into()),
            Intent::ClsactKept("veth0".into()),
            Intent::Xdp("eth0".into()),
        ] {
            assert_eq!(Intent::parse(&i.to_line()).unwrap(), i);
        }
        for bad in ["prog x", "tc", "tc ", "sideways veth0", "tc a b", ""] {
            let e = Intent::parse(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn a_kept_qdisc_is_not_ours_to_delete() {
        let mut p = Plan::default();
        p.add(Intent::Clsact("a".into()));
        p.add(Intent::Clsact("b".into()));
        p.add(Intent::ClsactKept("a".into()));
        assert_eq!(p.clsact.iter().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn only_filters_running_our_programs_are_picked() {
        // `tc -j filter show dev va ingress` with ours (id 121) and another
        // process's (id 7); the first entry is the priority's header.
        let json: serde_json::Value = serde_json::from_str(
            r#"[{"protocol":"all","pref":49152,"kind":"bpf","chain":0},
                {"protocol":"all","pref":49152,"kind":"bpf","chain":0,"options":
                  {"handle":"0x1","bpf_name":"faultbpf_in","prog":{"id":121}}},
                {"protocol":"all","pref":49153,"kind":"bpf","chain":0,"options":
                  {"handle":"0x1a","bpf_name":"faultbpf_in","prog":{"id":7}}}]"#,
        )
        .unwrap();
        let ours = BTreeSet::from([121, 122]);
        assert_eq!(filters_running(&json, &ours), [(49152, 1)]);
        assert_eq!(
            filters_running(&json, &BTreeSet::from([7])),
            [(49153, 0x1a)]
        );
    }

    #[test]
    fn pause_spec_names_a_point_and_its_hit() {
        assert!(pause_wanted("attach:filter", "attach:filter", 1));
        assert!(!pause_wanted("attach:filter", "attach:filter", 2));
        assert!(pause_wanted("attach:filter:vb#2", "attach:filter:vb", 2));
        assert!(!pause_wanted("attach:filter:vb#2", "attach:filter:va", 2));
        assert!(!pause_wanted("attach:filter#x", "attach:filter", 1));
    }
}
