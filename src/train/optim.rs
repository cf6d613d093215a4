//! SGD with momentum and weight decay, and LARS — candle's own SGD has neither momentum nor
//! weight decay, and there is no LARS.
//!
//! SGD (PyTorch semantics): u = g + wd·w; v ← m·v + u; w ← w − lr·v.
//! LARS (as in BYOL): u = g + wd·w; u ← u·η‖w‖/‖u‖ (factor 1 when either norm is 0);
//! v ← m·v + u; w ← w − lr·v. Biases and norm parameters optionally get neither the
//! adaptation nor the weight decay.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};

use crate::config::{OptimConfig, OptimizerName};
use crate::model::{Param, ParamKind};

/// Prefix of the momentum buffers in a checkpoint.
pub const VELOCITY_PREFIX: &str = "velocity.";

pub struct Optimizer {
    cfg: OptimConfig,
    velocity: Vec<Option<Tensor>>,
}

impl Optimizer {
    pub fn new(cfg: &OptimConfig, num_params: usize) -> Self {
        Self {
            cfg: cfg.clone(),
            velocity: vec![None; num_params],
        }
    }

    /// The momentum buffers, named `velocity.<parameter>`, for a checkpoint.
    pub fn state(&self, params: &[Param]) -> Vec<(String, Tensor)> {
        params
            .iter()
            .zip(&self.velocity)
            .filter_map(|(p, v)| Some((format!("{VELOCITY_PREFIX}{}", p.name), v.clone()?)))
            .collect()
    }

    /// Restores what [`Optimizer::state`] saved (a parameter without a saved buffer has had
    /// no update yet).
    pub fn load_state(
        &mut self,
        params: &[Param],
        tensors: &HashMap<String, Tensor>,
    ) -> Result<()> {
        if params.len() != self.velocity.len() {
            candle_core::bail!(
                "optimizer built for {} parameters, got {}",
                self.velocity.len(),
                params.len()
            );
        }
        for (p, v) in params.iter().zip(self.velocity.iter_mut()) {
            *v = match tensors.get(&format!("{VELOCITY_PREFIX}{}", p.name)) {
                Some(t) => {
                    let w = p.var.as_tensor();
                    if t.dims() != w.dims() {
                        candle_core::bail!(
                            "checkpoint velocity of {} has shape {:?}, the parameter {:?}",
                            p.name,
                            t.dims(),
                            w.dims()
                        );
                    }
                    Some(t.to_device(w.device())?.to_dtype(w.dtype())?)
                }
                None => None,
            };
        }
        Ok(())
    }

    fn excluded(&self, p: &Param) -> bool {
        self.cfg.name == OptimizerName::Lars
            && self.cfg.lars_exclude_bias_and_norm
            && matches!(p.kind, ParamKind::Bias | ParamKind::Norm)
    }

    /// One update of every parameter that received a gradient.
    pub fn step(&mut self, params: &[Param], grads: &GradStore, lr: f64) -> Result<()> {
        if params.len() != self.velocity.len() {
            candle_core::bail!(
                "optimizer built for {} parameters, got {}",
                self.velocity.len(),
                params.len()
            );
        }
        #[cfg(feature = "cuda")]
        if self.cfg.name == OptimizerName::Lars
            && params
                .first()
                .is_some_and(|p| p.var.device().is_cuda() && p.var.dtype() == DType::F32)
        {
            return self.fused_lars_step(params, grads, lr);
        }
        // Updates before momentum, u = g (+ wd·w).
        let mut updates: Vec<Option<Tensor>> = Vec::with_capacity(params.len());
        for p in params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                updates.push(None);
                continue;
            };
            let w = p.var.as_tensor().detach();
            let u = if self.cfg.weight_decay > 0.0 && !self.excluded(p) {
                (g + (&w * self.cfg.weight_decay)?)?
            } else {
                g.clone()
            };
            updates.push(Some(u));
        }
        if self.cfg.name == OptimizerName::Lars {
            self.apply_trust_ratios(params, &mut updates)?;
        }
        let m = self.cfg.momentum;
        for ((p, u), v) in params.iter().zip(updates).zip(self.velocity.iter_mut()) {
            let Some(u) = u else { continue };
            let next_v = match v.take() {
                Some(prev) if m > 0.0 => ((prev * m)? + u)?,
                _ => u,
            };
            p.var
                .set(&(p.var.as_tensor().detach() - (&next_v * lr)?)?)?;
            *v = Some(next_v);
        }
        Ok(())
    }

    /// LARS in one launch on a CUDA device (collapse-lab's kernel, tested against `step`).
    #[cfg(feature = "cuda")]
    fn fused_lars_step(&mut self, params: &[Param], grads: &GradStore, lr: f64) -> Result<()> {
        use crate::cuda::lars::{lars_step, LarsParam, LarsSettings};
        let mut chosen = Vec::new();
        for (i, p) in params.iter().enumerate() {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            if self.velocity[i].is_none() {
                self.velocity[i] = Some(p.var.as_tensor().zeros_like()?);
            }
            chosen.push((i, g));
        }
        let fused: Vec<LarsParam> = chosen
            .iter()
            .filter_map(|&(i, g)| {
                self.velocity[i].as_ref().map(|v| LarsParam {
                    weight: &params[i].var,
                    grad: g,
                    velocity: v,
                    excluded: self.excluded(&params[i]),
                })
            })
            .collect();
        lars_step(
            &fused,
            &LarsSettings {
                lr,
                momentum: self.cfg.momentum,
                weight_decay: self.cfg.weight_decay,
                eta: self.cfg.lars_eta,
            },
        )
    }

    /// Scales each adapted update by η‖w‖/‖u‖. All norms come back in one host copy.
    fn apply_trust_ratios(&self, params: &[Param], updates: &mut [Option<Tensor>]) -> Result<()> {
        let mut norms = Vec::new();
        let mut which = Vec::new();
        for (i, (p, u)) in params.iter().zip(updates.iter()).enumerate() {
            if let Some(u) = u {
                if !self.excluded(p) {
                    norms.push(p.var.as_tensor().sqr()?.sum_all()?.to_dtype(DType::F64)?);
                    norms.push(u.sqr()?.sum_all()?.to_dtype(DType::F64)?);
                    which.push(i);
                }
            }
        }
        if which.is_empty() {
            return Ok(());
        }
        let host = Tensor::stack(&norms, 0)?.to_vec1::<f64>()?;
        for (k, &i) in which.iter().enumerate() {
            let w_norm = host[2 * k].sqrt();
            let u_norm = host[2 * k + 1].sqrt();
            let factor = if w_norm > 0.0 && u_norm > 0.0 {
                self.cfg.lars_eta * w_norm / u_norm
            } else {
                1.0
            };
            if let Some(u) = updates[i].take() {
                updates[i] = Some((u * factor)?);
            }
        }
        Ok(())
    }
}

/// Global l2 norm of all gradients (before weight decay), one host copy.
pub fn grad_norm(params: &[Param], grads: &GradStore) -> Result<f64> {
    let squares: Vec<Tensor> = params
        .iter()
        .filter_map(|p| grads.get(p.var.as_tensor()))
        .map(|g| g.sqr()?.sum_all()?.to_dtype(DType::F64))
        .collect::<Result<_>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    Ok(Tensor::stack(&squares, 0)?
        .sum_all()?
        .to_scalar::<f64>()?
        .sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamStore;
    use candle_core::{Device, Var};

    fn setup() -> Result<(ParamStore, Vec<Param>)> {
        let mut store = ParamStore::new(&Device::Cpu, 0);
        store.weight("w", &[2], 1)?;
        store.bias("b", 1, 1)?;
        store.params()[0]
            .var
            .set(&Tensor::new(&[3f32, 4.0], &Device::Cpu)?)?;
        store.params()[1]
            .var
            .set(&Tensor::new(&[2f32], &Device::Cpu)?)?;
        let params = store.params().to_vec();
        Ok((store, params))
    }

    /// loss = Σ g·w makes the gradient exactly g.
    fn grads_for(params: &[Param], gw: [f32; 2], gb: f32) -> Result<GradStore> {
        let dev = Device::Cpu;
        let loss = ((params[0].var.as_tensor() * Tensor::new(&gw, &dev)?)?.sum_all()?
            + (params[1].var.as_tensor() * Tensor::new(&[gb], &dev)?)?.sum_all()?)?;
        loss.backward()
    }

    fn values(v: &Var) -> Result<Vec<f32>> {
        v.as_tensor().to_vec1::<f32>()
    }

    #[test]
    fn sgd_momentum_weight_decay_by_hand() -> Result<()> {
        let (_s, params) = setup()?;
        let cfg = OptimConfig {
            name: OptimizerName::Sgd,
            momentum: 0.9,
            weight_decay: 0.1,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(&cfg, 2);
        let g = grads_for(&params, [1.0, -1.0], 0.5)?;
        opt.step(&params, &g, 0.5)?;
        // u = g + 0.1·w = (1.3, −0.6); v = u; w = w − 0.5·v = (2.35, 4.3)
        let w = values(&params[0].var)?;
        assert!(
            (w[0] - 2.35).abs() < 1e-6 && (w[1] - 4.3).abs() < 1e-6,
            "{w:?}"
        );
        let g = grads_for(&params, [1.0, -1.0], 0.5)?;
        opt.step(&params, &g, 0.5)?;
        // u = (1.235, −0.57); v = 0.9·(1.3, −0.6) + u = (2.405, −1.11); w = (1.1475, 4.855)
        let w = values(&params[0].var)?;
        assert!(
            (w[0] - 1.1475).abs() < 1e-5 && (w[1] - 4.855).abs() < 1e-5,
            "{w:?}"
        );
        Ok(())
    }

    #[test]
    fn lars_step_by_hand_with_exclusions() -> Result<()> {
        let (_s, params) = setup()?;
        let cfg = OptimConfig {
            name: OptimizerName::Lars,
            momentum: 0.9,
            weight_decay: 0.5,
            lars_eta: 0.01,
            lars_exclude_bias_and_norm: true,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(&cfg, 2);
        let g = grads_for(&params, [0.5, 1.0], 0.25)?;
        opt.step(&params, &g, 2.0)?;
        // weight: u = g + 0.5·w = (2.0, 3.0); ‖w‖ = 5, ‖u‖ = √13;
        // u ← u·0.01·5/√13; w ← w − 2·u.
        let f = 0.01 * 5.0 / 13f64.sqrt();
        let w = values(&params[0].var)?;
        assert!((w[0] as f64 - (3.0 - 2.0 * 2.0 * f)).abs() < 1e-6, "{w:?}");
        assert!((w[1] as f64 - (4.0 - 2.0 * 3.0 * f)).abs() < 1e-6, "{w:?}");
        // bias excluded: plain u = g, no decay: b = 2 − 2·0.25 = 1.5
        let b = values(&params[1].var)?;
        assert!((b[0] - 1.5).abs() < 1e-6, "{b:?}");
        // Zero weight norm: factor 1.
        params[0]
            .var
            .set(&Tensor::new(&[0f32, 0.0], &Device::Cpu)?)?;
        let mut opt = Optimizer::new(&cfg, 2);
        let g = grads_for(&params, [0.5, 1.0], 0.0)?;
        opt.step(&params, &g, 1.0)?;
        let w = values(&params[0].var)?;
        assert!(
            (w[0] + 0.5).abs() < 1e-6 && (w[1] + 1.0).abs() < 1e-6,
            "{w:?}"
        );
        Ok(())
    }

    #[test]
    fn grad_norm_is_global_l2() -> Result<()> {
        let (_s, params) = setup()?;
        let g = grads_for(&params, [3.0, 0.0], 4.0)?;
        assert!((grad_norm(&params, &g)? - 5.0).abs() < 1e-9);
        Ok(())
    }
}

/// The fused CUDA LARS kernel against this CPU optimizer (the kernel sits beside the
/// networks; the optimizer it must equal lives here): two steps on the same parameters
/// (weights, biases and norm parameters, so exclusion is exercised), the largest difference of
/// a parameter relative to its largest magnitude.
#[cfg(feature = "cuda")]
pub fn fused_lars_self_check(gpu: &candle_core::Device) -> Result<f64> {
    use crate::cuda::lars::{lars_step, LarsParam, LarsSettings};
    use crate::metrics::difference::{relative_max_diff, worst};
    use crate::model::ParamStore;
    use candle_core::{Device, Var};

    let mut store = ParamStore::new(&Device::Cpu, 3);
    store.weight("w", &[16, 8], 8)?;
    store.bias("b", 16, 8)?;
    store.norm_param("n", 16, 1.0)?;
    let cfg = OptimConfig {
        name: OptimizerName::Lars,
        momentum: 0.9,
        weight_decay: 1.5e-6,
        lars_eta: 0.001,
        lars_exclude_bias_and_norm: true,
        ..OptimConfig::default()
    };
    let params = store.params().to_vec();
    let mut cpu_opt = Optimizer::new(&cfg, params.len());
    let gpu_w: Vec<Var> = params
        .iter()
        .map(|p| Var::from_tensor(&p.var.as_tensor().to_device(gpu)?))
        .collect::<Result<_>>()?;
    let vel: Vec<Tensor> = params
        .iter()
        .map(|p| Tensor::zeros(p.var.shape(), DType::F32, gpu))
        .collect::<Result<_>>()?;
    let mut largest = 0f64;
    for step in 0..2 {
        let loss = params
            .iter()
            .map(|p| (p.var.as_tensor().sqr()? * (step + 2) as f64)?.sum_all())
            .collect::<Result<Vec<_>>>()?;
        let loss = Tensor::stack(&loss, 0)?.sum_all()?;
        let grads = loss.backward()?;
        let g_gpu: Vec<Tensor> = params
            .iter()
            .map(|p| match grads.get(p.var.as_tensor()) {
                Some(g) => g.to_device(gpu),
                None => candle_core::bail!("no gradient for {}", p.name),
            })
            .collect::<Result<_>>()?;
        let fused: Vec<LarsParam> = params
            .iter()
            .enumerate()
            .map(|(i, p)| LarsParam {
                weight: &gpu_w[i],
                grad: &g_gpu[i],
                velocity: &vel[i],
                excluded: !matches!(p.kind, ParamKind::Weight),
            })
            .collect();
        lars_step(
            &fused,
            &LarsSettings {
                lr: 0.2,
                momentum: cfg.momentum,
                weight_decay: cfg.weight_decay,
                eta: cfg.lars_eta,
            },
        )?;
        cpu_opt.step(&params, &grads, 0.2)?;
        for (p, w) in params.iter().zip(&gpu_w) {
            let got = w.as_tensor().to_device(&Device::Cpu)?;
            largest = worst(largest, relative_max_diff(&got, p.var.as_tensor())?);
        }
    }
    Ok(largest)
}

/// Relative tolerance of the fused LARS kernel against the CPU optimizer: the norms are
/// summed in another order (f32), nothing else differs.
#[cfg(feature = "cuda")]
pub const FUSED_LARS_TOLERANCE: f64 = 1e-5;

#[cfg(all(test, feature = "cuda"))]
mod fused_lars_tests {
    use candle_core::{Device, Result};

    /// Needs a CUDA device: this test fails, rather than skips, without one.
    #[test]
    fn fused_lars_matches_the_cpu_optimizer() -> Result<()> {
        let worst = super::fused_lars_self_check(&Device::new_cuda(0)?)?;
        assert!(
            worst < super::FUSED_LARS_TOLERANCE,
            "largest relative difference {worst}"
        );
        Ok(())
    }
}
