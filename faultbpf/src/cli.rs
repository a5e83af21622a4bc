//! Command-line types (clap derive). The first line of each doc comment is
//! the short `-h` help; the rest shows up in `--help`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use faultbpf::{
    AttachMode, Direction, Fault, Hooks, Proto, XdpMode,
    faults::{self, Dist},
    http,
    rules::{Peer, Per, PortRange, Side},
    spec::{PortSpec, RuleSpec, parse_duration},
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
    /// Without a daemon on it, fault commands run standalone. A socket that exists
    /// but refuses you is an error, not a reason to run standalone. Example:
    /// --socket /tmp/fb.sock, or FAULTBPF_SOCKET=/tmp/fb.sock.
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
        /// Print `{"rules":[...]}` as the API answers it (see docs/openapi.yaml)
        #[arg(long)]
        json: bool,
    },

    /// Remove daemon rules by id, or all of them
    ///
    /// Removes every id it can and reports each; exits 1 if any id could not be
    /// removed (the others are removed all the same).
    #[command(
        after_help = "Examples:\n  faultbpf rm 3 4\n  faultbpf rm --all\n  faultbpf rm 3 --json"
    )]
    Rm {
        /// Rule ids, as `faultbpf rules` shows them
        #[arg(value_name = "ID", required_unless_present = "all")]
        ids: Vec<u32>,
        /// Remove every rule
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Print one line of JSON: {"removed":[rules...],"failed":[{"id","error"}...]}
        #[arg(long)]
        json: bool,
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

    /// See why packets are or are not faulted: one line per packet on the watched ports
    ///
    /// Watches the faultbpf programs attached in this network namespace (the daemon's,
    /// and faults started with --traceable): hook, interface, 5-tuple, the rule the
    /// packet met and why it was or was not faulted (acted, no rule, other direction,
    /// expired, lease stale, other peer, pct not drawn, not applicable, not parsed),
    /// with the verdict. The kernel writes at most 1000 events per second per CPU and
    /// counts the rest; tracing switches itself off within 3 s of this command's end,
    /// however it ends.
    #[command(after_help = "Examples:\n  \
        faultbpf trace --port 5432 --for 10s\n  \
        faultbpf trace --all --json | jq 'select(.reason == \"no rule\")'")]
    Trace(TraceArgs),

    /// Check a daemon config file and say what is wrong, with line and column
    #[command(after_help = "Example:\n  faultbpf check /etc/faultbpf.toml")]
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },

    /// Print a shell completion script for bash, zsh, fish, elvish or powershell
    #[command(after_help = "Examples:\n  \
        faultbpf completions bash > /etc/bash_completion.d/faultbpf\n  \
        faultbpf completions zsh > \"${fpath[1]}/_faultbpf\"\n  \
        faultbpf completions fish > ~/.config/fish/completions/faultbpf.fish")]
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },

    /// Write man pages for faultbpf and each subcommand into a directory
    ///
    /// One page per command, named like `faultbpf-blackhole.1`; the packages
    /// install them under /usr/share/man/man1.
    #[command(after_help = "Example:\n  faultbpf manpages /tmp/man && man -l /tmp/man/faultbpf.1")]
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },

    /// Answer selected HTTP requests to a port with 503, 429, 504 or a closed connection
    ///
    /// On the server's host: an sk_lookup program gives the selected new connections to the
    /// port to an HTTP/1.1 responder inside faultbpf, which answers the fault (a problem+json
    /// body, Retry-After when asked) and forwards every request it does not fault to the
    /// real server; all other connections go straight to the server and pay nothing. Runs in
    /// this process (in the server's network namespace) until Ctrl-C or --for; killing it
    /// sends new connections straight to the server again. Plain HTTP only: a TLS server
    /// on the port is refused.
    #[command(after_help = "Examples:\n  \
        faultbpf http --port 8080 --status 503 --retry-after 2s     every request gets 503\n  \
        faultbpf http --port 8080 --status 429 --pct 30             30 % of requests\n  \
        faultbpf http --port 8080 --status 503 --pct 10 --per connection   whole connections\n  \
        faultbpf http --port 8080 --status 504 --delay-first-byte 3s --path /api\n  \
        faultbpf http --port 8080 --status 500 --method POST --when after   error after the side effect")]
    Http(HttpArgs),

    /// Internal: removes netlink filters if the faultbpf that started it dies.
    #[command(name = "__reap", hide = true)]
    Reap(ReapArgs),
}

/// One subcommand per fault; each takes its help from the fault's
/// registry entry (`faults/<kind>.rs`), and `cli_names_the_registry`
/// checks that every fault has one.
#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    #[command(
        about = faults::blackhole::DEF.about,
        long_about = faults::blackhole::DEF.long_about,
        after_help = faults::blackhole::DEF.examples
    )]
    Blackhole(FaultArgs),

    #[command(
        about = faults::reset::DEF.about,
        long_about = faults::reset::DEF.long_about,
        after_help = faults::reset::DEF.examples
    )]
    Reset(FaultArgs),

    #[command(
        about = faults::hang::DEF.about,
        long_about = faults::hang::DEF.long_about,
        after_help = faults::hang::DEF.examples
    )]
    Hang(FaultArgs),

    #[command(
        about = faults::corrupt::DEF.about,
        long_about = faults::corrupt::DEF.long_about,
        after_help = faults::corrupt::DEF.examples
    )]
    Corrupt(FaultArgs),

    #[command(
        about = faults::mark::DEF.about,
        long_about = faults::mark::DEF.long_about,
        after_help = faults::mark::DEF.examples
    )]
    Mark(MarkArgs),

    #[command(
        about = faults::chaos::DEF.about,
        long_about = faults::chaos::DEF.long_about,
        after_help = faults::chaos::DEF.examples
    )]
    Chaos(ChaosArgs),

    #[command(
        about = faults::delay::DEF.about,
        long_about = faults::delay::DEF.long_about,
        after_help = faults::delay::DEF.examples
    )]
    Delay(DelayArgs),

    #[command(
        about = faults::duplicate::DEF.about,
        long_about = faults::duplicate::DEF.long_about,
        after_help = faults::duplicate::DEF.examples
    )]
    Duplicate(FaultArgs),

    #[command(
        about = faults::throttle::DEF.about,
        long_about = faults::throttle::DEF.long_about,
        after_help = faults::throttle::DEF.examples
    )]
    Throttle(ThrottleArgs),

    #[command(
        about = faults::dns::DEF.about,
        long_about = faults::dns::DEF.long_about,
        after_help = faults::dns::DEF.examples,
        mut_group("port_flags", |g| g.required(false))
    )]
    Dns(DnsArgs),
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
    /// The rule the flags describe, in its written form (the same
    /// `RuleSpec` the API takes, so both are validated by one path), and
    /// the flags.
    pub fn into_spec(self) -> (RuleSpec, FaultArgs) {
        match self {
            Self::Blackhole(a) => (a.spec("blackhole"), a),
            Self::Reset(a) => (a.spec("reset"), a),
            Self::Hang(a) => (a.spec("hang"), a),
            Self::Corrupt(a) => (a.spec("corrupt"), a),
            Self::Duplicate(a) => (a.spec("duplicate"), a),
            Self::Dns(d) => {
                let mut spec = d.common.spec("dns");
                spec.rcode = d.rcode;
                spec.domain = d.domains;
                (spec, d.common)
            }
            Self::Throttle(t) => {
                let mut spec = t.common.spec("throttle");
                spec.rate = Some(t.rate);
                spec.burst = t.burst;
                (spec, t.common)
            }
            Self::Mark(m) => {
                let mut spec = m.common.spec(if m.ecn { "ecn" } else { "mark" });
                spec.mark = m.value;
                (spec, m.common)
            }
            Self::Chaos(c) => {
                let mut spec = c.common.spec("chaos");
                spec.mix = Some(c.mix);
                c.delay.write(&mut spec);
                (spec, c.common)
            }
            Self::Delay(d) => {
                let mut spec = d.common.spec("delay");
                d.delay.write(&mut spec);
                (spec, d.common)
            }
        }
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
    /// With a daemon and no --wait: the added rule as the API answers it. With `run`:
    /// on stderr (stdout is the command's). Example: faultbpf blackhole --port 53
    /// --for 5s --json | jq .rules[0].acted_packets
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

    /// Allow a rule the guard rails refuse: port 22, the daemon's own ports, a cut of
    /// more than half of all ports (e.g. --port 1-65535), or a port another standalone
    /// faultbpf process already faults (both then act)
    #[arg(long)]
    pub force: bool,

    /// Run standalone even if a daemon listens on --socket
    #[arg(long)]
    pub standalone: bool,

    /// Load the programs so that `faultbpf trace` can watch them (the daemon always does)
    ///
    /// Off by default: the trace points double the kernel verifier's work at start
    /// (about 40 ms more here); with no tracer running a packet pays one load.
    #[arg(long)]
    pub traceable: bool,

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
    /// api container off RabbitMQ, Ctrl-C heals. With a daemon listening, the rule is the
    /// daemon's: it finds the container itself (its own DOCKER_HOST or CONTAINER_HOST)
    /// and follows it when it restarts; with --standalone or no daemon, this process
    /// enters the container's namespace.
    ///
    /// NAME or ID, asked of docker then podman (see --engine); the engines'
    /// own DOCKER_HOST and CONTAINER_HOST say which daemon to ask.
    #[arg(long, value_name = "NAME|ID", group = "target")]
    pub container: Option<String>,

    /// The container engine that knows --container: docker or podman
    ///
    /// Default: docker, then podman, whichever knows the container.
    #[arg(long, value_name = "ENGINE", requires = "container")]
    pub engine: Option<faultbpf::target::Engine>,

    /// The command `faultbpf run` runs (after `--`)
    #[arg(last = true, value_name = "CMD", hide = true)]
    pub command: Vec<String>,
}

/// `faultbpf http`'s flags; validated by `faultbpf::http::Options::validate`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The real server's TCP port: on its host, or the port the clients here dial
    #[arg(long, value_name = "PORT")]
    pub port: u16,

    /// Where faultbpf runs: on the server's host, or on the clients' host (the server is elsewhere)
    ///
    /// server: new connections to the port in this network namespace are steered
    /// (sk_lookup). client: connects from this network namespace to the port, at any
    /// address, are steered (cgroup connect hooks; the application still sees the
    /// address it dialled), and forwarded to where each was going. auto: server
    /// where a server listens on the port here, client elsewhere.
    #[arg(long, value_name = "SIDE", value_enum, default_value_t = http::Side::Auto)]
    pub side: http::Side,

    /// --side client: steer only the connects of processes in this cgroup v2 (default: all)
    ///
    /// A path from the cgroup v2 root, e.g. /system.slice/app.service. Whatever the
    /// cgroup, only connects from faultbpf's network namespace are steered.
    #[arg(long, value_name = "PATH", default_value = http::DEFAULT_CGROUP)]
    pub cgroup: String,

    /// What a faulted request gets: a status code 400-599, or `abort` (closed unanswered)
    #[arg(long, value_name = "CODE|abort", value_parser = http::Status::parse)]
    pub status: http::Status,

    /// Add `Retry-After: SECONDS` to the fault (rounded up to whole seconds), e.g. 2s
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retry_after: Option<Duration>,

    /// Percentage of requests (or connections, with --per connection) to fault
    #[arg(long, value_name = "PCT", default_value_t = 100.0)]
    pub pct: f64,

    /// Draw --pct per request (every connection passes through faultbpf) or per connection
    ///
    /// per connection: the kernel draws once per new connection; unselected connections
    /// never reach faultbpf.
    #[arg(long, value_name = "UNIT", value_enum, default_value_t = http::Per::Request)]
    pub per: http::Per,

    /// Fault only this method; repeatable (default: every method)
    #[arg(long = "method", value_name = "METHOD")]
    pub methods: Vec<String>,

    /// Fault only paths starting with this prefix; repeatable (default: every path)
    #[arg(long = "path", value_name = "PREFIX")]
    pub paths: Vec<String>,

    /// before: the server never sees a faulted request; after: it acts, then its answer is replaced
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = http::When::Before)]
    pub when: http::When,

    /// Wait this long before the faulted answer's first byte (e.g. 504 after 3s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub delay_first_byte: Option<Duration>,

    /// Lift the fault after this long (default: until Ctrl-C)
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub lasts: Option<Duration>,

    /// Print the final counters as one line of JSON on stdout
    #[arg(long)]
    pub json: bool,

    /// Accepted for symmetry with the packet faults: `http` always runs in this process
    #[arg(long)]
    pub standalone: bool,
}

impl HttpArgs {
    /// The fault these flags ask for, validated.
    pub fn options(self) -> Result<http::Options, String> {
        let mut o = http::Options {
            port: self.port,
            status: self.status,
            retry_after: self.retry_after,
            pct: self.pct,
            per: self.per,
            methods: self.methods,
            paths: self.paths,
            when: self.when,
            delay_first_byte: self.delay_first_byte.unwrap_or_default(),
            side: self.side,
            cgroup: self.cgroup,
        };
        o.validate()?;
        Ok(o)
    }
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Port to watch, as source or destination; repeatable
    #[arg(long = "port", value_name = "PORT", required_unless_present = "all", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Watch every packet instead (rate-limited), also those that cannot be parsed
    #[arg(long, conflicts_with = "ports")]
    pub all: bool,

    /// Stop after this long, e.g. 10s (default: until Ctrl-C)
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub lasts: Option<Duration>,

    /// One JSON object per packet: {"hook","iface","proto","src","dst","rule","reason","action","verdict"}
    #[arg(long)]
    pub json: bool,

    /// Trace the faultbpf programs in this network namespace (a name from `ip netns`, or a path)
    #[arg(long, value_name = "NAME|PATH", group = "target")]
    pub netns: Option<String>,

    /// Trace the faultbpf programs in the network namespace of this process
    #[arg(long, value_name = "PID", group = "target")]
    pub pid: Option<u32>,

    /// Trace the faultbpf programs in this Docker or Podman container's network namespace
    #[arg(long, value_name = "NAME|ID", group = "target")]
    pub container: Option<String>,

    /// The container engine that knows --container: docker or podman
    #[arg(long, value_name = "ENGINE", requires = "container")]
    pub engine: Option<faultbpf::target::Engine>,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// TOML file with interfaces, defaults and named rules (see `faultbpf check`)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Re-read --config when its content changes (checked every second) and apply it as SIGHUP does
    ///
    /// All or nothing, like SIGHUP: a file that does not parse or cannot be
    /// applied changes nothing and is logged. Made for a Kubernetes
    /// ConfigMap mounted as the config (the kubelet swaps it in place).
    #[arg(long, requires = "config")]
    pub watch_config: bool,

    /// Also serve /metrics (Prometheus) over TCP here, e.g. 127.0.0.1:9464
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Also serve the whole API over TCP here; needs --token-file
    #[arg(long, value_name = "ADDR", requires = "token_file")]
    pub listen: Option<SocketAddr>,

    /// File holding the bearer token TCP clients must send (16+ characters)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Serve --listen over TLS with this certificate chain (PEM)
    ///
    /// Needs --tls-key; the bearer token is still required.
    #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require TCP clients to present a certificate signed by this CA (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Interface to attach to; repeatable (default: config's, else all that are up, and new ones)
    #[arg(long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,

    /// Dead man's switch: rules stop acting this long after the last heartbeat (default 5s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lease: Option<Duration>,

    /// How to attach the tc programs: auto, tcx or netlink
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// Group that owns the Unix socket; with --socket-mode 0660 its members may add and remove rules
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Permission bits of the Unix socket, in octal (default 0600: root only; 0660 with --socket-group)
    #[arg(long, value_name = "MODE", value_parser = faultbpf::config::parse_socket_mode)]
    pub socket_mode: Option<u32>,
}

impl FaultArgs {
    /// The common part of the rule spec: every flag but the fault's own.
    pub fn spec(&self, fault: &str) -> RuleSpec {
        let mut spec = RuleSpec {
            name: self.name.clone(),
            proto: Some(self.proto),
            peer: self.peers.iter().map(|p| p.to_string()).collect(),
            pct: Some(self.pct),
            per: Some(self.per),
            direction: Some(self.direction),
            fragments: self.fragments == Fragments::Drop,
            lasts: self
                .lasts
                .map(|d| humantime::format_duration(d).to_string()),
            force: self.force,
            ..RuleSpec::new(fault)
        };
        for r in self.port_ranges() {
            let text = if r.first == r.last {
                PortSpec::Number(r.first.into())
            } else {
                PortSpec::Text(format!("{}-{}", r.first, r.last))
            };
            match r.side {
                Side::Either => spec.port.push(text),
                Side::Dst => spec.dport.push(text),
                Side::Src => spec.sport.push(text),
            }
        }
        spec
    }

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
        if let Some(def) = fault.parts().into_iter().find(|d| !d.xdp) {
            let capable = faults::REGISTRY.iter().filter(|d| d.xdp);
            let faults: Vec<&str> = capable
                .clone()
                .filter_map(|d| d.mix_action.map(|_| d.name))
                .collect();
            let actions: Vec<&str> = capable.filter_map(|d| d.mix_action).collect();
            return Err(format!(
                "--xdp {}; with --xdp, use {} or a chaos mix of {}, or run `faultbpf {}` \
                 without --xdp",
                def.xdp_refusal,
                faults.join(", "),
                actions.join("/"),
                fault.def().command
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
    /// Writes the flags into a spec's delay fields.
    pub fn write(&self, spec: &mut RuleSpec) {
        spec.delay_ms = self.ms.map(|d| d.as_secs_f64() * 1e3);
        spec.jitter = self
            .jitter
            .map(|j| humantime::format_duration(j).to_string());
        spec.dist = (self.dist != Dist::Uniform).then_some(self.dist);
        spec.reorder = self.reorder;
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
pub struct DnsArgs {
    /// Answer with this response code; without it, matched queries vanish
    ///
    /// nxdomain: the name does not exist; servfail: the resolver failed (clients
    /// retry); refused: the resolver will not answer.
    #[arg(long, value_name = "RCODE")]
    pub rcode: Option<faults::Rcode>,

    /// Only this name and names under it (case-insensitive); repeatable
    ///
    /// Example: --domain db.internal takes db.internal and a.db.internal.
    #[arg(long = "domain", value_name = "SUFFIX", value_parser = parse_domain)]
    pub domains: Vec<String>,

    #[command(flatten)]
    pub common: FaultArgs,
}

fn parse_domain(s: &str) -> Result<String, String> {
    faults::dns::domain(s)
}

#[derive(Debug, Args)]
pub struct ThrottleArgs {
    /// The rate, as tc writes it: 10mbit, 512kbit, 1gbit (or 100kbps, bytes)
    ///
    /// Where the kernel has sch_fq and sch_netem, traffic over it waits its turn
    /// (shaping, at most 200 ms, then dropped); elsewhere it is dropped
    /// (policing), so TCP slows to about the rate. The active: line says which.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate: String,

    /// The token bucket's depth, as tc writes it: 64kb, 1mb (default: 200 ms at the rate, at least 64kb)
    ///
    /// The most that passes at once after a quiet spell; below the largest packet
    /// (64 KiB for GSO on veth) nothing passes.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub burst: Option<String>,

    #[command(flatten)]
    pub common: FaultArgs,
}

fn parse_rate(s: &str) -> Result<String, String> {
    faults::throttle::parse_rate(s)?;
    Ok(s.to_string())
}

fn parse_size(s: &str) -> Result<String, String> {
    faults::throttle::parse_size(s)?;
    Ok(s.to_string())
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The mix: ACTION:PCT,... with actions drop, reset, hang, corrupt, delay, duplicate (sum <= 100)
    ///
    /// Example: --mix drop:20,reset:10,corrupt:5 (65 % of packets pass untouched)
    #[arg(long, value_name = "MIX", value_parser = parse_mix)]
    pub mix: String,

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

/// A mix, checked at parse time (so a bad one is a usage error naming it)
/// and kept as written: the rule spec carries it as text.
fn parse_mix(s: &str) -> Result<String, String> {
    s.parse::<faults::Mix>()?;
    Ok(s.to_string())
}

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
    fn completions_and_manpages_parse() {
        assert!(matches!(
            parse(&["completions", "bash"]).unwrap().command,
            Command::Completions {
                shell: clap_complete::Shell::Bash
            }
        ));
        assert!(parse(&["completions", "tcsh"]).is_err());
        assert!(matches!(
            parse(&["manpages", "/tmp/m"]).unwrap().command,
            Command::Manpages { dir } if dir == std::path::Path::new("/tmp/m")
        ));
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
        let (spec, a) = fault.into_spec();
        assert_eq!(spec.fault, "blackhole");
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
        assert_eq!(c.mix, "drop:20,reset:10");
        let e = parse(&["chaos", "--port", "1", "--mix", "boom:5"]).unwrap_err();
        assert!(e.to_string().contains("boom"));
    }

    #[test]
    fn cli_names_the_registry() {
        // Every fault is reached by a subcommand (ecn by `mark --ecn`), and
        // every fault subcommand is a fault.
        let cmd = Cli::command();
        for def in faults::REGISTRY {
            let sub = def.command.split_whitespace().next().unwrap();
            let c = cmd
                .find_subcommand(sub)
                .unwrap_or_else(|| panic!("no subcommand for {}", def.name));
            assert_eq!(
                c.get_about().map(|a| a.to_string()).as_deref(),
                Some(def.about)
            );
            if let Some(flag) = def.command.split_whitespace().nth(1) {
                let long = flag.trim_start_matches("--");
                assert!(
                    c.get_arguments().any(|a| a.get_long() == Some(long)),
                    "{}",
                    def.name
                );
            }
        }
        let fault_subs = FaultCommand::augment_subcommands(clap::Command::new("x"));
        for sub in fault_subs.get_subcommands() {
            assert!(
                faults::REGISTRY
                    .iter()
                    .any(|d| d.command.starts_with(sub.get_name())),
                "{} is not in the registry",
                sub.get_name()
            );
        }
    }

    #[test]
    fn flags_become_the_spec_the_api_takes() {
        for (args, json) in [
            (
                &[
                    "delay", "--port", "5", "--ms", "300", "--jitter", "20ms", "--dist", "normal",
                ][..],
                r#"{"fault":"delay","port":[5],"proto":"all","pct":100.0,"per":"packet","direction":"both","delay_ms":300.0,"jitter":"20ms","dist":"normal"}"#,
            ),
            (
                &[
                    "mark", "--dport", "80-81", "--ecn", "--name", "x", "--force",
                ][..],
                r#"{"name":"x","fault":"ecn","dport":["80-81"],"proto":"all","pct":100.0,"per":"packet","direction":"both","force":true}"#,
            ),
            (
                &["dns", "--rcode", "nxdomain", "--domain", "Db.Internal."][..],
                r#"{"fault":"dns","proto":"all","pct":100.0,"per":"packet","direction":"both","rcode":"nxdomain","domain":["db.internal"]}"#,
            ),
            (
                &[
                    "throttle", "--port", "5432", "--rate", "10mbit", "--burst", "64kb",
                ][..],
                r#"{"fault":"throttle","port":[5432],"proto":"all","pct":100.0,"per":"packet","direction":"both","rate":"10mbit","burst":"64kb"}"#,
            ),
            (
                &[
                    "chaos", "--sport", "9", "--mix", "drop:5", "--for", "30s", "--per", "flow",
                ][..],
                r#"{"fault":"chaos","sport":[9],"proto":"all","pct":100.0,"per":"flow","direction":"both","mix":"drop:5","for":"30s"}"#,
            ),
        ] {
            let Command::Fault(fc) = parse(args).unwrap().command else {
                panic!()
            };
            let (spec, _) = fc.into_spec();
            let want: RuleSpec = serde_json::from_str(json).unwrap();
            assert_eq!(spec, want, "{args:?}");
        }
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
