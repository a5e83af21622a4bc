//! Which standalone faultbpf process faults which ports, across processes.
//!
//! Each standalone process loads its own programs, so two of them on the
//! same port in one network namespace both act: `reset --port 7000` and
//! `blackhole --port 7000` took alternate packets and reported
//! contradictory counters (issue 12). The daemon refuses such a rule with
//! 409; standalone processes now do the same through this registry:
//!
//! `/run/faultbpf/claims/<netns inode>/<pid>-<n>.json` lists one process's
//! rule (its keys as port ranges, and its description). The file is held
//! with `flock` for as long as its owner lives; the kernel drops the lock
//! when the owner dies in any way, so a file whose lock is free is stale
//! and is removed by the next claimer. Checking and writing happen under
//! one lock on the directory (`.lock`), so two processes starting at the
//! same moment cannot both miss each other; each file is written whole
//! under a temporary name and renamed into place.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use faultbpf_common::{PROTO_TCP, PROTO_UDP, RuleKey, SIDE_DST, SIDE_FRAGMENT, SIDE_SRC};
use serde::{Deserialize, Serialize};

/// Where the per-namespace directories live.
pub const CLAIMS_DIR: &str = "/run/faultbpf/claims";

/// Keys with the same protocol and side over consecutive ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub proto: u8,
    pub side: u8,
    pub first: u16,
    pub last: u16,
}

impl KeyRange {
    fn overlap(&self, o: &Self) -> Option<u16> {
        (self.proto == o.proto
            && self.side == o.side
            && self.first <= o.last
            && o.first <= self.last)
            .then(|| self.first.max(o.first))
    }

    /// `tcp port 7000 (destination)`, for messages.
    fn describe_at(&self, port: u16) -> String {
        let proto = match self.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            _ => "ip",
        };
        match self.side {
            SIDE_DST => format!("{proto} destination port {port}"),
            SIDE_SRC => format!("{proto} source port {port}"),
            SIDE_FRAGMENT => format!("{proto} fragments"),
            _ => format!("{proto} port {port}"),
        }
    }
}

/// The contents of one claim file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub pid: u32,
    /// The rule, as `Rule::describe` says it.
    pub description: String,
    pub keys: Vec<KeyRange>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another live process faults one of the same keys.
    #[error(
        "{what} is already faulted by faultbpf pid {pid} ({description}); stop that process \
         first, or pass --force to fault it from both"
    )]
    Conflict {
        pid: u32,
        description: String,
        what: String,
    },
    /// The registry could not be read or written.
    #[error("claims registry {}: could not {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// This process's claim; dropping it removes the file (dying releases the
/// lock, which makes the file stale). Inert (no file) where the registry
/// could not be written.
#[derive(Debug)]
pub struct ClaimGuard {
    path: Option<PathBuf>,
    _file: Option<File>,
}

impl ClaimGuard {
    /// The claim file, if there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl Drop for ClaimGuard {
    /// Removes the claim (still locked, so no claimer takes it for stale
    /// meanwhile), and the namespace's directory if it was the last one.
    fn drop(&mut self) {
        let Some(path) = &self.path else { return };
        let Some(dir) = path.parent() else { return };
        let lock = lock_dir(dir);
        let _ = fs::remove_file(path);
        if lock.is_err() {
            return;
        }
        let others = fs::read_dir(dir).map_or(true, |entries| {
            entries.flatten().any(|e| e.file_name() != ".lock")
        });
        if !others {
            let _ = fs::remove_file(dir.join(".lock"));
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Registers `keys` (a rule's [`crate::Rule::keys`]) for this process in
/// the calling thread's network namespace. Refuses if a live process has
/// claimed any of them, unless `force`.
///
/// A registry that cannot be used (a read-only `/run`, no permission) is
/// not a reason to refuse a fault: that says so on stderr and returns an
/// inert guard, and processes then do not see each other.
pub fn claim(keys: &[RuleKey], description: &str, force: bool) -> Result<ClaimGuard, ClaimError> {
    claim_or_warn(Path::new(CLAIMS_DIR), keys, description, force)
}

fn claim_or_warn(
    root: &Path,
    keys: &[RuleKey],
    description: &str,
    force: bool,
) -> Result<ClaimGuard, ClaimError> {
    match claim_in(root, keys, description, force) {
        Err(e @ ClaimError::Io { .. }) => {
            eprintln!(
                "faultbpf: warning: {}; another faultbpf process on the same port would not \
                 be noticed",
                crate::error::chain(&e)
            );
            Ok(ClaimGuard {
                path: None,
                _file: None,
            })
        }
        r => r,
    }
}

/// [`claim`] under `root` (unit tests use a temporary directory).
pub fn claim_in(
    root: &Path,
    keys: &[RuleKey],
    description: &str,
    force: bool,
) -> Result<ClaimGuard, ClaimError> {
    let ns = netns_inode().map_err(|source| ClaimError::Io {
        path: "/proc/thread-self/ns/net".into(),
        what: "read this network namespace's inode",
        source,
    })?;
    let dir = root.join(ns.to_string());
    let io_err = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |source| ClaimError::Io { path, what, source }
    };
    let lock_path = dir.join(".lock");
    let dir_lock = lock_dir(&dir).map_err(io_err(&lock_path, "lock the directory"))?;

    let mine = Claim {
        pid: std::process::id(),
        description: description.to_string(),
        keys: ranges(keys),
    };
    if !force {
        first_conflict(&dir, &mine)?;
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("{}-{}", mine.pid, NEXT.fetch_add(1, Ordering::Relaxed));
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.json"));
    let mut file = File::create(&tmp).map_err(io_err(&tmp, "create a claim file"))?;
    flock(&file, libc::LOCK_EX).map_err(io_err(&tmp, "lock a claim file"))?;
    let body = serde_json::to_vec(&mine).map_err(|e| io::Error::other(e.to_string()));
    body.and_then(|b| file.write_all(&b))
        .map_err(io_err(&tmp, "write a claim file"))?;
    fs::rename(&tmp, &path).map_err(io_err(&path, "rename a claim file into place"))?;
    drop(dir_lock);
    Ok(ClaimGuard {
        path: Some(path),
        _file: Some(file),
    })
}

/// Creates `dir` if needed and locks its `.lock`. The last owner to leave
/// a namespace removes the directory (see [`ClaimGuard`]'s drop), so a lock
/// taken on a file unlinked meanwhile is worthless: then start over.
fn lock_dir(dir: &Path) -> io::Result<File> {
    let lock_path = dir.join(".lock");
    loop {
        fs::create_dir_all(dir)?;
        let f = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        {
            Ok(f) => f,
            // Removed between create_dir_all and open: again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        flock(&f, libc::LOCK_EX)?;
        match fs::metadata(&lock_path) {
            Ok(m) if m.ino() == f.metadata()?.ino() => return Ok(f),
            _ => continue,
        }
    }
}

/// Whether [`claim`] would refuse `keys`, without claiming: a daemon checks
/// a whole config before it changes anything. An unusable registry
/// refuses nothing.
pub fn check(keys: &[RuleKey], force: bool) -> Result<(), ClaimError> {
    if force {
        return Ok(());
    }
    let Ok(ns) = netns_inode() else { return Ok(()) };
    let dir = Path::new(CLAIMS_DIR).join(ns.to_string());
    if !dir.is_dir() {
        return Ok(());
    }
    let Ok(_lock) = lock_dir(&dir) else {
        return Ok(());
    };
    let probe = Claim {
        pid: std::process::id(),
        description: String::new(),
        keys: ranges(keys),
    };
    match first_conflict(&dir, &probe) {
        Err(e @ ClaimError::Conflict { .. }) => Err(e),
        _ => Ok(()),
    }
}

/// The first live claim of another process in `dir` that shares a key
/// with `mine`, as the error to give. A process's own claims never
/// conflict: the daemon sorts out its own rules (409) before claiming.
fn first_conflict(dir: &Path, mine: &Claim) -> Result<(), ClaimError> {
    for other in live_claims(dir)? {
        if other.pid == mine.pid {
            continue;
        }
        if let Some((what, _)) = conflict(mine, &other) {
            return Err(ClaimError::Conflict {
                pid: other.pid,
                description: other.description,
                what,
            });
        }
    }
    Ok(())
}

/// The claims in `dir` whose owners live; stale files (lock free) are
/// removed on the way. Call with the directory lock held.
fn live_claims(dir: &Path) -> Result<Vec<Claim>, ClaimError> {
    let entries = fs::read_dir(dir).map_err(|source| ClaimError::Io {
        path: dir.to_path_buf(),
        what: "list the directory",
        source,
    })?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(f) = File::open(&path) else { continue };
        match flock(&f, libc::LOCK_SH | libc::LOCK_NB) {
            // Nobody holds it: its owner is gone.
            Ok(()) => {
                let _ = fs::remove_file(&path);
            }
            Err(_) => {
                if let Some(c) = fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Claim>(&b).ok())
                {
                    out.push(c);
                }
            }
        }
    }
    Ok(out)
}

/// The first key both claims hold, described, and its port.
fn conflict(a: &Claim, b: &Claim) -> Option<(String, u16)> {
    for x in &a.keys {
        for y in &b.keys {
            if let Some(port) = x.overlap(y) {
                return Some((x.describe_at(port), port));
            }
        }
    }
    None
}

/// Sorted keys folded into ranges of consecutive ports.
pub fn ranges(keys: &[RuleKey]) -> Vec<KeyRange> {
    let mut sorted: Vec<(u8, u8, u16)> = keys.iter().map(|k| (k.proto, k.side, k.port())).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<KeyRange> = Vec::new();
    for (proto, side, port) in sorted {
        match out.last_mut() {
            Some(r)
                if r.proto == proto && r.side == side && r.last.checked_add(1) == Some(port) =>
            {
                r.last = port;
            }
            _ => out.push(KeyRange {
                proto,
                side,
                first: port,
                last: port,
            }),
        }
    }
    out
}

/// The inode of the calling thread's network namespace: its identity.
fn netns_inode() -> io::Result<u64> {
    Ok(fs::metadata("/proc/thread-self/ns/net")?.ino())
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid open fd for the call's duration; flock has no other
    // preconditions.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(proto: u8, side: u8, ports: std::ops::RangeInclusive<u16>) -> Vec<RuleKey> {
        ports.map(|p| RuleKey::new(proto, side, p)).collect()
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("faultbpf-claims-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keys_fold_into_ranges() {
        let mut k = keys(PROTO_TCP, SIDE_DST, 7000..=7002);
        k.extend(keys(PROTO_TCP, SIDE_DST, 7004..=7004));
        k.extend(keys(PROTO_UDP, SIDE_DST, 7000..=7000));
        k.push(RuleKey::new(PROTO_TCP, SIDE_DST, 7001));
        let r = ranges(&k);
        assert_eq!(
            r.iter()
                .map(|r| (r.proto, r.first, r.last))
                .collect::<Vec<_>>(),
            [
                (PROTO_TCP, 7000, 7002),
                (PROTO_TCP, 7004, 7004),
                (PROTO_UDP, 7000, 7000)
            ]
        );
        assert_eq!(ranges(&keys(PROTO_TCP, SIDE_SRC, 1..=65535)).len(), 1);
    }

    /// A live claim of another process (pid 1): its file, locked here
    /// through a descriptor of its own, as its owner would hold it.
    fn other_process_claim(root: &Path, keys: &[RuleKey], description: &str) -> (PathBuf, File) {
        let dir = root.join(netns_inode().unwrap().to_string());
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("1-0.json");
        let c = Claim {
            pid: 1,
            description: description.into(),
            keys: ranges(keys),
        };
        fs::write(&path, serde_json::to_vec(&c).unwrap()).unwrap();
        let f = File::open(&path).unwrap();
        flock(&f, libc::LOCK_EX).unwrap();
        (path, f)
    }

    #[test]
    fn a_live_claim_on_the_same_key_is_refused_and_named() {
        let root = tempdir("live");
        let (path, held) =
            other_process_claim(&root, &keys(PROTO_TCP, SIDE_DST, 6990..=7010), "reset tcp");
        let e = claim_in(
            &root,
            &keys(PROTO_TCP, SIDE_DST, 7000..=7000),
            "blackhole",
            false,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ClaimError::Conflict { .. }), "{msg}");
        assert!(msg.contains("pid 1 (reset tcp)"), "{msg}");
        assert!(msg.contains("tcp destination port 7000"), "{msg}");
        assert!(msg.contains("--force"), "{msg}");
        // Other keys, --force, or our own earlier claims are fine.
        let mine = claim_in(&root, &keys(PROTO_UDP, SIDE_DST, 7000..=7000), "u", false).unwrap();
        claim_in(&root, &keys(PROTO_TCP, SIDE_SRC, 7000..=7000), "s", false).unwrap();
        claim_in(&root, &keys(PROTO_TCP, SIDE_DST, 7000..=7000), "f", true).unwrap();
        claim_in(
            &root,
            &keys(PROTO_UDP, SIDE_DST, 7000..=7000),
            "again",
            false,
        )
        .unwrap();
        // Its owner gone (lock released), the keys are free again and its
        // file is removed on the way.
        drop(held);
        let last = claim_in(&root, &keys(PROTO_TCP, SIDE_DST, 7000..=7000), "b", false).unwrap();
        assert!(!path.exists(), "stale {} still there", path.display());
        let dir = last.path().unwrap().parent().unwrap().to_path_buf();
        drop(mine);
        drop(last);
        assert!(!dir.exists(), "the last claim leaves no directory behind");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_stale_claim_whose_lock_is_free_is_ignored_and_removed() {
        let root = tempdir("stale");
        let k = keys(PROTO_TCP, SIDE_DST, 7000..=7000);
        // A file left by an owner that died: nobody holds its lock.
        let (path, held) = other_process_claim(&root, &k, "dead");
        drop(held);
        let _g = claim_in(&root, &k, "new", false).unwrap();
        assert!(
            !path.exists(),
            "the stale claim {} is still there",
            path.display()
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_unusable_registry_warns_but_does_not_refuse() {
        let k = keys(PROTO_TCP, SIDE_DST, 7000..=7000);
        let e = claim_in(Path::new("/proc/faultbpf-claims"), &k, "x", false).unwrap_err();
        assert!(matches!(e, ClaimError::Io { .. }), "{e}");
        assert!(e.to_string().contains("/proc/faultbpf-claims"), "{e}");
        let g = claim_or_warn(Path::new("/proc/faultbpf-claims"), &k, "x", false).unwrap();
        assert!(g.path().is_none());
    }
}
