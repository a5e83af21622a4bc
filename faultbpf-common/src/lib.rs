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

/// Name of the hash map `RuleKey -> RuleValue`.
pub const RULES_MAP: &str = "RULES";
/// Name of the per-CPU array of `RuleCounters`, indexed by rule slot.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the one-entry array holding `Lease`.
pub const LEASE_MAP: &str = "LEASE";
/// Name of the tc program on the ingress hook (also its netlink filter
/// name, which is how leftovers are recognised).
pub const INGRESS_PROGRAM: &str = "faultbpf_in";
/// Name of the tc program on the egress hook. Two programs because a tc
/// program cannot tell which hook runs it, and a drop differs by hook.
pub const EGRESS_PROGRAM: &str = "faultbpf_out";

/// Most (protocol, port) keys the rule map holds.
pub const MAX_RULES: u32 = 65_536;
/// Number of counter slots; a rule's `slot` is below this.
pub const MAX_SLOTS: u32 = 65_536;

/// IANA protocol numbers used as `RuleKey::proto`.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// What to do with a packet that matched a rule.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Make the packet vanish as if lost in the network.
    Drop = 1,
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
            _ => None,
        }
    }
}

/// Key of the rule map: one entry per (L4 protocol, port).
///
/// A packet matches when its destination port or its source port equals
/// `port`, so both directions of every flow to the dependency are cut.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleKey {
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
    /// Port in network byte order, as it sits in the packet, so the kernel
    /// side never swaps bytes.
    pub port_be: u16,
}
const _: () = assert!(core::mem::size_of::<RuleKey>() == 4);

impl RuleKey {
    pub const fn new(proto: u8, port: u16) -> Self {
        Self {
            proto,
            _pad: 0,
            port_be: port.to_be(),
        }
    }

    /// The port in host byte order.
    pub const fn port(&self) -> u16 {
        u16::from_be(self.port_be)
    }
}

/// Value of the rule map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleValue {
    /// Index into the counters array.
    pub slot: u32,
    /// A `FaultKind` as `u8`.
    pub action: u8,
    /// `DIR_*` bits: the hooks on which this rule acts.
    pub directions: u8,
    pub _pad: [u8; 2],
    /// Act when `bpf_get_prandom_u32() < threshold`; `THRESHOLD_ALWAYS`
    /// acts on every packet and 0 on none (see `threshold_from_pct`).
    pub threshold: u32,
    pub _pad2: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) after which the rule passes
    /// traffic; 0 means no expiry.
    pub expires_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RuleValue>() == 24);

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
    if !(pct > 0.0) {
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
}
const _: () = assert!(core::mem::size_of::<RuleCounters>() == 32);

impl RuleCounters {
    /// Adds another CPU's copy.
    pub fn add(&mut self, o: &Self) {
        self.matched_packets += o.matched_packets;
        self.matched_bytes += o.matched_bytes;
        self.acted_packets += o.acted_packets;
        self.acted_bytes += o.acted_bytes;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn key_keeps_network_order() {
        let k = RuleKey::new(PROTO_TCP, 5672);
        assert_eq!(k.port_be.to_ne_bytes(), 5672u16.to_be_bytes());
        assert_eq!(k.port(), 5672);
    }
}
