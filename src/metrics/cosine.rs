//! Positive / negative cosine similarity (the study's collapse signature).
//!
//! With z and z′ l2-normalised and S = z·z′ᵀ (B×B): pos_cos is the mean of the diagonal (two
//! views of the same image), neg_cos the mean of the off-diagonal (different images).

use candle_core::{Result, Tensor};

use super::normalize::l2_normalize;

/// (pos_cos, neg_cos) of one pair of (B, d) batches. One small host copy.
pub fn pos_neg_cos(z: &Tensor, z_other: &Tensor) -> Result<(f64, f64)> {
    let b = z.dim(0)?;
    if b < 2 {
        candle_core::bail!("pos/neg cosine needs at least 2 rows, got {b}");
    }
    let (pos_sum, all_sum) = sums(z, z_other)?;
    let sums = Tensor::stack(&[pos_sum, all_sum], 0)?.to_dtype(candle_core::DType::F64)?;
    let v = sums.to_vec1::<f64>()?;
    Ok(from_sums(v[0], v[1], b))
}

/// Σ diag(S) and Σ S, without materialising S: Σ S = (Σᵢ zᵢ)·(Σⱼ z′ⱼ).
fn sums(z: &Tensor, z_other: &Tensor) -> Result<(Tensor, Tensor)> {
    let a = l2_normalize(&z.detach())?;
    let b = l2_normalize(&z_other.detach())?;
    let pos = (&a * &b)?.sum_all()?;
    let all = (a.sum(0)? * b.sum(0)?)?.sum_all()?;
    Ok((pos, all))
}

fn from_sums(pos_sum: f64, all_sum: f64, b: usize) -> (f64, f64) {
    let bf = b as f64;
    (pos_sum / bf, (all_sum - pos_sum) / (bf * bf - bf))
}

/// The study's figure: both view orders averaged — (z₀ vs z′₁) and (z₁ vs z′₀).
pub fn symmetric_pos_neg_cos(z: &[Tensor; 2], z_target: &[Tensor; 2]) -> Result<(f64, f64)> {
    let b = z[0].dim(0)?;
    if b < 2 {
        candle_core::bail!("pos/neg cosine needs at least 2 rows, got {b}");
    }
    let (p01, a01) = sums(&z[0], &z_target[1])?;
    let (p10, a10) = sums(&z[1], &z_target[0])?;
    let v = Tensor::stack(&[p01, a01, p10, a10], 0)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?;
    let (pa, na) = from_sums(v[0], v[1], b);
    let (pb, nb) = from_sums(v[2], v[3], b);
    Ok(((pa + pb) / 2.0, (na + nb) / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn identical_rows_give_one_and_orthonormal_give_zero() -> Result<()> {
        let same = Tensor::ones((5, 3), DType::F32, &Device::Cpu)?;
        let (p, n) = pos_neg_cos(&same, &(&same * 2.0)?)?;
        assert!((p - 1.0).abs() < 1e-6 && (n - 1.0).abs() < 1e-6);
        let eye = Tensor::eye(4, DType::F32, &Device::Cpu)?;
        let (p, n) = pos_neg_cos(&eye, &eye)?;
        assert!((p - 1.0).abs() < 1e-6 && n.abs() < 1e-7, "{p} {n}");
        Ok(())
    }

    #[test]
    fn matches_naive_double_loop() -> Result<()> {
        let v: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let w: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.2).collect();
        let a = Tensor::from_vec(v.clone(), (6, 4), &Device::Cpu)?;
        let b = Tensor::from_vec(w.clone(), (6, 4), &Device::Cpu)?;
        let row = |x: &[f32], i: usize| -> Vec<f64> {
            x[i * 4..i * 4 + 4].iter().map(|&t| t as f64).collect()
        };
        let cos = |x: &[f64], y: &[f64]| {
            let d: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
            let nx: f64 = x.iter().map(|a| a * a).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|a| a * a).sum::<f64>().sqrt();
            d / (nx * ny)
        };
        let (mut pos, mut neg) = (0.0, 0.0);
        for i in 0..6 {
            for j in 0..6 {
                let c = cos(&row(&v, i), &row(&w, j));
                if i == j {
                    pos += c / 6.0
                } else {
                    neg += c / 30.0
                }
            }
        }
        let (p, n) = pos_neg_cos(&a, &b)?;
        assert!(
            (p - pos).abs() < 1e-5 && (n - neg).abs() < 1e-5,
            "{p} {pos} {n} {neg}"
        );
        Ok(())
    }
}
