//! Scenario 5, cost: what a loaded faultbpf occupies. The size of its
//! programs as the verifier saw them (instructions verified, translated
//! instructions, JITed bytes), the memory of its maps with 65 536 rules, and
//! the resident memory of the CLI and of the daemon (goal: daemon <= 30 MB
//! with 65 536 rules).
//!
//! Objects are found through the process's own file descriptors
//! (`/proc/PID/fdinfo`: program, map and link ids), so other faultbpf
//! instances on the machine never get mixed in; `bpftool -j ... show id N`
//! then names them.

use std::{collections::BTreeMap, fs, time::Duration};

use anyhow::{Context as _, Result};

use super::{
    Ctx,
    daemon::Daemon,
    injector::{Faultbpf, Launch, RuleSet},
    report::{Goal, Section, Table, Verdict},
    topo::{self, SERVER_IF, Topology},
};
use crate::cmd::command;

/// The key: value lines of one fdinfo file.
type FdInfo = BTreeMap<String, String>;

/// The BPF programs and maps a process holds, by id, with their fdinfo.
#[derive(Debug, Default)]
pub(super) struct Objects {
    pub(super) progs: BTreeMap<u64, FdInfo>,
    maps: BTreeMap<u64, FdInfo>,
}

fn parse_fdinfo(text: &str) -> FdInfo {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Walks `/proc/PID/fd`: bpf-prog and bpf-map fds directly, bpf_link fds
/// for the programs they hold (TCX keeps a program alive through its link).
pub(super) fn objects(pid: u32) -> Result<Objects> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = Objects::default();
    let mut linked = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let fd = entry.file_name().to_string_lossy().into_owned();
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        let info = parse_fdinfo(&info);
        let id = |key: &str| info.get(key).and_then(|v| v.parse::<u64>().ok());
        match target.as_str() {
            "anon_inode:bpf-prog" => {
                if let Some(id) = id("prog_id") {
                    out.progs.insert(id, info);
                }
            }
            "anon_inode:bpf-map" => {
                if let Some(id) = id("map_id") {
                    out.maps.insert(id, info);
                }
            }
            "anon_inode:bpf_link" => {
                if let Some(id) = id("prog_id") {
                    linked.push(id);
                }
            }
            _ => {}
        }
    }
    for id in linked {
        out.progs.entry(id).or_default();
    }
    Ok(out)
}

/// `bpftool -j prog|map show id N`, or None without bpftool.
pub(super) fn bpftool(kind: &str, id: u64) -> Option<serde_json::Value> {
    let json = topo::output_within(
        command("bpftool").args(["-j", kind, "show", "id", &id.to_string()]),
        None,
        Duration::from_secs(20),
    )
    .ok()?;
    serde_json::from_str(&json).ok()
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (Option<u64>, Option<u64>) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A program as the report shows it.
struct Prog {
    name: String,
    verified: Option<u64>,
    xlated_insns: Option<u64>,
    jited_bytes: Option<u64>,
    memlock: Option<u64>,
}

/// A map as the report shows it.
struct Map {
    name: String,
    kind: String,
    max_entries: String,
    key_value: String,
    memlock: u64,
}

/// Names and sizes of `objects`, looked up while they still exist.
fn describe(objects: &Objects) -> (Vec<Prog>, Vec<Map>) {
    let progs = objects
        .progs
        .iter()
        .map(|(id, info)| {
            let bt = bpftool("prog", *id);
            let num =
                |v: &Option<serde_json::Value>, k: &str| v.as_ref().and_then(|v| v[k].as_u64());
            Prog {
                name: bt
                    .as_ref()
                    .and_then(|v| v["name"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("id {id}")),
                verified: info
                    .get("verified_insns")
                    .and_then(|v| v.parse().ok())
                    .or_else(|| num(&bt, "verified_insns")),
                xlated_insns: num(&bt, "bytes_xlated").map(|b| b / 8),
                jited_bytes: num(&bt, "bytes_jited"),
                memlock: info.get("memlock").and_then(|m| m.parse().ok()),
            }
        })
        .collect();
    let maps = objects
        .maps
        .iter()
        .map(|(id, info)| {
            let bt = bpftool("map", *id);
            let g = |k: &str| info.get(k).cloned().unwrap_or_default();
            Map {
                name: bt
                    .as_ref()
                    .and_then(|v| v["name"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("id {id}")),
                kind: bt
                    .as_ref()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("type {}", g("map_type"))),
                max_entries: g("max_entries"),
                key_value: format!("{}/{}", g("key_size"), g("value_size")),
                memlock: info
                    .get("memlock")
                    .and_then(|m| m.parse().ok())
                    .filter(|&m: &u64| m > 0)
                    .or_else(|| bt.as_ref().and_then(|v| v["bytes_memlock"].as_u64()))
                    .unwrap_or(0),
            }
        })
        .collect();
    (progs, maps)
}

struct Loaded {
    rules: usize,
    start_ms: f64,
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    progs: Vec<Prog>,
    maps: Vec<Map>,
}

fn load(ctx: &Ctx, topo: &Topology, rules: usize) -> Result<Loaded> {
    let mut args: Vec<String> = vec!["blackhole".into()];
    args.extend(RuleSet { n: rules }.faultbpf_args());
    args.extend(["--iface".into(), SERVER_IF.into()]);
    let mut fb = Faultbpf::start(&ctx.bin, &topo.server, &args, Launch::IpNetnsExec)?;
    let active = fb.wait_active(Duration::from_secs(120))?;
    let start_ms = (active - fb.spawned_at).as_secs_f64() * 1000.0;
    // Let the process settle (the first status refresh, allocator).
    topo::sleep(Duration::from_millis(300))?;
    let pid = fb.proc.pid();
    let (progs, maps) = describe(&objects(pid)?);
    let (rss_kib, hwm_kib) = rss_kib(pid);
    fb.stop()?;
    Ok(Loaded {
        rules,
        start_ms,
        rss_kib,
        hwm_kib,
        progs,
        maps,
    })
}

/// A daemon's memory with no rule and with 65 536 rules.
struct DaemonCost {
    rss_empty_kib: Option<u64>,
    rss_full_kib: Option<u64>,
    hwm_kib: Option<u64>,
    add_ms: f64,
}

/// `faultbpf daemon`, then the 65 536-rule set added over its API.
fn daemon_cost(ctx: &Ctx, topo: &Topology) -> Result<DaemonCost> {
    let d = Daemon::start(&ctx.bin, &topo.server, SERVER_IF)?;
    topo::sleep(Duration::from_millis(300))?;
    let (rss_empty_kib, _) = rss_kib(d.pid());
    let t = std::time::Instant::now();
    d.add_rule(&RuleSet { n: 65_536 }.daemon_spec())?;
    let add_ms = t.elapsed().as_secs_f64() * 1000.0;
    topo::sleep(Duration::from_millis(300))?;
    let (rss_full_kib, hwm_kib) = rss_kib(d.pid());
    d.stop()?;
    Ok(DaemonCost {
        rss_empty_kib,
        rss_full_kib,
        hwm_kib,
        add_ms,
    })
}

/// Scenario 5.
pub fn run(ctx: &Ctx) -> Result<Section> {
    let topo = Topology::new()?;
    let small = load(ctx, &topo, 1)?;
    let big = load(ctx, &topo, 65_536)?;
    let daemon = daemon_cost(ctx, &topo).map_err(|err| format!("{err:#}"));
    let have_bpftool = topo::output_within(
        command("bpftool").arg("version"),
        None,
        Duration::from_secs(10),
    )
    .is_ok();

    let mut section = Section::new("Cost: program size, map memory, process memory");
    section.notes.push(format!(
        "faultbpf `blackhole --iface {SERVER_IF}` with 1 rule and with 65 536 rules (formed as \
         in the overhead scenario); its programs and maps are found through its own file \
         descriptors (/proc/PID/fdinfo) and named with {}. Memory is the kernel's accounting \
         (memlock) of each map. Binary: `{}`.",
        if have_bpftool {
            "bpftool"
        } else {
            "nothing (bpftool missing: names and translated sizes unknown)"
        },
        ctx.bin.display()
    ));

    let mut progs = Table::new(
        "Programs (as loaded with 65 536 rules):",
        &[
            "Program",
            "Verified insns",
            "Translated insns",
            "JITed bytes",
            "Memory",
        ],
    );
    let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    for p in &big.progs {
        progs.row(vec![
            p.name.clone(),
            opt(p.verified),
            opt(p.xlated_insns),
            opt(p.jited_bytes),
            p.memlock.map_or("-".into(), kib),
        ]);
    }
    let mut maps = Table::new(
        "Maps with 1 and with 65 536 rules (every map but the peers trie is preallocated, so most \
         sizes are the same):",
        &[
            "Map",
            "Type",
            "Max entries",
            "Key/value bytes",
            "Memory, 1 rule",
            "Memory, 65 536 rules",
        ],
    );
    let mut totals = (0u64, 0u64);
    for m in &big.maps {
        let small_mem = small
            .maps
            .iter()
            .find(|s| s.name == m.name)
            .map(|s| s.memlock);
        totals.0 += small_mem.unwrap_or(0);
        totals.1 += m.memlock;
        maps.row(vec![
            m.name.clone(),
            m.kind.clone(),
            m.max_entries.clone(),
            m.key_value.clone(),
            small_mem.map_or("-".into(), kib),
            kib(m.memlock),
        ]);
    }
    maps.row(vec![
        "total".into(),
        String::new(),
        String::new(),
        String::new(),
        kib(totals.0),
        kib(totals.1),
    ]);
    let mut procs = Table::new(
        "Processes:",
        &[
            "Process",
            "Rules",
            "RSS",
            "Peak RSS",
            "Start -> `active` line",
        ],
    );
    for l in [&small, &big] {
        procs.row(vec![
            "faultbpf CLI".into(),
            l.rules.to_string(),
            l.rss_kib.map_or("-".into(), |k| kib(k * 1024)),
            l.hwm_kib.map_or("-".into(), |k| kib(k * 1024)),
            format!("{:.0} ms", l.start_ms),
        ]);
    }
    let mb = |k: Option<u64>| k.map_or("-".into(), |k| kib(k * 1024));
    match &daemon {
        Ok(d) => {
            procs.row(vec![
                "faultbpf daemon".into(),
                "0".into(),
                mb(d.rss_empty_kib),
                "-".into(),
                "-".into(),
            ]);
            procs.row(vec![
                "faultbpf daemon".into(),
                "65536".into(),
                mb(d.rss_full_kib),
                mb(d.hwm_kib),
                format!("POST of the rule set: {:.0} ms", d.add_ms),
            ]);
        }
        Err(err) => procs.row(vec![
            "faultbpf daemon".into(),
            "65536".into(),
            format!("n/a (the daemon did not run: {err})"),
            "-".into(),
            "-".into(),
        ]),
    }
    let mut csv = Table::new("", &["object", "rules", "name", "metric", "value"]);
    for l in [&small, &big] {
        for m in &l.maps {
            csv.row(vec![
                "map".into(),
                l.rules.to_string(),
                m.name.clone(),
                "memlock_bytes".into(),
                m.memlock.to_string(),
            ]);
        }
        for p in &l.progs {
            for (what, v) in [
                ("verified_insns", p.verified),
                ("xlated_insns", p.xlated_insns),
                ("jited_bytes", p.jited_bytes),
            ] {
                csv.row(vec![
                    "prog".into(),
                    l.rules.to_string(),
                    p.name.clone(),
                    what.into(),
                    v.map_or(String::new(), |v| v.to_string()),
                ]);
            }
        }
        for (what, v) in [("rss_kib", l.rss_kib), ("hwm_kib", l.hwm_kib)] {
            csv.row(vec![
                "cli".into(),
                l.rules.to_string(),
                "faultbpf".into(),
                what.into(),
                v.map_or(String::new(), |v| v.to_string()),
            ]);
        }
    }
    section.tables.extend([progs, maps, procs]);
    section.csvs.push(("cost.csv".into(), csv));

    section
        .goals
        .push(match daemon.as_ref().map(|d| d.rss_full_kib) {
            Ok(Some(rss)) => Goal::new(
                "daemon RSS with 65 536 rules",
                "<= 30 MB",
                kib(rss * 1024),
                Verdict::check(rss * 1024 <= 30 << 20),
            ),
            Ok(None) => Goal::na("daemon RSS with 65 536 rules", "<= 30 MB", "n/a (no VmRSS)"),
            Err(err) => Goal::na(
                "daemon RSS with 65 536 rules",
                "<= 30 MB",
                &format!("n/a (the daemon did not run: {err})"),
            ),
        });
    if let Some(rss) = big.rss_kib {
        section.goals.push(Goal::new(
            "CLI RSS with 65 536 rules",
            "(no goal)",
            kib(rss * 1024),
            Verdict::Info,
        ));
    }
    section.goals.push(Goal::new(
        "map memory with 65 536 rules",
        "(no goal)",
        kib(totals.1),
        Verdict::Info,
    ));
    let verified: Vec<String> = big
        .progs
        .iter()
        .filter_map(|p| Some(format!("{} {}", p.name, p.verified?)))
        .collect();
    section.goals.push(Goal::new(
        "instructions verified per program",
        "(no goal)",
        if verified.is_empty() {
            "-".into()
        } else {
            verified.join(", ")
        },
        Verdict::Info,
    ));
    Ok(section)
}

/// Bytes as `12.3 MiB` / `45.6 KiB`.
fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fdinfo_and_formats_sizes() {
        let info =
            parse_fdinfo("pos:\t0\nmap_type:\t1\nmax_entries:\t262144\nmemlock:\t35652736\n");
        assert_eq!(info["max_entries"], "262144");
        assert_eq!(kib(35_652_736), "34.0 MiB");
        assert_eq!(kib(328), "0.3 KiB");
    }
}
