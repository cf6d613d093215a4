//! Covariance spectrum (dimensional collapse, Jing et al. 2022) and α-ReQ (Agrawal et al. 2022).

use candle_core::{DType, Result, Tensor};

use super::rank::singular_values;

/// Eigenvalues of the covariance of the rows of a (n, d) matrix, descending: the singular
/// values of the covariance matrix (it is symmetric positive semi-definite), obtained as
/// σ(centred X)² / (n − 1).
pub fn covariance_spectrum(x: &Tensor) -> Result<Vec<f64>> {
    let n = x.dim(0)?;
    if n < 2 {
        candle_core::bail!("covariance needs at least 2 rows, got {n}");
    }
    let x = x.detach().to_dtype(DType::F64)?;
    let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    Ok(singular_values(&centred)?
        .into_iter()
        .map(|s| s * s / (n - 1) as f64)
        .collect())
}

/// α of the power law λ_i ∝ i^(−α): minus the least-squares slope of log λ_i against log i
/// (i = 1, 2, …) over the eigenvalues above 1e-12 of the largest. NaN with fewer than 2.
pub fn alpha_req(eigenvalues: &[f64]) -> f64 {
    let top = eigenvalues.iter().copied().fold(0.0f64, f64::max);
    let points: Vec<(f64, f64)> = eigenvalues
        .iter()
        .enumerate()
        .filter(|(_, &l)| l > top * 1e-12 && l > 0.0)
        .map(|(i, &l)| (((i + 1) as f64).ln(), l.ln()))
        .collect();
    if points.len() < 2 {
        return f64::NAN;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    -sxy / sxx
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn alpha_of_an_exact_power_law() {
        for alpha in [0.5, 1.0, 2.3] {
            let l: Vec<f64> = (1..=64).map(|i| 3.0 * (i as f64).powf(-alpha)).collect();
            assert!((alpha_req(&l) - alpha).abs() < 1e-9);
        }
        assert!(alpha_req(&[1.0]).is_nan());
    }

    #[test]
    fn alpha_recovered_from_embeddings_with_power_law_spectrum() -> Result<()> {
        // Columns with variances i^(−α) (independent), many rows: the covariance spectrum
        // follows the law up to sampling noise.
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, d, alpha) = (8000, 16, 1.5f64);
        let mut v = Vec::with_capacity(n * d);
        for _ in 0..n {
            for j in 0..d {
                let g: f64 = StandardNormal.sample(&mut rng);
                v.push(g * ((j + 1) as f64).powf(-alpha / 2.0));
            }
        }
        let x = Tensor::from_vec(v, (n, d), &Device::Cpu)?;
        let got = alpha_req(&covariance_spectrum(&x)?);
        assert!((got - alpha).abs() < 0.05, "α = {got}");
        Ok(())
    }

    #[test]
    fn covariance_spectrum_of_known_matrix() -> Result<()> {
        // Rows ±(3, 0), ±(0, 1): mean 0, covariance diag(9·2/3, 1·2/3) = (6, 2/3).
        let x = Tensor::new(
            &[[3f64, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]],
            &Device::Cpu,
        )?;
        let s = covariance_spectrum(&x)?;
        assert!(
            (s[0] - 6.0).abs() < 1e-12 && (s[1] - 2.0 / 3.0).abs() < 1e-12,
            "{s:?}"
        );
        Ok(())
    }
}
