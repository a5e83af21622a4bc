//! `faultbpf trace`: why packets are or are not faulted. Finds the faultbpf
//! programs attached in this network namespace (a daemon's or standalone
//! faults', started `--traceable`; the daemon always is), switches their
//! trace points on for the watched ports, and prints one line per packet
//! the kernel reports: hook, interface, 5-tuple, the rule it met (or none)
//! and the reason, with the verdict.
//!
//! Nothing is left on: the switch is a lease (`TraceConf::until_ns`) this
//! process renews every second; killed, tracing stops by itself within
//! `TRACE_LEASE_NS`. The kernel writes at most `TRACE_EVENTS_PER_SEC`
//! events per CPU and counts the rest, which the summary reports.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    maps::{Array, Map, MapData, MapInfo, PerCpuArray, RingBuf},
    programs::{ProgramInfo, SchedClassifier, loaded_programs, tc::TcAttachType},
};
use faultbpf_common::{
    EGRESS_PROGRAM, FaultKind, INGRESS_PROGRAM, TRACE_EVENTS_MAP, TRACE_EVENTS_PER_SEC,
    TRACE_HOOK_EGRESS, TRACE_HOOK_INGRESS, TRACE_LEASE_NS, TRACE_MAP, TRACE_PORT_WORDS,
    TRACE_PORTS_MAP, TRACE_RATE_MAP, TraceConf, TraceEvent, TraceRate, trace_reason,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::iface;

/// How often the tracer renews its lease (`TRACE_LEASE_NS` is three times
/// this), and how often it looks for faultbpf instances that appeared.
const RENEW_EVERY: Duration = Duration::from_secs(1);
const SCAN_EVERY: Duration = Duration::from_secs(5);

/// What to watch.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ports (host order) watched on either side; empty with `all`.
    pub ports: BTreeSet<u16>,
    /// Every packet (rate-limited in the kernel), also those not parsed.
    pub all: bool,
    /// Stop after this long; `None`: until SIGINT or SIGTERM.
    pub lasts: Option<Duration>,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// What a trace saw, for the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub instances: usize,
    pub events: u64,
    pub suppressed: u64,
}

/// One faultbpf object's trace maps, found by id.
struct Instance {
    conf: Array<MapData, TraceConf>,
    ports: Array<MapData, u64>,
    events: RingBuf<MapData>,
    rate: PerCpuArray<MapData, TraceRate>,
    /// `suppressed` of each CPU when the trace began.
    suppressed_before: u64,
}

/// Runs a trace until `opts.lasts` or a signal; prints each event on
/// stdout as it comes.
pub fn run(opts: &Options) -> anyhow::Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(trace(opts))
}

async fn trace(opts: &Options) -> anyhow::Result<Summary> {
    // Watched before anything is switched on, so a signal always switches
    // it off again.
    let mut int = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
    let mut instances: BTreeMap<u32, Instance> = BTreeMap::new();
    let (found, untraceable) = scan(&mut instances, opts)?;
    if found == 0 {
        bail!(
            "no faultbpf programs are attached in this network namespace; start a fault (or the \
             daemon) here first, or run trace where they are (ip netns exec NAME faultbpf trace)"
        );
    }
    if instances.is_empty() {
        bail!(
            "the {untraceable} faultbpf instance(s) here were loaded without trace points: start \
             the fault with --traceable (the daemon always is)"
        );
    }
    let watching = if opts.all {
        "every port".to_string()
    } else {
        let ports: Vec<String> = opts.ports.iter().map(u16::to_string).collect();
        format!("port {}", ports.join(", "))
    };
    eprintln!(
        "faultbpf: tracing: {watching} in {} faultbpf instance(s){}",
        instances.len(),
        match untraceable {
            0 => String::new(),
            n => format!(" ({n} more loaded without --traceable, not traced)"),
        }
    );
    let names = iface_names();
    let deadline = opts.lasts.map(|d| Instant::now() + d);
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    let mut last_renew = Instant::now();
    let mut last_scan = Instant::now();
    let mut summary = Summary::default();
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = poll.tick() => {}
        }
        for inst in instances.values_mut() {
            while let Some(item) = inst.events.next() {
                if item.len() < size_of::<TraceEvent>() {
                    continue;
                }
                // SAFETY: the kernel wrote a whole `TraceEvent` (checked
                // length; `read_unaligned` needs no alignment).
                let e = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<TraceEvent>()) };
                summary.events += 1;
                println!("{}", render(&e, &names, opts.json));
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // The lease every second; a look for new instances (a `tc`
        // process per interface and hook where TCX is missing) every 5.
        if last_renew.elapsed() >= RENEW_EVERY {
            last_renew = Instant::now();
            if last_scan.elapsed() >= SCAN_EVERY {
                last_scan = Instant::now();
                scan(&mut instances, opts)?;
            } else {
                renew_all(&mut instances, opts);
            }
        }
    }
    summary.instances = instances.len();
    for inst in instances.values_mut() {
        summary.suppressed += suppressed(&inst.rate).saturating_sub(inst.suppressed_before);
        switch_off(inst);
    }
    Ok(summary)
}

/// Finds the instances attached here, adds the new ones, and switches
/// (or renews) tracing on in every one. Returns how many instances were
/// found and how many of them were not traceable.
fn scan(instances: &mut BTreeMap<u32, Instance>, opts: &Options) -> anyhow::Result<(usize, usize)> {
    let mut found = 0;
    let mut untraceable = 0;
    for maps in attached_objects() {
        found += 1;
        let Some(&conf_id) = maps.get(TRACE_MAP) else {
            // An older faultbpf, without trace maps.
            untraceable += 1;
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = instances.entry(conf_id) {
            match open(&maps) {
                Ok(Some(mut inst)) => {
                    // Events a killed tracer left unread are not ours:
                    // dropped before tracing is on for our ports.
                    while inst.events.next().is_some() {}
                    set_ports(&mut inst, opts)?;
                    slot.insert(inst);
                }
                Ok(None) => untraceable += 1,
                // It went away between the listing and the opening.
                Err(_) => {}
            }
        }
    }
    renew_all(instances, opts);
    Ok((found, untraceable))
}

/// Renews the lease in every instance; forgets those that went away.
fn renew_all(instances: &mut BTreeMap<u32, Instance>, opts: &Options) {
    let until = coarse_now_ns() + TRACE_LEASE_NS;
    instances.retain(|_, inst| renew(inst, until, opts.all).is_ok());
}

/// Opens an object's trace maps; `None` when it was not loaded traceable.
fn open(maps: &BTreeMap<String, u32>) -> anyhow::Result<Option<Instance>> {
    let get = |name: &str| -> anyhow::Result<Map> {
        let id = *maps
            .get(name)
            .with_context(|| format!("the programs have no map {name}"))?;
        Ok(Map::from_map_data(MapData::from_id(id)?)?)
    };
    let conf: Array<MapData, TraceConf> = Array::try_from(get(TRACE_MAP)?)?;
    if conf.get(&0, 0)?.traceable == 0 {
        return Ok(None);
    }
    let rate: PerCpuArray<MapData, TraceRate> = PerCpuArray::try_from(get(TRACE_RATE_MAP)?)?;
    let suppressed_before = suppressed(&rate);
    Ok(Some(Instance {
        conf,
        ports: Array::try_from(get(TRACE_PORTS_MAP)?)?,
        events: RingBuf::try_from(get(TRACE_EVENTS_MAP)?)?,
        rate,
        suppressed_before,
    }))
}

/// Writes every word of the port bitmap: the watched ports' bits set, all
/// others cleared (a tracer killed before it could clear its own leaves
/// them behind).
fn set_ports(inst: &mut Instance, opts: &Options) -> anyhow::Result<()> {
    let mut words = vec![0u64; TRACE_PORT_WORDS as usize];
    for &p in &opts.ports {
        words[p as usize / 64] |= 1 << (p % 64);
    }
    for (i, w) in words.iter().enumerate() {
        inst.ports.set(i as u32, *w, 0)?;
    }
    Ok(())
}

fn renew(inst: &mut Instance, until_ns: u64, all: bool) -> anyhow::Result<()> {
    let conf = TraceConf {
        until_ns,
        all_ports: u32::from(all),
        traceable: 1,
    };
    inst.conf.set(0, conf, 0)?;
    Ok(())
}

/// Tracing off and the port bits cleared; best effort (the owner may be
/// gone, and the lease ends tracing anyway).
fn switch_off(inst: &mut Instance) {
    let _ = renew(inst, 0, false);
    for i in 0..TRACE_PORT_WORDS {
        if inst.ports.get(&i, 0).is_ok_and(|w| w != 0) {
            let _ = inst.ports.set(i, 0, 0);
        }
    }
}

fn suppressed(rate: &PerCpuArray<MapData, TraceRate>) -> u64 {
    rate.get(&0, 0)
        .map(|per_cpu| per_cpu.iter().map(|r| r.suppressed).sum())
        .unwrap_or(0)
}

/// The map ids (by name) of each faultbpf object whose tc programs are
/// attached to an interface of this namespace: TCX links, then cls_bpf
/// filters (`tc -j filter show`, for kernels before 6.6).
fn attached_objects() -> Vec<BTreeMap<String, u32>> {
    let mut prog_ids = BTreeSet::new();
    let mut programs: Vec<ProgramInfo> = Vec::new();
    let ifaces = iface::all().unwrap_or_default();
    for ifname in &ifaces {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            if let Ok((_, progs)) = SchedClassifier::query_tcx(ifname, hook) {
                for p in progs {
                    if is_ours(&p) && prog_ids.insert(p.id()) {
                        programs.push(p);
                    }
                }
            }
        }
    }
    let netlink: BTreeSet<u32> = ifaces
        .iter()
        .flat_map(|i| ["ingress", "egress"].map(|h| (i.clone(), h)))
        .flat_map(|(i, h)| cls_bpf_prog_ids(&i, h))
        .filter(|id| !prog_ids.contains(id))
        .collect();
    if !netlink.is_empty() {
        for p in loaded_programs().flatten() {
            if netlink.contains(&p.id()) && is_ours(&p) && prog_ids.insert(p.id()) {
                programs.push(p);
            }
        }
    }
    let mut objects: BTreeMap<u32, BTreeMap<String, u32>> = BTreeMap::new();
    for p in programs {
        let mut maps = BTreeMap::new();
        for id in p.map_ids().ok().flatten().unwrap_or_default() {
            if let Some(name) = MapInfo::from_id(id)
                .ok()
                .and_then(|m| m.name_as_str().map(str::to_string))
            {
                maps.insert(name, id);
            }
        }
        // Programs of one object share its maps: key by the rules map.
        let key = maps
            .get(faultbpf_common::RULES_MAP)
            .copied()
            .unwrap_or(p.id());
        objects.entry(key).or_default().extend(maps);
    }
    objects.into_values().collect()
}

fn is_ours(p: &ProgramInfo) -> bool {
    matches!(p.name_as_str(), Some(INGRESS_PROGRAM | EGRESS_PROGRAM))
}

/// The BPF program ids of the cls_bpf filters on `iface`'s `hook`.
fn cls_bpf_prog_ids(iface: &str, hook: &str) -> Vec<u32> {
    crate::reaper::tc_filters(iface, hook)
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["options"]["prog"]["id"].as_u64())
        .filter_map(|id| u32::try_from(id).ok())
        .collect()
}

/// Interface names by index, in this namespace.
fn iface_names() -> BTreeMap<u32, String> {
    iface::all()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| iface::index(&n).map(|i| (i, n)))
        .collect()
}

/// CLOCK_MONOTONIC_COARSE in ns, the clock `bpf_ktime_get_coarse_ns`
/// reads.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The words a reason is printed as.
pub fn reason_text(reason: u8) -> &'static str {
    match reason {
        trace_reason::ACTED => "acted",
        trace_reason::NO_RULE => "no rule",
        trace_reason::OTHER_DIRECTION => "other direction",
        trace_reason::EXPIRED => "expired",
        trace_reason::LEASE_STALE => "lease stale",
        trace_reason::OTHER_PEER => "other peer",
        trace_reason::NOT_DRAWN => "pct not drawn",
        trace_reason::NOT_APPLICABLE => "not applicable",
        trace_reason::NOT_PARSED => "not parsed",
        _ => "unknown",
    }
}

/// The kernel action a `FaultKind` names.
fn action_text(kind: u8) -> Option<&'static str> {
    Some(match FaultKind::from_u8(kind)? {
        FaultKind::Drop => "drop",
        FaultKind::Reset => "reset",
        FaultKind::Hang => "hang",
        FaultKind::Corrupt => "corrupt",
        FaultKind::Mark => "mark",
        FaultKind::Ecn => "ecn",
        FaultKind::Mix => "chaos",
        FaultKind::Delay => "delay",
        FaultKind::Duplicate => "duplicate",
        FaultKind::Throttle => "throttle",
        FaultKind::Dns => "dns",
    })
}

fn hook_text(hook: u8) -> &'static str {
    match hook {
        TRACE_HOOK_INGRESS => "ingress",
        TRACE_HOOK_EGRESS => "egress",
        _ => "xdp",
    }
}

/// The verdict's name: tc actions, or XDP's.
fn verdict_text(hook: u8, v: i32) -> String {
    let tc = hook == TRACE_HOOK_INGRESS || hook == TRACE_HOOK_EGRESS;
    match (tc, v) {
        (true, -1) => "pass".into(),
        (true, 0) => "ok".into(),
        (true, 2) => "shot".into(),
        (true, 4) => "stolen".into(),
        (true, 7) => "redirect".into(),
        (false, 1) => "drop".into(),
        (false, 2) => "pass".into(),
        (false, 3) => "tx".into(),
        _ => v.to_string(),
    }
}

fn addr(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// One event as a line of text or JSON.
fn render(e: &TraceEvent, names: &BTreeMap<u32, String>, json: bool) -> String {
    let iface = names
        .get(&e.ifindex)
        .cloned()
        .unwrap_or_else(|| format!("if{}", e.ifindex));
    let proto = match e.proto {
        6 => "tcp",
        17 => "udp",
        _ => "-",
    };
    let parsed = e.reason != trace_reason::NOT_PARSED;
    let src = endpoint(addr(e.saddr), u16::from_be(e.sport_be));
    let dst = endpoint(addr(e.daddr), u16::from_be(e.dport_be));
    let rule = (e.slot != u32::MAX).then_some(e.slot);
    let action = action_text(e.kind);
    let verdict = verdict_text(e.hook, e.verdict);
    if json {
        let mut v = serde_json::json!({
            "hook": hook_text(e.hook),
            "iface": iface,
            "reason": reason_text(e.reason),
            "rule": rule,
            "action": action,
            "verdict": verdict,
        });
        if parsed {
            v["proto"] = proto.into();
            v["src"] = src.into();
            v["dst"] = dst.into();
        }
        return v.to_string();
    }
    let what = match (rule, action) {
        (Some(r), Some(a)) => format!("rule {r}: {a}, {}", reason_text(e.reason)),
        (Some(r), None) => format!("rule {r}: {}", reason_text(e.reason)),
        (None, _) => reason_text(e.reason).to_string(),
    };
    if parsed {
        format!(
            "{} {iface} {proto} {src} > {dst}: {what} (verdict {verdict})",
            hook_text(e.hook)
        )
    } else {
        format!("{} {iface}: {what} (verdict {verdict})", hook_text(e.hook))
    }
}

/// The summary line on stderr.
pub fn summary_line(s: &Summary) -> String {
    format!(
        "faultbpf trace: {} event(s) from {} faultbpf instance(s); {} more not written by the \
         kernel's limit of {TRACE_EVENTS_PER_SEC} per second per CPU",
        s.events, s.instances, s.suppressed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_as_hook_tuple_rule_and_reason() {
        let mut e = TraceEvent {
            ifindex: 7,
            slot: 3,
            verdict: 2,
            hook: TRACE_HOOK_INGRESS,
            proto: 17,
            reason: trace_reason::ACTED,
            kind: FaultKind::Drop as u8,
            sport_be: 40000u16.to_be(),
            dport_be: 5000u16.to_be(),
            ..TraceEvent::default()
        };
        e.saddr = std::net::Ipv4Addr::new(10, 200, 0, 1)
            .to_ipv6_mapped()
            .octets();
        e.daddr = std::net::Ipv4Addr::new(10, 200, 0, 2)
            .to_ipv6_mapped()
            .octets();
        let names = BTreeMap::from([(7, "veth-s".to_string())]);
        assert_eq!(
            render(&e, &names, false),
            "ingress veth-s udp 10.200.0.1:40000 > 10.200.0.2:5000: rule 3: drop, acted (verdict shot)"
        );
        let v: serde_json::Value = serde_json::from_str(&render(&e, &names, true)).unwrap();
        assert_eq!(v["rule"], 3);
        assert_eq!(v["reason"], "acted");
        assert_eq!(v["dst"], "10.200.0.2:5000");
        e.slot = u32::MAX;
        e.reason = trace_reason::NO_RULE;
        e.kind = 0;
        e.verdict = -1;
        assert!(render(&e, &names, false).ends_with(": no rule (verdict pass)"));
    }
}
