//! Self-supervised losses, separate from the networks (as lightly separates `loss/` from
//! heads). Inputs are (B, d) batches; every loss is a mean over the batch.

use candle_core::{Result, Tensor, D};

pub use crate::metrics::l2_normalize;

/// Cosine similarity of matching rows, (B,).
pub fn row_cosine(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (l2_normalize(a)? * l2_normalize(b)?)?.sum(D::Minus1)
}

/// BYOL's normalised L2 regression loss, mean over rows of 2 − 2·cos(p, z).
pub fn normalized_l2(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    (2.0 - (row_cosine(p, z)? * 2.0)?)?.mean_all()
}

/// SimSiam's loss: mean negative cosine similarity.
pub fn negative_cosine(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    row_cosine(p, z)?.mean_all()?.neg()
}

/// log Σ exp over the last dimension, stabilised by the (constant) row maximum.
fn log_sum_exp_rows(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()?;
    (s + m)?.squeeze(D::Minus1)
}

/// NT-Xent (SimCLR): each of the 2B views must pick its partner among the other 2B − 1.
pub fn nt_xent(z0: &Tensor, z1: &Tensor, temperature: f64) -> Result<Tensor> {
    let b = z0.dim(0)?;
    let z = Tensor::cat(&[l2_normalize(z0)?, l2_normalize(z1)?], 0)?;
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    // Exclude self-similarity with a large negative on the diagonal.
    let eye = Tensor::eye(2 * b, sim.dtype(), sim.device())?;
    let masked = (sim.clone() - (eye * 1e9)?)?;
    let lse = log_sum_exp_rows(&masked)?;
    let pos = (row_cosine(z0, z1)? / temperature)?;
    let pos = Tensor::cat(&[pos.clone(), pos], 0)?;
    (lse - pos)?.mean_all()
}

/// InfoNCE with one positive key per query and a bank of negatives (MoCo): cross-entropy of
/// the positive among [positive, negatives]. `negatives` are l2-normalised rows (K, d).
pub fn info_nce(q: &Tensor, k: &Tensor, negatives: &Tensor, temperature: f64) -> Result<Tensor> {
    let qn = l2_normalize(q)?;
    let kn = l2_normalize(k)?;
    let pos = ((&qn * &kn)?.sum_keepdim(D::Minus1)? / temperature)?;
    let neg = (qn.matmul(&negatives.t()?)? / temperature)?;
    let logits = Tensor::cat(&[pos.clone(), neg], 1)?;
    (log_sum_exp_rows(&logits)? - pos.squeeze(1)?)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::check_gradients;
    use crate::model::ParamStore;
    use candle_core::{DType, Device};

    fn store() -> ParamStore {
        ParamStore::with_dtype(&Device::Cpu, 0, DType::F64)
    }

    fn fixed(rows: usize, cols: usize, phase: f64) -> Result<Tensor> {
        let v: Vec<f64> = (0..rows * cols)
            .map(|i| ((i as f64) * 1.37 + phase).cos())
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu)
    }

    #[test]
    fn closed_forms() -> Result<()> {
        let a = fixed(4, 3, 0.0)?;
        let l = normalized_l2(&a, &(&a * 3.0)?)?.to_scalar::<f64>()?;
        assert!(l.abs() < 1e-12, "identical directions → 0, got {l}");
        let l = normalized_l2(&a, &a.neg()?)?.to_scalar::<f64>()?;
        assert!((l - 4.0).abs() < 1e-12, "opposite → 4, got {l}");
        let l = negative_cosine(&a, &a)?.to_scalar::<f64>()?;
        assert!((l + 1.0).abs() < 1e-12);
        // InfoNCE with orthogonal negatives and a perfect positive: log(1 + K·e^{−1/T}).
        let q = Tensor::new(&[[1f64, 0.0, 0.0]], &Device::Cpu)?;
        let negs = Tensor::new(&[[0f64, 1.0, 0.0], [0.0, 0.0, 1.0]], &Device::Cpu)?;
        let t = 0.5;
        let l = info_nce(&q, &q, &negs, t)?.to_scalar::<f64>()?;
        let expect = (1.0 + 2.0 * (-1.0f64 / t).exp()).ln();
        assert!((l - expect).abs() < 1e-12, "{l} vs {expect}");
        // NT-Xent on an orthonormal batch whose views agree: each row sees its partner (cos 1)
        // and 2B − 2 orthogonal others (cos 0).
        let z = Tensor::eye(3, DType::F64, &Device::Cpu)?;
        let l = nt_xent(&z, &z, t)?.to_scalar::<f64>()?;
        let e1 = (1.0f64 / t).exp();
        let expect = (e1 + 4.0).ln() - 1.0 / t;
        assert!((l - expect).abs() < 1e-9, "{l} vs {expect}");
        Ok(())
    }

    #[test]
    fn loss_gradients() -> Result<()> {
        let s = store();
        let z = fixed(4, 3, 0.4)?;
        let negs = l2_normalize(&fixed(5, 3, 2.0)?)?;
        check_gradients("normalized_l2", &[4, 3], &s, |p| normalized_l2(p, &z))?;
        check_gradients("negative_cosine", &[4, 3], &s, |p| negative_cosine(p, &z))?;
        check_gradients("nt_xent", &[4, 3], &s, |x| nt_xent(x, &z, 0.3))?;
        check_gradients("info_nce", &[4, 3], &s, |x| info_nce(x, &z, &negs, 0.2))?;
        Ok(())
    }
}
