//! Command-line types (clap derive). The first line of each doc comment is
//! the short `-h` help; the rest shows up in `--help`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use faultbpf::{AttachMode, Direction, Proto};

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
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

    /// Internal: removes netlink filters if the faultbpf that started it dies.
    #[command(name = "__reap", hide = true)]
    Reap(ReapArgs),
}

/// Flags every fault takes.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Port to fault, as destination or source (1-65535)
    ///
    /// Matching either side cuts both directions of every flow to the dependency,
    /// e.g. --port 5432 catches queries to Postgres and its replies.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// Percent of matched packets to act on, 0-100 (default 100)
    ///
    /// Decided per packet by the kernel's random numbers; 0 and 100 are exact.
    /// Fractions are allowed: --pct 0.5.
    #[arg(long, value_name = "PCT", default_value = "100", value_parser = parse_pct)]
    pub pct: f64,

    /// Which L4 protocol to match: tcp, udp or all
    ///
    /// Example: --proto udp for DNS on port 53 without touching DNS over TCP.
    #[arg(long, value_name = "PROTO", value_enum, default_value_t = Proto::All)]
    pub proto: Proto,

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
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    #[arg(long = "filter", value_parser = faultbpf::reaper::Filter::parse)]
    pub filters: Vec<faultbpf::reaper::Filter>,
    #[arg(long)]
    pub clsact: Vec<String>,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); examples: 30s, 5m, 1h30m"))?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero; give a positive duration"));
    }
    Ok(d)
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
            Command::Blackhole(a) => a,
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
        assert_eq!(a.port, 5672);
        assert_eq!(a.pct, 100.0);
        assert_eq!(a.proto, Proto::All);
        assert_eq!(a.direction, Direction::Both);
        assert_eq!(a.attach, AttachMode::Auto);
        assert!(a.ifaces.is_empty() && a.lasts.is_none() && !a.json);
    }

    #[test]
    fn every_flag() {
        let a = blackhole(&[
            "--port", "53", "--pct", "0.5", "--proto", "udp", "--iface", "eth1", "--iface", "lo",
            "--direction", "egress", "--for", "1m30s", "--json", "--attach", "netlink",
        ]);
        assert_eq!(a.pct, 0.5);
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
        ] {
            let mut all = vec!["blackhole"];
            all.extend_from_slice(args);
            let e = parse(&all).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn port_is_required() {
        let e = parse(&["blackhole"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
    }
}
