//! Loads and attaches the `sk_lookup` program (`faultbpf-ebpf/src/steer.rs`)
//! to this process's network namespace, with the responder's sockets in
//! its sockmap, and keeps the list of the responder's own connections the
//! program must not steer.
//!
//! The link is owned by this process's file descriptors: when faultbpf
//! exits, however it exits, the kernel detaches the program and new
//! connections find the real server again.

use std::{fs::File, sync::Mutex};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, SockMap},
    programs::SkLookup,
};
use faultbpf_common::{
    ExemptKey, RESPONDER_MAP, RESPONDER_V4, RESPONDER_V6, STEER_EXEMPT_MAP, STEER_MAP,
    STEER_PROGRAM, SteerConf, THRESHOLD_ALWAYS, threshold_from_pct,
};

use super::{Options, Per, StartError, responder::Listeners};

/// The attached program and the maps user space keeps writing.
pub struct Steering {
    // Holds the program and its link: taking it out (`detach`) or dropping
    // it detaches, whoever else still holds the `Steering`.
    ebpf: Mutex<Option<Ebpf>>,
    exempt: Mutex<HashMap<MapData, ExemptKey, u8>>,
    port: u16,
}

fn err(
    port: u16,
    what: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StartError {
    StartError::Steer {
        port,
        what: what.into(),
        source: Some(Box::new(source)),
    }
}

impl Steering {
    /// Puts `listeners` in the sockmap, writes what to steer, then
    /// attaches: the program never runs half-configured.
    pub fn attach(opts: &Options, listeners: &Listeners) -> Result<Self, StartError> {
        let port = opts.port;
        let mut ebpf = crate::load::loader()
            .load(crate::loader::OBJECT)
            .map_err(|e| err(port, "could not load the kernel object", e))?;
        let exempt: HashMap<MapData, ExemptKey, u8> = ebpf
            .take_map(STEER_EXEMPT_MAP)
            .ok_or_else(|| missing(port, STEER_EXEMPT_MAP))?
            .try_into()
            .map_err(|e| err(port, "bad exempt map", e))?;
        {
            let mut socks: SockMap<_> = ebpf
                .map_mut(RESPONDER_MAP)
                .ok_or_else(|| missing(port, RESPONDER_MAP))?
                .try_into()
                .map_err(|e| err(port, "bad responder map", e))?;
            socks
                .set(RESPONDER_V4, listeners.v4(), 0)
                .map_err(|e| err(port, "could not put the IPv4 responder in the sockmap", e))?;
            if let Some(v6) = listeners.v6() {
                socks
                    .set(RESPONDER_V6, v6, 0)
                    .map_err(|e| err(port, "could not put the IPv6 responder in the sockmap", e))?;
            }
        }
        {
            let mut conf: Array<_, SteerConf> = ebpf
                .map_mut(STEER_MAP)
                .ok_or_else(|| missing(port, STEER_MAP))?
                .try_into()
                .map_err(|e| err(port, "bad steer map", e))?;
            let threshold = match opts.per {
                Per::Connection => threshold_from_pct(opts.pct),
                Per::Request => THRESHOLD_ALWAYS,
            };
            let value = SteerConf {
                port,
                _pad: [0; 2],
                threshold,
            };
            conf.set(0, value, 0)
                .map_err(|e| err(port, "could not write the steer map", e))?;
        }
        let netns = File::open("/proc/self/ns/net")
            .map_err(|e| err(port, "could not open /proc/self/ns/net", e))?;
        let prog: &mut SkLookup = ebpf
            .program_mut(STEER_PROGRAM)
            .ok_or_else(|| missing(port, STEER_PROGRAM))?
            .try_into()
            .map_err(|e| err(port, "bad program type", e))?;
        prog.load().map_err(|e| {
            err(
                port,
                "the kernel refused the sk_lookup program (needs Linux >= 5.9 and CAP_BPF + \
                 CAP_NET_ADMIN)",
                e,
            )
        })?;
        prog.attach(netns).map_err(|e| {
            err(
                port,
                "could not attach the sk_lookup program to this network namespace",
                e,
            )
        })?;
        Ok(Self {
            ebpf: Mutex::new(Some(ebpf)),
            exempt: Mutex::new(exempt),
            port,
        })
    }

    /// Detaches the program now: new connections go to the server. The
    /// responder's connections still open may keep this struct alive.
    pub fn detach(&self) {
        let mut e = self.ebpf.lock().unwrap_or_else(|p| p.into_inner());
        drop(e.take());
    }

    /// Marks a connection from `source` (address and port) as the
    /// responder's own: the program lets it through to the real server.
    pub fn exempt(&self, source: ExemptKey) -> std::io::Result<()> {
        let mut m = self.exempt.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(source, 1, 0)
            .map_err(|e| std::io::Error::other(format!("port {}: {e}", self.port)))
    }

    /// Forgets `source` once its connection is closed.
    pub fn unexempt(&self, source: &ExemptKey) {
        let mut m = self.exempt.lock().unwrap_or_else(|p| p.into_inner());
        let _ = m.remove(source);
    }
}

fn missing(port: u16, name: &str) -> StartError {
    StartError::Steer {
        port,
        what: format!("the kernel object has no `{name}` (a build from another version?)"),
        source: None,
    }
}
