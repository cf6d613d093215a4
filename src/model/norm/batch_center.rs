//! `bn_center`: batch norm's re-centring alone. Each feature has the batch mean subtracted —
//! with the gradient through that mean, the part of batch norm the study's explanation calls
//! an implicit contrast — and no division by the batch standard deviation; then γ, β.
//! Running mean (and variance, as batch norm keeps them) for evaluation.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::{affine, column_moments, rows, BatchNorm, ParamStore};

#[derive(Debug, Clone)]
pub struct BatchCenter(BatchNorm);

impl BatchCenter {
    pub fn new(store: &mut ParamStore, name: &str, channels: usize) -> Result<Self> {
        Ok(Self(BatchNorm::new(store, name, channels)?))
    }
}

impl ModuleT for BatchCenter {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x2 = rows(x)?;
        let centered = if train {
            let (mean, centered, var) = column_moments(&x2)?;
            self.0.update_running(&mean, &var, x2.dim(0)?)?;
            centered
        } else {
            x2.broadcast_sub(self.0.running_mean.as_tensor())?
        };
        affine(&centered, &self.0.weight, &self.0.bias)?.reshape(x.shape())
    }
}
