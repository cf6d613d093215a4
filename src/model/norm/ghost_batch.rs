//! `ghost_bn`: batch norm with statistics over groups of `ghost_batch` consecutive examples
//! within the batch (Hoffer et al. 2017), the last group holding what remains. Each group is
//! standardised by its own mean and variance, with gradients through them (the contrast is
//! within each group). The running statistics move once per forward pass, towards the
//! groups' average mean and average unbiased variance.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::{affine, column_moments, rows, BatchNorm, ParamStore, EPS};

#[derive(Debug, Clone)]
pub struct GhostBatchNorm {
    bn: BatchNorm,
    ghost_batch: usize,
}

impl GhostBatchNorm {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        channels: usize,
        ghost_batch: usize,
    ) -> Result<Self> {
        if ghost_batch < 2 {
            candle_core::bail!("ghost batch norm `{name}`: groups of {ghost_batch} < 2 examples");
        }
        Ok(Self {
            bn: BatchNorm::new(store, name, channels)?,
            ghost_batch,
        })
    }
}

impl ModuleT for GhostBatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return self.bn.forward_t(x, false);
        }
        let x2 = rows(x)?;
        let m = x2.dim(0)?;
        let mut parts = Vec::with_capacity(m.div_ceil(self.ghost_batch));
        let (mut means, mut unbiased) = (Vec::new(), Vec::new());
        for start in (0..m).step_by(self.ghost_batch) {
            let n = self.ghost_batch.min(m - start);
            let group = x2.narrow(0, start, n)?;
            let (mean, centered, var) = column_moments(&group)?;
            parts.push(centered.broadcast_div(&(&var + EPS)?.sqrt()?)?);
            means.push(mean.detach());
            unbiased.push((var.detach() * (n as f64 / (n.max(2) - 1) as f64))?);
        }
        let groups = means.len() as f64;
        let mean = (Tensor::cat(&means, 0)?.sum(0)? / groups)?;
        let var = (Tensor::cat(&unbiased, 0)?.sum(0)? / groups)?;
        self.bn.blend_running(&mean, &var)?;
        let xhat = Tensor::cat(&parts, 0)?;
        affine(&xhat, &self.bn.weight, &self.bn.bias)?.reshape(x.shape())
    }
}
