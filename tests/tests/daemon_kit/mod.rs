//! What the daemon_* robustness tests share (daemon_stall, daemon_reload,
//! daemon_http, daemon_socket): reading the daemon's `PORTS` map straight
//! from the kernel to compare it with what the API lists, and a blackhole
//! probe that runs the whole time something else goes on.

#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use faultbpf_tests::{daemon::Daemon, probe::UdpPath};
use serde_json::Value;

/// `PORTS` map layout (faultbpf_common::port_bit): 1 024 words of 64 bits
/// for destination ports, then 1 024 for source ports.
const WORDS_PER_SIDE: usize = 65_536 / 64;

/// A port a rule covers, on the destination or the source side.
pub type SidePort = (&'static str, u16);

fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run bpftool (setup installs it): {e}"));
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The id of the map called `name` among the file descriptors of `pid`.
fn map_of(pid: u32, name: &str) -> u64 {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(text) = std::fs::read_to_string(fd.unwrap().path()) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .find(|id| bpftool(&["map", "show", "id", &id.to_string()])["name"] == name)
        .unwrap_or_else(|| panic!("process {pid} holds no map named {name}"))
}

/// The (side, port) bits set in the `PORTS` map of daemon `pid`: what the
/// kernel acts on, read from the kernel.
pub fn kernel_ports(pid: u32) -> BTreeSet<SidePort> {
    let id = map_of(pid, "PORTS");
    let dump = bpftool(&["map", "dump", "id", &id.to_string()]);
    let mut out = BTreeSet::new();
    for e in dump.as_array().unwrap() {
        let bytes = |v: &Value| -> Vec<u8> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
                })
                .collect()
        };
        let key = u32::from_le_bytes(bytes(&e["key"]).try_into().unwrap()) as usize;
        let word = u64::from_le_bytes(bytes(&e["value"]).try_into().unwrap());
        for bit in 0..64 {
            if word & (1 << bit) != 0 {
                let side = if key < WORDS_PER_SIDE { "dst" } else { "src" };
                out.insert((side, ((key % WORDS_PER_SIDE) * 64 + bit) as u16));
            }
        }
    }
    out
}

/// The (side, port)s the rules the API lists cover, from their specs.
pub fn api_ports(d: &Daemon) -> BTreeSet<SidePort> {
    let mut out = BTreeSet::new();
    for rule in d.rules() {
        for (field, sides) in [
            ("port", &["dst", "src"][..]),
            ("dport", &["dst"][..]),
            ("sport", &["src"][..]),
        ] {
            for p in rule["spec"][field].as_array().into_iter().flatten() {
                let (first, last) = match p {
                    Value::Number(n) => (n.as_u64().unwrap(), n.as_u64().unwrap()),
                    Value::String(s) => match s.split_once('-') {
                        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                        None => (s.parse().unwrap(), s.parse().unwrap()),
                    },
                    other => panic!("port {other} in {rule}"),
                };
                for port in first..=last {
                    for side in sides {
                        out.insert((*side, port as u16));
                    }
                }
            }
        }
    }
    out
}

/// The kernel acts on exactly the ports of the rules the API lists.
pub fn assert_kernel_matches_api(d: &Daemon, after: &str) {
    let kernel = kernel_ports(d.pid());
    let api = api_ports(d);
    if kernel != api {
        let extra: Vec<_> = kernel.difference(&api).take(10).collect();
        let missing: Vec<_> = api.difference(&kernel).take(10).collect();
        panic!(
            "after {after}: the kernel's PORTS map differs from the rules the API lists \
             ({} vs {} ports); in the kernel only: {extra:?}; in the API only: {missing:?}\n\
             rules: {:?}\nlog:\n{}",
            kernel.len(),
            api.len(),
            d.rules(),
            d.stderr()
        );
    }
}

/// Sends one datagram through a blackholed path every 100 ms on a thread
/// of its own, until stopped; then reports how many were sent and how
/// many got through.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(usize, usize)>>,
}

impl Probe {
    pub fn start(path: UdpPath) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            path.drain();
            let mut sent = 0;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                path.tx.send_to(b"probe", path.to).unwrap();
                sent += 1;
                next += Duration::from_millis(100);
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            (sent, path.drain())
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// (sent, arrived).
    pub fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The 99th percentile of `v` (sorted in place).
pub fn p99(v: &mut [Duration]) -> Duration {
    assert!(!v.is_empty());
    v.sort_unstable();
    v[(v.len() * 99).div_ceil(100) - 1]
}
