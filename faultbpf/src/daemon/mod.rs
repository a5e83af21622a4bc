//! `faultbpf daemon`: one long-lived process owns the programs and the
//! maps; the CLI, tests and game-day tools add and remove rules over an
//! HTTP/JSON API on a Unix socket (root only by default).
//!
//! Faults never outlive their owner: every rule has an expiry the kernel
//! enforces; a heartbeat on a thread of its own, with its own file
//! descriptor of the `LEASE` map, feeds the dead man's switch every third
//! of the lease (a frozen daemon heals the host within the lease, and no
//! request, however slow, can make it miss); and a killed daemon takes its
//! links along. Handlers that touch the kernel run on the blocking pool of
//! a multi-threaded runtime, so one slow request stalls neither the others
//! nor `/healthz`, which answers from a snapshot without the rule lock.
//!
//! Rules with a `container` act in that container's network namespace,
//! through an injector the daemon keeps there (`netns.rs`); the daemon
//! asks the engine about each such container every second, on a task of
//! its own and without the rule lock, and follows it when it restarts
//! (`State::follow`).
//!
//! One daemon per network namespace: a lock on
//! `/run/faultbpf/netns-<inode>.lock` decides, not the socket file, which
//! anyone can unlink.

pub mod api;
pub mod http;
pub mod http_rules;
pub mod metrics;
pub mod netns;
pub mod state;

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    AttachMode, Injector,
    config::{self, Config},
    iface,
    loader::LeaseWriter,
};
use state::State;

/// How often expired rules are swept and interfaces looked for.
const TICK: Duration = Duration::from_secs(1);
/// The heartbeat renews the lease this many times per lease, and at least
/// once a second.
const BEATS_PER_LEASE: u32 = 3;
/// The shortest lease: a third of it must survive a busy host's scheduling.
const MIN_LEASE: Duration = Duration::from_millis(300);
/// Where the per-namespace locks live.
const LOCK_DIR: &str = "/run/faultbpf";
/// Nice value of the heartbeat thread: ahead of everything else on a busy
/// host, since a late renewal lifts every fault.
const HEARTBEAT_NICE: i32 = -10;
/// Nice value of the threads that write maps for requests: behind the
/// runtime's own threads, so `/healthz` and accepts stay quick while one
/// request writes a wide range.
pub const HANDLER_NICE: i32 = 5;

/// Sets the calling thread's nice value (Linux: per thread). Best effort:
/// without CAP_SYS_NICE a negative value is refused and nothing changes.
pub fn set_thread_nice(nice: i32) {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: setpriority only reads its integer arguments.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
}

/// The daemon's settings, from its command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: Option<PathBuf>,
    /// `--watch-config`: apply the config when its content changes.
    pub watch_config: bool,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: TLS on `--listen`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub ifaces: Vec<String>,
    pub attach: AttachMode,
    pub lease: Option<Duration>,
    /// `--socket-group`: overrides the config's `socket_group`.
    pub socket_group: Option<String>,
    /// `--socket-mode`: overrides the config's `socket_mode`.
    pub socket_mode: Option<u32>,
}

/// One log line on stderr.
pub fn log(msg: &str) {
    eprintln!("faultbpf daemon: {msg}");
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Requests that write maps wait for the rule lock here, one
        // thread each; past this many, they queue.
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(serve(opts))
}

/// Reads the config named on the command line, if any, with the text it
/// was parsed from (what `--watch-config` compares the file with).
pub fn read_config(opts: &Options) -> anyhow::Result<(Config, Option<String>)> {
    match &opts.config {
        Some(p) => {
            let text = crate::span::read(p)?;
            Ok((config::parse(&p.display().to_string(), &text)?, Some(text)))
        }
        None => Ok((Config::default(), None)),
    }
}

/// How often the lease is renewed: a third of it, at most a second.
pub fn heartbeat_every(lease: Duration) -> Duration {
    if lease.is_zero() {
        TICK
    } else {
        (lease / BEATS_PER_LEASE).min(TICK)
    }
}

fn check_lease(lease: Duration) -> anyhow::Result<()> {
    if !lease.is_zero() && lease < MIN_LEASE {
        bail!(
            "lease {} is too short: the heartbeat renews it every third of it, which a busy \
             host cannot promise below {}; use --lease {} or more (0 turns the switch off)",
            humantime::format_duration(lease),
            humantime::format_duration(MIN_LEASE),
            humantime::format_duration(MIN_LEASE)
        );
    }
    Ok(())
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let (config, mut last_read) = read_config(&opts)?;
    let lease = opts.lease.unwrap_or(config.lease);
    check_lease(lease)?;
    let token = match (&opts.listen, &opts.token_file) {
        (Some(_), Some(f)) => Some(read_token(f)?),
        (Some(_), None) => {
            bail!("--listen needs --token-file: a TCP API without a token is not offered")
        }
        _ => None,
    };
    let tls = match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(
            cert,
            key,
            opts.tls_client_ca.as_deref(),
        )?),
        (None, None) if opts.tls_client_ca.is_some() => {
            bail!("--tls-client-ca needs --tls-cert and --tls-key: the daemon's own certificate")
        }
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together: the certificate and its private key"),
    };
    if tls.is_some() && opts.listen.is_none() {
        bail!("--tls-cert applies to --listen ADDR; add it, or drop the TLS options");
    }
    check_socket_path(&opts.socket)?;
    let access = SocketAccess {
        gid: match opts.socket_group.as_ref().or(config.socket_group.as_ref()) {
            Some(g) => Some(group_id(g)?),
            None => None,
        },
        mode: opts.socket_mode.or(config.socket_mode).unwrap_or(0o600),
    };
    let _lock = NetnsLock::take(&opts.socket)?;

    // Interfaces: named on the command line or in the config, or every one
    // that is up, and then those that appear later.
    let named = if opts.ifaces.is_empty() {
        config.interfaces.clone()
    } else {
        Some(opts.ifaces.clone())
    };
    let ifaces = match &named {
        Some(v) => v.clone(),
        None => iface::up()?,
    };
    // Always traceable: `faultbpf trace` works beside the daemon. The
    // verifier's extra work is paid once, at start.
    crate::load::set_traceable(true);
    let inj = Injector::attach(&ifaces, opts.attach)?;
    let lease_writer = inj.lease_writer()?;
    lease_writer.renew(lease)?;
    let leases = netns::Leases::default();
    let mut st = State::new(
        inj,
        state::Others::new(opts.attach, lease, leases.clone()),
        opts.listen.map(|a| a.port()),
        opts.metrics.map(|a| a.port()),
        config.default_ttl,
    );
    let loaded = st
        .reload(&config)
        .context("could not apply the config's rules")?;
    let shared = api::Shared::new(st);
    let stop_beat = Arc::new(AtomicBool::new(false));
    let beat = spawn_heartbeat(lease_writer, leases, lease, stop_beat.clone())?;
    tokio::spawn(follow_containers(shared.clone()));

    let (unix, socket_id) = bind_socket(&opts.socket, access)?;
    tokio::spawn(http::serve(unix, api::router(shared.clone()), None));
    if let (Some(addr), Some(token)) = (opts.listen, token) {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr}"))?;
        let app = api::with_token(api::router(shared.clone()), token.clone());
        match tls {
            Some(config) => {
                let l = http::TlsListener {
                    tcp: l,
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                };
                tokio::spawn(http::serve(l, app, Some(token)));
            }
            None => {
                tokio::spawn(http::serve(l, app, Some(token)));
            }
        }
    }
    if let Some(addr) = opts.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("could not listen on {addr} for metrics"))?;
        tokio::spawn(http::serve(l, api::metrics_router(shared.clone()), None));
    }
    {
        let st = shared.lock();
        log(&format!(
            "serving on {} (lease {}, renewed every {}); attached to {} via {}; {} config \
             rule(s): {loaded}",
            opts.socket.display(),
            humantime::format_duration(lease),
            humantime::format_duration(heartbeat_every(lease)),
            st.inj.interfaces().join(", "),
            st.inj.mode().name(),
            st.len(),
        ));
    }

    // The interfaces named at start, by ifindex: a device deleted and made
    // again under the same name is a new device to attach to.
    let mut attached: HashMap<String, Option<u32>> = ifaces
        .iter()
        .map(|i| (i.clone(), iface::index(i)))
        .collect();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                let (opts, shared) = (opts.clone(), shared.clone());
                let text =
                    tokio::task::spawn_blocking(move || reload(&opts, &shared, "SIGHUP", None))
                        .await;
                if let Ok(Some(text)) = text {
                    last_read = Some(text);
                }
            }
            _ = tick.tick() => {
                if let Some(changed) = opts
                    .watch_config
                    .then(|| changed_config(&opts, last_read.as_deref()))
                    .flatten()
                {
                    let (opts, shared) = (opts.clone(), shared.clone());
                    let text = tokio::task::spawn_blocking(move || {
                        reload(&opts, &shared, "config file changed", Some(changed))
                    })
                    .await;
                    // Tried once per content: a file that failed stays
                    // failed until it changes again (no log line a second).
                    if let Ok(Some(text)) = text {
                        last_read = Some(text);
                    }
                }
                let shared = shared.clone();
                let named = named.clone();
                let mut seen = std::mem::take(&mut attached);
                attached = tokio::task::spawn_blocking(move || {
                    let mut st = shared.lock();
                    for (id, why) in st.sweep(Instant::now()) {
                        log(&format!("rule {id} {why}"));
                    }
                    match &named {
                        None => attach_new(&mut st),
                        Some(names) => reattach(&mut st, names, &mut seen),
                    }
                    shared.publish(&st);
                    seen
                })
                .await
                .unwrap_or_default();
            }
        }
    }
    if socket_id.is_at(&opts.socket) {
        let _ = std::fs::remove_file(&opts.socket);
    }
    let n = {
        let mut st = shared.lock();
        st.remove_all(None)
    };
    stop_beat.store(true, Ordering::Relaxed);
    let _ = beat.join();
    log(&format!("stopping: {n} rule(s) lifted, programs detached"));
    Ok(())
}

/// The heartbeat: renews the lease every third of it through its own file
/// descriptor, whatever the rest of the daemon is doing, and the lease of
/// every injector in a container's namespace (`others`).
fn spawn_heartbeat(
    writer: LeaseWriter,
    others: netns::Leases,
    lease: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let every = heartbeat_every(lease);
    thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            set_thread_nice(HEARTBEAT_NICE);
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(every);
                let now = Instant::now();
                let gap = now - last;
                last = now;
                if !lease.is_zero() && gap > lease {
                    log(&format!(
                        "resumed after {:.1}s without a heartbeat (stopped or starved); \
                         faults were inert after the {} lease and act again now",
                        gap.as_secs_f64(),
                        humantime::format_duration(lease)
                    ));
                }
                if let Err(e) = writer.renew(lease) {
                    log(&format!(
                        "could not renew the lease: {}",
                        crate::error::chain(&e)
                    ));
                }
                for (id, w) in others.writers() {
                    if let Err(e) = w.renew(lease) {
                        log(&format!(
                            "could not renew the lease in network namespace {id}: {}",
                            crate::error::chain(&e)
                        ));
                    }
                }
            }
        })
        .context("could not start the heartbeat thread")
}

/// Checks every container that rules target, once a second: the engine
/// is asked on the blocking pool without the rule lock (each CLI call is
/// bounded, `target::ENGINE_TIMEOUT`), then the lock is taken only to
/// apply the answers. One check at a time: a slow engine delays the next
/// check, never a request or the heartbeat.
async fn follow_containers(shared: api::Shared) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let wanted = s.lock().containers();
            if wanted.is_empty() {
                return;
            }
            let answers: Vec<_> = wanted
                .into_iter()
                .map(|(name, engine)| {
                    let found = state::find(&name, engine);
                    (name, engine, found)
                })
                .collect();
            let mut st = s.lock();
            for (name, engine, found) in &answers {
                for line in st.follow(name, *engine, found) {
                    log(&line);
                }
            }
            s.publish(&st);
        })
        .await;
    }
}

/// `--watch-config`: the file's text when it holds something other than
/// what was last read from it. A file that cannot be read (the kubelet
/// between two symlinks) is no change.
fn changed_config(opts: &Options, last: Option<&str>) -> Option<String> {
    let now = std::fs::read_to_string(opts.config.as_ref()?).ok()?;
    (Some(now.as_str()) != last).then_some(now)
}

/// SIGHUP (or `--watch-config` seeing a change, `why`): applies the config
/// (`text`, or the file read now) all or nothing. Returns the text, applied
/// or not, so a watcher does not retry the same content every second.
fn reload(opts: &Options, shared: &api::Shared, why: &str, text: Option<String>) -> Option<String> {
    let Some(path) = &opts.config else {
        log(&format!("{why}: no --config to reload"));
        return None;
    };
    let text = match text.map_or_else(|| crate::span::read(path), Ok) {
        Ok(t) => t,
        Err(e) => {
            log(&format!("{why}: config not reloaded, nothing changed: {e}"));
            return None;
        }
    };
    let config = match config::parse(&path.display().to_string(), &text) {
        Ok(c) => c,
        Err(e) => {
            log(&format!("{why}: config not reloaded, nothing changed: {e}"));
            return Some(text);
        }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut st = shared.lock();
        let r = st.reload(&config);
        shared.publish(&st);
        r
    }));
    match result {
        Ok(Ok(done)) => log(&format!("{why}: config reloaded: {done}")),
        Ok(Err(e)) => log(&format!(
            "{why}: config not applied, nothing changed: {}",
            crate::error::chain(&e)
        )),
        Err(_) => log(&format!(
            "{why}: internal error while applying the config (a bug; see above)"
        )),
    }
    Some(text)
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

/// `--iface X`: when X is deleted and made again (a new ifindex), attach
/// to the new X. `seen` holds the ifindex each name was attached at.
fn reattach(st: &mut State, names: &[String], seen: &mut HashMap<String, Option<u32>>) {
    for name in names {
        let now = iface::index(name);
        let was = seen.get(name).copied().flatten();
        if now == was || now.is_none() {
            if now.is_none() && was.is_some() {
                log(&format!(
                    "interface {name} is gone; waiting for it to come back"
                ));
                seen.insert(name.clone(), None);
            }
            continue;
        }
        st.inj.forget_interface(name);
        match st.inj.attach_interface(name) {
            Ok(()) => {
                log(&format!(
                    "attached again to {name} (new ifindex {})",
                    now.unwrap_or(0)
                ));
                seen.insert(name.clone(), now);
            }
            Err(e) => log(&format!(
                "could not attach again to {name}: {}",
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

/// Refuses a `--socket` path that exists and is not a socket, before
/// anything is loaded or attached.
fn check_socket_path(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => bail!(
            "--socket {} exists and is not a socket; refusing to replace it (choose another \
             path, or remove it yourself if it is yours)",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// The device and inode of the socket file this daemon made: on exit,
/// only that file is removed, never another daemon's socket put at the
/// same path since.
#[derive(Debug, Clone, Copy)]
struct SocketId {
    dev: u64,
    ino: u64,
}

impl SocketId {
    fn of(path: &Path) -> Option<Self> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn is_at(self, path: &Path) -> bool {
        Self::of(path).is_some_and(|o| o.dev == self.dev && o.ino == self.ino)
    }
}

/// Who may use the Unix socket: root, and the group `gid` as `mode` says.
#[derive(Debug, Clone, Copy)]
struct SocketAccess {
    gid: Option<u32>,
    mode: u32,
}

/// The id of group `name` (or a number), or an error naming it.
fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = std::ffi::CString::new(name)
        .with_context(|| format!("socket group `{name}` contains a NUL byte"))?;
    // SAFETY: `c` is a valid C string; getgrnam returns NULL or a pointer
    // to static storage we read at once, before any other getgr* call.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        bail!("socket group `{name}` does not exist; create it (groupadd {name}) or name another");
    }
    // SAFETY: non-null, points to a valid `struct group`.
    Ok(unsafe { (*g).gr_gid })
}

/// Binds the Unix socket (mode 0600 and root's group unless `access` says
/// otherwise), refusing to steal a live one or to replace anything that is
/// not a socket.
fn bind_socket(
    path: &Path,
    access: SocketAccess,
) -> anyhow::Result<(tokio::net::UnixListener, SocketId)> {
    check_socket_path(path)?;
    if std::fs::symlink_metadata(path).is_ok() {
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
    if let Some(gid) = access.gid {
        std::os::unix::fs::lchown(path, None, Some(gid))
            .with_context(|| format!("could not give {} to group {gid}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode)).with_context(
        || {
            format!(
                "could not set mode {:04o} on {}",
                access.mode,
                path.display()
            )
        },
    )?;
    let id = SocketId::of(path)
        .with_context(|| format!("the socket {} vanished as it was made", path.display()))?;
    Ok((l, id))
}

/// One daemon per network namespace: an exclusive `flock` on a file named
/// after the namespace's inode, held for the process's life (the kernel
/// drops it when the process dies, however it dies).
struct NetnsLock {
    _file: std::fs::File,
}

impl NetnsLock {
    fn take(socket: &Path) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let ns = std::fs::metadata("/proc/self/ns/net")
            .context("could not read this process's network namespace (/proc/self/ns/net)")?;
        std::fs::create_dir_all(LOCK_DIR)
            .with_context(|| format!("could not create {LOCK_DIR}"))?;
        let path = format!("{LOCK_DIR}/netns-{}-{}.lock", ns.dev(), ns.ino());
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("could not open the daemon lock {path}"))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "another faultbpf daemon runs in this network namespace ({}); one daemon \
                     per namespace owns the programs: stop it first (lock {path})",
                    holder.trim()
                );
            }
            return Err(e).with_context(|| format!("could not lock {path}"));
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(
            file,
            "pid {}, socket {}",
            std::process::id(),
            socket.display()
        );
        Ok(Self { _file: file })
    }
}
