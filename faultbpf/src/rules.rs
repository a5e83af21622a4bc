//! A validated rule and its translation into the map entries the kernel
//! programs read (`faultbpf_common::RuleKey` / `RuleValue`, peer prefixes).

use std::{collections::BTreeMap, fmt, net::IpAddr, str::FromStr, time::Duration};

use faultbpf_common::{
    DIR_EGRESS, DIR_INGRESS, FLAG_PEERS, FLAG_PER_FLOW, FLAG_REORDER, FLAG_SHAPE, PEER_SLOT_BITS,
    PROTO_TCP, PROTO_UDP, RuleKey, RuleValue, SIDE_DST, SIDE_FRAGMENT, SIDE_SRC, peer_key_data,
    threshold_from_pct,
};
use serde::{Deserialize, Serialize};

use crate::faults::Fault;

/// Which L4 protocol a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
    /// TCP and UDP.
    All,
}

impl Proto {
    fn numbers(self) -> &'static [u8] {
        match self {
            Self::Tcp => &[PROTO_TCP],
            Self::Udp => &[PROTO_UDP],
            Self::All => &[PROTO_TCP, PROTO_UDP],
        }
    }

    /// For humans: "tcp", "udp", "tcp+udp".
    pub fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::All => "tcp+udp",
        }
    }
}

/// The hooks a rule acts on, seen from the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Packets arriving on the interface.
    Ingress,
    /// Packets leaving through the interface.
    Egress,
    /// Both.
    Both,
}

impl Direction {
    fn bits(self) -> u8 {
        match self {
            Self::Ingress => DIR_INGRESS,
            Self::Egress => DIR_EGRESS,
            Self::Both => DIR_INGRESS | DIR_EGRESS,
        }
    }
}

/// What `--pct` draws for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// Each packet independently.
    Packet,
    /// Each connection (5-tuple) once: a hit flow is faulted whole, the
    /// others not at all.
    Flow,
    /// `http` only: each request (every connection is steered).
    #[value(skip)]
    Request,
    /// `http` only: each new connection, drawn in the kernel.
    #[value(skip)]
    Connection,
}

/// Which port of a packet a `PortRange` is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Destination or source (`--port`).
    Either,
    /// Destination (`--dport`).
    Dst,
    /// Source (`--sport`).
    Src,
}

/// One port or an inclusive range, `5432` or `8000-8100`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub side: Side,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Parses `P` or `A-B` (1..=65535, A <= B) for `side`.
    pub fn parse(side: Side, s: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
                Ok(n) => Err(format!("port {n} is out of range (expected 1 to 65535)")),
                Err(_) => Err(format!("`{p}` is not a port (expected 1 to 65535 or A-B)")),
            }
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("`{s}`: the range runs backwards"));
        }
        Ok(Self { side, first, last })
    }

    fn sides(self) -> &'static [u8] {
        match self.side {
            Side::Either => &[SIDE_DST, SIDE_SRC],
            Side::Dst => &[SIDE_DST],
            Side::Src => &[SIDE_SRC],
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Either => "port",
            Side::Dst => "dport",
            Side::Src => "sport",
        };
        if self.first == self.last {
            write!(f, "{side} {}", self.first)
        } else {
            write!(f, "{side} {}-{}", self.first, self.last)
        }
    }
}

/// A `--peer` prefix, v4 or v6, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub addr: IpAddr,
    pub len: u8,
}

impl Peer {
    /// The 16-byte address (IPv4 mapped) and prefix length the trie uses.
    fn trie_prefix(&self) -> ([u8; 16], u32) {
        match self.addr {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 96 + u32::from(self.len)),
            IpAddr::V6(a) => (a.octets(), u32::from(self.len)),
        }
    }
}

impl FromStr for Peer {
    type Err = String;

    /// `10.200.0.3`, `10.200.0.0/24`, `fd00:200::/64`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => match l.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: prefix length must be 0 to {max}")),
            },
            None => max,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One fault on a set of ports.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Counter slot, also the rule's id in reports.
    pub id: u32,
    pub fault: Fault,
    /// At least one.
    pub ports: Vec<PortRange>,
    pub proto: Proto,
    /// Only traffic to or from these prefixes; empty means everyone.
    pub peers: Vec<Peer>,
    /// Percent of matched packets (or flows) acted on, 0..=100.
    pub pct: f64,
    pub per: Per,
    pub direction: Direction,
    /// Also act on non-first IP fragments of `proto` (they carry no ports).
    pub fragments: bool,
    /// How long the rule lasts from the moment it is inserted; enforced by
    /// the kernel, so it ends even if faultbpf does not.
    pub lasts: Option<Duration>,
    /// Seed of the per-flow hash.
    pub seed: u32,
}

impl Rule {
    /// A rule with defaults: all protocols, both directions, 100 %, every
    /// packet, no peers, no fragments, no expiry.
    pub fn new(id: u32, fault: Fault, ports: Vec<PortRange>) -> Self {
        Self {
            id,
            fault,
            ports,
            proto: Proto::All,
            peers: Vec::new(),
            pct: 100.0,
            per: Per::Packet,
            direction: Direction::Both,
            fragments: false,
            lasts: None,
            seed: 0,
        }
    }

    /// The rule-index keys, sorted, without duplicates: ranges are merged
    /// per (protocol, side) first, so 100 copies of `9461-65535` cost what
    /// one does.
    pub fn keys(&self) -> Vec<RuleKey> {
        let mut spans: BTreeMap<(u8, u8), Vec<(u16, u16)>> = BTreeMap::new();
        for &proto in self.proto.numbers() {
            for r in &self.ports {
                for &side in r.sides() {
                    spans
                        .entry((proto, side))
                        .or_default()
                        .push((r.first, r.last));
                }
            }
            if self.fragments {
                spans
                    .entry((proto, SIDE_FRAGMENT))
                    .or_default()
                    .push((0, 0));
            }
        }
        let mut keys = Vec::new();
        for ((proto, side), mut v) in spans {
            v.sort_unstable();
            let mut next = 0u32; // first port not yet emitted for this side
            for (first, last) in v {
                let from = u32::from(first).max(next);
                for port in from..=u32::from(last) {
                    keys.push(RuleKey::new(proto, side, port as u16));
                }
                next = next.max(u32::from(last) + 1);
            }
        }
        keys
    }

    /// The rule's entry in the kernel's `RULES`, with expiry counted from
    /// `now_ns` (CLOCK_MONOTONIC, the clock the kernel side reads).
    pub fn value(&self, now_ns: u64) -> RuleValue {
        let expires_ns = self.lasts.map_or(0, |d| {
            now_ns.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        });
        let mut flags = 0;
        if self.per == Per::Flow {
            flags |= FLAG_PER_FLOW;
        }
        if !self.peers.is_empty() {
            flags |= FLAG_PEERS;
        }
        if self.fault.delay().is_some_and(|d| d.reorder) {
            flags |= FLAG_REORDER;
        }
        if self.fault.throttle().is_some_and(|t| t.shape) {
            flags |= FLAG_SHAPE;
        }
        RuleValue {
            slot: self.id,
            action: self.fault.kind().as_u8(),
            directions: self.direction.bits(),
            flags,
            dist: self.fault.delay().map_or(0, |d| d.dist.as_u8()),
            threshold: threshold_from_pct(self.pct),
            seed: self.seed,
            mark: self.fault.mark(),
            expires_ns,
            mix: self.fault.mix(),
            delay_us: self.fault.delay().map_or(0, |d| micros(d.mean)),
            jitter_us: self.fault.delay().map_or(0, |d| micros(d.jitter)),
            rate_bytes: self.fault.throttle().map_or(0, |t| t.rate_bytes),
            burst_ns: self.fault.throttle().map_or(0, |t| t.burst_ns()),
            dns_rcode: self
                .fault
                .dns()
                .map_or(0, |d| d.rcode.map_or(0, |r| r.code())),
            dns_domains: u8::from(self.fault.dns().is_some_and(|d| !d.domains.is_empty())),
            _pad: [0; 6],
        }
    }

    /// The `DNS_SUFFIXES` keys of a `dns` rule's domains.
    pub fn dns_keys(&self) -> Vec<faultbpf_common::DnsKey> {
        self.fault.dns().map_or_else(Vec::new, |d| {
            d.domains
                .iter()
                .map(|name| faultbpf_common::DnsKey {
                    hash: crate::faults::dns::suffix_hash(name),
                    slot: self.id,
                    _pad: 0,
                })
                .collect()
        })
    }

    /// The peers-trie entries: (prefix length, key data).
    pub fn peer_entries(&self) -> Vec<(u32, [u8; 20])> {
        self.peers
            .iter()
            .map(|p| {
                let (addr, len) = p.trie_prefix();
                (PEER_SLOT_BITS + len, peer_key_data(self.id, &addr))
            })
            .collect()
    }

    /// The ports as text: "port 5432", "dport 8000-8100".
    pub fn ports_text(&self) -> Vec<String> {
        self.ports.iter().map(|p| p.to_string()).collect()
    }

    /// One line for humans: "blackhole tcp+udp port 5672 (100%)".
    pub fn describe(&self) -> String {
        let mut s = self.fault.name().to_string();
        if let Fault::Chaos(mix) = &self.fault {
            s += &format!(" [{mix}]");
        }
        if let Some(d) = self.fault.delay() {
            s += &format!(" {}", d.describe());
        }
        if let Fault::Mark { value } = &self.fault {
            s += &format!(" {value:#x}");
        }
        if let Some(t) = self.fault.throttle() {
            s += &format!(" {}", t.describe());
        }
        if let Some(d) = self.fault.dns() {
            s += &format!(" {}", d.describe());
        }
        s += &format!(" {} {}", self.proto.label(), self.ports_text().join(", "));
        if !self.peers.is_empty() {
            let peers: Vec<String> = self.peers.iter().map(|p| p.to_string()).collect();
            s += &format!(" peer {}", peers.join(", "));
        }
        if !matches!(self.fault, Fault::Chaos(_)) || self.pct < 100.0 {
            s += &format!(
                " ({}%{})",
                self.pct,
                if self.per == Per::Flow {
                    " of flows"
                } else {
                    ""
                }
            );
        }
        match self.direction {
            Direction::Both => {}
            Direction::Ingress => s += ", ingress only",
            Direction::Egress => s += ", egress only",
        }
        if self.fragments {
            s += ", fragments too";
        }
        s
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// A fresh seed for the per-flow hash, so each rule picks other flows.
pub fn random_seed() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        // No entropy syscall: the clock is random enough to pick flows.
        monotonic_ns() as u32
    }
}

/// Now on CLOCK_MONOTONIC in ns, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use faultbpf_common::{FaultKind, THRESHOLD_ALWAYS};

    use super::*;

    fn port(s: &str) -> PortRange {
        PortRange::parse(Side::Either, s).unwrap()
    }

    #[test]
    fn either_port_gives_both_sides_for_each_protocol() {
        let r = Rule::new(3, Fault::Blackhole, vec![port("5672")]);
        let e = r.keys();
        assert_eq!(e.len(), 4);
        assert!(e.contains(&RuleKey::new(PROTO_TCP, SIDE_DST, 5672)));
        assert!(e.contains(&RuleKey::new(PROTO_UDP, SIDE_SRC, 5672)));
        let v = r.value(1);
        assert_eq!(v.slot, 3);
        assert_eq!(v.action, FaultKind::Drop.as_u8());
        assert_eq!(v.directions, DIR_INGRESS | DIR_EGRESS);
        assert_eq!(v.threshold, THRESHOLD_ALWAYS);
        assert_eq!((v.expires_ns, v.flags), (0, 0));
    }

    #[test]
    fn ranges_sides_and_fragments() {
        let mut r = Rule::new(
            0,
            Fault::Reset,
            vec![
                PortRange::parse(Side::Dst, "8000-8002").unwrap(),
                PortRange::parse(Side::Dst, "8001").unwrap(),
            ],
        );
        r.proto = Proto::Tcp;
        r.fragments = true;
        let keys = r.keys();
        assert_eq!(keys.len(), 4, "{keys:?}");
        assert!(keys.contains(&RuleKey::new(PROTO_TCP, SIDE_FRAGMENT, 0)));
        assert!(!keys.iter().any(|k| k.side == SIDE_SRC));
    }

    #[test]
    fn duplicated_and_overlapping_ranges_give_each_key_once_in_order() {
        let mut ports = vec![PortRange::parse(Side::Dst, "9461-65535").unwrap(); 100];
        ports.push(PortRange::parse(Side::Either, "9000-9470").unwrap());
        ports.push(PortRange::parse(Side::Src, "65535").unwrap());
        let mut r = Rule::new(0, Fault::Blackhole, ports);
        r.fragments = true;
        let started = std::time::Instant::now();
        let keys = r.keys();
        let took = started.elapsed();
        // What the keys are: every (proto, side, port) once, sorted.
        let mut want = std::collections::BTreeSet::new();
        for proto in [PROTO_TCP, PROTO_UDP] {
            want.extend((9000..=65535).map(|p| (proto, SIDE_DST, p)));
            want.extend((9000..=9470).map(|p| (proto, SIDE_SRC, p)));
            want.insert((proto, SIDE_SRC, 65535));
            want.insert((proto, SIDE_FRAGMENT, 0));
        }
        let want: Vec<RuleKey> = want
            .into_iter()
            .map(|(p, s, port)| RuleKey::new(p, s, port))
            .collect();
        assert_eq!(keys, want);
        // Merged, not expanded 100 times: the naive expansion of the same
        // rule (the control) takes far longer.
        let started = std::time::Instant::now();
        let mut naive = std::collections::BTreeSet::new();
        for proto in [PROTO_TCP, PROTO_UDP] {
            for r in &r.ports {
                for &side in r.sides() {
                    for port in r.first..=r.last {
                        naive.insert((proto, side, port));
                    }
                }
            }
        }
        let control = started.elapsed();
        assert!(
            took * 5 < control,
            "keys() took {took:?}, the naive expansion {control:?}"
        );
    }

    #[test]
    fn expiry_flags_and_mix() {
        let mut r = Rule::new(
            1,
            Fault::Chaos("drop:20,reset:10".parse().unwrap()),
            vec![port("53")],
        );
        r.lasts = Some(Duration::from_secs(2));
        r.per = Per::Flow;
        r.peers = vec!["10.200.0.0/24".parse().unwrap()];
        let v = r.value(1_000);
        assert_eq!(v.expires_ns, 2_000_001_000);
        assert_eq!(v.flags, FLAG_PER_FLOW | FLAG_PEERS);
        assert_eq!(v.action, FaultKind::Mix.as_u8());
        assert_eq!(v.mix[0].action, FaultKind::Drop.as_u8());
        assert_eq!(v.mix[1].upto, threshold_from_pct(30.0));
        assert_eq!(v.mix[2].action, 0);
    }

    #[test]
    fn port_ranges_are_validated() {
        assert_eq!(port("8000-8100").last, 8100);
        for (s, needle) in [
            ("0", "out of range"),
            ("70000", "70000"),
            ("http", "http"),
            ("90-80", "backwards"),
        ] {
            let e = PortRange::parse(Side::Either, s).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn peers_parse_mask_and_map() {
        let p: Peer = "10.200.0.7/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.200.0.0/24");
        let h: Peer = "fd00:200::3".parse().unwrap();
        assert_eq!(h.len, 128);
        let mut r = Rule::new(5, Fault::Blackhole, vec![port("1")]);
        r.peers = vec![p, h];
        let e = r.peer_entries();
        assert_eq!(e[0].0, PEER_SLOT_BITS + 96 + 24);
        assert_eq!(&e[0].1[..4], &5u32.to_be_bytes());
        assert_eq!(&e[0].1[14..18], &[0xff, 0xff, 10, 200]);
        assert_eq!(e[1].0, PEER_SLOT_BITS + 128);
        for bad in ["10.200.0.0/33", "nope", "fd00::/129"] {
            assert!(bad.parse::<Peer>().is_err(), "{bad}");
        }
    }
}
