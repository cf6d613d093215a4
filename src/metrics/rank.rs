//! Singular spectrum and effective rank (RankMe, Garrido et al. 2023).

use candle_core::{DType, Result, Tensor};

const EPS: f64 = 1e-7;

/// Singular values of a (B, d) matrix, descending, computed in f64 on the host (faer).
/// The matrix is used as is (not centred).
pub fn singular_values(z: &Tensor) -> Result<Vec<f64>> {
    let (b, d) = z.dims2()?;
    let host = z.detach().to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let m = faer::Mat::<f64>::from_fn(b, d, |i, j| host[i][j]);
    m.singular_values()
        .map_err(|e| candle_core::Error::Msg(format!("SVD did not converge: {e:?}")))
}

/// RankMe from singular values: p_k = σ_k / Σσ + ε, rank = exp(−Σ p_k log p_k).
/// Between 1 and min(B, d).
pub fn effective_rank_from_singular_values(sigma: &[f64]) -> f64 {
    let total: f64 = sigma.iter().sum();
    if total.is_nan() || total <= 0.0 {
        // An all-zero matrix has no direction at all; report the floor.
        return 1.0;
    }
    let entropy: f64 = sigma
        .iter()
        .map(|s| {
            let p = s / total + EPS;
            -p * p.ln()
        })
        .sum();
    entropy.exp()
}

/// RankMe of an uncentred (B, d) embedding matrix; NaN when the matrix holds NaN or ∞
/// (a diverged step is logged, not an error).
pub fn effective_rank(z: &Tensor) -> Result<f64> {
    let finite = z
        .abs()?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?
        .is_finite();
    if !finite {
        return Ok(f64::NAN);
    }
    Ok(effective_rank_from_singular_values(&singular_values(z)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn known_spectra() -> Result<()> {
        // Identical rows: rank one.
        let same = Tensor::ones((6, 4), DType::F32, &Device::Cpu)?;
        let r = effective_rank(&same)?;
        assert!((r - 1.0).abs() < 1e-4, "{r}");
        // Orthonormal set: rank d.
        let eye = Tensor::eye(5, DType::F32, &Device::Cpu)?;
        let r = effective_rank(&eye)?;
        assert!((r - 5.0).abs() < 1e-4, "{r}");
        // Diagonal with known singular values 3, 2, 1 (rows permuted, signs flipped).
        let m = Tensor::new(
            &[
                [0f32, -2.0, 0.0],
                [3.0, 0.0, 0.0],
                [0.0, 0.0, 1.0],
                [0.0, 0.0, 0.0],
            ],
            &Device::Cpu,
        )?;
        let s = singular_values(&m)?;
        for (got, want) in s.iter().zip([3.0, 2.0, 1.0]) {
            assert!((got - want).abs() < 1e-9, "{s:?}");
        }
        let p: Vec<f64> = [3.0f64, 2.0, 1.0].iter().map(|v| v / 6.0 + EPS).collect();
        let expect = (-p.iter().map(|q| q * q.ln()).sum::<f64>()).exp();
        assert!((effective_rank(&m)? - expect).abs() < 1e-9);
        let nan = Tensor::new(&[[f32::NAN, 1.0], [0.0, 1.0]], &Device::Cpu)?;
        assert!(effective_rank(&nan)?.is_nan());
        Ok(())
    }
}
