//! Alignment and uniformity (Wang & Isola 2020) and per-dimension variance (VICReg's view).

use candle_core::{DType, Result, Tensor};

use super::normalize::l2_normalize;

/// E‖f(x) − f(x′)‖² over positive pairs (rows of `a` and `b`), on l2-normalised rows.
pub fn alignment(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = l2_normalize(&a.detach().to_dtype(DType::F64)?)?;
    let b = l2_normalize(&b.detach().to_dtype(DType::F64)?)?;
    (a - b)?.sqr()?.sum(1)?.mean_all()?.to_scalar::<f64>()
}

/// log E exp(−2‖f(x) − f(y)‖²) over all pairs of distinct rows, on l2-normalised rows.
/// With unit rows ‖u − v‖² = 2 − 2·u·v, so this needs only the Gram matrix.
pub fn uniformity(a: &Tensor) -> Result<f64> {
    let n = a.dim(0)?;
    if n < 2 {
        candle_core::bail!("uniformity needs at least 2 rows, got {n}");
    }
    let u = l2_normalize(&a.detach().to_dtype(DType::F64)?)?;
    let gram = u.matmul(&u.t()?)?;
    let kernel = ((gram * 4.0)? - 4.0)?.exp()?;
    // The diagonal (i = j) contributes exp(0) = 1 per row; remove it.
    let total = kernel.sum_all()?.to_scalar::<f64>()? - n as f64;
    Ok((total / (n * (n - 1)) as f64).ln())
}

/// Variance of each column over the rows (unbiased): (min, median, max).
pub fn dimension_variance(z: &Tensor) -> Result<(f64, f64, f64)> {
    let n = z.dim(0)?;
    if n < 2 {
        candle_core::bail!("variance needs at least 2 rows, got {n}");
    }
    let z = z.detach().to_dtype(DType::F64)?;
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let mut var = (centred.sqr()?.sum(0)? / (n - 1) as f64)?.to_vec1::<f64>()?;
    var.sort_by(f64::total_cmp);
    let d = var.len();
    let median = if d % 2 == 1 {
        var[d / 2]
    } else {
        (var[d / 2 - 1] + var[d / 2]) / 2.0
    };
    Ok((var[0], median, var[d - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hand_computed_cases() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::new(&[[1f64, 0.0], [0.0, 2.0]], &dev)?;
        let b = Tensor::new(&[[0f64, 5.0], [0.0, 1.0]], &dev)?;
        // Pair 1: (1,0) vs (0,1): ‖·‖² = 2; pair 2: identical: 0 → mean 1.
        assert!((alignment(&a, &b)? - 1.0).abs() < 1e-12);
        // Two orthogonal unit rows: one distinct pair at distance² 2 → log e^{−4} = −4.
        assert!((uniformity(&a)? + 4.0).abs() < 1e-12);
        // Collapse: identical rows → alignment 0, uniformity log e^0 = 0.
        let same = Tensor::ones((5, 3), DType::F64, &dev)?;
        assert!(alignment(&same, &same)?.abs() < 1e-12);
        assert!(uniformity(&same)?.abs() < 1e-12);
        // Three unit vectors at 120°: distance² 3 for every pair → −6.
        let h = 3f64.sqrt() / 2.0;
        let tri = Tensor::new(&[[1f64, 0.0], [-0.5, h], [-0.5, -h]], &dev)?;
        assert!((uniformity(&tri)? + 6.0).abs() < 1e-9);
        let z = Tensor::new(
            &[[1f64, 10.0, 0.0], [3.0, 10.0, 4.0], [5.0, 10.0, 8.0]],
            &dev,
        )?;
        let (lo, med, hi) = dimension_variance(&z)?;
        assert_eq!((lo, med, hi), (0.0, 4.0, 16.0));
        Ok(())
    }

    #[test]
    fn uniformity_matches_naive_pair_loop() -> Result<()> {
        let x = Tensor::rand(-1f64, 1.0, (9, 4), &Device::Cpu)?;
        let rows = l2_normalize(&x)?.to_vec2::<f64>()?;
        let mut acc = 0.0;
        let mut pairs = 0.0;
        for i in 0..9 {
            for j in (i + 1)..9 {
                let d2: f64 = rows[i]
                    .iter()
                    .zip(&rows[j])
                    .map(|(a, b)| (a - b).powi(2))
                    .sum();
                acc += (-2.0 * d2).exp();
                pairs += 1.0;
            }
        }
        assert!((uniformity(&x)? - (acc / pairs).ln()).abs() < 1e-10);
        Ok(())
    }
}
