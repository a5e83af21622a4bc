//! The little statistics the bench reports: medians with their spread over
//! rounds, percentiles of latency samples, and the two tests that judge
//! `--pct` (chi-square on the count, Wald-Wolfowitz runs for independence).
//! Kept apart so each formula has a unit test.

/// Median, min and max of per-round values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// The spread of the finite values, None if there are none.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// The spread of `f` over the rounds where it has a value.
pub fn over<T>(rounds: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<Spread> {
    spread(&rounds.iter().filter_map(f).collect::<Vec<_>>())
}

/// The `p`-th percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Chi-square (1 degree of freedom) of `hits` out of `n` against rate `p`.
pub fn chi_square(hits: u64, n: u64, p: f64) -> f64 {
    let n = n as f64;
    let expected = n * p;
    let other = n - expected;
    if expected <= 0.0 || other <= 0.0 {
        return 0.0;
    }
    let d = hits as f64 - expected;
    d * d / expected + d * d / other
}

/// The chi-square critical value for 1 degree of freedom at alpha 0.05.
pub const CHI2_1DF_05: f64 = 3.841;

/// The Wald-Wolfowitz runs test's z score of a two-valued sequence; large
/// |z| means the outcomes are not independent (clustered or alternating).
/// None when one of the values never occurs.
pub fn runs_z(seq: &[bool]) -> Option<f64> {
    let n1 = seq.iter().filter(|&&x| x).count() as f64;
    let n2 = seq.len() as f64 - n1;
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    let runs = 1 + seq.windows(2).filter(|w| w[0] != w[1]).count();
    let n = n1 + n2;
    let mean = 2.0 * n1 * n2 / n + 1.0;
    let var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - n) / (n * n * (n - 1.0));
    Some((runs as f64 - mean) / var.sqrt())
}

/// The two-sided normal critical value at alpha 0.05.
pub const Z_05: f64 = 1.96;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(spread(&[f64::NAN]), None);
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn chi_square_of_exact_and_off_counts() {
        assert_eq!(chi_square(500, 1000, 0.5), 0.0);
        // 550 of 1000 at p=.5: (50^2/500)*2 = 10.
        assert!((chi_square(550, 1000, 0.5) - 10.0).abs() < 1e-9);
        assert!(chi_square(530, 1000, 0.5) < CHI2_1DF_05 + 0.01);
    }

    #[test]
    fn runs_test_flags_clusters_and_alternation() {
        let alternating: Vec<bool> = (0..1000).map(|i| i % 2 == 0).collect();
        assert!(runs_z(&alternating).unwrap() > Z_05);
        let clustered: Vec<bool> = (0..1000).map(|i| i < 500).collect();
        assert!(runs_z(&clustered).unwrap() < -Z_05);
        // A fixed pseudo-random sequence (xorshift) passes.
        let mut x: u32 = 2_463_534_242;
        let random: Vec<bool> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x & 1 == 1
            })
            .collect();
        assert!(runs_z(&random).unwrap().abs() < Z_05);
        assert_eq!(runs_z(&[true, true]), None);
    }
}
