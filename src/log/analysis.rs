//! `analysis.parquet` and `analysis_evals.parquet`: what `collapse-lab analyze` recomputed
//! from a run's logged embeddings and stored weights, and how far that is from the live log.

use std::path::Path;

use super::evals::{metric_columns, EvalRecord};
use super::parquet::{write_parquet, TableBuilder};

/// `analysis.parquet`'s columns, in order (`steps.parquet`'s names for the same metrics).
pub const ANALYSIS_COLUMNS: [&str; 9] = [
    "run_id",
    "step",
    "epoch",
    "pos_cos",
    "neg_cos",
    "z_std",
    "effective_rank",
    "max_abs_diff_live",
    "live_comparison",
];

/// Metrics recomputed for one logged step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepAnalysis {
    pub run_id: String,
    pub step: u64,
    pub epoch: u32,
    pub pos_cos: f64,
    pub neg_cos: f64,
    pub z_std: f64,
    pub effective_rank: f64,
    /// Largest |recomputed − live| over the metrics above: None without a live row, NaN when
    /// a value on either side is not finite.
    pub max_abs_diff_live: Option<f64>,
    pub live: LiveComparison,
}

/// Recomputed and live values agree when they differ by at most this (f32 embeddings, f64
/// metrics: the same code on the same numbers gives 0; this leaves room for reductions done in
/// another order).
pub const LIVE_TOLERANCE: f64 = 1e-5;

/// How a recomputed metric compares with the one logged live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveComparison {
    /// Every value within [`LIVE_TOLERANCE`].
    Agrees,
    /// Some value differs by more.
    Disagrees,
    /// No live value to compare with (no row, or no `steps.parquet`).
    Missing,
    /// A value on either side is NaN or infinite: nothing was compared.
    NotFinite,
}

impl LiveComparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agrees => "agrees",
            Self::Disagrees => "disagrees",
            Self::Missing => "missing",
            Self::NotFinite => "not_finite",
        }
    }

    /// Compares (recomputed, live) pairs; `None` when there is no live record at all. Returns
    /// the outcome and the largest |difference| (NaN when a value is not finite).
    pub fn of(pairs: Option<&[(f64, f64)]>) -> (Self, Option<f64>) {
        let Some(pairs) = pairs else {
            return (Self::Missing, None);
        };
        if pairs.iter().any(|(a, b)| !a.is_finite() || !b.is_finite()) {
            return (Self::NotFinite, Some(f64::NAN));
        }
        let d = pairs.iter().map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let verdict = if d <= LIVE_TOLERANCE {
            Self::Agrees
        } else {
            Self::Disagrees
        };
        (verdict, Some(d))
    }
}

/// The final evaluation of a run recomputed from its stored weights, and its largest
/// difference from the live one (last row of `evals.parquet`).
#[derive(Debug, Clone)]
pub struct EvalAnalysis {
    pub run_id: String,
    pub record: EvalRecord,
    pub max_abs_diff_live: Option<f64>,
    pub live: LiveComparison,
}

/// Writes `analysis.parquet`: recomputed per-step metrics (same names as `steps.parquet`)
/// and their distance from the live values.
pub fn write_analysis(path: &Path, rows: &[StepAnalysis]) -> anyhow::Result<()> {
    let col = |f: fn(&StepAnalysis) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let [run_id, step, epoch, pos_cos, neg_cos, z_std, effective_rank, max_abs_diff_live, live_comparison] =
        ANALYSIS_COLUMNS;
    let mut df = TableBuilder::new()
        .str(run_id, rows.iter().map(|r| r.run_id.clone()).collect())
        .u64(step, rows.iter().map(|r| r.step).collect())
        .u32(epoch, rows.iter().map(|r| r.epoch).collect())
        .f64(pos_cos, col(|r| r.pos_cos))
        .f64(neg_cos, col(|r| r.neg_cos))
        .f64(z_std, col(|r| r.z_std))
        .f64(effective_rank, col(|r| r.effective_rank))
        .opt_f64(
            max_abs_diff_live,
            rows.iter().map(|r| r.max_abs_diff_live).collect(),
        )
        .str(
            live_comparison,
            rows.iter().map(|r| r.live.as_str().to_string()).collect(),
        )
        .build()?;
    write_parquet(path, &mut df)
}

/// Writes `analysis_evals.parquet`: each run's final evaluation recomputed from its weights.
pub fn write_eval_analysis(path: &Path, rows: &[EvalAnalysis]) -> anyhow::Result<()> {
    let base = TableBuilder::new().str("run_id", rows.iter().map(|r| r.run_id.clone()).collect());
    let records: Vec<&EvalRecord> = rows.iter().map(|r| &r.record).collect();
    let mut df = metric_columns(base, &records)
        .opt_f64(
            "max_abs_diff_live",
            rows.iter().map(|r| r.max_abs_diff_live).collect(),
        )
        .str(
            "live_comparison",
            rows.iter().map(|r| r.live.as_str().to_string()).collect(),
        )
        .build()?;
    write_parquet(path, &mut df)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_columns_are_the_declared_ones() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.parquet");
        let row = StepAnalysis {
            run_id: "r".into(),
            step: 3,
            epoch: 1,
            pos_cos: 0.5,
            neg_cos: 0.1,
            z_std: 0.2,
            effective_rank: 4.0,
            max_abs_diff_live: Some(0.0),
            live: LiveComparison::Agrees,
        };
        write_analysis(&path, &[row])?;
        let names: Vec<String> = super::super::read_parquet(&path)?
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(names, ANALYSIS_COLUMNS);
        Ok(())
    }

    #[test]
    fn live_comparison_of_pairs() {
        assert_eq!(LiveComparison::of(None), (LiveComparison::Missing, None));
        assert_eq!(
            LiveComparison::of(Some(&[(1.0, 1.0 + LIVE_TOLERANCE / 2.0)])).0,
            LiveComparison::Agrees
        );
        assert_eq!(
            LiveComparison::of(Some(&[(1.0, 1.0), (0.0, 2.0 * LIVE_TOLERANCE)])),
            (LiveComparison::Disagrees, Some(2.0 * LIVE_TOLERANCE))
        );
        assert_eq!(
            LiveComparison::of(Some(&[(f64::NAN, 1.0)])).0,
            LiveComparison::NotFinite
        );
    }
}
