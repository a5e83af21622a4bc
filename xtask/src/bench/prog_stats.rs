//! What faultbpf's programs cost per packet, from the kernel's own BPF
//! statistics (`BPF_ENABLE_STATS`: run time and run count per program).
//! Throughput ratios on a shared 2-CPU machine swing by ±30 % from round to
//! round; this figure does not, so it is what shows "unmatched traffic pays
//! almost nothing" and "flat as rules grow" with a resolution of a few ns.
//!
//! The statistics stay on only while [`Enabled`] lives (an fd, not the
//! global sysctl, so a killed bench leaves nothing on) and only around a
//! separate short flood: they add two clock reads to every program run,
//! which must not weigh on the throughput figures.

use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd, OwnedFd},
};

use anyhow::{Result, bail};

use super::cost;

/// `BPF_ENABLE_STATS` and `BPF_STATS_RUN_TIME` from linux/bpf.h.
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Run-time statistics are on while this lives.
struct Enabled(#[allow(dead_code)] OwnedFd);

impl Enabled {
    fn new() -> Result<Self> {
        // union bpf_attr's enable_stats member: one u32, the rest zero.
        let attr: [u32; 2] = [BPF_STATS_RUN_TIME, 0];
        // SAFETY: bpf(2) reads `attr` (8 bytes, as passed) and returns an
        // fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd < 0 {
            bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd the kernel just gave us.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }
}

/// Program name -> (run time ns, runs), for the programs `pid` holds.
fn snapshot(pid: u32) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut out = BTreeMap::new();
    for id in cost::objects(pid)?.progs.keys() {
        let Some(v) = cost::bpftool("prog", *id) else {
            continue;
        };
        let (Some(name), Some(ns), Some(runs)) = (
            v["name"].as_str(),
            v["run_time_ns"].as_u64(),
            v["run_cnt"].as_u64(),
        ) else {
            continue;
        };
        let e = out.entry(name.to_owned()).or_insert((0, 0));
        e.0 += ns;
        e.1 += runs;
    }
    Ok(out)
}

/// Runs `traffic` with statistics on and returns, per program of `pid`
/// that ran meanwhile, its run time (ns) and runs during `traffic`.
pub fn totals(
    pid: u32,
    traffic: impl FnOnce() -> Result<()>,
) -> Result<BTreeMap<String, (u64, u64)>> {
    let _on = Enabled::new()?;
    let before = snapshot(pid)?;
    traffic()?;
    let after = snapshot(pid)?;
    Ok(after
        .into_iter()
        .filter_map(|(name, (ns, runs))| {
            let (ns0, runs0) = before.get(&name).copied().unwrap_or((0, 0));
            let runs = runs.checked_sub(runs0).filter(|&r| r > 0)?;
            Some((name, (ns.saturating_sub(ns0), runs)))
        })
        .collect())
}

/// Runs `traffic` with statistics on and returns, per program of `pid`
/// that ran at least `min_runs` times meanwhile, its mean ns per run.
pub fn ns_per_run(
    pid: u32,
    min_runs: u64,
    traffic: impl FnOnce() -> Result<()>,
) -> Result<BTreeMap<String, f64>> {
    Ok(totals(pid, traffic)?
        .into_iter()
        .filter(|(_, (_, runs))| *runs >= min_runs)
        .map(|(name, (ns, runs))| (name, ns as f64 / runs as f64))
        .collect())
}
