//! Scenario 2, drop capacity: how many packets per second each injector can
//! drop when every packet matches. One AF_PACKET sender core (trafgen) floods
//! 60-byte UDP frames at the server's veth; on a veth pair the receive path
//! runs on the sender's CPU, so the rate that gets through is the cost of one
//! packet's trip, dropper included. Compared in one run: faultbpf tc (TCX and
//! netlink), faultbpf XDP (native, generic), an nftables netdev ingress drop,
//! and no injector (delivery to a socket). Goal: faultbpf tc >= 1.05x the
//! nftables drop of the same round, XDP >= nftables. Each hook's floor (a
//! program that drops without reading the packet, `floor.rs`) runs in the
//! same rounds: what no dropper on that hook can beat, so the report can
//! tell what the hook costs here from what faultbpf's program adds.
//!
//! A rate is only kept when the packets were in fact dropped: the injector's
//! own counter must account for the frames the veth received, and the
//! server's UDP layer must have seen (almost) none of them. A program that
//! reads only linear packet data would let trafgen's frames (whose headers
//! are not in the linear part) through, and read as a fake rate otherwise.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use faultbpf_common::{INGRESS_PROGRAM, XDP_PROGRAM};

use super::{
    Ctx,
    floor::{self, Floor},
    injector::{self, Faultbpf, Launch, Unavailable, XdpMode},
    prog_stats,
    report::{self, Goal, Section, Table, Verdict},
    stats::{self, Spread},
    topo::{self, CLIENT_IF, CLIENT_IP, Netns, Proc, SERVER_IF, SERVER_IP, Topology},
    traffic,
};

const PORT: u16 = 63_000;
const FROM: u16 = 63_001;
const NFT_TABLE: &str = "fbd";
/// Time for the sender to reach its steady rate before the window opens.
const WARMUP: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Socket,
    Nft,
    Tc(&'static str),
    Xdp(XdpMode),
    Floor(floor::Hook),
}

impl Cond {
    const ALL: [Cond; 12] = [
        Cond::Socket,
        Cond::Nft,
        Cond::Tc("tcx"),
        Cond::Tc("netlink"),
        Cond::Xdp(XdpMode::Native),
        Cond::Xdp(XdpMode::Generic),
        Cond::Floor(floor::Hook::Tcx),
        Cond::Floor(floor::Hook::TcxReadsPort),
        Cond::Floor(floor::Hook::Netlink),
        Cond::Floor(floor::Hook::NetlinkReadsPort),
        Cond::Floor(floor::Hook::XdpNative),
        Cond::Floor(floor::Hook::XdpGeneric),
    ];

    fn label(self) -> &'static str {
        match self {
            Cond::Socket => "no injector (delivery to a socket)",
            Cond::Nft => "nftables netdev ingress drop",
            Cond::Tc("tcx") => "faultbpf tc, TCX",
            Cond::Tc(_) => "faultbpf tc, netlink (cls_bpf)",
            Cond::Xdp(XdpMode::Native) => "faultbpf XDP, native",
            Cond::Xdp(XdpMode::Generic) => "faultbpf XDP, generic",
            Cond::Floor(floor::Hook::Tcx) => "floor: tc TCX program that only drops",
            Cond::Floor(floor::Hook::TcxReadsPort) => {
                "floor: tc TCX program that reads the port, then drops"
            }
            Cond::Floor(floor::Hook::Netlink) => "floor: cls_bpf (netlink) program that only drops",
            Cond::Floor(floor::Hook::NetlinkReadsPort) => {
                "floor: cls_bpf (netlink) program that reads the port, then drops"
            }
            Cond::Floor(floor::Hook::XdpNative) => "floor: XDP native program that only drops",
            Cond::Floor(floor::Hook::XdpGeneric) => "floor: XDP generic program that only drops",
        }
    }

    /// The floor of the hook faultbpf uses in this condition.
    fn floor(self) -> Option<Cond> {
        let hook = match self {
            Cond::Tc("tcx") => floor::Hook::Tcx,
            Cond::Tc(_) => floor::Hook::Netlink,
            Cond::Xdp(XdpMode::Native) => floor::Hook::XdpNative,
            Cond::Xdp(XdpMode::Generic) => floor::Hook::XdpGeneric,
            _ => return None,
        };
        Some(Cond::Floor(hook))
    }

    /// For tc: the floor that also reads the port.
    fn port_floor(self) -> Option<Cond> {
        match self {
            Cond::Tc("tcx") => Some(Cond::Floor(floor::Hook::TcxReadsPort)),
            Cond::Tc(_) => Some(Cond::Floor(floor::Hook::NetlinkReadsPort)),
            _ => None,
        }
    }

    /// faultbpf's arguments, or why this row cannot be measured.
    fn faultbpf_args(self) -> Option<Result<Vec<String>, Unavailable>> {
        let port = PORT.to_string();
        match self {
            Cond::Socket | Cond::Nft | Cond::Floor(_) => None,
            Cond::Tc(attach) => Some(Ok([
                "blackhole",
                "--proto",
                "udp",
                "--dport",
                &port,
                "--iface",
                SERVER_IF,
                "--direction",
                "ingress",
                "--attach",
                attach,
            ]
            .map(String::from)
            .to_vec())),
            Cond::Xdp(mode) => Some(injector::xdp_blackhole_args(mode, PORT, SERVER_IF).map(
                |args| {
                    let mut all = vec!["blackhole".to_owned()];
                    all.extend(args);
                    all
                },
            )),
        }
    }
}

/// One round of one condition.
#[derive(Debug, Clone)]
struct Run {
    pps: f64,
    rx_total: u64,
    /// What the injector's own counter says it dropped (None: no injector).
    dropped: Option<u64>,
    reached_udp: u64,
    /// How faultbpf says it attached (`tcx`, `netlink`, `xdp...`).
    attach: Option<String>,
    valid: Result<(), String>,
}

/// A 60-byte Ethernet/IPv4/UDP frame from the client to the server's PORT.
fn frame(topo: &Topology) -> Vec<u8> {
    let payload = *b"faultbpf-bench-flood";
    let payload = &payload[..traffic::SMALL_UDP];
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend(topo.server_mac);
    f.extend(topo.client_mac);
    f.extend(0x0800u16.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip.extend(CLIENT_IP.octets());
    ip.extend(SERVER_IP.octets());
    let sum = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend(FROM.to_be_bytes());
    f.extend(PORT.to_be_bytes());
    f.extend((udp_len as u16).to_be_bytes());
    // UDP checksum 0: none, allowed over IPv4.
    f.extend([0, 0]);
    f.extend(payload);
    f
}

/// The IPv4 header checksum (RFC 1071) of `header`, its checksum field 0.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let sum = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    !((sum & 0xffff) + (sum >> 16)) as u16
}

/// Removes a file on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A socket on PORT in the server namespace, drained by a thread, so
/// packets an injector lets through are delivered rather than refused.
struct Receiver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Receiver {
    fn start(ns: &Netns, cpu: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = ns.spawn("flood receiver", Some(cpu), move || {
            // The default buffer (a few hundred datagrams): what waits in
            // it is not counted yet, so it must stay small next to a window.
            let sock = UdpSocket::bind(SocketAddr::new(SERVER_IP.into(), PORT))?;
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut buf = [0u8; 256];
            while !s.load(Ordering::Relaxed) {
                let _ = sock.recv(&mut buf);
            }
            Ok(())
        })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The server namespace's counters at one moment.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    /// rx_packets of the server's veth.
    rx: u64,
    /// Datagrams the UDP layer took in: read by the socket's owner
    /// (InDatagrams counts at read time) or dropped for a full buffer.
    udp: u64,
    /// Bytes still queued on the flood socket (not in `udp` yet).
    queued: u64,
}

/// Reads [`Counters`] from a thread in the server namespace.
fn counters(ns: &Netns) -> Result<Counters> {
    ns.run(None, || {
        let dev = fs::read_to_string("/proc/thread-self/net/dev")?;
        let at = Instant::now();
        let snmp = fs::read_to_string("/proc/thread-self/net/snmp")?;
        let sockets = fs::read_to_string("/proc/thread-self/net/udp")?;
        let rx = traffic::rx_packets(&dev, SERVER_IF)
            .with_context(|| format!("no {SERVER_IF} in /proc/net/dev"))?;
        let c = traffic::udp_counters(&snmp);
        let udp = c.get("InDatagrams").copied().unwrap_or(0)
            + c.get("RcvbufErrors").copied().unwrap_or(0);
        let queued = traffic::udp_rx_queue(&sockets, PORT).unwrap_or(0);
        Ok(Counters {
            at,
            rx,
            udp,
            queued,
        })
    })
}

/// Waits until the previous flood is fully accounted for: counters no
/// longer moving and the flood socket's queue read empty (at most 5 s).
fn settled(ns: &Netns) -> Result<Counters> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut last = counters(ns)?;
    loop {
        topo::sleep(Duration::from_millis(50))?;
        let now = counters(ns)?;
        let still = (now.rx, now.udp) == (last.rx, last.udp) && now.queued == 0;
        if still || Instant::now() > end {
            return Ok(now);
        }
        last = now;
    }
}

enum Armed {
    Nothing,
    Nft,
    Faultbpf(Box<Faultbpf>),
    Floor(Floor),
}

/// Scenario 2.
pub fn run(ctx: &Ctx) -> Result<Section> {
    let topo = Topology::new()?;
    let _rx = Receiver::start(&topo.server, ctx.server_cpu())?;
    let config =
        TempFile(std::env::temp_dir().join(format!("fbb-{}-trafgen.cfg", std::process::id())));
    let bytes: Vec<String> = frame(&topo).iter().map(|b| format!("0x{b:02x}")).collect();
    fs::write(&config.0, format!("{{ {} }}\n", bytes.join(", ")))
        .with_context(|| format!("writing {}", config.0.display()))?;

    let mut unavailable: Vec<(Cond, Unavailable)> = Vec::new();
    let mut conds: Vec<Cond> = Cond::ALL
        .into_iter()
        .filter(|c| match c.faultbpf_args() {
            Some(Err(why)) => {
                unavailable.push((*c, why));
                false
            }
            _ => true,
        })
        .collect();

    let started = Instant::now();
    let mut runs: Vec<Vec<(Cond, Run)>> = Vec::new();
    for round in 0..ctx.plan.rounds {
        if round >= 3 && started.elapsed() > ctx.plan.scenario_budget {
            eprintln!("bench: drop: time budget reached after {round} rounds");
            break;
        }
        let mut this = Vec::new();
        let order: Vec<Cond> = (0..conds.len())
            .map(|i| conds[(i + round) % conds.len()])
            .collect();
        for cond in order {
            topo::check_interrupted()?;
            let run = match one(ctx, &topo, &config.0, cond) {
                Ok(run) => run,
                // An XDP mode (or TCX) this kernel, driver or binary cannot
                // attach becomes an n/a row; the other conditions go on.
                Err(err) if matches!(cond, Cond::Xdp(_) | Cond::Floor(_)) => {
                    eprintln!("bench: {} unavailable: {err:#}", cond.label());
                    let first = format!("{err:#}");
                    let first = first.lines().next().unwrap_or_default().to_owned();
                    unavailable.push((cond, Unavailable(format!("n/a ({first})"))));
                    conds.retain(|&c| c != cond);
                    this.retain(|(c, _)| *c != cond);
                    for r in &mut runs {
                        r.retain(|(c, _): &(Cond, Run)| *c != cond);
                    }
                    continue;
                }
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("{} (round {})", cond.label(), round + 1));
                }
            };
            eprintln!(
                "bench: drop round {} {}: {}{}",
                round + 1,
                cond.label(),
                report::si(run.pps, "pps"),
                match &run.valid {
                    Ok(()) => String::new(),
                    Err(why) => format!(" (not counted: {why})"),
                }
            );
            this.push((cond, run));
        }
        runs.push(this);
    }
    let costs = program_costs(ctx, &topo, &config.0, &conds)?;
    Ok(analyze(ctx, &conds, &unavailable, &runs, &costs))
}

/// Passes of the program-cost measurement, and the flood of each.
const COST_PASSES: usize = 3;
const COST_FLOOD: Duration = Duration::from_millis(500);

/// Per condition with a program (faultbpf's or a floor), its mean ns per
/// packet by the kernel's BPF statistics during a separate flood, one per
/// pass. Measured after the rate rounds, so the statistics' own cost (two
/// clock reads per run) never weighs on a rate. They move with the
/// machine's noise too (±20 % from run to run here), but a floor beside
/// them in the same pass shows what the hook alone costs.
struct Costs {
    ns: Vec<(Cond, Vec<f64>)>,
    failures: Vec<String>,
}

fn program_costs(
    ctx: &Ctx,
    topo: &Topology,
    config: &std::path::Path,
    conds: &[Cond],
) -> Result<Costs> {
    let mut costs = Costs {
        ns: Vec::new(),
        failures: Vec::new(),
    };
    for _ in 0..COST_PASSES {
        for &cond in conds {
            let prog = match cond {
                Cond::Tc(_) => INGRESS_PROGRAM,
                Cond::Xdp(_) => XDP_PROGRAM,
                Cond::Floor(hook) if hook.held_here() => floor::PROGRAM,
                // A cls_bpf floor's program is its filter's: no fd to read
                // statistics through.
                Cond::Floor(_) => continue,
                Cond::Socket | Cond::Nft => continue,
            };
            topo::check_interrupted()?;
            let armed = arm(ctx, topo, cond)?;
            let pid = match &armed {
                Armed::Faultbpf(fb) => fb.proc.pid(),
                // The floor's program is held by this process.
                _ => std::process::id(),
            };
            let per = prog_stats::ns_per_run(pid, 1000, || {
                let mut t = trafgen(topo, config)?;
                let slept = topo::sleep(COST_FLOOD);
                t.stop(libc::SIGINT, Duration::from_secs(3))?;
                slept
            });
            match per.map(|p| p.get(prog).copied()) {
                Ok(Some(ns)) => match costs.ns.iter_mut().find(|(c, _)| *c == cond) {
                    Some((_, v)) => v.push(ns),
                    None => costs.ns.push((cond, vec![ns])),
                },
                Ok(None) => costs
                    .failures
                    .push(format!("{}: {prog} did not run", cond.label())),
                Err(err) => costs.failures.push(format!("{}: {err:#}", cond.label())),
            }
            if let Armed::Faultbpf(fb) = armed {
                fb.stop()?;
            }
        }
    }
    Ok(costs)
}

/// The flood: one trafgen sender on the client's veth.
fn trafgen(topo: &Topology, config: &std::path::Path) -> Result<Proc> {
    // trafgen forks its sender and does not pass SIGINT on: it runs in its
    // own process group, which is what gets signalled.
    Proc::spawn_group(
        "trafgen",
        topo.client
            .exec("trafgen")
            .args(["--dev", CLIENT_IF, "--conf"])
            .arg(config)
            // One sender process (it pins itself to CPU 0); leave the
            // machine's sysctls and IRQ affinities alone.
            .args([
                "--cpus",
                "1",
                "--no-sock-mem",
                "--notouch-irq",
                "--no-cpu-stats",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn arm(ctx: &Ctx, topo: &Topology, cond: Cond) -> Result<Armed> {
    Ok(match cond {
        Cond::Socket => Armed::Nothing,
        Cond::Nft => {
            injector::nft(
                &topo.server,
                &format!(
                    "table netdev {NFT_TABLE} {{\n chain in {{\n  type filter hook ingress device \
                     \"{SERVER_IF}\" priority 0; policy accept;\n  udp dport {PORT} counter \
                     drop\n }}\n}}\n"
                ),
                Duration::from_secs(30),
            )?;
            Armed::Nft
        }
        Cond::Tc(_) | Cond::Xdp(_) => {
            let args = match cond.faultbpf_args() {
                Some(Ok(args)) => args,
                _ => bail!("no faultbpf arguments for {}", cond.label()),
            };
            let mut fb = Faultbpf::start(&ctx.bin, &topo.server, &args, Launch::IpNetnsExec)?;
            fb.wait_active(Duration::from_secs(60))?;
            Armed::Faultbpf(Box::new(fb))
        }
        Cond::Floor(hook) => Armed::Floor(Floor::attach(&topo.server, SERVER_IF, hook)?),
    })
}

fn one(ctx: &Ctx, topo: &Topology, config: &std::path::Path, cond: Cond) -> Result<Run> {
    let armed = arm(ctx, topo, cond)?;

    let c0 = settled(&topo.server)?;
    let mut trafgen = trafgen(topo, config)?;
    let measured = (|| {
        topo::sleep(WARMUP)?;
        if let Some(status) = trafgen.child.try_wait()? {
            bail!("trafgen exited early ({status})");
        }
        let c1 = counters(&topo.server)?;
        topo::sleep(ctx.plan.flood_window)?;
        let c2 = counters(&topo.server)?;
        Ok((c2.at - c1.at, c2.rx - c1.rx, c2.udp - c1.udp))
    })();
    trafgen.stop(libc::SIGINT, Duration::from_secs(3))?;
    let c3 = settled(&topo.server)?;
    let mut attach = None;
    let dropper = !matches!(armed, Armed::Nothing);
    let dropped = match armed {
        Armed::Nothing => None,
        // No counter of its own: the socket check below is all there is.
        Armed::Floor(floor) => {
            drop(floor);
            None
        }
        Armed::Nft => {
            let n = injector::nft_counter(&topo.server, NFT_TABLE, "in")?;
            injector::nft(
                &topo.server,
                &format!("delete table netdev {NFT_TABLE}\n"),
                Duration::from_secs(30),
            )?;
            Some(n)
        }
        Armed::Faultbpf(fb) => {
            let c = fb.stop()?;
            attach = Some(c.attach);
            Some(c.acted_packets)
        }
    };
    let (window, rx_window, udp_window) = measured?;
    let rx_total = c3.rx - c0.rx;
    let reached_udp = c3.udp - c0.udp;
    let counted = if cond == Cond::Socket {
        udp_window
    } else {
        rx_window
    };
    let valid = match dropped {
        _ if rx_total == 0 => Err("no frame arrived".into()),
        None if !dropper && (reached_udp as f64) < 0.99 * rx_total as f64 => Err(format!(
            "only {reached_udp} of {rx_total} frames reached the UDP layer"
        )),
        Some(d) if (d as f64) < 0.99 * rx_total as f64 => Err(format!(
            "the injector counted {d} drops for {rx_total} frames received"
        )),
        _ if dropper && reached_udp as f64 > 0.01 * rx_total as f64 => Err(format!(
            "{reached_udp} of {rx_total} frames reached the UDP layer: not dropped"
        )),
        _ => Ok(()),
    };
    Ok(Run {
        pps: counted as f64 / window.as_secs_f64(),
        rx_total,
        dropped,
        reached_udp,
        attach,
        valid,
    })
}

fn analyze(
    ctx: &Ctx,
    conds: &[Cond],
    unavailable: &[(Cond, Unavailable)],
    runs: &[Vec<(Cond, Run)>],
    costs: &Costs,
) -> Section {
    let rate = |round: &[(Cond, Run)], c: Cond| {
        round
            .iter()
            .find(|(k, r)| *k == c && r.valid.is_ok())
            .map(|(_, r)| r.pps)
    };
    let spread_of = |c: Cond, reference: Option<Cond>| -> Option<Spread> {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|round| {
                let x = rate(round, c)?;
                match reference {
                    None => Some(x),
                    Some(r) => Some(x / rate(round, r)?),
                }
            })
            .collect();
        stats::spread(&v)
    };

    let mut section = Section::new("Drop capacity, every packet matching");
    section.notes.push(format!(
        "trafgen (one process, CPU 0) floods 60-byte UDP frames (10.200.0.1:{FROM} -> \
         10.200.0.2:{PORT}, headers not in the skb's linear part) into the client's veth; each \
         condition's rate is counted over {:?} after a {:?} warm-up, {} rounds, order rotating. \
         Droppers: the server veth's rx_packets per second. No injector: datagrams reaching the \
         server's UDP layer per second (a socket drained by a thread on CPU {}). faultbpf: \
         `blackhole --proto udp --dport {PORT} --direction ingress --attach tcx|netlink`, or \
         `--xdp --xdp-mode native|generic` instead of `--attach`; \
         nftables: `udp dport {PORT} counter drop` in a netdev ingress chain. Floors: \
         `r0 = TC_ACT_SHOT; exit` on TCX ingress, `r0 = XDP_DROP; exit` as native or generic \
         XDP, attached by a BPF link (`floor.rs`): the cost of the hook alone, which no \
         dropper on it can beat; and on TCX the same after one `bpf_skb_load_bytes` of the \
         destination port, the least a dropper that filters by port must do (the first read \
         of a frame's headers also pays for bringing them into cache). The cls_bpf (netlink) \
         floors are the same two programs as classic BPF in a clsact qdisc's filter (`tc \
         filter add ... bpf bytecode '1,6 0 0 2' da`, and `'2,40 0 0 36,6 0 0 2'` to load \
         the port first).",
        ctx.plan.flood_window,
        WARMUP,
        runs.len(),
        ctx.server_cpu()
    ));
    section.notes.push(
        "Check that the packets were really dropped: a round counts only if the injector's own \
         counter (faultbpf's acted_packets, the nft rule's counter) covers >= 99% of the frames \
         the veth received and <= 1% of them reached the UDP layer (InDatagrams + \
         RcvbufErrors); a floor has no counter, so only the second check applies to it; for \
         no injector, >= 99% must reach the UDP layer."
            .into(),
    );
    let mut table = Table::new(
        "",
        &[
            "Condition",
            "Rate, median [min, max]",
            "x nftables drop (same round)",
            "x delivery to a socket",
            "x its hook's floor (same round)",
            "Rounds counted",
            "Attached as (faultbpf's JSON)",
        ],
    );
    let mut csv = Table::new(
        "",
        &[
            "round",
            "condition",
            "pps",
            "rx_total",
            "injector_dropped",
            "reached_udp",
            "attach",
            "counted",
        ],
    );
    for c in Cond::ALL {
        if let Some((_, why)) = unavailable.iter().find(|(k, _)| *k == c) {
            table.row(vec![
                c.label().into(),
                why.0.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        if !conds.contains(&c) {
            continue;
        }
        let counted = runs.iter().filter(|round| rate(round, c).is_some()).count();
        let abs = spread_of(c, None);
        table.row(vec![
            c.label().into(),
            abs.map_or("-".into(), |s| {
                format!(
                    "{} [{}, {}]",
                    report::si(s.median, "pps"),
                    report::si(s.min, "pps"),
                    report::si(s.max, "pps")
                )
            }),
            if c == Cond::Nft {
                "1".into()
            } else {
                report::ratio_cell(spread_of(c, Some(Cond::Nft)))
            },
            if c == Cond::Socket {
                "1".into()
            } else {
                report::ratio_cell(spread_of(c, Some(Cond::Socket)))
            },
            c.floor()
                .map_or("-".into(), |f| report::ratio_cell(spread_of(c, Some(f)))),
            format!("{counted}/{}", runs.len()),
            {
                let mut a: Vec<&str> = runs
                    .iter()
                    .flatten()
                    .filter(|(k, _)| *k == c)
                    .filter_map(|(_, r)| r.attach.as_deref())
                    .collect();
                a.sort_unstable();
                a.dedup();
                if a.is_empty() {
                    "-".into()
                } else {
                    a.join(", ")
                }
            },
        ]);
    }
    for (i, round) in runs.iter().enumerate() {
        for (c, r) in round {
            csv.row(vec![
                (i + 1).to_string(),
                c.label().into(),
                format!("{:.0}", r.pps),
                r.rx_total.to_string(),
                r.dropped.map_or("".into(), |d| d.to_string()),
                r.reached_udp.to_string(),
                r.attach.clone().unwrap_or_default(),
                match &r.valid {
                    Ok(()) => "yes".into(),
                    Err(why) => format!("no: {why}"),
                },
            ]);
        }
    }
    let rejected: Vec<String> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, round)| {
            round.iter().filter_map(move |(c, r)| {
                r.valid
                    .as_ref()
                    .err()
                    .map(|why| format!("round {} {}: {why}", i + 1, c.label()))
            })
        })
        .collect();
    if !rejected.is_empty() {
        section
            .notes
            .push(format!("Rounds not counted: {}", rejected.join("; ")));
    }
    section.tables.push(table);
    section.csvs.push(("drop-capacity-rounds.csv".into(), csv));
    cost_table(&mut section, costs);

    for (c, goal, min) in [
        (Cond::Tc("tcx"), ">= 1.05 x nftables", 1.05),
        (Cond::Tc("netlink"), ">= 1.05 x nftables", 1.05),
        (Cond::Xdp(XdpMode::Native), ">= 1.0 x nftables", 1.0),
        (Cond::Xdp(XdpMode::Generic), ">= 1.0 x nftables", 1.0),
    ] {
        let measure = format!("drop rate: {}", c.label());
        if let Some((_, why)) = unavailable.iter().find(|(k, _)| *k == c) {
            section.goals.push(Goal::na(&measure, goal, &why.0));
            continue;
        }
        section.goals.push(match spread_of(c, Some(Cond::Nft)) {
            Some(s) => Goal::new(
                &measure,
                goal,
                format!(
                    "{:.3} x nft [{:.3}, {:.3}] ({}); the hook's floor: {}{}",
                    s.median,
                    s.min,
                    s.max,
                    spread_of(c, None).map_or("-".into(), |a| report::si(a.median, "pps")),
                    c.floor()
                        .and_then(|f| spread_of(f, Some(Cond::Nft)))
                        .map_or("not measured".into(), |f| format!("{:.3} x nft", f.median)),
                    c.port_floor()
                        .and_then(|f| spread_of(f, Some(Cond::Nft)))
                        .map_or(String::new(), |f| format!(
                            ", reading the port: {:.3} x nft",
                            f.median
                        )),
                ),
                Verdict::check(s.median >= min),
            ),
            None => Goal::new(&measure, goal, "no counted round".into(), Verdict::Fail),
        });
    }
    let total: usize = runs.iter().map(Vec::len).sum();
    section.goals.push(Goal::new(
        "flood packets really dropped (counters, socket stats)",
        "every round",
        format!(
            "{} of {total} condition-rounds verified",
            total - rejected.len()
        ),
        Verdict::check(rejected.is_empty()),
    ));
    section
}

/// The program-cost table, and faultbpf's tc figure in the summary.
fn cost_table(section: &mut Section, costs: &Costs) {
    let spread = |c: Cond| {
        costs
            .ns
            .iter()
            .find(|(k, _)| *k == c)
            .and_then(|(_, v)| stats::spread(v))
    };
    let mut table = Table::new(
        &format!(
            "Program time per dropped packet, from the kernel's BPF statistics during a \
             separate {COST_FLOOD:?} flood after the rounds, ns, median [min, max] over \
             {COST_PASSES} passes. Every figure includes the statistics' own two clock reads \
             per run, so a floor's figure is that overhead plus two instructions:"
        ),
        &[
            "Condition",
            "ns per packet",
            "Above its hook's floor (medians)",
            "Above the floor that reads the port",
        ],
    );
    for (c, _) in &costs.ns {
        let Some(s) = spread(*c) else { continue };
        let above = c
            .floor()
            .and_then(spread)
            .map_or("-".into(), |f| format!("{:+.0} ns", s.median - f.median));
        let above_port = c
            .port_floor()
            .and_then(spread)
            .map_or("-".into(), |f| format!("{:+.0} ns", s.median - f.median));
        table.row(vec![
            c.label().into(),
            format!("{:.0} [{:.0}, {:.0}]", s.median, s.min, s.max),
            above,
            above_port,
        ]);
    }
    if !costs.failures.is_empty() {
        section.notes.push(format!(
            "Program cost not measured: {}",
            costs.failures.join("; ")
        ));
    }
    let tcx = Cond::Tc("tcx");
    if let (Some(s), Some(f), Some(p)) = (
        spread(tcx),
        tcx.floor().and_then(spread),
        tcx.port_floor().and_then(spread),
    ) {
        section.goals.push(Goal::new(
            "drop path: faultbpf tc (TCX) program time per dropped packet",
            "(reference)",
            format!(
                "{:.0} ns; the floor {:.0} ns, the floor that reads the port {:.0} ns (all with \
                 the statistics' overhead)",
                s.median, f.median, p.median
            ),
            Verdict::Info,
        ));
    }
    section.tables.push(table);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_checksum_of_a_known_header() {
        // The example header of Wikipedia's "IPv4 header checksum" article.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&header), 0xb861);
    }
}
