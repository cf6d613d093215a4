//! The online network (encoder f → projector g → predictor q) and its EMA target.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use crate::config::ModelConfig;
use crate::model::{Encoder, Mlp, ParamStore};

/// Encoder, projector and (for BYOL-like methods) predictor, trained by the optimizer.
#[derive(Debug)]
pub struct OnlineNetwork {
    pub store: ParamStore,
    pub encoder: Encoder,
    pub projector: Mlp,
    pub predictor: Option<Mlp>,
}

/// Encoder and projector, registered in `store` in this order (the EMA pairs the target's
/// parameters with the online network's by position).
fn encoder_and_projector(
    store: &mut ParamStore,
    cfg: &ModelConfig,
    in_channels: usize,
) -> Result<(Encoder, Mlp)> {
    let encoder = Encoder::new(store, "encoder", cfg, in_channels)?;
    let projector = Mlp::new(
        store,
        "projector",
        encoder.out_dim(),
        &cfg.projector,
        cfg.gn_groups,
        cfg.ghost_batch,
    )?;
    Ok((encoder, projector))
}

/// What one view produces on the online side.
pub struct OnlineOutput {
    pub y: Tensor,
    pub z: Tensor,
    pub p: Option<Tensor>,
}

impl OnlineNetwork {
    pub fn new(
        mut store: ParamStore,
        cfg: &ModelConfig,
        in_channels: usize,
        with_predictor: bool,
    ) -> Result<Self> {
        let (encoder, projector) = encoder_and_projector(&mut store, cfg, in_channels)?;
        let predictor = if with_predictor {
            Some(Mlp::new(
                &mut store,
                "predictor",
                cfg.projector.out,
                &cfg.predictor,
                cfg.gn_groups,
                cfg.ghost_batch,
            )?)
        } else {
            None
        };
        Ok(Self {
            store,
            encoder,
            projector,
            predictor,
        })
    }

    /// Encoder features y and projections z in evaluation mode (batch norm uses its running
    /// statistics), detached.
    pub fn embed(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let y = self.encoder.forward_t(x, false)?.detach();
        let z = self.projector.forward_t(&y, false)?.detach();
        Ok((y, z))
    }

    pub fn forward(&self, x: &Tensor) -> Result<OnlineOutput> {
        let y = self.encoder.forward_t(x, true)?;
        let z = self.projector.forward_t(&y, true)?;
        let p = match &self.predictor {
            Some(q) => Some(q.forward_t(&z, true)?),
            None => None,
        };
        Ok(OnlineOutput { y, z, p })
    }
}

/// Encoder + projector whose weights are an exponential moving average of the online ones.
/// Runs in training mode (batch statistics), as in BYOL/MoCo, and never receives gradients.
#[derive(Debug)]
pub struct EmaTarget {
    store: ParamStore,
    encoder: Encoder,
    projector: Mlp,
}

impl EmaTarget {
    pub fn new(online: &OnlineNetwork, cfg: &ModelConfig, in_channels: usize) -> Result<Self> {
        let mut store = ParamStore::frozen_copy_of(&online.store)?;
        let (encoder, projector) = encoder_and_projector(&mut store, cfg, in_channels)?;
        // The update pairs parameters by position: the target's are a prefix of the online's.
        for (t, o) in store.params().iter().zip(online.store.params()) {
            if t.name != o.name {
                candle_core::bail!(
                    "EMA target parameter {} does not match online {}",
                    t.name,
                    o.name
                );
            }
        }
        Ok(Self {
            store,
            encoder,
            projector,
        })
    }

    /// Target projection z′ of a batch, detached.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.encoder.forward_t(&x.detach(), true)?;
        Ok(self.projector.forward_t(&y, true)?.detach())
    }

    /// θ′ ← τ·θ′ + (1 − τ)·θ for every target parameter.
    pub fn update(&self, online: &OnlineNetwork, tau: f64) -> Result<()> {
        #[cfg(feature = "cuda")]
        if self.store.device().is_cuda() && self.store.dtype() == candle_core::DType::F32 {
            // All parameters in one launch (collapse-lab's kernel; same rounding).
            let targets: Vec<&candle_core::Var> =
                self.store.params().iter().map(|p| &p.var).collect();
            let onlines: Vec<&Tensor> = online
                .store
                .params()
                .iter()
                .map(|p| p.var.as_tensor())
                .collect();
            return crate::cuda::ema::ema_update(&targets, &onlines, tau);
        }
        for (t, o) in self.store.params().iter().zip(online.store.params()) {
            let next = ((t.var.as_tensor() * tau)? + (o.var.as_tensor().detach() * (1.0 - tau))?)?;
            t.var.set(&next)?;
        }
        Ok(())
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Parameters and batch-norm statistics, named `target.<name>`, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.store
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (format!("{}{n}", super::TARGET_PREFIX), t))
            .collect()
    }

    /// Restores what [`EmaTarget::state`] saved.
    pub fn load_state(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mine: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| {
                Some((k.strip_prefix(super::TARGET_PREFIX)?.to_string(), v.clone()))
            })
            .collect();
        self.store.load(&mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeadConfig, HeadNorm};
    use candle_core::Device;

    #[test]
    fn ema_update_matches_formula_and_starts_as_copy() -> Result<()> {
        let cfg = ModelConfig {
            width: 2,
            depth: 2,
            projector: HeadConfig {
                hidden: 4,
                out: 3,
                norm: HeadNorm::Bn,
            },
            predictor: HeadConfig {
                hidden: 4,
                out: 3,
                norm: HeadNorm::Bn,
            },
            ..ModelConfig::default()
        };
        let online = OnlineNetwork::new(ParamStore::new(&Device::Cpu, 1), &cfg, 3, true)?;
        let target = EmaTarget::new(&online, &cfg, 3)?;
        let n_target = target.store().params().len();
        assert!(
            n_target < online.store.params().len(),
            "predictor is online-only"
        );
        let before: Vec<Vec<f32>> = target
            .store()
            .params()
            .iter()
            .map(|p| p.var.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<Result<_>>()?;
        // Move the online weights, then one EMA step with τ = 0.75.
        for p in online.store.params() {
            p.var.set(&((p.var.as_tensor() * 2.0)? + 1.0)?)?;
        }
        target.update(&online, 0.75)?;
        for (i, (t, o)) in target
            .store()
            .params()
            .iter()
            .zip(online.store.params())
            .enumerate()
        {
            let tv = t.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let ov = o.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for k in 0..tv.len() {
                let expect = 0.75 * before[i][k] + 0.25 * ov[k];
                assert!(
                    (tv[k] - expect).abs() < 1e-6,
                    "{}: {} vs {}",
                    t.name,
                    tv[k],
                    expect
                );
                // Before the online change, online = target (copy): ov = 2·before + 1.
                assert!((ov[k] - (2.0 * before[i][k] + 1.0)).abs() < 1e-5);
            }
        }
        Ok(())
    }
}
