//! Command-line types (clap derive). The first line of each doc comment is
//! the short `-h` help; the rest shows up in `--help`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use faultbpf::{
    AttachMode, Direction, Fault, Hooks, Proto, XdpMode,
    faults::{DelayParams, Dist, Mix},
    rules::{Peer, Per, PortRange, Side},
    spec::parse_duration,
};

#[derive(Debug, Parser)]
#[command(
    name = "faultbpf",
    version,
    about = "Inject network faults into the traffic of one port, in the kernel (eBPF)",
    long_about = "Inject network faults into the traffic of one port, in the kernel (eBPF).\n\n\
        faultbpf attaches small tc programs to the interfaces of the current network \
        namespace and makes the packets of one port vanish, with no proxy in the path \
        and no change to the application's configuration. Everything it attaches is \
        removed when it exits, however it exits.",
    after_help = "Examples:\n  \
        sudo faultbpf blackhole --port 5672                  cut RabbitMQ off until Ctrl-C\n  \
        sudo faultbpf blackhole --port 5432 --for 30s        a 30 s Postgres outage\n  \
        sudo faultbpf blackhole --port 53 --proto udp --pct 30   lose 30 % of DNS packets\n  \
        sudo ip netns exec app faultbpf blackhole --port 6379    inside another namespace"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// The daemon's socket: fault commands add their rule there when a daemon listens
    ///
    /// Without a daemon on it, fault commands run standalone. Example: --socket
    /// /tmp/fb.sock, or FAULTBPF_SOCKET=/tmp/fb.sock.
    #[arg(
        long,
        global = true,
        env = "FAULTBPF_SOCKET",
        value_name = "PATH",
        default_value = faultbpf::client::DEFAULT_SOCKET
    )]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Fault(FaultCommand),

    /// Apply a fault while a command runs, then heal: exits with the command's status
    ///
    /// The fault is removed when the command exits, and also when faultbpf is killed
    /// (its links die with it; a daemon rule is tied to faultbpf's pid); the command
    /// is killed with faultbpf, so it never runs on unfaulted. A command that cannot
    /// be run exits 127 (not found) or 126 (not executable) before anything is
    /// attached. Standard input and output belong to the command; faultbpf's
    /// counters go to stderr.
    #[command(after_help = "Examples:\n  \
        faultbpf run blackhole --port 5672 -- pytest tests/test_reconnect.py\n  \
        faultbpf run hang --port 5432 --netns app -- ./check_timeouts.sh")]
    Run {
        #[command(subcommand)]
        fault: FaultCommand,
    },

    /// Game-day scenarios: a timeline of faults (and a random pool), with a report
    #[command(subcommand)]
    Scenario(ScenarioCommand),

    /// Run the control daemon: one process owns the programs, rules come over an API
    ///
    /// Serves an HTTP/JSON API on a Unix socket (mode 0600): POST/GET/DELETE /v1/rules,
    /// GET /v1/stats, /metrics (Prometheus), /healthz; see docs/openapi.yaml. Every rule
    /// expires (default 10m), and the kernel stops applying rules within the lease
    /// if the daemon stops renewing its heartbeat. SIGHUP reloads --config.
    #[command(after_help = "Examples:\n  \
        faultbpf daemon --config /etc/faultbpf.toml\n  \
        faultbpf daemon --socket /tmp/fb.sock --metrics 127.0.0.1:9464\n  \
        curl --unix-socket /run/faultbpf.sock -d '{\"fault\":\"blackhole\",\"port\":[5672]}' http://x/v1/rules")]
    Daemon(DaemonArgs),

    /// List the daemon's rules
    Rules {
        /// Print the daemon's JSON as it is
        #[arg(long)]
        json: bool,
    },

    /// Remove daemon rules by id, or all of them
    #[command(after_help = "Examples:\n  faultbpf rm 3 4\n  faultbpf rm --all")]
    Rm {
        /// Rule ids, as `faultbpf rules` shows them
        #[arg(value_name = "ID", required_unless_present = "all")]
        ids: Vec<u32>,
        /// Remove every rule
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },

    /// Show the daemon's per-rule counters
    Stats {
        /// Refresh every second until Ctrl-C
        #[arg(long)]
        watch: bool,
        /// Print the daemon's JSON as it is
        #[arg(long)]
        json: bool,
    },

    /// Check a daemon config file and say what is wrong, with line and column
    #[command(after_help = "Example:\n  faultbpf check /etc/faultbpf.toml")]
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },

    /// Internal: removes netlink filters if the faultbpf that started it dies.
    #[command(name = "__reap", hide = true)]
    Reap(ReapArgs),
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Drop the packets of a port, as if the dependency's host vanished
    ///
    /// The application sees what a dead host or a silent firewall gives: connect()
    /// hangs until a timeout, an established connection stalls while TCP retransmits
    /// with backoff, UDP datagrams are lost. Nothing answers, so nothing fails fast:
    /// this is the fault that finds missing timeouts. With --pct below 100 it is
    /// packet loss instead.
    ///
    /// Runs in the foreground until Ctrl-C, SIGTERM or --for, then removes
    /// everything and prints the counters.
    #[command(after_help = "Examples:\n  \
        faultbpf blackhole --port 5672                        both directions, tcp and udp, until Ctrl-C\n  \
        faultbpf blackhole --port 5432 --proto tcp --for 10s  a 10 s outage, then heal by itself\n  \
        faultbpf blackhole --port 8080 --pct 25 --iface eth1  lose a quarter of the packets on eth1\n  \
        faultbpf blackhole --port 9000 --direction egress     only what this host sends")]
    Blackhole(FaultArgs),

    /// Refuse connections and reset established ones, like a closed port or REJECT
    ///
    /// TCP: connect() fails at once with ECONNREFUSED; on an open connection the next
    /// send()/recv() fails with ECONNRESET. UDP: a connected socket gets ECONNREFUSED
    /// (an ICMP port unreachable answers). Answers come from the kernel in about
    /// 0.1 ms: the fast failure, where blackhole is the slow one.
    #[command(after_help = "Examples:\n  \
        faultbpf reset --port 5432                   Postgres refuses and drops every connection\n  \
        faultbpf reset --port 443 --pct 30 --per flow   30 % of connections fail, the rest are clean\n  \
        faultbpf reset --port 53 --proto udp         DNS queries get port unreachable")]
    Reset(FaultArgs),

    /// Let connections open, then let no data through (reads time out)
    ///
    /// The TCP handshake completes, so connect() succeeds; every segment that carries
    /// data, in either direction, vanishes, so the first read waits until the
    /// application's read timeout. The server never sees the request.
    #[command(after_help = "Examples:\n  \
        faultbpf hang --port 5432 --for 30s          queries hang; does the client time out?\n  \
        faultbpf hang --port 6379 --pct 10           one data segment in ten vanishes")]
    Hang(FaultArgs),

    /// Deliver damaged data: flip bytes in payloads and fix the checksums
    ///
    /// One 16-bit word of each hit packet's payload is inverted and the TCP/UDP
    /// checksum corrected, so nothing below the application notices: reads return
    /// wrong bytes, TLS fails with a bad record MAC, an application CRC catches it.
    #[command(after_help = "Examples:\n  \
        faultbpf corrupt --port 11211 --pct 5        5 % of memcached packets damaged\n  \
        faultbpf corrupt --dport 8080 --pct 100      every request body to port 8080")]
    Corrupt(FaultArgs),

    /// Tag matched packets (skb mark or ECN CE) and let them pass
    ///
    /// --value N sets the packet mark, so your own tc/nftables rules (a netem class,
    /// a policy route) act on exactly these packets. --ecn sets Congestion
    /// Experienced on ECN-capable packets, as a congested router would.
    #[command(after_help = "Examples:\n  \
        faultbpf mark --port 5432 --value 0x42       then: nft add rule ... meta mark 0x42 counter\n  \
        faultbpf mark --port 8080 --ecn              congestion signals without loss")]
    Mark(MarkArgs),

    /// Apply a mix of faults to one port, drawn per packet (or per flow)
    ///
    /// --mix drop:20,reset:10,corrupt:5 drops 20 % of the packets, resets 10 % and
    /// corrupts 5 %; the other 65 % pass. One random draw per packet picks at most one
    /// action. With --per flow every connection gets one fate.
    #[command(after_help = "Examples:\n  \
        faultbpf chaos --port 5672 --mix drop:20,reset:10\n  \
        faultbpf chaos --port 8080 --mix reset:30,hang:20 --per flow")]
    Chaos(ChaosArgs),

    /// Make the port slow: deliver its packets later, in order, by the kernel
    ///
    /// Every matched packet arrives --ms (± --jitter) later in each direction it is
    /// delayed, so a round trip through both grows by twice that; a flow's packets
    /// stay in order unless --reorder. The way to make a timeout test deterministic
    /// without touching the server. Needs the kernel's sch_fq and sch_netem modules.
    #[command(after_help = "Examples:\n  \
        faultbpf delay --port 5432 --ms 300                  Postgres answers 0.6 s later\n  \
        faultbpf delay --dport 8080 --ms 50 --jitter 20ms    50 ± 20 ms on requests only\n  \
        faultbpf delay --port 6379 --ms 100 --pct 10         one packet in ten is late")]
    Delay(DelayArgs),
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Run a scenario file: show the timeline as it runs, end with a report
    #[command(after_help = "Example:\n  faultbpf scenario run gameday.toml --json > report.json")]
    Run {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print the final report as JSON on stdout
        #[arg(long)]
        json: bool,
    },
    /// Check a scenario file and say what is wrong, with line and column
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

impl FaultCommand {
    /// The fault and its flags.
    /// The fault and its flags; `Err` names a bad combination of flags.
    pub fn into_parts(self) -> Result<(faultbpf::Fault, FaultArgs), String> {
        use faultbpf::Fault;
        Ok(match self {
            Self::Blackhole(a) => (Fault::Blackhole, a),
            Self::Reset(a) => (Fault::Reset, a),
            Self::Hang(a) => (Fault::Hang, a),
            Self::Corrupt(a) => (Fault::Corrupt, a),
            Self::Mark(m) => match m.value {
                Some(value) => (Fault::Mark { value }, m.common),
                None => (Fault::Ecn, m.common),
            },
            Self::Chaos(c) => {
                let mut mix = c.mix;
                if mix.delays() {
                    mix.delay = c.delay.params(true)?;
                } else if c.delay.ms.is_some() {
                    return Err("--ms applies to `delay` entries, and the mix has none".into());
                }
                (Fault::Chaos(mix), c.common)
            }
            Self::Delay(d) => {
                let params = d.delay.params(true)?.expect("required");
                (Fault::Delay(params), d.common)
            }
        })
    }
}

/// Flags every fault takes.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("port_flags").required(true).multiple(true)))]
pub struct FaultArgs {
    /// Port to fault, as destination or source: P or a range A-B; repeatable
    ///
    /// Matching either side cuts both directions of every flow to the dependency,
    /// e.g. --port 5432 catches queries to Postgres and its replies.
    /// Example: --port 5432 --port 8000-8100
    #[arg(long = "port", value_name = "PORT", group = "port_flags", value_parser = either_port)]
    pub ports: Vec<PortRange>,

    /// Destination port (or range A-B) only; repeatable
    ///
    /// Example: --dport 80 faults what is sent to port 80, not the replies from it.
    #[arg(long = "dport", value_name = "PORT", group = "port_flags", value_parser = dst_port)]
    pub dports: Vec<PortRange>,

    /// Source port (or range A-B) only; repeatable
    ///
    /// Example: --sport 5432 on the database host faults only its replies.
    #[arg(long = "sport", value_name = "PORT", group = "port_flags", value_parser = src_port)]
    pub sports: Vec<PortRange>,

    /// Percent of matched packets to act on, 0-100 (default 100)
    ///
    /// Decided per packet by the kernel's random numbers (or per flow with --per
    /// flow); 0 and 100 are exact. Fractions are allowed: --pct 0.5.
    #[arg(long, value_name = "PCT", default_value = "100", value_parser = parse_pct)]
    pub pct: f64,

    /// What --pct draws for: packet or flow (default packet)
    ///
    /// flow hashes each connection's addresses and ports once, so with --pct 30 about
    /// 30 % of connections fail completely and the others lose nothing, like one bad
    /// backend among several.
    #[arg(long, value_name = "UNIT", value_enum, default_value_t = Per::Packet)]
    pub per: Per,

    /// Which L4 protocol to match: tcp, udp or all
    ///
    /// Example: --proto udp for DNS on port 53 without touching DNS over TCP.
    #[arg(long, value_name = "PROTO", value_enum, default_value_t = Proto::All)]
    pub proto: Proto,

    /// Only traffic to or from this host or prefix (v4 or v6); repeatable
    ///
    /// The remote end is compared: the source of incoming packets, the destination
    /// of outgoing ones. One lookup in a prefix trie, however many you give.
    /// Example: --peer 10.0.3.7 --peer fd00::/64 (partition from one replica)
    #[arg(long = "peer", value_name = "CIDR")]
    pub peers: Vec<Peer>,

    /// Interface to attach to; repeat for several (default: every interface that is up)
    ///
    /// Only interfaces of the current network namespace; to fault another namespace
    /// run faultbpf inside it (ip netns exec NAME faultbpf ...).
    /// Example: --iface eth1 --iface lo
    #[arg(long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,

    /// Which packets to act on, seen from the interface: ingress, egress or both
    ///
    /// Example: --direction egress acts only on what this host sends; the local
    /// sender still believes its packets left and backs off as after real loss.
    #[arg(long, value_name = "DIR", value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,

    /// Non-first IP fragments (they carry no ports): pass (default) or drop
    ///
    /// A fragmented datagram's later fragments cannot be matched by port; with
    /// --fragments drop the rule also takes them, for every fragment of its protocols.
    #[arg(long, value_name = "WHAT", value_enum, default_value_t = Fragments::Pass)]
    pub fragments: Fragments,

    /// Stop after this long and heal, e.g. 30s, 5m, 1h30m (default: until Ctrl-C)
    ///
    /// The kernel enforces it too: the rule stops acting at that time even if
    /// faultbpf were frozen.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub lasts: Option<Duration>,

    /// Print the final counters as one line of JSON instead of text
    ///
    /// Example: faultbpf blackhole --port 53 --for 5s --json | jq .rules[0].acted_packets
    #[arg(long)]
    pub json: bool,

    /// How to attach the tc programs: auto, tcx (kernel >= 6.6) or netlink
    ///
    /// auto picks tcx where the kernel has it. netlink (a clsact qdisc with cls_bpf
    /// filters) works everywhere; faultbpf removes its filters, and the qdisc if it
    /// added it, on exit, and a helper process does so if faultbpf is killed.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// Fault ingress with XDP instead of tc: for floods on physical NICs (drop, reset, hang)
    ///
    /// The XDP program acts in the driver, before the kernel builds an skb, so a drop
    /// costs almost nothing; reset answers with XDP_TX. Egress stays on tc (with
    /// --direction both). mark, corrupt and chaos mixes with corrupt need tc. On veth,
    /// native XDP makes the sender split its GSO packets (single-stream TCP gets several
    /// times slower), and native reset needs an XDP program on the peer veth. Always
    /// standalone: a daemon's rules stay on tc.
    /// Example: --xdp --direction ingress --iface eth1
    #[arg(long)]
    pub xdp: bool,

    /// With --xdp: native (in the driver), generic (any device) or auto (native, else generic)
    ///
    /// auto decides per interface (lo has no native XDP); the `faultbpf: active:` line
    /// and the --json `attach` field say what each interface got.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = XdpMode::Auto, requires = "xdp")]
    pub xdp_mode: XdpMode,

    /// With a daemon: stay in the foreground, show counters, remove the rule on exit
    ///
    /// Without --wait the command adds the rule to the daemon, prints its id and
    /// returns; the rule lasts until `faultbpf rm ID` or its expiry (--for, default 10m).
    #[arg(long)]
    pub wait: bool,

    /// With a daemon: a name for the rule, shown in lists and metric labels
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Allow faulting port 22 or a daemon's API port, or a port another
    /// standalone faultbpf process already faults (both then act)
    #[arg(long)]
    pub force: bool,

    /// Run standalone even if a daemon listens on --socket
    #[arg(long)]
    pub standalone: bool,

    /// Fault inside this network namespace (a name from `ip netns`, or a path)
    ///
    /// Example: --netns app, or --netns /proc/1234/ns/net. Implies --standalone.
    #[arg(long, value_name = "NAME|PATH", group = "target")]
    pub netns: Option<String>,

    /// Fault inside the network namespace of this process
    ///
    /// Example: --pid $(pgrep -o my-api). Implies --standalone.
    #[arg(long, value_name = "PID", group = "target")]
    pub pid: Option<u32>,

    /// Fault inside this Docker or Podman container's network namespace
    ///
    /// The twin of `docker network disconnect`: --container api --port 5672 cuts the
    /// api container off RabbitMQ, Ctrl-C heals. Implies --standalone.
    #[arg(long, value_name = "NAME", group = "target")]
    pub container: Option<String>,

    /// The command `faultbpf run` runs (after `--`)
    #[arg(last = true, value_name = "CMD", hide = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// TOML file with interfaces, defaults and named rules (see `faultbpf check`)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Also serve /metrics (Prometheus) over TCP here, e.g. 127.0.0.1:9464
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Also serve the whole API over TCP here; needs --token-file
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    pub listen: Option<SocketAddr>,

    /// File holding the bearer token TCP clients must send (16+ characters)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Interface to attach to; repeatable (default: config's, else all that are up, and new ones)
    #[arg(long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,

    /// Dead man's switch: rules stop acting this long after the last heartbeat (default 5s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,

    /// How to attach the tc programs: auto, tcx or netlink
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,
}

impl FaultArgs {
    /// Where the programs attach: tc only, or with `--xdp` the XDP program
    /// for ingress (plus tc for egress with `--direction both`). `Err` is a
    /// usage message: `--xdp` with a fault or a direction it cannot do.
    pub fn hooks(&self, fault: &Fault) -> Result<Hooks, String> {
        if !self.xdp {
            return Ok(Hooks::tc(self.attach));
        }
        if self.direction == Direction::Egress {
            return Err(
                "--xdp attaches to ingress only, so it cannot act on --direction egress; \
                 drop --xdp (tc handles egress)"
                    .into(),
            );
        }
        let kinds = match fault {
            Fault::Chaos(mix) => mix.entries().iter().map(|(k, _)| *k).collect(),
            f => vec![f.kind()],
        };
        if let Some(k) = kinds.into_iter().find(|k| !k.on_xdp()) {
            let why = match k {
                faultbpf_common::FaultKind::Mark => {
                    "cannot mark packets: XDP runs before the kernel builds the skb that \
                     carries the mark"
                }
                _ => {
                    "cannot rewrite packets it lets through (corrupt, ecn): faultbpf does that \
                     on tc only, where the skb says how to fix their checksums"
                }
            };
            let command = match fault {
                Fault::Ecn => "mark --ecn",
                f => f.name(),
            };
            return Err(format!(
                "--xdp {why}; with --xdp, use blackhole, reset, hang or a chaos mix of \
                 drop/reset/hang, or run `faultbpf {command}` without --xdp"
            ));
        }
        let egress = (self.direction == Direction::Both).then_some(self.attach);
        Ok(Hooks::xdp(self.xdp_mode, egress))
    }

    /// Every port flag, in one list.
    pub fn port_ranges(&self) -> Vec<PortRange> {
        [&self.ports, &self.dports, &self.sports]
            .into_iter()
            .flatten()
            .copied()
            .collect()
    }
}

/// `--fragments`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fragments {
    Pass,
    Drop,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").required(true)))]
pub struct MarkArgs {
    /// Set skb->mark to N (decimal or 0x hex)
    ///
    /// Example: --value 0x42, then `nft add rule inet t c meta mark 0x42 counter`.
    #[arg(long, value_name = "N", group = "how", value_parser = parse_u32)]
    pub value: Option<u32>,

    /// Set ECN Congestion Experienced on ECN-capable packets
    #[arg(long, group = "how")]
    pub ecn: bool,

    #[command(flatten)]
    pub common: FaultArgs,
}

#[derive(Debug, Args)]
pub struct DelayArgs {
    #[command(flatten)]
    pub delay: DelayFlags,

    #[command(flatten)]
    pub common: FaultArgs,
}

/// The delay's own flags (also used by `chaos` for its `delay` entries).
#[derive(Debug, Args)]
pub struct DelayFlags {
    /// Mean delay in milliseconds (fractions allowed), e.g. --ms 300 or --ms 0.5
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    pub ms: Option<Duration>,

    /// Jitter around the mean, e.g. 20ms (default none)
    ///
    /// With --dist uniform (default) each packet gets mean ± up to jitter; with
    /// --dist normal jitter is the standard deviation (never below 0 delay).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub jitter: Option<Duration>,

    /// Jitter distribution: uniform or normal
    #[arg(long, value_name = "DIST", value_enum, default_value_t = Dist::Uniform)]
    pub dist: Dist,

    /// Let jitter reorder packets of a flow (default: never before the previous one)
    #[arg(long)]
    pub reorder: bool,
}

impl DelayFlags {
    /// The delay, if `--ms` was given; `needed` makes it mandatory.
    pub fn params(&self, needed: bool) -> Result<Option<DelayParams>, String> {
        let Some(mean) = self.ms else {
            return if needed {
                Err("--ms is required: the delay in milliseconds, e.g. --ms 300".into())
            } else {
                Ok(None)
            };
        };
        DelayParams::new(
            mean,
            self.jitter.unwrap_or_default(),
            self.dist,
            self.reorder,
        )
        .map(Some)
    }
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of milliseconds, e.g. 300 or 0.5"))?;
    faultbpf::faults::delay::ms(v)
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The mix: ACTION:PCT,... with actions drop, reset, hang, corrupt (sum <= 100)
    ///
    /// Example: --mix drop:20,reset:10,corrupt:5 (65 % of packets pass untouched)
    #[arg(long, value_name = "MIX")]
    pub mix: Mix,

    /// For `delay` entries of the mix: --ms, --jitter, --dist, --reorder
    #[command(flatten)]
    pub delay: DelayFlags,

    #[command(flatten)]
    pub common: FaultArgs,
}

/// `__reap` takes no arguments: the parent's intents arrive on its stdin
/// (see reaper.rs).
#[derive(Debug, Args)]
pub struct ReapArgs {}

fn either_port(s: &str) -> Result<PortRange, String> {
    PortRange::parse(Side::Either, s)
}

fn dst_port(s: &str) -> Result<PortRange, String> {
    PortRange::parse(Side::Dst, s)
}

fn src_port(s: &str) -> Result<PortRange, String> {
    PortRange::parse(Side::Src, s)
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("`{s}` is not a 32-bit number (decimal or 0x hex)"))
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number (expected a percentage from 0 to 100)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s} is out of range (expected 0 to 100)"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, error::ErrorKind};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("faultbpf").chain(args.iter().copied()))
    }

    fn blackhole(args: &[&str]) -> FaultArgs {
        let mut all = vec!["blackhole"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Fault(FaultCommand::Blackhole(a)) => a,
            c => panic!("unexpected {c:?}"),
        }
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let a = blackhole(&["--port", "5672"]);
        assert_eq!(
            a.port_ranges(),
            [PortRange::parse(Side::Either, "5672").unwrap()]
        );
        assert_eq!(a.per, Per::Packet);
        assert_eq!(a.fragments, Fragments::Pass);
        assert!(a.peers.is_empty());
        assert_eq!(a.pct, 100.0);
        assert_eq!(a.proto, Proto::All);
        assert_eq!(a.direction, Direction::Both);
        assert_eq!(a.attach, AttachMode::Auto);
        assert!(a.ifaces.is_empty() && a.lasts.is_none() && !a.json);
    }

    #[test]
    fn every_flag() {
        let a = blackhole(&[
            "--port",
            "53",
            "--dport",
            "8000-8100",
            "--sport",
            "9",
            "--per",
            "flow",
            "--peer",
            "10.200.0.0/24",
            "--fragments",
            "drop",
            "--pct",
            "0.5",
            "--proto",
            "udp",
            "--iface",
            "eth1",
            "--iface",
            "lo",
            "--direction",
            "egress",
            "--for",
            "1m30s",
            "--json",
            "--attach",
            "netlink",
        ]);
        assert_eq!(a.pct, 0.5);
        assert_eq!(a.port_ranges().len(), 3);
        assert_eq!(a.port_ranges()[1].side, Side::Dst);
        assert_eq!(a.port_ranges()[2].side, Side::Src);
        assert_eq!(a.per, Per::Flow);
        assert_eq!(a.peers.len(), 1);
        assert_eq!(a.fragments, Fragments::Drop);
        assert_eq!(a.proto, Proto::Udp);
        assert_eq!(a.ifaces, ["eth1", "lo"]);
        assert_eq!(a.direction, Direction::Egress);
        assert_eq!(a.lasts, Some(Duration::from_secs(90)));
        assert!(a.json);
        assert_eq!(a.attach, AttachMode::Netlink);
    }

    #[test]
    fn bad_values_are_named() {
        for (args, needle) in [
            (&["--port", "0"][..], "0"),
            (&["--port", "70000"][..], "70000"),
            (&["--port", "5", "--pct", "101"][..], "101"),
            (&["--port", "5", "--pct", "abc"][..], "abc"),
            (&["--port", "5", "--for", "5parsecs"][..], "5parsecs"),
            (&["--port", "5", "--for", "0s"][..], "0s"),
            (&["--port", "5", "--proto", "icmp"][..], "icmp"),
            (&["--port", "90-80"][..], "90-80"),
            (&["--port", "5", "--peer", "10.0.0.0/40"][..], "10.0.0.0/40"),
        ] {
            let mut all = vec!["blackhole"];
            all.extend_from_slice(args);
            let e = parse(&all).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn run_takes_a_fault_and_a_command() {
        let Command::Run { fault } =
            parse(&["run", "blackhole", "--port", "5672", "--", "pytest", "-x"])
                .unwrap()
                .command
        else {
            panic!()
        };
        let (f, a) = fault.into_parts().unwrap();
        assert_eq!(f, faultbpf::Fault::Blackhole);
        assert_eq!(a.command, ["pytest", "-x"]);
    }

    #[test]
    fn one_target_at_most() {
        assert!(parse(&["blackhole", "--port", "1", "--netns", "a"]).is_ok());
        assert!(parse(&["blackhole", "--port", "1", "--netns", "a", "--pid", "1"]).is_err());
    }

    #[test]
    fn a_port_is_required() {
        let e = parse(&["blackhole"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        assert!(parse(&["reset", "--sport", "80"]).is_ok());
    }

    #[test]
    fn mark_and_chaos_take_their_own_flags() {
        let Command::Fault(FaultCommand::Mark(m)) =
            parse(&["mark", "--port", "1", "--value", "0x42"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(m.value, Some(0x42));
        assert!(parse(&["mark", "--port", "1"]).is_err());
        assert!(parse(&["mark", "--port", "1", "--value", "1", "--ecn"]).is_err());
        let Command::Fault(FaultCommand::Chaos(c)) =
            parse(&["chaos", "--port", "1", "--mix", "drop:20,reset:10"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(c.mix.entries().len(), 2);
        let e = parse(&["chaos", "--port", "1", "--mix", "boom:5"]).unwrap_err();
        assert!(e.to_string().contains("boom"));
    }

    #[test]
    fn xdp_takes_the_ingress_half_of_what_it_can_do() {
        let a = blackhole(&["--port", "1"]);
        assert_eq!(a.hooks(&Fault::Blackhole), Ok(Hooks::tc(AttachMode::Auto)));
        let a = blackhole(&["--port", "1", "--xdp", "--attach", "netlink"]);
        assert_eq!(a.xdp_mode, XdpMode::Auto);
        let both = Hooks::xdp(XdpMode::Auto, Some(AttachMode::Netlink));
        assert_eq!(a.hooks(&Fault::Blackhole), Ok(both));
        assert_eq!(a.hooks(&Fault::Reset), Ok(both));
        assert_eq!(a.hooks(&Fault::Hang), Ok(both));
        let a = blackhole(&[
            "--port",
            "1",
            "--xdp",
            "--xdp-mode",
            "generic",
            "--direction",
            "ingress",
        ]);
        assert_eq!(
            a.hooks(&Fault::Blackhole),
            Ok(Hooks::xdp(XdpMode::Generic, None))
        );
        for (fault, needle) in [
            (Fault::Mark { value: 1 }, "cannot mark"),
            (Fault::Ecn, "mark --ecn"),
            (Fault::Corrupt, "corrupt"),
            (Fault::Chaos("drop:5,corrupt:5".parse().unwrap()), "corrupt"),
        ] {
            let e = a.hooks(&fault).unwrap_err();
            assert!(e.contains("--xdp") && e.contains(needle), "{e}");
        }
        assert!(
            a.hooks(&Fault::Chaos("drop:5,reset:5".parse().unwrap()))
                .is_ok()
        );
        let a = blackhole(&["--port", "1", "--xdp", "--direction", "egress"]);
        assert!(
            a.hooks(&Fault::Blackhole)
                .unwrap_err()
                .contains("--direction egress")
        );
        let e = parse(&["blackhole", "--port", "1", "--xdp-mode", "native"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    }
}
