//! A run's final metrics: means over the steps of its last epoch (finite values only).

use crate::log::StepRecord;

#[derive(Debug, Clone, PartialEq)]
pub struct FinalMetrics {
    pub pos_cos: f64,
    pub neg_cos: f64,
    pub z_std: f64,
    pub effective_rank: f64,
}

impl FinalMetrics {
    pub fn from_steps(steps: &[StepRecord]) -> Option<Self> {
        let last_epoch = steps.iter().map(|r| r.epoch).max()?;
        let rows: Vec<&StepRecord> = steps
            .iter()
            .filter(|r| r.epoch == last_epoch && r.loss.is_finite())
            .collect();
        if rows.is_empty() {
            return None;
        }
        let mean = |f: fn(&StepRecord) -> f64| {
            let v: Vec<f64> = rows
                .iter()
                .map(|r| f(r))
                .filter(|x| x.is_finite())
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        Some(Self {
            pos_cos: mean(|r| r.pos_cos),
            neg_cos: mean(|r| r.neg_cos),
            z_std: mean(|r| r.z_std),
            effective_rank: mean(|r| r.effective_rank),
        })
    }
}
