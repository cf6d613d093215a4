//! How a claim is decided: stated tests on per-seed values, three-valued verdicts.
//!
//! A claim is made of parts, each decided on its own, and holds when every part holds, fails
//! when any part fails, and is inconclusive otherwise:
//! - a **comparison** of a metric between two variants, paired by seed (the run of seed s
//!   against the other variant's run of the same seed: the untrained baseline of seed s, or a
//!   sibling variant), decided by the 95 % Student-t confidence interval of the mean paired
//!   difference (n − 1 degrees of freedom) against a minimum effect that counts: a claim "A is
//!   above B" holds when the whole interval lies above the minimum effect, fails when the whole
//!   interval lies below it, and is inconclusive when the interval straddles it; a claim "A is
//!   not above B" the other way round;
//! - a **per-seed threshold** (collapse: cosines > 0.99; separation: pos − neg > 0.3), met or
//!   not by each seed's run: holds when at least [`SEEDS_HOLD`] of the seeds meet it, fails when
//!   fewer than [`SEEDS_FAIL`] do, inconclusive in between.
//!
//! Fewer than [`MIN_SEEDS`] seeds decide nothing: the part is `inconclusive` (two seeds give a
//! t interval with one degree of freedom, 12.7 standard errors wide each side, or a majority of
//! two). A part whose variants are not in the grid is `not measured`.

use std::collections::BTreeMap;

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Confidence of the comparisons' intervals (two-sided).
pub const CONFIDENCE: f64 = 0.95;
/// Fewest seeds that decide a part.
pub const MIN_SEEDS: usize = 3;
/// Share of seeds at which a per-seed threshold holds.
pub const SEEDS_HOLD: f64 = 0.8;
/// Share of seeds below which a per-seed threshold fails.
pub const SEEDS_FAIL: f64 = 0.5;
/// The comparisons' test, as the tables name it.
pub const PAIRED_T: &str = "paired t, 95 % CI (df = seeds − 1)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVerdict {
    Holds,
    Fails,
    Inconclusive,
    NotMeasured,
}

impl ClaimVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holds => "holds",
            Self::Fails => "fails",
            Self::Inconclusive => "inconclusive",
            Self::NotMeasured => "not measured",
        }
    }

    /// A claim of several parts: fails if any part fails, holds if all hold; a part not
    /// measured leaves the claim not measured (unless another part already fails it).
    pub fn combine(parts: impl IntoIterator<Item = ClaimVerdict>) -> Self {
        let parts: Vec<ClaimVerdict> = parts.into_iter().collect();
        if parts.contains(&Self::Fails) {
            Self::Fails
        } else if parts.is_empty() || parts.contains(&Self::NotMeasured) {
            Self::NotMeasured
        } else if parts.iter().all(|p| *p == Self::Holds) {
            Self::Holds
        } else {
            Self::Inconclusive
        }
    }
}

/// The mean of per-seed values and its two-sided [`CONFIDENCE`] interval (Student's t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub effect: f64,
    pub low: f64,
    pub high: f64,
    pub seeds: usize,
}

/// The t interval of the mean of `values` (non-finite values left out); None with fewer than
/// two values (no spread to estimate).
pub fn t_interval(values: &[f64]) -> Option<Interval> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_quantile(n - 1) * (var / n as f64).sqrt();
    Some(Interval {
        effect: mean,
        low: mean - half,
        high: mean + half,
        seeds: n,
    })
}

/// The (1 + CONFIDENCE) / 2 quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile(df: usize) -> f64 {
    StudentsT::new(0.0, 1.0, df as f64)
        .map(|t| t.inverse_cdf(0.5 + CONFIDENCE / 2.0))
        .unwrap_or(f64::NAN)
}

/// Which way a comparison's claim points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// "A is above B by at least the minimum effect".
    Above,
    /// "A is not above B by the minimum effect" (no better than B).
    NotAbove,
}

/// One decided part of a claim, as the tables show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// What was compared or counted, e.g. "probe: byol − random".
    pub label: String,
    /// The test that decided it.
    pub test: String,
    /// Mean paired difference, or the share of seeds meeting a threshold.
    pub effect: Option<f64>,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub seeds: usize,
    /// Minimum effect (comparisons) or the share of seeds that holds (thresholds).
    pub min_effect: f64,
    pub verdict: ClaimVerdict,
}

/// Per-seed differences `a[s] − b[s]` over the seeds both have (finite values only).
pub fn paired_differences(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> Vec<f64> {
    a.iter()
        .filter_map(|(s, x)| b.get(s).map(|y| x - y))
        .filter(|d| d.is_finite())
        .collect()
}

/// Decides a comparison from its interval.
pub fn decide(interval: Option<&Interval>, min_effect: f64, direction: Direction) -> ClaimVerdict {
    let Some(i) = interval.filter(|i| i.seeds >= MIN_SEEDS) else {
        return ClaimVerdict::Inconclusive;
    };
    let (above, below) = (i.low > min_effect, i.high < min_effect);
    match (direction, above, below) {
        (Direction::Above, true, _) | (Direction::NotAbove, _, true) => ClaimVerdict::Holds,
        (Direction::Above, _, true) | (Direction::NotAbove, true, _) => ClaimVerdict::Fails,
        _ => ClaimVerdict::Inconclusive,
    }
}

/// A comparison part: `a` against `b` paired by seed.
pub fn comparison(
    label: String,
    a: &BTreeMap<u64, f64>,
    b: &BTreeMap<u64, f64>,
    min_effect: f64,
    direction: Direction,
) -> Part {
    let diffs = paired_differences(a, b);
    let interval = t_interval(&diffs);
    Part {
        label,
        test: PAIRED_T.to_string(),
        effect: interval.map(|i| i.effect).or(diffs.first().copied()),
        low: interval.map(|i| i.low),
        high: interval.map(|i| i.high),
        seeds: diffs.len(),
        min_effect,
        verdict: decide(interval.as_ref(), min_effect, direction),
    }
}

/// Decides a per-seed threshold met by `met` of `seeds` seeds.
pub fn seed_share(met: usize, seeds: usize) -> ClaimVerdict {
    if seeds < MIN_SEEDS {
        return ClaimVerdict::Inconclusive;
    }
    let share = met as f64 / seeds as f64;
    if share >= SEEDS_HOLD {
        ClaimVerdict::Holds
    } else if share < SEEDS_FAIL {
        ClaimVerdict::Fails
    } else {
        ClaimVerdict::Inconclusive
    }
}

/// A per-seed threshold part from each seed's yes/no.
pub fn threshold(label: String, test: &str, met: &[bool]) -> Part {
    let k = met.iter().filter(|m| **m).count();
    Part {
        label,
        test: test.to_string(),
        effect: (!met.is_empty()).then(|| k as f64 / met.len() as f64),
        low: None,
        high: None,
        seeds: met.len(),
        min_effect: SEEDS_HOLD,
        verdict: seed_share(k, met.len()),
    }
}

/// A part whose variants are missing from the grid.
pub fn not_measured(label: String, test: &str) -> Part {
    Part {
        label,
        test: test.to_string(),
        effect: None,
        low: None,
        high: None,
        seeds: 0,
        min_effect: f64::NAN,
        verdict: ClaimVerdict::NotMeasured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_quantiles_are_the_textbook_ones() {
        // Two-sided 95 %: t_{0.975, df} from any table.
        for (df, q) in [
            (1, 12.7062),
            (2, 4.3027),
            (3, 3.1824),
            (4, 2.7764),
            (9, 2.2622),
            (29, 2.0452),
        ] {
            assert!(
                close(t_quantile(df), q, 1e-4),
                "df {df}: {}",
                t_quantile(df)
            );
        }
        assert!(close(t_quantile(100_000), 1.95996, 1e-4));
    }

    #[test]
    fn a_known_effect_with_known_spread_gives_the_textbook_interval() {
        // Mean 10, sample sd 2 (values 8, 10, 12, 8, 12 → deviations ±2, 0: s² = 16/4 = 4):
        // 10 ± 2.7764 · 2 / √5.
        let i = t_interval(&[8.0, 10.0, 12.0, 8.0, 12.0]).expect("five values");
        let half = 2.776_445 * 2.0 / 5f64.sqrt();
        assert_eq!(i.seeds, 5);
        assert!(close(i.effect, 10.0, 1e-12));
        assert!(
            close(i.low, 10.0 - half, 1e-5) && close(i.high, 10.0 + half, 1e-5),
            "{i:?}"
        );
    }

    #[test]
    fn identical_seeds_give_a_zero_width_interval() {
        let i = t_interval(&[0.12; 4]).expect("four values");
        assert_eq!((i.low, i.effect, i.high), (0.12, 0.12, 0.12));
        assert_eq!(
            decide(Some(&i), 0.03, Direction::Above),
            ClaimVerdict::Holds
        );
        assert_eq!(
            decide(Some(&i), 0.03, Direction::NotAbove),
            ClaimVerdict::Fails
        );
        assert_eq!(decide(Some(&i), 0.2, Direction::Above), ClaimVerdict::Fails);
    }

    #[test]
    fn two_seeds_are_inconclusive_whatever_they_show() {
        let i = t_interval(&[0.30, 0.31]).expect("two values");
        // The interval alone would clear 3 points; two seeds cannot carry a verdict.
        assert!(i.low > 0.03);
        assert_eq!(
            decide(Some(&i), 0.03, Direction::Above),
            ClaimVerdict::Inconclusive
        );
        assert_eq!(t_interval(&[0.3]), None);
        assert_eq!(
            decide(None, 0.03, Direction::Above),
            ClaimVerdict::Inconclusive
        );
        assert_eq!(seed_share(2, 2), ClaimVerdict::Inconclusive);
    }

    #[test]
    fn an_interval_straddling_the_minimum_effect_is_inconclusive() {
        // Mean 5 points, seeds scattered ±5: the interval holds both 0 and 10.
        let i = t_interval(&[0.0, 0.05, 0.10]).expect("three values");
        assert_eq!(
            decide(Some(&i), 0.03, Direction::Above),
            ClaimVerdict::Inconclusive
        );
        assert_eq!(
            decide(Some(&i), 0.03, Direction::NotAbove),
            ClaimVerdict::Inconclusive
        );
        // Clearly below the minimum effect: "above" fails, "not above" holds.
        let i = t_interval(&[-0.01, 0.0, 0.01]).expect("three values");
        assert_eq!(
            decide(Some(&i), 0.03, Direction::Above),
            ClaimVerdict::Fails
        );
        assert_eq!(
            decide(Some(&i), 0.03, Direction::NotAbove),
            ClaimVerdict::Holds
        );
    }

    #[test]
    fn pairs_are_made_by_seed() {
        let a: BTreeMap<u64, f64> = [(0, 0.5), (1, 0.6), (2, 0.7), (9, 0.9)].into();
        let b: BTreeMap<u64, f64> = [(2, 0.2), (1, 0.3), (0, 0.1), (5, 0.0)].into();
        let d = paired_differences(&a, &b);
        assert_eq!(d.len(), 3);
        assert!(close(d[0], 0.4, 1e-12) && close(d[1], 0.3, 1e-12) && close(d[2], 0.5, 1e-12));
    }

    #[test]
    fn seed_shares_and_combinations() {
        use ClaimVerdict::*;
        assert_eq!(seed_share(4, 5), Holds);
        assert_eq!(seed_share(3, 5), Inconclusive);
        assert_eq!(seed_share(2, 5), Fails);
        assert_eq!(seed_share(3, 3), Holds);
        assert_eq!(seed_share(2, 3), Inconclusive);
        assert_eq!(ClaimVerdict::combine([Holds, Holds]), Holds);
        assert_eq!(ClaimVerdict::combine([Holds, Inconclusive]), Inconclusive);
        assert_eq!(ClaimVerdict::combine([Inconclusive, Fails]), Fails);
        assert_eq!(ClaimVerdict::combine([Holds, NotMeasured]), NotMeasured);
    }
}
