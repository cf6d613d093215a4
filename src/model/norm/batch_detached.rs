//! `bn_detached`: batch norm whose batch mean and variance are used in the forward pass but
//! treated as constants in the backward pass. The forward pass equals batch norm's; the input
//! gradient is γ·g/σ per example, with no term through the statistics — so no example's
//! gradient depends on the others'. Running statistics as batch norm.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::{affine, column_moments, rows, BatchNorm, ParamStore, EPS};

#[derive(Debug, Clone)]
pub struct BatchDetached(BatchNorm);

impl BatchDetached {
    pub fn new(store: &mut ParamStore, name: &str, channels: usize) -> Result<Self> {
        Ok(Self(BatchNorm::new(store, name, channels)?))
    }
}

impl ModuleT for BatchDetached {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return self.0.forward_t(x, false);
        }
        let x2 = rows(x)?;
        let (mean, _, var) = column_moments(&x2.detach())?;
        self.0.update_running(&mean, &var, x2.dim(0)?)?;
        let xhat = x2
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + EPS)?.sqrt()?)?;
        affine(&xhat, &self.0.weight, &self.0.bias)?.reshape(x.shape())
    }
}
