//! The `#[repr(C)]` types and constants that faultbpf's kernel programs and
//! its user space both read.
//!
//! Everything here is laid out by hand: fixed-width integers, explicit
//! padding and `u8` flags instead of `bool` (a `bool` with any bit pattern
//! other than 0 or 1 is undefined behaviour, and the kernel side reads these
//! bytes straight out of a map). A size assert sits beside each type, so a
//! change that moves a field fails to compile instead of silently
//! disagreeing with the other side.
#![no_std]

/// Name of the array of `RuleValue`s, indexed by rule slot.
pub const RULES_MAP: &str = "RULES";
/// Name of the array `RuleKey::index_bits` -> slot + 1 (0: no rule), four
/// 16-bit entries per `u64` word. Two array reads per matched packet, which
/// the verifier inlines, where a hash map cost a call and ~40 ns.
pub const RULE_INDEX_MAP: &str = "RULE_INDEX";
/// `u64` words of `RULE_INDEX`: 2 protocols x 3 sides x 65 536 ports,
/// 16 bits each (768 KiB).
pub const RULE_INDEX_WORDS: u32 = 2 * 3 * 65_536 / 4;
/// Name of the per-CPU array of `RuleCounters`, indexed by rule slot.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the one-entry array holding `Lease`.
pub const LEASE_MAP: &str = "LEASE";
/// Name of the LPM trie `(slot, address) -> u8` of `--peer` prefixes.
pub const PEERS_MAP: &str = "PEERS";
/// Most `--peer` prefixes over all rules.
pub const MAX_PEERS: u32 = 65_536;
/// Name of the tc program on the ingress hook (also its netlink filter
/// name, which is how leftovers are recognised).
pub const INGRESS_PROGRAM: &str = "faultbpf_in";
/// Name of the tc program on the egress hook. Two programs because a tc
/// program cannot tell which hook runs it, and a drop differs by hook.
pub const EGRESS_PROGRAM: &str = "faultbpf_out";
/// Name of the XDP program (`--xdp`), which replaces `INGRESS_PROGRAM` on
/// the interfaces it is attached to.
pub const XDP_PROGRAM: &str = "faultbpf_xdp";

/// Number of counter slots, i.e. rules in force at once (one rule covers
/// any number of ports); a rule's `slot` is below this. The counters are a
/// preallocated per-CPU array, so each slot costs 64 bytes per CPU up
/// front (256 KiB per CPU): 65 536 slots of 32 bytes were 4 MiB per CPU and
/// 70 ms to create, and a hash instead cost every matched packet a hash
/// lookup.
/// `RULES` has one entry per slot too.
pub const MAX_SLOTS: u32 = 4_096;
// `RULE_INDEX` holds slot + 1 in 16 bits.
const _: () = assert!(MAX_SLOTS < u16::MAX as u32);

/// IANA protocol numbers used as `RuleKey::proto`.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// What to do with a packet that matched a rule.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Make the packet vanish as if lost in the network.
    Drop = 1,
    /// Drop it and answer the sender with a TCP RST or an ICMP port
    /// unreachable, as a closed port or a REJECT rule would.
    Reset = 2,
    /// Drop TCP segments that carry payload; the handshake still completes.
    Hang = 3,
    /// Flip payload bytes and fix the checksums, so bad data is delivered.
    Corrupt = 4,
    /// Set `skb->mark` to `RuleValue::mark` and pass.
    Mark = 5,
    /// Set ECN CE on ECN-capable IP packets and pass.
    Ecn = 6,
    /// Draw an action from `RuleValue::mix`.
    Mix = 7,
    /// Hold the packet for `RuleValue::delay_us` (± `jitter_us`) on the
    /// delay device, then send it on (tc only).
    Delay = 8,
    /// Send the packet on and a clone of it beside it (tc only); the clone
    /// carries `DUPLICATE_MARK` so it is never cloned again.
    Duplicate = 9,
    /// Police the rule's traffic to `RuleValue::rate_bytes` per second
    /// with a token bucket of `burst_ns` (tc only): over the rate, drop.
    Throttle = 10,
    /// Answer a matched DNS query from the kernel with
    /// `RuleValue::dns_rcode`, or drop it when that is 0 (tc only).
    Dns = 11,
}

impl FaultKind {
    /// The raw value stored in `RuleValue::action`.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Reads a raw `RuleValue::action`; `None` for an unknown value.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Drop),
            2 => Some(Self::Reset),
            3 => Some(Self::Hang),
            4 => Some(Self::Corrupt),
            5 => Some(Self::Mark),
            6 => Some(Self::Ecn),
            7 => Some(Self::Mix),
            8 => Some(Self::Delay),
            9 => Some(Self::Duplicate),
            10 => Some(Self::Throttle),
            11 => Some(Self::Dns),
            _ => None,
        }
    }

    /// Whether the XDP program (`--xdp`) carries this action out: drop,
    /// hang and reset (and a mix, if all its entries are). Mark, ECN and
    /// corrupt need the skb only the tc hook has (its mark, its checksum
    /// state); at XDP they pass untouched, and user space refuses them.
    pub const fn on_xdp(self) -> bool {
        matches!(self, Self::Drop | Self::Reset | Self::Hang | Self::Mix)
    }
}

/// `RuleKey::side`: the rule's port is the packet's destination port.
pub const SIDE_DST: u8 = 1;
/// `RuleKey::side`: the rule's port is the packet's source port.
pub const SIDE_SRC: u8 = 2;
/// `RuleKey::side`: the rule catches non-first fragments of `proto`, which
/// carry no ports (`port_be` is 0).
pub const SIDE_FRAGMENT: u8 = 3;

/// The port filter (`PORTS` map): one bit per (side, port) that any rule
/// of either protocol uses, so a packet whose ports no rule has reads 16 KiB
/// that stay in cache, never the 768 KiB `RULE_INDEX`. `SIDE_DST` and
/// `SIDE_SRC` only; fragments go straight to the index.
pub const PORTS_MAP: &str = "PORTS";
/// `u64` words per side in `PORTS`.
pub const PORT_WORDS_PER_SIDE: u32 = 65_536 / 64;
/// Entries of `PORTS`: both sides.
pub const PORT_WORDS: u32 = 2 * PORT_WORDS_PER_SIDE;

/// Where the bit of (`side`, `port_be`) lives in `PORTS`: the word index
/// and the mask within it. `None` for `SIDE_FRAGMENT` (not filtered).
#[inline(always)]
pub fn port_bit(side: u8, port_be: u16) -> Option<(u32, u64)> {
    let base = match side {
        SIDE_DST => 0,
        SIDE_SRC => PORT_WORDS_PER_SIDE,
        _ => return None,
    };
    let port = u32::from(u16::from_be(port_be));
    Some((base + port / 64, 1u64 << (port % 64)))
}

/// A rule's key: one `RULE_INDEX` entry per (L4 protocol, side, port).
///
/// A rule on "either port" (`--port`) is two entries, one per side, so a
/// packet costs at most two lookups (destination port, then source port)
/// whatever the number of rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleKey {
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// `SIDE_DST`, `SIDE_SRC` or `SIDE_FRAGMENT`.
    pub side: u8,
    /// Port in network byte order, as it sits in the packet, so the kernel
    /// side never swaps bytes.
    pub port_be: u16,
}
const _: () = assert!(core::mem::size_of::<RuleKey>() == 4);

impl RuleKey {
    pub const fn new(proto: u8, side: u8, port: u16) -> Self {
        Self {
            proto,
            side,
            port_be: port.to_be(),
        }
    }

    /// The port in host byte order.
    pub const fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }

    /// Where this key's slot lives in `RULE_INDEX`: the word, and the shift
    /// of its 16 bits within it. `None` for a protocol or side that has no
    /// place (never in a packet's flow or a rule's keys).
    #[inline(always)]
    pub fn index_bits(&self) -> Option<(u32, u32)> {
        let proto = match self.proto {
            PROTO_TCP => 0,
            PROTO_UDP => 1,
            _ => return None,
        };
        let side = match self.side {
            SIDE_DST => 0,
            SIDE_SRC => 1,
            SIDE_FRAGMENT => 2,
            _ => return None,
        };
        let i = ((proto * 3 + side) << 16) | u32::from(self.port_be);
        Some((i / 4, (i % 4) * 16))
    }
}

/// Most entries in a chaos mix.
pub const MIX_LEN: usize = 4;

/// One action of a mix: acts when the packet's draw is below `upto`
/// (cumulative over the entries before it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixEntry {
    /// A `FaultKind` as `u8`; 0 ends the mix.
    pub action: u8,
    pub _pad: [u8; 3],
    pub upto: u32,
}
const _: () = assert!(core::mem::size_of::<MixEntry>() == 8);

/// A rule as the kernel reads it: the `RULES` entry at its slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleValue {
    /// Index into the counters array, and the rule's id.
    pub slot: u32,
    /// A `FaultKind` as `u8`.
    pub action: u8,
    /// `DIR_*` bits: the hooks on which this rule acts.
    pub directions: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// `Delay`: `DIST_UNIFORM` or `DIST_NORMAL` jitter.
    pub dist: u8,
    /// Act when the draw is below `threshold`; `THRESHOLD_ALWAYS` acts on
    /// every packet and 0 on none (see `threshold_from_pct`).
    pub threshold: u32,
    /// Seed of the per-flow hash (`FLAG_PER_FLOW`), so each rule picks its
    /// own set of flows.
    pub seed: u32,
    /// `Mark`: the value written to `skb->mark`.
    pub mark: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) after which the rule passes
    /// traffic; 0 means no expiry.
    pub expires_ns: u64,
    /// `Mix`: the actions and their cumulative thresholds.
    pub mix: [MixEntry; MIX_LEN],
    /// `Delay`: the mean delay and the jitter around it, in microseconds.
    pub delay_us: u32,
    pub jitter_us: u32,
    /// `Throttle`: the rate in bytes per second (never 0 for a throttle
    /// rule), and the burst as the time the rate takes to send it, in ns
    /// (the bucket's depth).
    pub rate_bytes: u64,
    pub burst_ns: u64,
    /// `Dns`: the response code answered (`DNS_RCODE_*`); 0: the query
    /// vanishes.
    pub dns_rcode: u8,
    /// `Dns`: 1 when the rule has `--domain` suffixes (in `DNS_SUFFIXES`),
    /// 0 when every query name matches.
    pub dns_domains: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<RuleValue>() == 96);

/// Name of the array of `Throttle` buckets: entry `2 * slot` (ingress) and
/// `2 * slot + 1` (egress), each a `u64` theoretical arrival time.
pub const THROTTLE_MAP: &str = "THROTTLE";

/// DNS response codes a `Dns` rule answers with.
pub const DNS_RCODE_SERVFAIL: u8 = 2;
pub const DNS_RCODE_NXDOMAIN: u8 = 3;
pub const DNS_RCODE_REFUSED: u8 = 5;

/// Name of the hash map of `DnsKey` -> 1: a `Dns` rule's `--domain`
/// suffixes, each as the hash [`dns_hash_step`] gives its wire form.
pub const DNS_SUFFIXES_MAP: &str = "DNS_SUFFIXES";
/// Most `--domain` suffixes over all rules.
pub const MAX_DNS_SUFFIXES: u32 = 4_096;
/// Longest query name the kernel reads (wire form, RFC 1035's limit).
pub const DNS_MAX_NAME: usize = 255;

/// A `DNS_SUFFIXES` key: a rule's slot and a suffix's hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsKey {
    pub hash: u64,
    pub slot: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<DnsKey>() == 16);

/// One step of the suffix hash, read from the name's end to its start:
/// `h(c + rest) = lower(c) + 1 + P * h(rest)` over the wire form (length
/// bytes included, the final 0 too), so the hash of every suffix that
/// starts at a label falls out of one backward pass. ASCII letters are
/// folded to lower case (DNS names compare case-insensitively).
#[inline(always)]
pub fn dns_hash_step(h: u64, c: u8) -> u64 {
    let c = if c.is_ascii_uppercase() { c + 32 } else { c };
    h.wrapping_mul(0x100_0000_01b3)
        .wrapping_add(u64::from(c) + 1)
}

/// `RuleValue::dist`: jitter uniform in [-jitter, +jitter].
pub const DIST_UNIFORM: u8 = 0;
/// `RuleValue::dist`: jitter roughly normal with standard deviation jitter
/// (a sum of three uniform draws), cut at zero delay.
pub const DIST_NORMAL: u8 = 1;

/// `RuleValue::flags`: let jitter reorder packets of a flow (by default a
/// packet is never scheduled before the previous one of its flow).
pub const FLAG_REORDER: u8 = 4;
/// `RuleValue::flags`: a `Throttle` rule shapes (packets over the rate wait
/// on the delay device until their departure time) instead of policing
/// (dropping them). Set only where user space made the delay device.
pub const FLAG_SHAPE: u8 = 8;

/// Name of the one-entry array holding the delay device's sending-end
/// ifindex (0: no device, delay passes packets untouched).
pub const DELAY_DEV_MAP: &str = "DELAY_DEV";
/// Name of the tc program on the far end of the delay device, which sends
/// held packets back where they came from.
pub const RETURN_PROGRAM: &str = "faultbpf_ret";

/// `skb->mark` of a packet on its delay detour: this magic in the top byte,
/// `DELAY_MARK_INGRESS` if it was taken at ingress, and the ifindex it came
/// from in the low bits. Lost on the detour, by design: an egress packet's
/// own mark (and its priority, which must be 0 for fq to honour the
/// delivery time).
pub const DELAY_MARK_MAGIC: u32 = 0xfb00_0000;
pub const DELAY_MARK_MASK: u32 = 0xff00_0000;
pub const DELAY_MARK_INGRESS: u32 = 0x0080_0000;
pub const DELAY_MARK_IFINDEX: u32 = 0x007f_ffff;

/// `skb->mark` of a `Duplicate` clone while it crosses our hook again
/// (the clone is sent back into the hook it was taken at): the hook lets it
/// pass, with its mark cleared, so a duplicate is never duplicated again.
/// Its top byte differs from `DELAY_MARK_MAGIC`'s.
pub const DUPLICATE_MARK: u32 = 0xfc00_0d0b;

/// `RuleValue::flags`: decide once per flow (5-tuple hash) instead of per
/// packet.
pub const FLAG_PER_FLOW: u8 = 1;
/// `RuleValue::flags`: act only when the remote address is in the rule's
/// prefixes in the peers map.
pub const FLAG_PEERS: u8 = 2;

/// Data of a peers LPM trie key: the rule's slot (big-endian, always
/// matched whole, `PEER_SLOT_BITS`) then the address, IPv4 as IPv4-mapped
/// IPv6 (`::ffff:a.b.c.d`). One lookup answers "is this address in any
/// prefix of rule `slot`".
#[inline(always)]
pub fn peer_key_data(slot: u32, addr: &[u8; 16]) -> [u8; 20] {
    let s = slot.to_be_bytes();
    let mut d = [0u8; 20];
    d[0] = s[0];
    d[1] = s[1];
    d[2] = s[2];
    d[3] = s[3];
    let mut i = 0;
    while i < 16 {
        d[4 + i] = addr[i];
        i += 1;
    }
    d
}

/// Bits of a peers key taken by the slot; a prefix of length L within the
/// address is a trie prefix of `PEER_SLOT_BITS + L`.
pub const PEER_SLOT_BITS: u32 = 32;

/// `RuleValue::directions` bit: act on packets entering the interface.
pub const DIR_INGRESS: u8 = 1;
/// `RuleValue::directions` bit: act on packets leaving the interface.
pub const DIR_EGRESS: u8 = 2;

/// A threshold that acts on every packet. `u32` cannot hold 2^32, so 100 %
/// is this marker rather than a comparison that would miss one draw in 2^32.
pub const THRESHOLD_ALWAYS: u32 = u32::MAX;

/// Converts a percentage (0..=100) into a `RuleValue::threshold`.
///
/// 0 and 100 are exact; anything in between is rounded to the nearest
/// 1/2^32 and kept below `THRESHOLD_ALWAYS`.
pub fn threshold_from_pct(pct: f64) -> u32 {
    // NaN lands here too: never act on a value we cannot read.
    if pct.is_nan() || pct <= 0.0 {
        0
    } else if pct >= 100.0 {
        THRESHOLD_ALWAYS
    } else {
        let t = pct / 100.0 * 4_294_967_296.0;
        // `as` saturates; stay below the "always" marker and above "never".
        (t as u64).clamp(1, (THRESHOLD_ALWAYS - 1) as u64) as u32
    }
}

/// Whether a rule with `threshold` acts, given one random draw.
#[inline(always)]
pub fn draw_hits(threshold: u32, random: u32) -> bool {
    threshold == THRESHOLD_ALWAYS || random < threshold
}

/// The draw of a `FLAG_PER_FLOW` rule: a hash of the flow's two endpoints
/// that is the same in both directions, so a connection is either faulted
/// whole or left alone. Addresses are 16 bytes (IPv4 as IPv4-mapped).
#[inline(always)]
pub fn flow_hash(
    seed: u32,
    proto: u8,
    a: &[u8; 16],
    a_port: u16,
    b: &[u8; 16],
    b_port: u16,
) -> u32 {
    // XOR of the two endpoint hashes: symmetric in (a, b).
    fmix32(endpoint_hash(a, a_port) ^ endpoint_hash(b, b_port) ^ seed ^ u32::from(proto))
}

#[inline(always)]
fn endpoint_hash(addr: &[u8; 16], port: u16) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let mut h = fmix32(u32::from(port).wrapping_add(0x9e37_79b9));
    h = fmix32(h ^ w(0));
    h = fmix32(h ^ w(4));
    h = fmix32(h ^ w(8));
    fmix32(h ^ w(12))
}

/// MurmurHash3's finaliser: every input bit affects every output bit.
#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Per-rule counters, one copy per CPU (summed in user space).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Packets and bytes that matched the rule (before the probability draw).
    pub matched_packets: u64,
    pub matched_bytes: u64,
    /// Packets and bytes the rule acted on.
    pub acted_packets: u64,
    pub acted_bytes: u64,
    /// `Mix` rules: the packets each entry of `RuleValue::mix` acted on, in
    /// the mix's order (they add up to `acted_packets`); 0 for other rules.
    /// Doubles the counters' memory (64 bytes per slot and CPU, 256 KiB per
    /// CPU) so a chaos rule can say what it did, with no extra map lookup.
    pub mix_packets: [u64; MIX_LEN],
}
const _: () = assert!(core::mem::size_of::<RuleCounters>() == 64);

impl RuleCounters {
    /// Adds another CPU's copy.
    pub fn add(&mut self, o: &Self) {
        self.matched_packets += o.matched_packets;
        self.matched_bytes += o.matched_bytes;
        self.acted_packets += o.acted_packets;
        self.acted_bytes += o.acted_bytes;
        for (m, n) in self.mix_packets.iter_mut().zip(o.mix_packets) {
            *m += n;
        }
    }
}

/// Dead man's switch: while `lease_ns` is not 0 and `heartbeat_ns +
/// lease_ns` lies in the past, every rule passes traffic. The owner renews
/// `heartbeat_ns`; an owner that hangs or dies without taking its programs
/// along (a netlink filter outlives its process) stops faulting by itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// `bpf_ktime_get_ns()` of the last renewal.
    pub heartbeat_ns: u64,
    /// How long a renewal holds; 0 disables the switch.
    pub lease_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Lease>() == 16);

/// Name of the one-entry array holding the `TraceConf` of `faultbpf
/// trace`.
pub const TRACE_MAP: &str = "TRACE";
/// The `.rodata` global a traceable faultbpf sets to 1 at load time.
pub const TRACEABLE_GLOBAL: &str = "TRACEABLE";
/// Name of the array of port bits (`TRACE_PORT_WORDS` words, bit `port`)
/// `faultbpf trace --port` watches, on either side of a packet.
pub const TRACE_PORTS_MAP: &str = "TRACE_PORTS";
/// `u64` words of `TRACE_PORTS`: one bit per port (8 KiB).
pub const TRACE_PORT_WORDS: u32 = 65_536 / 64;
/// Name of the ring buffer of `TraceEvent`s.
pub const TRACE_EVENTS_MAP: &str = "TRACE_EVENTS";
/// Bytes of `TRACE_EVENTS` (a power of two, as ring buffers must be).
pub const TRACE_EVENTS_BYTES: u32 = 256 * 1024;
/// Name of the per-CPU `TraceRate` the kernel rate-limits events with.
pub const TRACE_RATE_MAP: &str = "TRACE_RATE";
/// Most trace events per second per CPU; the rest are counted in
/// `TraceRate::suppressed`, never written.
pub const TRACE_EVENTS_PER_SEC: u32 = 1_000;

/// Whether (and what) `faultbpf trace` watches. While `until_ns` is 0 or
/// past, a packet pays one load of this entry and nothing more; the
/// tracer renews `until_ns` every second, so a tracer killed with
/// SIGKILL switches tracing off by itself within `TRACE_LEASE_NS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConf {
    /// `bpf_ktime_get_coarse_ns()` until which packets are traced.
    pub until_ns: u64,
    /// 1: every packet (rate-limited), also those not parsed; 0: only
    /// packets with a port bit set in `TRACE_PORTS`.
    pub all_ports: u32,
    /// Written by the owner at start: 1 when its programs were loaded
    /// traceable (the kernel ignores it; a tracer reads it).
    pub traceable: u32,
}
const _: () = assert!(core::mem::size_of::<TraceConf>() == 16);

/// How long a tracer's renewal holds.
pub const TRACE_LEASE_NS: u64 = 3_000_000_000;

/// The kernel's rate limiter for trace events, per CPU: a one-second
/// window and what it let through.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceRate {
    pub window_ns: u64,
    pub events: u32,
    pub _pad: u32,
    /// Events not written because the window was full, in all.
    pub suppressed: u64,
}
const _: () = assert!(core::mem::size_of::<TraceRate>() == 24);

/// Why a packet was or was not faulted (`TraceEvent::reason`).
pub mod trace_reason {
    /// The hook acted on it (`TraceEvent::kind`, `verdict`).
    pub const ACTED: u8 = 1;
    /// No rule has its ports.
    pub const NO_RULE: u8 = 2;
    /// A rule has its port, but not on this hook (`--direction`).
    pub const OTHER_DIRECTION: u8 = 3;
    /// The rule's `--for`/`ttl` is over.
    pub const EXPIRED: u8 = 4;
    /// The rule's owner stopped renewing its lease (a frozen daemon).
    pub const LEASE_STALE: u8 = 5;
    /// The rule has `--peer`s and the remote address is not one of them.
    pub const OTHER_PEER: u8 = 6;
    /// The rule's `--pct` draw spared it.
    pub const NOT_DRAWN: u8 = 7;
    /// Drawn, but the action does not apply to it (`hang` on a segment
    /// without payload, a RST `reset` never answers, a DNS packet that is
    /// not a query, a throttle under its rate, ...).
    pub const NOT_APPLICABLE: u8 = 8;
    /// Its headers could not be parsed completely: passed untouched.
    pub const NOT_PARSED: u8 = 9;
}

/// One traced packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEvent {
    /// IPv6 addresses, IPv4 as IPv4-mapped; zero when not parsed.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The interface (in the programs' network namespace).
    pub ifindex: u32,
    /// The rule's slot (its id), or `u32::MAX` when no rule was found.
    pub slot: u32,
    /// The hook's verdict (tc action or XDP action).
    pub verdict: i32,
    pub sport_be: u16,
    pub dport_be: u16,
    /// `TRACE_HOOK_*`.
    pub hook: u8,
    /// IPPROTO_TCP or IPPROTO_UDP; 0 when not parsed.
    pub proto: u8,
    /// A `trace_reason`.
    pub reason: u8,
    /// The `FaultKind` acted (a chaos mix's pick), 0 when none.
    pub kind: u8,
}
const _: () = assert!(core::mem::size_of::<TraceEvent>() == 52);

/// `TraceEvent::hook` values.
pub const TRACE_HOOK_INGRESS: u8 = 0;
pub const TRACE_HOOK_EGRESS: u8 = 1;
pub const TRACE_HOOK_XDP: u8 = 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `repr(C)`, made of integers only, with explicit
    // padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::RuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Lease {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MixEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SteerConf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnectConf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExemptKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::DnsKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TraceConf {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TraceRate {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_its_own_index_entry() {
        let mut seen = [0u8; (RULE_INDEX_WORDS * 4) as usize];
        for proto in [PROTO_TCP, PROTO_UDP] {
            for side in [SIDE_DST, SIDE_SRC, SIDE_FRAGMENT] {
                for port in 0..=u16::MAX {
                    let (word, shift) = RuleKey::new(proto, side, port).index_bits().unwrap();
                    assert!(word < RULE_INDEX_WORDS && shift % 16 == 0 && shift < 64);
                    seen[(word * 4 + shift / 16) as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        assert_eq!(RuleKey::new(1, SIDE_DST, 80).index_bits(), None);
        assert_eq!(RuleKey::new(PROTO_TCP, 0, 80).index_bits(), None);
    }

    #[test]
    fn port_bits_cover_both_sides_without_overlap() {
        assert_eq!(port_bit(SIDE_DST, 0u16.to_be()), Some((0, 1)));
        assert_eq!(port_bit(SIDE_DST, 65u16.to_be()), Some((1, 2)));
        assert_eq!(
            port_bit(SIDE_DST, 65_535u16.to_be()),
            Some((PORT_WORDS_PER_SIDE - 1, 1 << 63))
        );
        assert_eq!(
            port_bit(SIDE_SRC, 0u16.to_be()),
            Some((PORT_WORDS_PER_SIDE, 1))
        );
        assert_eq!(
            port_bit(SIDE_SRC, 65_535u16.to_be()),
            Some((PORT_WORDS - 1, 1 << 63))
        );
        assert_eq!(port_bit(SIDE_FRAGMENT, 0), None);
    }

    #[test]
    fn threshold_edges_are_exact() {
        assert_eq!(threshold_from_pct(0.0), 0);
        assert_eq!(threshold_from_pct(100.0), THRESHOLD_ALWAYS);
        assert!(!draw_hits(0, 0));
        assert!(draw_hits(THRESHOLD_ALWAYS, u32::MAX));
        assert!(threshold_from_pct(99.999_999_999) < THRESHOLD_ALWAYS);
        assert!(threshold_from_pct(1e-12) >= 1);
    }

    #[test]
    fn threshold_is_proportional() {
        let t = threshold_from_pct(30.0) as f64 / 4_294_967_296.0;
        assert!((t - 0.30).abs() < 1e-9);
    }

    #[test]
    fn flow_hash_is_symmetric_and_spread() {
        let a = [1u8; 16];
        let mut b = [2u8; 16];
        assert_eq!(
            flow_hash(7, PROTO_TCP, &a, 40000, &b, 5432),
            flow_hash(7, PROTO_TCP, &b, 5432, &a, 40000)
        );
        assert_ne!(
            flow_hash(7, PROTO_TCP, &a, 40000, &b, 5432),
            flow_hash(8, PROTO_TCP, &a, 40000, &b, 5432)
        );
        // About 30 % of 10 000 flows (client ports) fall under a 30 % threshold.
        let t = threshold_from_pct(30.0);
        let hits = (0..10_000u16)
            .filter(|p| {
                b[15] = (*p % 7) as u8;
                draw_hits(t, flow_hash(1, PROTO_TCP, &a, 20_000 + p, &b, 80))
            })
            .count();
        assert!((2_800..3_200).contains(&hits), "{hits}");
    }

    #[test]
    fn counters_add_every_field() {
        let a = RuleCounters {
            matched_packets: 1,
            matched_bytes: 2,
            acted_packets: 3,
            acted_bytes: 4,
            mix_packets: [1, 0, 2, 0],
        };
        let mut sum = a;
        sum.add(&a);
        assert_eq!(sum.matched_bytes, 4);
        assert_eq!(sum.acted_packets, 6);
        assert_eq!(sum.mix_packets, [2, 0, 4, 0]);
    }

    #[test]
    fn key_keeps_network_order() {
        let k = RuleKey::new(PROTO_TCP, SIDE_DST, 5672);
        assert_eq!(k.port_be.to_ne_bytes(), 5672u16.to_be_bytes());
        assert_eq!(k.port(), 5672);
    }
}

/// Name of the `sk_lookup` program of `faultbpf http`: gives selected new
/// connections to one port to the HTTP responder's listening socket.
pub const STEER_PROGRAM: &str = "faultbpf_steer";
/// Name of the one-entry array holding the `SteerConf` of `faultbpf http`.
pub const STEER_MAP: &str = "STEER";
/// Name of the sockmap of the responder's listening sockets:
/// `RESPONDER_V4` and `RESPONDER_V6`.
pub const RESPONDER_MAP: &str = "RESPONDER";
/// `RESPONDER` index of the IPv4 listening socket.
pub const RESPONDER_V4: u32 = 0;
/// `RESPONDER` index of the IPv6 listening socket.
pub const RESPONDER_V6: u32 = 1;
/// Name of the hash of source addresses and ports (`ExemptKey`) whose
/// connections are never steered: the responder's own connections to the
/// real server, which arrive at the same port and would otherwise come
/// back to it. The address too, not the port alone: a client elsewhere
/// that happens to use the same source port must still be steered.
pub const STEER_EXEMPT_MAP: &str = "STEER_EXEMPT";

/// A key of `STEER_EXEMPT`: the responder's source address (IPv4 in the
/// first 4 bytes, the rest zero) and port (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExemptKey {
    pub addr: [u8; 16],
    pub port: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ExemptKey>() == 20);
/// Most connections from the responder to the real server at once.
pub const MAX_STEER_EXEMPT: u32 = 16_384;

/// What the `sk_lookup` program steers: TCP connections to `port`, each
/// with the chance `threshold` (see `threshold_from_pct`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerConf {
    /// Local port, host order; 0 steers nothing.
    pub port: u16,
    pub _pad: [u8; 2],
    /// Chance a new connection is steered.
    pub threshold: u32,
}
const _: () = assert!(core::mem::size_of::<SteerConf>() == 8);

/// Names of the client-side steering programs of `faultbpf http --side
/// client` (cgroup hooks): `connect4`/`connect6` send selected connects to
/// the responder, `getpeername4`/`getpeername6` show the application the
/// peer it dialled, and the `sock_ops` program files each steered
/// connection's original destination under its source port.
pub const CONNECT4_PROGRAM: &str = "faultbpf_connect4";
pub const CONNECT6_PROGRAM: &str = "faultbpf_connect6";
pub const PEERNAME4_PROGRAM: &str = "faultbpf_peername4";
pub const PEERNAME6_PROGRAM: &str = "faultbpf_peername6";
pub const SOCKOPS_PROGRAM: &str = "faultbpf_sockops";
/// Name of the one-entry array holding the `ConnectConf`.
pub const CONNECT_MAP: &str = "CONNECT";
/// Name of the hash socket cookie -> `OrigDst` of steered connects.
pub const ORIG_DST_MAP: &str = "ORIG_DST";
/// Name of the hash source port (host order) -> `OrigDst`, filled when a
/// steered connection sends its SYN; the responder reads it on accept.
pub const ORIG_BY_PORT_MAP: &str = "ORIG_BY_PORT";
/// Name of the hash of socket cookies never steered: the responder's own
/// connections to the real servers.
pub const CONNECT_EXEMPT_MAP: &str = "CONNECT_EXEMPT";
/// Most steered connections remembered at once (each map).
pub const MAX_STEERED: u32 = 16_384;

/// What the connect programs steer: TCP connects to `port` from sockets in
/// the network namespace `netns_cookie`, each with the chance `threshold`,
/// to the responder on loopback `resp_port4` / `resp_port6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectConf {
    /// `SO_NETNS_COOKIE` of the namespace whose connects are steered.
    pub netns_cookie: u64,
    /// Destination port, host order; 0 steers nothing.
    pub port: u16,
    /// The responder's loopback ports, host order (0: no IPv6 responder).
    pub resp_port4: u16,
    pub resp_port6: u16,
    pub _pad: [u8; 2],
    pub threshold: u32,
    pub _pad2: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<ConnectConf>() == 24);

/// Where a steered connect was going: `family` 4 or 6, the address
/// (IPv4 in the first 4 bytes, as on the wire) and the port (network
/// order), and the socket's cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    pub addr: [u8; 16],
    pub port_be: u16,
    pub family: u8,
    pub _pad: [u8; 5],
    pub cookie: u64,
}
const _: () = assert!(core::mem::size_of::<OrigDst>() == 32);
