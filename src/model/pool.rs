//! Layout change at the encoder's entry and global average pooling (channels-last).

use candle_core::{Result, Tensor};

use crate::ops::im2col::{im2col, Patch};

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

/// 3×3 max pooling with stride 2 and padding 1 on channels-last input with non-negative
/// values (after a ReLU zero padding equals −∞ padding): the maximum over each im2col row's
/// nine taps. candle's own max_pool2d has no gradient when the kernel differs from the stride.
///
/// The maximum is taken by index (the first of equal taps, in window order, as PyTorch does)
/// and gathered, so its gradient goes to that one tap: a reduction's `max` would hand the full
/// gradient to every tap that ties — found by the PyTorch parity check (`bench/parity.sh`),
/// where the ImageNet stem's gradient differed by 2 %.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let patch = Patch {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    let (ho, wo) = (patch.out_size(h), patch.out_size(w));
    let taps = im2col(x, patch)?.reshape((n * ho * wo, 9, c))?;
    let first_max = taps.argmax_keepdim(1)?;
    taps.contiguous()?
        .gather(&first_max, 1)?
        .reshape((n, ho, wo, c))
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

    #[test]
    fn max_pool_matches_candle_and_has_a_gradient() -> Result<()> {
        let x = Tensor::rand(0f64, 1.0, (2, 3, 7, 6), &Device::Cpu)?;
        let ours = max_pool_3x3_s2(&to_channels_last(&x)?)?.permute((0, 3, 1, 2))?;
        let reference = x
            .pad_with_zeros(2, 1, 1)?
            .pad_with_zeros(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        assert_eq!(ours.dims(), reference.dims());
        let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12);
        let store = crate::model::ParamStore::with_dtype(&Device::Cpu, 0, candle_core::DType::F64);
        // Distinct positive values: no ties, so the maximum is differentiable.
        crate::model::gradcheck::check_gradients("max pool", &[1, 5, 4, 2], &store, |x| {
            max_pool_3x3_s2(&(x.abs()? + 0.1)?)
        })
    }

    /// Ties (a flat region after a ReLU): one tap per window receives the gradient, as in
    /// PyTorch, not every tap equal to the maximum.
    #[test]
    fn tied_maxima_pass_the_gradient_once() -> Result<()> {
        let x = candle_core::Var::from_vec(vec![1f64; 16], (1, 4, 4, 1), &Device::Cpu)?;
        let y = max_pool_3x3_s2(x.as_tensor())?;
        assert_eq!(y.dims(), [1, 2, 2, 1]);
        let grads = y.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        // Four windows, one unit of gradient each, to the first input of each window:
        // (0,0) for the first window (the padding taps come first but hold 0 < 1).
        assert_eq!(g.iter().sum::<f64>(), 4.0);
        assert_eq!(g.iter().filter(|&&v| v > 0.0).count(), 4, "{g:?}");
        Ok(())
    }
}
