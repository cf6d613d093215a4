//! Spread of embeddings: the std of l2-normalised rows (SimSiam's collapse monitor).

use candle_core::{DType, Result, Tensor};

use super::normalize::l2_normalize;

/// Normalise rows, take each column's standard deviation over the batch (unbiased, as
/// `torch.std`), average over columns. Collapse → 0; isotropic → ≈ 1/√d.
pub fn z_std(z: &Tensor) -> Result<f64> {
    let b = z.dim(0)?;
    if b < 2 {
        candle_core::bail!("z_std needs at least 2 rows, got {b}");
    }
    let zn = l2_normalize(&z.detach().to_dtype(DType::F32)?)?;
    let centered = zn.broadcast_sub(&zn.mean_keepdim(0)?)?;
    let var = (centered.sqr()?.sum(0)? / (b - 1) as f64)?;
    var.sqrt()?
        .mean_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn collapse_is_zero_isotropic_is_one_over_sqrt_d() -> Result<()> {
        let same = Tensor::ones((8, 16), DType::F32, &Device::Cpu)?;
        assert!(z_std(&same)? < 1e-6);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (b, d) = (4096, 64);
        let v: Vec<f32> = (0..b * d)
            .map(|_| {
                let x: f64 = StandardNormal.sample(&mut rng);
                x as f32
            })
            .collect();
        let z = Tensor::from_vec(v, (b, d), &Device::Cpu)?;
        let s = z_std(&z)?;
        let expect = 1.0 / (d as f64).sqrt();
        assert!((s - expect).abs() / expect < 0.05, "{s} vs {expect}");
        Ok(())
    }
}
