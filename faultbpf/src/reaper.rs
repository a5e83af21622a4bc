//! Netlink (cls_bpf) filters outlive the process that attached them, so a
//! `kill -9` of faultbpf would leave its filters (and the clsact qdisc it
//! added) on the interface. The reaper is a small child process,
//! `faultbpf __reap`, that holds the read end of a pipe from its parent: a
//! parent that exits cleanly writes `done` first; a parent that dies in
//! any way closes the pipe without it, and the reaper removes exactly the
//! filters the parent attached. TCX links need none of this: they die with
//! their file descriptors.
//!
//! The same goes for XDP: aya attaches it with a bpf_link, which dies with
//! its file descriptor, except on kernels without XDP links (before 5.9)
//! where it falls back to netlink. Those attachments ([`XdpAttachment`])
//! are detached by the parent on exit and by the reaper if it dies.

use std::{
    io::{BufRead, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
};

use aya::programs::{
    TcAttachType,
    tc::{SchedClassifierLink, TcHandle},
};

use faultbpf_common::XDP_PROGRAM;

use crate::error::Error;

/// One netlink filter, as given to `__reap --filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub iface: String,
    pub ingress: bool,
    pub priority: u16,
    pub handle: u32,
}

impl Filter {
    /// The filter behind a netlink link attached to `iface`.
    pub fn of(iface: &str, link: &SchedClassifierLink) -> Option<Self> {
        Some(Self {
            iface: iface.to_string(),
            ingress: matches!(link.attach_type().ok()?, TcAttachType::Ingress),
            priority: link.priority().ok()?,
            handle: link.handle().ok()?.into(),
        })
    }

    /// `IFACE:ingress|egress:PRIORITY:HANDLE`.
    pub fn to_arg(&self) -> String {
        let hook = if self.ingress { "ingress" } else { "egress" };
        format!("{}:{hook}:{}:{}", self.iface, self.priority, self.handle)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("bad filter `{s}`: expected IFACE:ingress|egress:PRIORITY:HANDLE");
        let mut it = s.rsplitn(4, ':');
        let handle = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let priority = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let ingress = match it.next() {
            Some("ingress") => true,
            Some("egress") => false,
            _ => return Err(bad()),
        };
        let iface = it.next().filter(|i| !i.is_empty()).ok_or_else(bad)?;
        Ok(Self {
            iface: iface.to_string(),
            ingress,
            priority,
            handle,
        })
    }

    fn remove(&self) {
        let hook = if self.ingress {
            TcAttachType::Ingress
        } else {
            TcAttachType::Egress
        };
        // Dropping the rebuilt link detaches the filter.
        let _ = SchedClassifierLink::attached(
            &self.iface,
            hook,
            self.priority,
            TcHandle::from(self.handle),
            None,
        );
    }
}

/// An XDP program attached through netlink, as given to `__reap --xdp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    pub iface: String,
    /// Generic (skb) mode; native (driver) mode otherwise.
    pub generic: bool,
}

impl XdpAttachment {
    /// `IFACE:native|generic`.
    pub fn to_arg(&self) -> String {
        let mode = if self.generic { "generic" } else { "native" };
        format!("{}:{mode}", self.iface)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("bad XDP attachment `{s}`: expected IFACE:native|generic");
        let (iface, mode) = s.rsplit_once(':').ok_or_else(bad)?;
        let generic = match mode {
            "generic" => true,
            "native" => false,
            _ => return Err(bad()),
        };
        if iface.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            iface: iface.to_string(),
            generic,
        })
    }

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
    stdin: ChildStdin,
}

impl Guard {
    /// The parent cleaned up itself: the reaper exits without acting.
    pub fn dismiss(mut self) {
        let _ = self.stdin.write_all(b"done\n");
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// Starts `faultbpf __reap` for these filters, qdiscs and XDP attachments.
pub fn spawn(filters: &[Filter], clsact: &[String], xdp: &[XdpAttachment]) -> Result<Guard, Error> {
    let exe = reaper_exe().ok_or_else(|| Error::Io {
        what: "could not find the faultbpf executable to start the reaper \
               (put it on PATH or set FAULTBPF_BIN)"
            .into(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("__reap");
    for f in filters {
        cmd.arg("--filter").arg(f.to_arg());
    }
    for i in clsact {
        cmd.arg("--clsact").arg(i);
    }
    for x in xdp {
        cmd.arg("--xdp").arg(x.to_arg());
    }
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
    let stdin = child.stdin.take().expect("stdin was piped");
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

/// The reaper's body: wait for the parent, clean up if it died.
pub fn run(filters: &[Filter], clsact: &[String], xdp: &[XdpAttachment]) {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "done" {
        return;
    }
    for f in filters {
        f.remove();
    }
    for i in clsact {
        remove_clsact(i);
    }
    for x in xdp {
        x.remove();
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
    fn filter_arg_round_trips() {
        let f = Filter {
            iface: "veth0".into(),
            ingress: false,
            priority: 49152,
            handle: 1,
        };
        assert_eq!(f.to_arg(), "veth0:egress:49152:1");
        assert_eq!(Filter::parse(&f.to_arg()).unwrap(), f);
        assert!(Filter::parse("veth0:sideways:1:1").is_err());
        assert!(Filter::parse(":ingress:1:1").is_err());
    }

    #[test]
    fn xdp_arg_round_trips() {
        for generic in [false, true] {
            let x = XdpAttachment {
                iface: "eth0".into(),
                generic,
            };
            assert_eq!(XdpAttachment::parse(&x.to_arg()).unwrap(), x);
        }
        assert_eq!(
            XdpAttachment::parse("veth0:native").unwrap().to_arg(),
            "veth0:native"
        );
        assert!(XdpAttachment::parse("veth0:offload").is_err());
        assert!(XdpAttachment::parse(":generic").is_err());
        assert!(XdpAttachment::parse("veth0").is_err());
    }
}
