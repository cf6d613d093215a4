//! Layout change at the encoder's entry and global average pooling (channels-last).

use candle_core::{Result, Tensor};

/// (N, C, H, W) images → (N, H, W, C) activations.
pub fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 3, 1))?.contiguous()
}

/// (N, H, W, C) → (N, C): the mean over positions, as a batched product with a row of
/// 1/(H·W) (cheaper on the CPU than a strided reduction, and its gradient too).
pub fn global_average_pool(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let weights = (Tensor::ones((n, 1, h * w), x.dtype(), x.device())? / (h * w) as f64)?;
    weights.matmul(&x.reshape((n, h * w, c))?)?.reshape((n, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pooling_equals_mean_over_space() -> Result<()> {
        let x = Tensor::rand(0f64, 1.0, (2, 3, 4, 5), &Device::Cpu)?;
        let pooled = global_average_pool(&to_channels_last(&x)?)?;
        let reference = x.mean((2, 3))?;
        let diff = (pooled - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12);
        Ok(())
    }
}
