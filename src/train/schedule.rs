//! Learning-rate and EMA-coefficient schedules as pure functions of the step.

use std::f64::consts::PI;

use crate::config::{LrSchedule, OptimConfig, TauSchedule};

/// Learning rate at `step` (0-based) of `total` steps: linear warm-up, then constant or cosine.
pub fn lr_at(cfg: &OptimConfig, step: u64, total: u64) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    match cfg.schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Cosine => {
            let span = total.saturating_sub(cfg.warmup_steps).max(1) as f64;
            let k = (step - cfg.warmup_steps) as f64;
            cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1.0 + (PI * k / span).cos())
        }
    }
}

/// EMA coefficient at `step`: τ₀, or BYOL's τ = 1 − (1 − τ₀)(cos(πk/K) + 1)/2.
pub fn tau_at(tau0: f64, schedule: TauSchedule, step: u64, total: u64) -> f64 {
    match schedule {
        TauSchedule::Constant => tau0,
        TauSchedule::Cosine => {
            let k = step as f64 / total.max(1) as f64;
            1.0 - (1.0 - tau0) * ((PI * k).cos() + 1.0) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_hit_their_end_points() {
        let mut cfg = OptimConfig {
            lr: 1.0,
            lr_min: 0.1,
            warmup_steps: 10,
            schedule: LrSchedule::Cosine,
            ..OptimConfig::default()
        };
        assert!((lr_at(&cfg, 0, 110) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 9, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 60, 110) - 0.55).abs() < 1e-12);
        assert!((lr_at(&cfg, 110, 110) - 0.1).abs() < 1e-12);
        cfg.schedule = LrSchedule::Constant;
        assert_eq!(lr_at(&cfg, 50, 110), 1.0);
        assert_eq!(tau_at(0.996, TauSchedule::Constant, 5, 10), 0.996);
        assert!((tau_at(0.996, TauSchedule::Cosine, 0, 10) - 0.996).abs() < 1e-12);
        assert!((tau_at(0.996, TauSchedule::Cosine, 5, 10) - 0.998).abs() < 1e-12);
        assert!((tau_at(0.996, TauSchedule::Cosine, 10, 10) - 1.0).abs() < 1e-12);
    }
}
