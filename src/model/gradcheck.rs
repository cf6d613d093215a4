//! Gradient checks of layers against finite differences: `ops::gradcheck` over every
//! parameter a layer registered in its store.

use candle_core::{Result, Tensor};

use super::params::ParamStore;

/// [`crate::ops::gradcheck::check_gradients`] with the parameters of `store`.
pub fn check_gradients(
    label: &str,
    shape: &[usize],
    store: &ParamStore,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<()> {
    let params: Vec<_> = store
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.var.clone()))
        .collect();
    crate::ops::gradcheck::check_gradients(label, shape, store.device(), &params, f)
}
