//! `diagnostics.parquet`: one row per (source, step, embedding set), the metrics and, beside
//! them, every constant they depend on — so a table read elsewhere says how it was computed.

use std::path::Path;

use super::{CkaResult, Constants, Diagnosis};
use crate::log::{write_parquet, TableBuilder};
use crate::metrics::verdict::{COSINE_THRESHOLD, RANK_FRACTION, STD_FRACTION};

pub const DIAGNOSTICS_FILE: &str = "diagnostics.parquet";
pub const CKA_FILE: &str = "cka.parquet";

/// Writes linear-CKA comparisons to `path` (atomically), with how they were computed.
pub fn write_cka(path: &Path, rows: &[CkaResult]) -> anyhow::Result<()> {
    let s = |g: fn(&CkaResult) -> &String| rows.iter().map(|r| g(r).clone()).collect();
    let mut df = TableBuilder::new()
        .str("a", s(|r| &r.a))
        .str("set_a", s(|r| &r.set_a))
        .str("b", s(|r| &r.b))
        .str("set_b", s(|r| &r.set_b))
        .u64("rows", rows.iter().map(|r| r.rows).collect())
        .u64(
            "nonfinite_rows",
            rows.iter().map(|r| r.nonfinite_rows).collect(),
        )
        .f64("cka", rows.iter().map(|r| r.cka).collect())
        .str(
            "kernel",
            vec!["linear, columns centred".to_string(); rows.len()],
        )
        .build()?;
    write_parquet(path, &mut df)
}

/// Writes the diagnoses to `path` (atomically).
pub fn write_diagnostics(path: &Path, rows: &[Diagnosis]) -> anyhow::Result<()> {
    let f = |g: fn(&Diagnosis) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let opt = |g: fn(&Diagnosis) -> Option<f64>| rows.iter().map(g).collect::<Vec<_>>();
    let same = |v: f64| vec![v; rows.len()];
    let mut df = TableBuilder::new()
        .str("source", rows.iter().map(|r| r.source.clone()).collect())
        .opt_u64("step", rows.iter().map(|r| r.step).collect())
        .str("set", rows.iter().map(|r| r.set.clone()).collect())
        .u64("rows", rows.iter().map(|r| r.metrics.rows).collect())
        .u64(
            "nonfinite_rows",
            rows.iter().map(|r| r.metrics.nonfinite_rows).collect(),
        )
        .u64("dim", rows.iter().map(|r| r.metrics.dim as u64).collect())
        .u64(
            "rank_cap",
            rows.iter().map(|r| r.metrics.rank_cap as u64).collect(),
        )
        .f64("effective_rank", f(|r| r.metrics.effective_rank))
        .f64("z_std", f(|r| r.metrics.z_std))
        .f64("neg_cos_within", f(|r| r.metrics.neg_cos))
        .opt_f64("pos_cos", opt(|r| r.pair.as_ref().map(|p| p.pos_cos)))
        .opt_f64("neg_cos", opt(|r| r.pair.as_ref().map(|p| p.neg_cos)))
        .opt_f64("alignment", opt(|r| r.pair.as_ref().map(|p| p.alignment)))
        .f64("alpha_req", f(|r| r.metrics.alpha_req))
        .f64("var_min", f(|r| r.metrics.var_min))
        .f64("var_median", f(|r| r.metrics.var_median))
        .f64("var_max", f(|r| r.metrics.var_max))
        .f64(
            "spectrum_top",
            f(|r| r.metrics.spectrum.first().copied().unwrap_or(f64::NAN)),
        )
        .str(
            "verdict",
            rows.iter()
                .map(|r| r.verdict.as_str().to_string())
                .collect(),
        )
        .str(
            "reasons",
            rows.iter().map(|r| r.reasons.join("; ")).collect(),
        )
        .f64("rankme_eps", same(Constants::RANKME_EPS))
        .f64("norm_floor", same(Constants::NORM_FLOOR))
        .f64("alpha_fit_floor", same(Constants::ALPHA_FIT_FLOOR))
        .f64("cosine_threshold", same(COSINE_THRESHOLD))
        .f64("std_fraction", same(STD_FRACTION))
        .f64("rank_fraction", same(RANK_FRACTION))
        .str("rank_centring", vec!["uncentred".to_string(); rows.len()])
        .build()?;
    write_parquet(path, &mut df)
}
