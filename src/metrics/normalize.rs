//! Row-wise l2 normalization: every cosine in the metrics and the losses goes through it.

use candle_core::{Result, Tensor, D};

/// Row-wise l2 normalization, as `F.normalize` (norm floored at 1e-12).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norm)
}
