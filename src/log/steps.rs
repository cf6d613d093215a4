//! `steps.parquet`: one row per optimizer step (schema in ../shared/architecture.md).

use std::path::Path;

use super::parquet::{write_parquet, TableBuilder};
use crate::train::StepRecord;

/// The steps of one run, kept in memory and written at the end of the run (also when it
/// diverged or failed part-way: nothing is lost).
pub struct StepsLog {
    pub run_id: String,
    pub variant: String,
    pub seed: u64,
    pub rows: Vec<StepRecord>,
}

impl StepsLog {
    pub fn new(run_id: &str, variant: &str, seed: u64) -> Self {
        Self {
            run_id: run_id.into(),
            variant: variant.into(),
            seed,
            rows: Vec::new(),
        }
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let n = self.rows.len();
        let col = |f: fn(&StepRecord) -> f64| self.rows.iter().map(f).collect::<Vec<f64>>();
        let mut df = TableBuilder::new()
            .str("run_id", vec![self.run_id.clone(); n])
            .str("variant", vec![self.variant.clone(); n])
            .u64("seed", vec![self.seed; n])
            .u32("epoch", self.rows.iter().map(|r| r.epoch).collect())
            .u64("step", self.rows.iter().map(|r| r.step).collect())
            .f64("loss", col(|r| r.loss))
            .f64("pos_cos", col(|r| r.pos_cos))
            .f64("neg_cos", col(|r| r.neg_cos))
            .f64("z_std", col(|r| r.z_std))
            .f64("effective_rank", col(|r| r.effective_rank))
            .f64("lr", col(|r| r.lr))
            .opt_f64("tau", self.rows.iter().map(|r| r.tau).collect())
            .f64("grad_norm", col(|r| r.grad_norm))
            .f64("step_ms", col(|r| r.step_ms))
            .f64("metrics_ms", col(|r| r.metrics_ms))
            .build()?;
        write_parquet(path, &mut df)
    }
}
