//! `throttle`: the dependency's traffic is limited to a rate, per rule.
//!
//! What the application sees: a slow link. Where the kernel has sch_fq and
//! sch_netem (faultbpf's delay device), it shapes: packets over the rate
//! wait until their departure time, so TCP runs at the rate without loss
//! and UDP over it arrives late, and is dropped only past 200 ms of queue.
//! Where it has not (this machine's 6.18), it polices: a token bucket of
//! `burst` bytes filled at `rate`, packets over it dropped, so TCP backs
//! off to about the rate and UDP over the rate is lost. The injector
//! chooses when it inserts the rule ([`ThrottleParams::shape`]); the
//! `active:` line, `--json` and the daemon's description say "shaping" or
//! "policing". See `faultbpf-ebpf/src/fault/throttle.rs` for the bucket.
//!
//! Hooks: tc ingress and egress (not XDP). Each direction of a rule has
//! its own bucket, as each direction of a link has its own capacity (one
//! shared bucket dropped the ACKs of a transfer that had used it up).
//!
//! Knobs, written as `tc` writes them:
//! - `rate`: `bit`, `kbit`, `mbit`, `gbit` (powers of 1000 bits per second)
//!   or `bps`, `kbps`, `mbps`, `gbps` (bytes per second); 8kbit to 100gbit.
//! - `burst`: `b`, `kb`, `mb` (powers of 1024 bytes); 2kb to 1gb, default
//!   the larger of 64kb and 200 ms at the rate (100 ms left TCP on a
//!   sub-millisecond path idle in retransmission timeouts: 6 Mbit/s through
//!   10mbit, against 10 with 200 ms). A burst below the largest
//!   packet (a GSO super-packet on veth is up to 64 KiB) lets none through.

use faultbpf_common::FaultKind;

use super::{Fault, FaultDef, Param};
use crate::spec::{RuleSpec, SpecError};

pub static DEF: FaultDef = FaultDef {
    name: "throttle",
    command: "throttle",
    about: "Limit matched traffic to a rate (a token bucket in the kernel)",
    long_about: "Limit matched traffic to a rate (a token bucket in the kernel)\n\n\
        Where the kernel has sch_fq and sch_netem, traffic over --rate waits for its \
        turn (shaping, as tbf does: at most 200 ms, then it is dropped); elsewhere it \
        is dropped (policing: a token bucket of --burst bytes), so TCP slows to about \
        the rate and UDP over it is lost, as on a slow link. The active: line and \
        --json say which. Rates and sizes are written as tc writes them: 512kbit, \
        10mbit, 1gbit; 64kb, 1mb.",
    examples: "Examples:\n  \
        faultbpf throttle --port 5432 --rate 10mbit            Postgres at 10 Mbit/s\n  \
        faultbpf throttle --dport 443 --rate 1mbit --burst 32kb  uploads to 443 at 1 Mbit/s",
    verb: "dropped over the rate",
    kind: FaultKind::Throttle,
    xdp: false,
    xdp_refusal: "cannot throttle: faultbpf polices on tc only, where the skb's length \
        counts whole GSO packets",
    udp: true,
    params: &[
        Param {
            field: "rate",
            unit: "a rate as tc writes it: 10mbit, 512kbit, 1gbit, 100kbps",
        },
        Param {
            field: "burst",
            unit: "a size as tc writes it: 64kb, 1mb",
        },
    ],
    mix_action: None,
    build,
};

/// Slowest and fastest rates, in bytes per second (8 kbit/s, 100 gbit/s).
const MIN_RATE: u64 = 1_000;
const MAX_RATE: u64 = 12_500_000_000;
/// Smallest and largest bursts, in bytes.
const MIN_BURST: u64 = 2 << 10;
const MAX_BURST: u64 = 1 << 30;
/// The default burst: the larger of this and `DEFAULT_BURST_MS` at the rate.
const DEFAULT_BURST: u64 = 64 << 10;
const DEFAULT_BURST_MS: u64 = 200;

/// A validated throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleParams {
    /// Bytes per second.
    pub rate_bytes: u64,
    /// Bucket depth in bytes.
    pub burst_bytes: u64,
    /// Shape (hold packets until their departure time) rather than police
    /// (drop them). Not the user's choice: `Injector::insert` sets it where
    /// the kernel can hold packets (the delay device could be made).
    pub shape: bool,
}

impl ThrottleParams {
    /// The burst as the time the rate takes to send it (`RuleValue::burst_ns`).
    pub fn burst_ns(&self) -> u64 {
        (u128::from(self.burst_bytes) * 1_000_000_000 / u128::from(self.rate_bytes)) as u64
    }

    /// How the rate is held: "shaping" or "policing".
    pub fn mode(&self) -> &'static str {
        if self.shape { "shaping" } else { "policing" }
    }

    /// "policing 10mbit burst 125kb", for descriptions and the `active:` line.
    pub fn describe(&self) -> String {
        format!(
            "{} {} burst {}",
            self.mode(),
            rate_text(self.rate_bytes),
            size_text(self.burst_bytes)
        )
    }

    /// Writes `rate` and `burst` (the inverse of `build`).
    pub fn write_params(&self, spec: &mut RuleSpec) {
        spec.rate = Some(rate_text(self.rate_bytes));
        spec.burst = Some(size_text(self.burst_bytes));
    }
}

fn build(spec: &RuleSpec) -> Result<Fault, SpecError> {
    let rate = spec.rate.as_deref().ok_or_else(|| {
        SpecError::new(
            "rate",
            "the throttle fault needs a `rate` (--rate), e.g. 10mbit",
        )
    })?;
    let rate_bytes = parse_rate(rate).map_err(|e| SpecError::new("rate", e))?;
    let burst_bytes = match spec.burst.as_deref() {
        Some(b) => parse_size(b).map_err(|e| SpecError::new("burst", e))?,
        None => DEFAULT_BURST.max(rate_bytes * DEFAULT_BURST_MS / 1000),
    };
    if !(MIN_BURST..=MAX_BURST).contains(&burst_bytes) {
        return Err(SpecError::new(
            "burst",
            format!(
                "{} is out of range (expected 2kb to 1gb)",
                spec.burst.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(Fault::Throttle(ThrottleParams {
        rate_bytes,
        burst_bytes,
        shape: false,
    }))
}

/// Splits "10mbit" into (10.0, "mbit").
fn split(s: &str) -> Option<(f64, String)> {
    let t = s.trim();
    let at = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n: f64 = t[..at].parse().ok()?;
    n.is_finite()
        .then(|| (n, t[at..].trim().to_ascii_lowercase()))
}

/// A rate as tc writes it, in bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{s}` is not a rate: write it as tc does, e.g. 10mbit, 512kbit, 1gbit (bits) \
             or 100kbps (bytes per second)"
        )
    };
    let (n, unit) = split(s).ok_or_else(bad)?;
    let bytes_per_unit = match unit.as_str() {
        "bit" => 1.0 / 8.0,
        "kbit" => 1e3 / 8.0,
        "mbit" => 1e6 / 8.0,
        "gbit" => 1e9 / 8.0,
        "bps" => 1.0,
        "kbps" => 1e3,
        "mbps" => 1e6,
        "gbps" => 1e9,
        _ => return Err(bad()),
    };
    let v = n * bytes_per_unit;
    if !(MIN_RATE as f64..=MAX_RATE as f64).contains(&v) {
        return Err(format!("`{s}` is out of range (expected 8kbit to 100gbit)"));
    }
    Ok(v.round() as u64)
}

/// A size as tc writes it, in bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a size: write it as tc does, e.g. 64kb, 1mb, 1500b");
    let (n, unit) = split(s).ok_or_else(bad)?;
    let mult = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        "g" | "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if v > MAX_BURST as f64 {
        return Err(format!("`{s}` is out of range (expected 2kb to 1gb)"));
    }
    Ok(v.round() as u64)
}

/// The rate in the largest tc unit that writes it exactly.
fn rate_text(bytes: u64) -> String {
    let bits = bytes * 8;
    for (div, unit) in [
        (1_000_000_000, "gbit"),
        (1_000_000, "mbit"),
        (1_000, "kbit"),
    ] {
        if bits.is_multiple_of(div) {
            return format!("{}{unit}", bits / div);
        }
    }
    format!("{bits}bit")
}

/// The size in the largest tc unit that writes it exactly.
fn size_text(bytes: u64) -> String {
    for (div, unit) in [(1 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")] {
        if bytes.is_multiple_of(div) {
            return format!("{}{unit}", bytes / div);
        }
    }
    format!("{bytes}b")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes_are_read_as_tc_writes_them() {
        assert_eq!(parse_rate("10mbit"), Ok(1_250_000));
        assert_eq!(parse_rate("512kbit"), Ok(64_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(187_500_000));
        assert_eq!(parse_rate("100kbps"), Ok(100_000));
        assert!(parse_rate("10").unwrap_err().contains("`10`"));
        assert!(parse_rate("10mb").unwrap_err().contains("10mbit"));
        assert!(parse_rate("1bit").unwrap_err().contains("out of range"));
        assert!(parse_rate("1000gbit").unwrap_err().contains("out of range"));
        assert_eq!(parse_size("64kb"), Ok(65_536));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert!(parse_size("2tb").is_err());
    }

    #[test]
    fn throttle_spec_round_trips_and_defaults_its_burst() {
        let mut spec = RuleSpec::new("throttle");
        spec.rate = Some("10mbit".into());
        let Fault::Throttle(t) = build(&spec).unwrap() else {
            panic!()
        };
        assert_eq!(t.burst_bytes, 250_000, "200 ms at 10 mbit");
        assert_eq!(t.burst_ns(), 200_000_000);
        assert_eq!(t.describe(), "policing 10mbit burst 250000b");
        let shaped = ThrottleParams { shape: true, ..t };
        assert_eq!(shaped.describe(), "shaping 10mbit burst 250000b");
        let mut back = RuleSpec::new("throttle");
        t.write_params(&mut back);
        assert_eq!(build(&back).unwrap(), Fault::Throttle(t));
        spec.burst = Some("1kb".into());
        assert!(build(&spec).unwrap_err().to_string().contains("1kb"));
        spec.rate = None;
        assert!(build(&spec).unwrap_err().to_string().contains("--rate"));
    }
}
