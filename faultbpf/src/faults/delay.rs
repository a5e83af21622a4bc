//! `delay`: the dependency is slow. Every matched packet reaches its
//! destination `--ms` (± `--jitter`) later, in the directions asked for;
//! packets of one flow stay in order unless `--reorder`.
//!
//! What the application sees: round trips to the port grow by the delay
//! (both directions: twice), connects and reads slow down and its own
//! timeouts fire if they are shorter: the way to make a timeout test
//! deterministic without touching the server.
//!
//! Hooks: tc only (not `--xdp`). The kernel holds the packets (EDT through
//! faultbpf's own delay device and fq; see delaydev.rs), which needs the
//! sch_fq and sch_netem modules: without them `delay` fails at once with a
//! message naming them, and every other fault keeps working.
//!
//! Knobs: `--ms` (mean delay, milliseconds, fractions allowed), `--jitter`
//! (duration; uniform in ±jitter, or the standard deviation with `--dist
//! normal`), `--reorder`, `--pct`.

use std::time::Duration;

use faultbpf_common::{DIST_NORMAL, DIST_UNIFORM, FaultKind};
use serde::{Deserialize, Serialize};

use super::{Fault, FaultDef, Param};
use crate::spec::{RuleSpec, SpecError};

pub static DEF: FaultDef = FaultDef {
    name: "delay",
    command: "delay",
    about: "Make the port slow: deliver its packets later, in order, by the kernel",
    long_about: "Make the port slow: deliver its packets later, in order, by the kernel\n\n\
        Every matched packet arrives --ms (± --jitter) later in each direction it is \
        delayed, so a round trip through both grows by twice that; a flow's packets \
        stay in order unless --reorder. The way to make a timeout test deterministic \
        without touching the server. Needs the kernel's sch_fq and sch_netem modules; \
        at most 60 s in all (mean plus the largest jitter).",
    examples: "Examples:\n  \
        faultbpf delay --port 5432 --ms 300                  Postgres answers 0.6 s later\n  \
        faultbpf delay --dport 8080 --ms 50 --jitter 20ms    50 ± 20 ms on requests only\n  \
        faultbpf delay --port 6379 --ms 100 --pct 10         one packet in ten is late",
    verb: "delayed",
    kind: FaultKind::Delay,
    xdp: false,
    xdp_refusal: "cannot hold packets: delay needs tc's skb timestamps and fq",
    udp: true,
    params: &[
        Param {
            field: "delay_ms",
            unit: "milliseconds, 0 to 60000, fractions allowed",
        },
        Param {
            field: "jitter",
            unit: "a duration, e.g. 20ms",
        },
        Param {
            field: "dist",
            unit: "uniform (default) or normal",
        },
        Param {
            field: "reorder",
            unit: "true or false",
        },
    ],
    mix_action: Some("delay"),
    build: |spec| Ok(Fault::Delay(params(spec)?)),
};

/// `delay_ms`, `jitter`, `dist`, `reorder` from a spec, checked.
pub fn params(spec: &RuleSpec) -> Result<DelayParams, SpecError> {
    let v = spec
        .delay_ms
        .ok_or_else(|| SpecError::new("delay_ms", "a delay needs `delay_ms` (--ms), e.g. 300"))?;
    let mean = ms(v).map_err(|e| SpecError::new("delay_ms", e))?;
    let jitter = match &spec.jitter {
        Some(j) => {
            crate::spec::parse_bounded(j, MAX_DELAY).map_err(|e| SpecError::new("jitter", e))?
        }
        None => Duration::ZERO,
    };
    DelayParams::new(mean, jitter, spec.dist.unwrap_or_default(), spec.reorder)
        .map_err(|e| SpecError::new("delay_ms", e))
}

/// The first delay field a spec gives, if any.
pub fn fields_given(spec: &RuleSpec) -> Option<&'static str> {
    [
        ("delay_ms", spec.delay_ms.is_some()),
        ("jitter", spec.jitter.is_some()),
        ("dist", spec.dist.is_some()),
        ("reorder", spec.reorder),
    ]
    .into_iter()
    .find_map(|(f, given)| given.then_some(f))
}

/// Longest delay accepted: fq's horizon grows with it, and a packet held
/// longer than this is a blackhole, not a delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// How jitter is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dist {
    /// Uniform in [-jitter, +jitter].
    #[default]
    Uniform,
    /// Roughly normal, standard deviation jitter, never below 0.
    Normal,
}

impl Dist {
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Uniform => DIST_UNIFORM,
            Self::Normal => DIST_NORMAL,
        }
    }
}

/// A delay's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayParams {
    pub mean: Duration,
    pub jitter: Duration,
    pub dist: Dist,
    pub reorder: bool,
}

impl DelayParams {
    /// Checks the bounds: the longest delay a packet can get (`max`) is
    /// at most `MAX_DELAY`.
    pub fn new(
        mean: Duration,
        jitter: Duration,
        dist: Dist,
        reorder: bool,
    ) -> Result<Self, String> {
        let d = Self {
            mean,
            jitter,
            dist,
            reorder,
        };
        match d.checked_max() {
            Some(max) if max <= MAX_DELAY => Ok(d),
            _ => Err(format!(
                "{} ms ± {} ms{} is too long (at most {} s in all{})",
                mean.as_secs_f64() * 1e3,
                jitter.as_secs_f64() * 1e3,
                if dist == Dist::Normal { " normal" } else { "" },
                MAX_DELAY.as_secs(),
                if dist == Dist::Normal {
                    ", counting 3 standard deviations of jitter"
                } else {
                    ""
                }
            )),
        }
    }

    /// The longest delay a packet can get, for sizing fq.
    pub fn max(&self) -> Duration {
        self.checked_max().unwrap_or(Duration::MAX)
    }

    fn checked_max(&self) -> Option<Duration> {
        let spread = if self.dist == Dist::Normal { 3 } else { 1 };
        self.mean.checked_add(self.jitter.checked_mul(spread)?)
    }

    /// Writes these parameters into a spec's delay fields.
    pub fn write_params(&self, spec: &mut RuleSpec) {
        spec.delay_ms = Some(self.mean.as_secs_f64() * 1e3);
        spec.jitter =
            (!self.jitter.is_zero()).then(|| humantime::format_duration(self.jitter).to_string());
        spec.dist = (self.dist != Dist::Uniform).then_some(self.dist);
        spec.reorder = self.reorder;
    }

    /// `300ms ± 50ms normal`
    pub fn describe(&self) -> String {
        let mut s = format!("{}ms", self.mean.as_secs_f64() * 1e3);
        if !self.jitter.is_zero() {
            s += &format!(" ± {}ms", self.jitter.as_secs_f64() * 1e3);
            if self.dist == Dist::Normal {
                s += " normal";
            }
        }
        if self.reorder {
            s += " reorder";
        }
        s
    }
}

/// `--ms 0.5` as a duration: 0 to `MAX_DELAY`.
pub fn ms(v: f64) -> Result<Duration, String> {
    let max_ms = MAX_DELAY.as_secs_f64() * 1e3;
    if !(0.0..=max_ms).contains(&v) {
        // 1e300 as written, not as 301 digits.
        let v = if v.abs() >= 1e9 {
            format!("{v:e}")
        } else {
            format!("{v}")
        };
        return Err(format!(
            "`{v}` ms is not a delay (expected 0 to {max_ms}, i.e. at most {} s)",
            MAX_DELAY.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(v / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_max() {
        let d = DelayParams::new(
            Duration::from_millis(50),
            Duration::from_millis(20),
            Dist::Normal,
            false,
        )
        .unwrap();
        assert_eq!(d.max(), Duration::from_millis(110));
        assert!(
            DelayParams::new(
                Duration::from_secs(61),
                Duration::ZERO,
                Dist::Uniform,
                false
            )
            .is_err()
        );
        assert!(ms(-1.0).is_err() && ms(f64::NAN).is_err() && ms(1e300).is_err());
        // A normal jitter reaches 3 standard deviations: 30 s ± 11 s normal
        // can exceed the maximum, uniform 30 s ± 11 s cannot.
        let (mean, jitter) = (Duration::from_secs(30), Duration::from_secs(11));
        assert!(DelayParams::new(mean, jitter, Dist::Normal, false).is_err());
        assert!(DelayParams::new(mean, jitter, Dist::Uniform, false).is_ok());
        assert!(DelayParams::new(mean, Duration::MAX, Dist::Normal, false).is_err());
        assert_eq!(ms(0.5).unwrap(), Duration::from_micros(500));
    }
}
