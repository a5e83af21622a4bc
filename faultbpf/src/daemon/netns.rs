//! The daemon's injectors in other network namespaces: rules with a
//! `container` field act inside that container's namespace, as
//! `faultbpf --container` does, but from the daemon's one process.
//!
//! Entering a namespace is a `setns` of the calling thread, and the
//! daemon's threads are shared (the runtime's pool, the heartbeat), so
//! everything that depends on the namespace (loading and attaching, the
//! reaper started then, a delay device made on a first delay rule, the
//! clean-up on drop) runs on a short-lived thread of its own that enters
//! it and ends ([`in_netns`]); the other threads never move. Map writes
//! and counter reads need no namespace and happen anywhere.
//!
//! An injector is shared by every rule in its namespace (keyed by the
//! namespace's device and inode, [`NsId`]) and dropped with the last of
//! them. Each one has its own lease map: its [`LeaseWriter`] joins
//! [`Leases`], which the heartbeat thread renews with the daemon's own,
//! so a daemon that dies or freezes leaves nothing in force in any
//! container either.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{AttachMode, Injector, iface, loader::LeaseWriter};

/// A network namespace, as the kernel tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    /// The namespace an open namespace file refers to.
    pub fn of(file: &File) -> io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

impl std::fmt::Display for NsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// Runs `f` on a thread of its own inside the namespace `ns` refers to;
/// the thread ends with `f`, so no other work ever runs there by mistake.
pub fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::target::enter_file(ns)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Every lease the heartbeat renews besides the daemon's own: one per
/// injector in another namespace. Its lock is held only to copy or change
/// the list, never while the rule table is locked for long, so a slow
/// request or engine cannot delay a renewal.
#[derive(Clone, Default)]
pub struct Leases(Arc<Mutex<Vec<Renewal>>>);

/// One namespace's lease, as the heartbeat renews it.
type Renewal = (NsId, Arc<LeaseWriter>);

impl Leases {
    fn add(&self, id: NsId, w: Arc<LeaseWriter>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, w));
    }

    fn remove(&self, id: NsId) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(i, _)| *i != id);
    }

    /// The writers now (renewed outside the lock).
    pub fn writers(&self) -> Vec<Renewal> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The programs attached in one other namespace.
pub struct NetnsInjector {
    /// `Some` until dropped (inside the namespace, see `Drop`).
    inj: Option<Injector>,
    /// Held open: the namespace to enter for the work that needs it. It
    /// keeps the namespace alive while we hold it, so an injector whose
    /// container is gone is dropped at the next check.
    ns: File,
    id: NsId,
    leases: Leases,
}

impl NetnsInjector {
    /// Loads the programs inside `ns` and attaches them to every interface
    /// that is up there (a container's `eth0` and `lo`), as `faultbpf
    /// --container` does, then arms the lease and hands its writer to the
    /// heartbeat.
    pub fn attach(
        ns: File,
        mode: AttachMode,
        lease: Duration,
        leases: &Leases,
    ) -> Result<Self, crate::Error> {
        let id = NsId::of(&ns).map_err(|source| crate::Error::Io {
            what: "could not read a network namespace's inode".into(),
            source,
        })?;
        let inj = in_netns(&ns, || {
            let up = iface::up()?;
            Injector::attach(&up, mode)
        })
        .map_err(|source| crate::Error::Io {
            what: format!("could not enter the network namespace {id}"),
            source,
        })??;
        let writer = Arc::new(inj.lease_writer()?);
        writer.renew(lease)?;
        leases.add(id, writer);
        Ok(Self {
            inj: Some(inj),
            ns,
            id,
            leases: leases.clone(),
        })
    }

    pub fn id(&self) -> NsId {
        self.id
    }

    /// The injector, for work that needs no namespace (map writes that do
    /// not make a device, counters).
    pub fn injector(&self) -> &Injector {
        self.inj.as_ref().expect("an injector until dropped")
    }

    /// The injector, for map writes (`remove`) that need no namespace.
    pub fn injector_mut(&mut self) -> &mut Injector {
        self.inj.as_mut().expect("an injector until dropped")
    }

    /// Runs `f` on the injector inside its namespace.
    pub fn with<T: Send>(
        &mut self,
        f: impl FnOnce(&mut Injector) -> Result<T, crate::Error> + Send,
    ) -> Result<T, crate::Error> {
        let id = self.id;
        let inj = self.inj.as_mut().expect("an injector until dropped");
        in_netns(&self.ns, || f(inj)).map_err(|source| crate::Error::Io {
            what: format!("could not enter the network namespace {id}"),
            source,
        })?
    }

    /// The interfaces attached, for status lines.
    pub fn interfaces(&self) -> Vec<String> {
        self.injector().interfaces().to_vec()
    }
}

impl Drop for NetnsInjector {
    /// Stops renewing its lease, then detaches inside the namespace (a
    /// netlink qdisc or a delay device is removed by name, there).
    fn drop(&mut self) {
        self.leases.remove(self.id);
        if let Some(inj) = self.inj.take() {
            let _ = in_netns(&self.ns, move || drop(inj));
        }
    }
}
