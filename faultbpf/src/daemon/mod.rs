//! `faultbpf daemon`: one long-lived process owns the programs and the
//! maps; the CLI, tests and game-day tools add and remove rules over an
//! HTTP/JSON API on a Unix socket (root only).
//!
//! Faults never outlive their owner: every rule has an expiry the kernel
//! enforces; a heartbeat renewed every second feeds the dead man's switch
//! (a frozen daemon heals the host within the lease); and a killed daemon
//! takes its links along.

pub mod api;
pub mod metrics;
pub mod state;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    AttachMode, Injector,
    config::{self, Config},
    iface,
};
use state::State;

/// How often the heartbeat is renewed, expired rules swept and new
/// interfaces looked for.
const TICK: Duration = Duration::from_secs(1);

/// The daemon's settings, from its command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: Option<PathBuf>,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub ifaces: Vec<String>,
    pub attach: AttachMode,
    pub lease: Option<Duration>,
}

/// One log line on stderr.
pub fn log(msg: &str) {
    eprintln!("faultbpf daemon: {msg}");
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(serve(opts))
}

/// Reads the config named on the command line, if any.
pub fn read_config(opts: &Options) -> anyhow::Result<Config> {
    match &opts.config {
        Some(p) => Ok(config::load(p)?),
        None => Ok(Config::default()),
    }
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let config = read_config(&opts)?;
    let lease = opts.lease.unwrap_or(config.lease);
    let token = match (&opts.listen, &opts.token_file) {
        (Some(_), Some(f)) => Some(read_token(f)?),
        (Some(_), None) => {
            bail!("--listen needs --token-file: a TCP API without a token is not offered")
        }
        _ => None,
    };

    // Interfaces: named on the command line or in the config, or every one
    // that is up, and then those that appear later.
    let named = if opts.ifaces.is_empty() {
        config.interfaces.clone()
    } else {
        Some(opts.ifaces.clone())
    };
    let watch = named.is_none();
    let ifaces = match named {
        Some(v) => v,
        None => iface::up()?,
    };
    let mut inj = Injector::attach(&ifaces, opts.attach)?;
    inj.renew_lease(lease)?;
    let mut st = State::new(
        inj,
        opts.listen.map(|a| a.port()),
        opts.metrics.map(|a| a.port()),
        config.default_ttl,
    );
    st.reload(&config)
        .context("could not apply the config's rules")?;
    let shared: api::Shared = Arc::new(Mutex::new(st));

    let unix = bind_socket(&opts.socket)?;
    let app = api::router(shared.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(unix, app).await {
            log(&format!("unix socket server stopped: {e}"));
        }
    });
    if let (Some(addr), Some(token)) = (opts.listen, token) {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr}"))?;
        let app = api::with_token(api::router(shared.clone()), token);
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
    }
    if let Some(addr) = opts.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr} for metrics"))?;
        let app = api::metrics_router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
    }
    {
        let st = shared.lock().unwrap_or_else(|p| p.into_inner());
        log(&format!(
            "serving on {} (lease {}s); attached to {} via {}; {} config rule(s)",
            opts.socket.display(),
            lease.as_secs_f64(),
            st.inj.interfaces().join(", "),
            st.inj.mode().name(),
            st.len()
        ));
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(TICK);
    let mut last_beat = Instant::now();
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => reload(&opts, &shared),
            _ = tick.tick() => {
                let now = Instant::now();
                let gap = now - last_beat;
                last_beat = now;
                let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                if gap > lease {
                    log(&format!(
                        "resumed after {:.1}s without a heartbeat (stopped or starved); \
                         faults were inert after the {}s lease and act again now",
                        gap.as_secs_f64(),
                        lease.as_secs_f64()
                    ));
                }
                if let Err(e) = st.inj.renew_lease(lease) {
                    log(&format!("could not renew the lease: {}", crate::error::chain(&e)));
                }
                for (id, why) in st.sweep(now) {
                    log(&format!("rule {id} {why}"));
                }
                if watch {
                    attach_new(&mut st);
                }
            }
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
    let n = st.remove_all(None);
    log(&format!("stopping: {n} rule(s) lifted, programs detached"));
    Ok(())
}

/// SIGHUP: re-read the config and apply its rules all or nothing.
fn reload(opts: &Options, shared: &api::Shared) {
    let Some(path) = &opts.config else {
        log("SIGHUP: no --config to reload");
        return;
    };
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            log(&format!(
                "SIGHUP: config not reloaded, nothing changed: {e}"
            ));
            return;
        }
    };
    let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
    match st.reload(&config) {
        Ok((added, removed, kept)) => log(&format!(
            "SIGHUP: config reloaded: {added} rule(s) added, {removed} removed, {kept} unchanged"
        )),
        Err(e) => log(&format!("SIGHUP: config not applied, nothing changed: {e}")),
    }
}

/// Attaches to interfaces that came up since the last look (a container's
/// new veth) and forgets those that went away.
fn attach_new(st: &mut State) {
    let Ok(up) = iface::up() else { return };
    st.inj.forget_vanished();
    for name in up {
        if st.inj.interfaces().contains(&name) {
            continue;
        }
        match st.inj.attach_interface(&name) {
            Ok(()) => log(&format!("attached to new interface {name}")),
            Err(e) => log(&format!(
                "could not attach to {name}: {}",
                crate::error::chain(&e)
            )),
        }
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the token file {}", path.display()))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        bail!(
            "the token in {} is shorter than 16 characters; use a long random one",
            path.display()
        );
    }
    Ok(t)
}

/// Binds the Unix socket with mode 0600, refusing to steal a live one.
fn bind_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "a faultbpf daemon already listens on {}; stop it or use another --socket",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("could not remove the stale socket {}", path.display()))?;
    }
    // SAFETY: umask only affects this process's file creation; restored below.
    let old = unsafe { libc::umask(0o177) };
    let l = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.with_context(|| format!("could not listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("could not set mode 0600 on {}", path.display()))?;
    Ok(l)
}
