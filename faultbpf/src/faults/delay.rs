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

pub const KIND: FaultKind = FaultKind::Delay;

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
    /// Checks the bounds; `what` names the flag in errors.
    pub fn new(
        mean: Duration,
        jitter: Duration,
        dist: Dist,
        reorder: bool,
    ) -> Result<Self, String> {
        if mean + jitter > MAX_DELAY {
            return Err(format!(
                "{} ms ± {} ms is too long (at most {} s in all)",
                mean.as_secs_f64() * 1e3,
                jitter.as_secs_f64() * 1e3,
                MAX_DELAY.as_secs()
            ));
        }
        Ok(Self {
            mean,
            jitter,
            dist,
            reorder,
        })
    }

    /// The longest delay a packet can get, for sizing fq.
    pub fn max(&self) -> Duration {
        let spread = if self.dist == Dist::Normal { 3 } else { 1 };
        self.mean + self.jitter * spread
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

/// `--ms 0.5` as a duration.
pub fn ms(v: f64) -> Result<Duration, String> {
    if v.is_nan() || v < 0.0 || !v.is_finite() {
        return Err(format!("`{v}` ms is not a delay (expected 0 or more)"));
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
        assert!(ms(-1.0).is_err() && ms(f64::NAN).is_err());
        assert_eq!(ms(0.5).unwrap(), Duration::from_micros(500));
    }
}
