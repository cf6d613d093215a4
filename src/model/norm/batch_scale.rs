//! `bn_scale`: batch norm's scaling alone. Each feature is divided by its batch standard
//! deviation (biased, about the batch mean, with the gradient through it) without being
//! re-centred; then γ, β. Evaluation divides by the running standard deviation.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::{affine, column_moments, rows, BatchNorm, ParamStore, EPS};

#[derive(Debug, Clone)]
pub struct BatchScale(BatchNorm);

impl BatchScale {
    pub fn new(store: &mut ParamStore, name: &str, channels: usize) -> Result<Self> {
        Ok(Self(BatchNorm::new(store, name, channels)?))
    }
}

impl ModuleT for BatchScale {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x2 = rows(x)?;
        let var = if train {
            let (mean, _, var) = column_moments(&x2)?;
            self.0.update_running(&mean, &var, x2.dim(0)?)?;
            var
        } else {
            self.0.running_var.as_tensor().unsqueeze(0)?
        };
        let scaled = x2.broadcast_div(&(var + EPS)?.sqrt()?)?;
        affine(&scaled, &self.0.weight, &self.0.bias)?.reshape(x.shape())
    }
}
