//! The errors of loading, attaching and driving the kernel programs.
//!
//! Each names the object it is about; OS errors are kept as the source, not
//! pasted into the text, so `main` prints the chain once.

use std::io;

/// A failure of the library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller lacks the privileges to load BPF programs or attach them.
    #[error(
        "permission denied: faultbpf needs CAP_BPF and CAP_NET_ADMIN to load and attach its \
         programs; run it as root (sudo faultbpf ...)"
    )]
    PermissionDenied(#[source] anyhow::Error),
    /// The kernel refused the programs or maps for another reason.
    #[error(
        "could not load the kernel programs: is this a Linux kernel with BPF and BTF \
         (CONFIG_BPF_SYSCALL, CONFIG_DEBUG_INFO_BTF), 5.x or later?"
    )]
    Load(#[source] anyhow::Error),
    /// The kernel refused the XDP program (`--xdp`).
    #[error(
        "could not load the XDP program (--xdp needs Linux 5.18 or later, for \
         bpf_xdp_load_bytes); run without --xdp to fault ingress with tc"
    )]
    XdpLoad(#[source] anyhow::Error),
    /// Attaching to one interface failed.
    #[error("could not attach to interface `{iface}` ({hook})")]
    Attach {
        iface: String,
        hook: &'static str,
        #[source]
        source: anyhow::Error,
    },
    /// An interface named by the caller does not exist (any more).
    #[error("no interface `{0}` in this network namespace")]
    NoSuchInterface(String),
    /// Writing or reading a map failed.
    #[error("map `{map}`: {what}")]
    Map {
        map: &'static str,
        what: &'static str,
        #[source]
        source: anyhow::Error,
    },
    /// This kernel lacks what the rule needs (e.g. `delay` without sch_fq
    /// and sch_netem): no other value of the rule would help on this host.
    #[error("{0}")]
    Unsupported(String),
    /// Plain I/O while inspecting the host.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps a load-time error, telling "not allowed" apart from the rest.
    pub(crate) fn load(e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if is_permission_error(&e) {
            Self::PermissionDenied(e)
        } else {
            Self::Load(e)
        }
    }

    /// Wraps an XDP program load error, telling "not allowed" apart.
    pub(crate) fn xdp_load(e: impl Into<anyhow::Error>) -> Self {
        match Self::load(e) {
            Self::Load(e) => Self::XdpLoad(e),
            other => other,
        }
    }

    pub(crate) fn attach(iface: &str, hook: &'static str, e: impl Into<anyhow::Error>) -> Self {
        let e = e.into();
        if is_permission_error(&e) {
            return Self::PermissionDenied(e);
        }
        Self::Attach {
            iface: iface.to_string(),
            hook,
            source: e,
        }
    }
}

/// EPERM/EACCES anywhere in the chain.
fn is_permission_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| {
            io.kind() == io::ErrorKind::PermissionDenied
                || matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        })
    })
}

/// An error and its causes on one line: "a: b: c".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
