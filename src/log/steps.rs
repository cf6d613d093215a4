//! `steps.parquet`: one row per optimizer step (schema in ../shared/architecture.md).

use std::path::Path;

use super::parquet::{read_parquet, write_parquet, ColumnReader, TableBuilder};
use crate::config::InputError;

/// One optimizer step, as logged in `steps.parquet`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepRecord {
    pub epoch: u32,
    pub step: u64,
    pub loss: f64,
    /// Mean cosine between the two views of the same image (z vs z′, both view orders).
    pub pos_cos: f64,
    /// Mean cosine between different images (z vs z′).
    pub neg_cos: f64,
    /// Std of l2-normalised online projections of view 0.
    pub z_std: f64,
    /// RankMe of the (uncentred) online projections of view 0.
    pub effective_rank: f64,
    pub lr: f64,
    /// EMA coefficient used this step (None for methods without an EMA target).
    pub tau: Option<f64>,
    pub grad_norm: f64,
    /// Wall time of the training step (data wait, forward, backward, update), ms.
    pub step_ms: f64,
    /// Wall time of the per-step diagnostics, ms.
    pub metrics_ms: f64,
}

/// `steps.parquet`'s columns, in order: the one definition (the writer names its columns from
/// it; tests hold the Python check and the readers to it).
pub const STEPS_COLUMNS: [&str; 15] = [
    "run_id",
    "variant",
    "seed",
    "epoch",
    "step",
    "loss",
    "pos_cos",
    "neg_cos",
    "z_std",
    "effective_rank",
    "lr",
    "tau",
    "grad_norm",
    "step_ms",
    "metrics_ms",
];

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
        let [run_id, variant, seed, epoch, step, loss, pos_cos, neg_cos, z_std, effective_rank, lr, tau, grad_norm, step_ms, metrics_ms] =
            STEPS_COLUMNS;
        let mut df = TableBuilder::new()
            .str(run_id, vec![self.run_id.clone(); n])
            .str(variant, vec![self.variant.clone(); n])
            .u64(seed, vec![self.seed; n])
            .u32(epoch, self.rows.iter().map(|r| r.epoch).collect())
            .u64(step, self.rows.iter().map(|r| r.step).collect())
            .f64(loss, col(|r| r.loss))
            .f64(pos_cos, col(|r| r.pos_cos))
            .f64(neg_cos, col(|r| r.neg_cos))
            .f64(z_std, col(|r| r.z_std))
            .f64(effective_rank, col(|r| r.effective_rank))
            .f64(lr, col(|r| r.lr))
            .opt_f64(tau, self.rows.iter().map(|r| r.tau).collect())
            .f64(grad_norm, col(|r| r.grad_norm))
            .f64(step_ms, col(|r| r.step_ms))
            .f64(metrics_ms, col(|r| r.metrics_ms))
            .build()?;
        write_parquet(path, &mut df)
    }

    /// Reads back what [`StepsLog::write`] wrote (a checkpoint's log), every value exact.
    pub fn read(path: &Path) -> Result<Self, InputError> {
        let df = read_parquet(path)?;
        let c = ColumnReader::new(&df, path);
        let f = |name: &str| c.required(name, c.f64s(name)?);
        let (epoch, step) = (
            c.required("epoch", c.u32s("epoch")?)?,
            c.required("step", c.u64s("step")?)?,
        );
        let (loss, pos_cos, neg_cos, z_std) =
            (f("loss")?, f("pos_cos")?, f("neg_cos")?, f("z_std")?);
        let (effective_rank, lr, grad_norm) = (f("effective_rank")?, f("lr")?, f("grad_norm")?);
        let (step_ms, metrics_ms, tau) = (f("step_ms")?, f("metrics_ms")?, c.f64s("tau")?);
        let rows = (0..df.height())
            .map(|i| StepRecord {
                epoch: epoch[i],
                step: step[i],
                loss: loss[i],
                pos_cos: pos_cos[i],
                neg_cos: neg_cos[i],
                z_std: z_std[i],
                effective_rank: effective_rank[i],
                lr: lr[i],
                tau: tau[i],
                grad_norm: grad_norm[i],
                step_ms: step_ms[i],
                metrics_ms: metrics_ms[i],
            })
            .collect();
        let first = |name: &str| -> Result<Option<String>, InputError> {
            Ok(c.strs(name)?.into_iter().next().flatten())
        };
        Ok(Self {
            run_id: first("run_id")?.unwrap_or_default(),
            variant: first("variant")?.unwrap_or_default(),
            seed: c
                .u64s("seed")?
                .into_iter()
                .next()
                .flatten()
                .unwrap_or_default(),
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_gives_every_value_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("steps.parquet");
        let mut log = StepsLog::new("byol-s3", "byol", 3);
        for (i, (tau, loss)) in [
            (Some(0.996), 1.0 / 3.0),
            (None, f64::NAN),
            (Some(1.0), -0.0),
        ]
        .into_iter()
        .enumerate()
        {
            log.rows.push(StepRecord {
                epoch: i as u32 / 2,
                step: i as u64,
                loss,
                pos_cos: 0.1 + i as f64,
                neg_cos: f64::INFINITY,
                z_std: 1e-300,
                effective_rank: 7.25,
                lr: 0.05,
                tau,
                grad_norm: f64::MAX,
                step_ms: 12.5,
                metrics_ms: 0.5,
            });
        }
        log.write(&path)?;
        let names: Vec<String> = super::super::read_parquet(&path)?
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(names, STEPS_COLUMNS);
        let back = StepsLog::read(&path)?;
        assert_eq!(
            (back.run_id.as_str(), back.variant.as_str(), back.seed),
            ("byol-s3", "byol", 3)
        );
        assert_eq!(back.rows.len(), 3);
        for (a, b) in log.rows.iter().zip(&back.rows) {
            // Bit patterns: NaN == NaN and -0.0 ≠ 0.0 here.
            let bits = |r: &StepRecord| {
                [
                    r.loss,
                    r.pos_cos,
                    r.neg_cos,
                    r.z_std,
                    r.effective_rank,
                    r.lr,
                    r.grad_norm,
                ]
                .map(f64::to_bits)
            };
            assert_eq!(bits(a), bits(b));
            assert_eq!((a.epoch, a.step, a.tau), (b.epoch, b.step, b.tau));
        }
        Ok(())
    }
}
