//! Projector and predictor heads: Linear → norm → ReLU → Linear (no norm on the output),
//! as in the study.

use candle_core::{Result, Tensor};
use candle_nn::{Module, ModuleT};

use super::layers::Linear;
use super::norm::{Norm, NormKind};
use super::params::ParamStore;
use crate::config::{HeadConfig, HeadNorm};

#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    norm: Norm,
    fc2: Linear,
}

impl Mlp {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        cfg: &HeadConfig,
        gn_groups: usize,
        ghost_batch: usize,
    ) -> Result<Self> {
        let kind = match cfg.norm {
            HeadNorm::Bn => NormKind::Batch,
            HeadNorm::Ln => NormKind::Layer,
            HeadNorm::Gn => NormKind::Group(gn_groups),
            HeadNorm::BnCenter => NormKind::BatchCenter,
            HeadNorm::BnScale => NormKind::BatchScale,
            HeadNorm::BnDetached => NormKind::BatchDetached,
            HeadNorm::GhostBn => NormKind::GhostBatch(ghost_batch),
            HeadNorm::None => NormKind::None,
        };
        Ok(Self {
            fc1: Linear::new(store, &format!("{name}.fc1"), input, cfg.hidden, true)?,
            norm: Norm::new(store, &format!("{name}.norm"), cfg.hidden, kind)?,
            fc2: Linear::new(store, &format!("{name}.fc2"), cfg.hidden, cfg.out, true)?,
        })
    }
}

impl Mlp {
    /// Multiply-adds per example (the two linear layers).
    pub fn macs(&self) -> u64 {
        self.fc1.macs() + self.fc2.macs()
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.norm.forward_t(&self.fc1.forward(x)?, train)?.relu()?;
        self.fc2.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::check_gradients;
    use candle_core::{DType, Device};

    #[test]
    fn head_gradients_for_every_norm() -> Result<()> {
        for norm in [
            HeadNorm::Bn,
            HeadNorm::Ln,
            HeadNorm::Gn,
            HeadNorm::BnCenter,
            HeadNorm::BnScale,
            HeadNorm::GhostBn,
            HeadNorm::None,
        ] {
            let mut store = ParamStore::with_dtype(&Device::Cpu, 11, DType::F64);
            let cfg = HeadConfig {
                hidden: 4,
                out: 3,
                norm,
            };
            let mlp = Mlp::new(&mut store, "head", 3, &cfg, 2, 3)?;
            check_gradients(&format!("mlp {norm:?}"), &[5, 3], &store, |x| {
                mlp.forward_t(x, true)
            })?;
        }
        Ok(())
    }
}
