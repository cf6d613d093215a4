//! Normalization layers built from ordinary, differentiable candle ops: batch, layer and
//! group norm here, and batch norm taken apart for the mechanism ablations in files beside
//! this one (`bn_center`, `bn_scale`, `bn_detached`, `ghost_bn`: heads only).
//!
//! candle's own `LayerNorm` (and `rms_norm`, `softmax_last_dim`) run kernels that record no
//! gradient: backward silently returns nothing for them. Every layer here is written with
//! plain tensor ops so gradients reach both its input and its parameters (tested against
//! finite differences below).

use candle_core::{Result, Tensor, Var};
use candle_nn::ModuleT;

mod batch_center;
mod batch_detached;
mod batch_scale;
mod ghost_batch;

use super::params::ParamStore;
use crate::ops::batch_norm_op::{BatchNormTrain, ColumnMoments};
use crate::ops::columns::EPS;
pub use batch_center::BatchCenter;
pub use batch_detached::BatchDetached;
pub use batch_scale::BatchScale;
pub use ghost_batch::GhostBatchNorm;

/// Which normalization a layer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    Batch,
    Layer,
    Group(usize),
    /// Batch norm's centring only (subtract the batch mean).
    BatchCenter,
    /// Batch norm's scaling only (divide by the batch standard deviation).
    BatchScale,
    /// Batch norm with its batch statistics treated as constants in the backward pass.
    BatchDetached,
    /// Batch norm over groups of this many examples within the batch.
    GhostBatch(usize),
    None,
}

/// Flattens channels-last input (N, …, C) to (M, C).
fn rows(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 2 {
        candle_core::bail!("normalization expects (N, …, C) input, got {:?}", x.dims());
    }
    let c = x.dim(candle_core::D::Minus1)?;
    x.reshape(((), c))
}

/// Each column's mean (1, C), the centred matrix and each column's biased variance (1, C) of
/// a (M, C) matrix. Column sums are matrix products with a row of ones: on the CPU far faster
/// than candle's strided reductions.
fn column_moments(x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let m = x.dim(0)?;
    let ones = Tensor::ones((1, m), x.dtype(), x.device())?;
    let mean = (ones.matmul(x)? / m as f64)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = (ones.matmul(&centered.sqr()?)? / m as f64)?;
    Ok((mean, centered, var))
}

/// Standardises each column of a (M, C) matrix (biased variance).
fn standardize_columns(x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (mean, centered, var) = column_moments(x)?;
    let xhat = centered.broadcast_mul(&(var.clone() + EPS)?.sqrt()?.recip()?)?;
    Ok((xhat, mean, var))
}

/// Standardises each row over its last dimension (biased variance).
fn standardize_last(x: &Tensor) -> Result<Tensor> {
    let n = x.dim(candle_core::D::Minus1)?;
    let mean = (x.sum_keepdim(candle_core::D::Minus1)? / n as f64)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = (centered.sqr()?.sum_keepdim(candle_core::D::Minus1)? / n as f64)?;
    centered.broadcast_div(&(var + EPS)?.sqrt()?)
}

fn affine(xhat: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    xhat.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Batch norm over the batch (and spatial) dimensions of channels-last input. In training mode
/// it normalises with the batch's statistics — gradients flow through them, which is what
/// makes BN an implicit contrast between the examples of a batch — and updates running
/// statistics for eval mode.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
}

impl BatchNorm {
    pub fn new(store: &mut ParamStore, name: &str, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: store.norm_param(&format!("{name}.weight"), channels, 1.0)?,
            bias: store.norm_param(&format!("{name}.bias"), channels, 0.0)?,
            running_mean: store.buffer(&format!("{name}.running_mean"), channels, 0.0)?,
            running_var: store.buffer(&format!("{name}.running_var"), channels, 1.0)?,
            momentum: 0.1,
        })
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x2 = rows(x)?;
        if train && x2.device().is_cpu() {
            let x2 = x2.contiguous()?;
            let y = x2.apply_op3(&self.weight, &self.bias, BatchNormTrain)?;
            let moments = x2.detach().apply_op1_no_bwd(&ColumnMoments)?;
            self.update_running(&moments.get(0)?, &moments.get(1)?, x2.dim(0)?)?;
            return y.reshape(x.shape());
        }
        let xhat = if train {
            let (xhat, mean, var) = standardize_columns(&x2)?;
            self.update_running(&mean, &var, x2.dim(0)?)?;
            xhat
        } else {
            let std = (self.running_var.as_tensor() + EPS)?.sqrt()?;
            x2.broadcast_sub(self.running_mean.as_tensor())?
                .broadcast_div(&std)?
        };
        affine(&xhat, &self.weight, &self.bias)?.reshape(x.shape())
    }
}

impl BatchNorm {
    /// γ and β.
    pub(super) fn affine_params(&self) -> (&Tensor, &Tensor) {
        (&self.weight, &self.bias)
    }

    /// Moves the running statistics 10 % towards this batch's (mean, biased var) over n rows.
    pub(super) fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        // PyTorch semantics: running variance uses the unbiased estimate.
        let unbiased = (var.flatten_all()?.detach() * (n as f64 / (n.max(2) - 1) as f64))?;
        self.blend_running(mean, &unbiased)
    }

    /// Moves the running statistics 10 % towards (mean, unbiased var).
    fn blend_running(&self, mean: &Tensor, unbiased: &Tensor) -> Result<()> {
        let unbiased = unbiased.flatten_all()?.detach();
        let m = self.momentum;
        let rm =
            ((self.running_mean.as_tensor() * (1.0 - m))? + (mean.flatten_all()?.detach() * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }
}

/// Layer norm over the features of each example (no batch statistics): input (N, C).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    pub fn new(store: &mut ParamStore, name: &str, features: usize) -> Result<Self> {
        Ok(Self {
            weight: store.norm_param(&format!("{name}.weight"), features, 1.0)?,
            bias: store.norm_param(&format!("{name}.bias"), features, 0.0)?,
        })
    }
}

impl ModuleT for LayerNorm {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        if x.rank() != 2 {
            candle_core::bail!("layer norm expects (N, C) input, got {:?}", x.dims());
        }
        affine(&standardize_last(x)?, &self.weight, &self.bias)
    }
}

/// Group norm: per example, over groups of channels (and space). Input (N, C) or (N, C, H, W).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl GroupNorm {
    pub fn new(store: &mut ParamStore, name: &str, channels: usize, groups: usize) -> Result<Self> {
        let groups = groups.min(channels).max(1);
        if !channels.is_multiple_of(groups) {
            candle_core::bail!(
                "group norm `{name}`: {groups} groups do not divide {channels} channels"
            );
        }
        Ok(Self {
            weight: store.norm_param(&format!("{name}.weight"), channels, 1.0)?,
            bias: store.norm_param(&format!("{name}.bias"), channels, 0.0)?,
            groups,
        })
    }
}

impl ModuleT for GroupNorm {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        // Channels-last (N, …, C) → (N, S, C); per example, each group of C/G channels is
        // standardised over its channels and the S positions. Sums are matrix products.
        let n = x.dim(0)?;
        let c = x.dim(candle_core::D::Minus1)?;
        let x3 = x.reshape((n, (), c))?;
        let s = x3.dim(1)?;
        let g = self.groups;
        let (dtype, dev) = (x.dtype(), x.device());
        let member: Vec<f64> = (0..c * g)
            .map(|i| if (i / g) / (c / g) == i % g { 1.0 } else { 0.0 })
            .collect();
        let to_group = Tensor::from_vec(member, (c, g), dev)?.to_dtype(dtype)?;
        let to_channel = to_group.t()?.contiguous()?;
        let ones = Tensor::ones((n, 1, s), dtype, dev)?;
        let count = (s * (c / g)) as f64;
        let group_mean = |t: &Tensor| -> Result<Tensor> {
            let per_channel = ones.matmul(t)?; // (N, 1, C)
            let per_group = (per_channel.broadcast_matmul(&to_group)? / count)?; // (N, 1, G)
            per_group.broadcast_matmul(&to_channel) // back to (N, 1, C)
        };
        let centered = x3.broadcast_sub(&group_mean(&x3)?)?;
        let var = group_mean(&centered.sqr()?)?;
        let xhat = centered.broadcast_div(&(var + EPS)?.sqrt()?)?;
        affine(&xhat, &self.weight, &self.bias)?.reshape(x.shape())
    }
}

/// A normalization layer of any kind (or none).
#[derive(Debug, Clone)]
pub enum Norm {
    Batch(BatchNorm),
    Layer(LayerNorm),
    Group(GroupNorm),
    BatchCenter(BatchCenter),
    BatchScale(BatchScale),
    BatchDetached(BatchDetached),
    GhostBatch(GhostBatchNorm),
    None,
}

impl Norm {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        channels: usize,
        kind: NormKind,
    ) -> Result<Self> {
        Ok(match kind {
            NormKind::Batch => Self::Batch(BatchNorm::new(store, name, channels)?),
            NormKind::Layer => Self::Layer(LayerNorm::new(store, name, channels)?),
            NormKind::Group(g) => Self::Group(GroupNorm::new(store, name, channels, g)?),
            NormKind::BatchCenter => Self::BatchCenter(BatchCenter::new(store, name, channels)?),
            NormKind::BatchScale => Self::BatchScale(BatchScale::new(store, name, channels)?),
            NormKind::BatchDetached => {
                Self::BatchDetached(BatchDetached::new(store, name, channels)?)
            }
            NormKind::GhostBatch(g) => {
                Self::GhostBatch(GhostBatchNorm::new(store, name, channels, g)?)
            }
            NormKind::None => Self::None,
        })
    }
}

impl ModuleT for Norm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Batch(n) => n.forward_t(x, train),
            Self::Layer(n) => n.forward_t(x, train),
            Self::Group(n) => n.forward_t(x, train),
            Self::BatchCenter(n) => n.forward_t(x, train),
            Self::BatchScale(n) => n.forward_t(x, train),
            Self::BatchDetached(n) => n.forward_t(x, train),
            Self::GhostBatch(n) => n.forward_t(x, train),
            Self::None => Ok(x.clone()),
        }
    }
}

/// Weight standardization (Qiao et al. 2019): each output filter of a conv weight
/// (O, …) is shifted to zero mean and scaled to unit variance before use.
pub fn weight_standardize(w: &Tensor) -> Result<Tensor> {
    let flat = w.reshape((w.dim(0)?, ()))?;
    standardize_last(&flat)?.reshape(w.shape())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::check_gradients;
    use candle_core::{DType, Device};

    fn layer(kind: NormKind, c: usize) -> Result<(ParamStore, Norm)> {
        let mut store = ParamStore::with_dtype(&Device::Cpu, 3, DType::F64);
        let norm = Norm::new(&mut store, "n", c, kind)?;
        // Non-trivial affine parameters so their gradients are tested too.
        for (i, p) in store.params().iter().enumerate() {
            let n = p.var.elem_count();
            let v: Vec<f32> = (0..n).map(|k| 0.5 + 0.1 * (k + i) as f32).collect();
            p.var
                .set(&Tensor::from_vec(v, n, &Device::Cpu)?.to_dtype(DType::F64)?)?;
        }
        Ok((store, norm))
    }

    #[test]
    fn gradients_reach_input_and_parameters_of_every_norm() -> Result<()> {
        for (kind, shape) in [
            (NormKind::Batch, vec![5, 4]),
            (NormKind::Batch, vec![3, 2, 2, 4]),
            (NormKind::Layer, vec![5, 6]),
            (NormKind::Group(2), vec![3, 4]),
            (NormKind::Group(2), vec![2, 2, 3, 4]),
        ] {
            let c = *shape.last().expect("rank ≥ 2");
            let (store, norm) = layer(kind, c)?;
            check_gradients(&format!("{kind:?} {shape:?}"), &shape, &store, |x| {
                norm.forward_t(x, true)
            })?;
        }
        Ok(())
    }

    #[test]
    fn weight_standardization_has_gradient_and_unit_filters() -> Result<()> {
        let store = ParamStore::with_dtype(&Device::Cpu, 1, DType::F64);
        check_gradients("ws", &[3, 2, 3, 3], &store, weight_standardize)?;
        let w = Tensor::arange(0f32, 36.0, &Device::Cpu)?.reshape((2, 3, 3, 2))?;
        let s = weight_standardize(&w)?.reshape((2, 18))?;
        let mean = s.mean(1)?.to_vec1::<f32>()?;
        let var = s.sqr()?.mean(1)?.to_vec1::<f32>()?;
        for k in 0..2 {
            assert!(
                mean[k].abs() < 1e-5 && (var[k] - 1.0).abs() < 1e-3,
                "{mean:?} {var:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn batch_norm_uses_batch_stats_in_train_and_running_stats_in_eval() -> Result<()> {
        let (_store, norm) = layer(NormKind::Batch, 2)?;
        let Norm::Batch(bn) = &norm else {
            unreachable!()
        };
        let x = Tensor::new(&[[1f64, 10.0], [3.0, 30.0]], &Device::Cpu)?;
        // Train: each column standardised over the batch → (−1, 1) before affine.
        let y = bn.forward_t(&x, true)?;
        let w = bn.weight.to_vec1::<f64>()?;
        let b = bn.bias.to_vec1::<f64>()?;
        let y = y.to_vec2::<f64>()?;
        assert!((y[0][0] - (b[0] - w[0])).abs() < 1e-3, "{y:?}");
        assert!((y[1][1] - (b[1] + w[1])).abs() < 1e-3, "{y:?}");
        // Running mean moved 10 % of the way to the batch mean; running var to the unbiased var.
        let rm = bn.running_mean.as_tensor().to_vec1::<f64>()?;
        let rv = bn.running_var.as_tensor().to_vec1::<f64>()?;
        assert!(
            (rm[0] - 0.2).abs() < 1e-6 && (rm[1] - 2.0).abs() < 1e-5,
            "{rm:?}"
        );
        assert!((rv[0] - (0.9 + 0.1 * 2.0)).abs() < 1e-5, "{rv:?}");
        assert!((rv[1] - (0.9 + 0.1 * 200.0)).abs() < 1e-3, "{rv:?}");
        // Eval: uses the running statistics, so a single example is fine.
        let one = Tensor::new(&[[0.2f64, 2.0]], &Device::Cpu)?;
        let e = bn.forward_t(&one, false)?.to_vec2::<f64>()?;
        assert!(
            (e[0][0] - b[0]).abs() < 1e-5 && (e[0][1] - b[1]).abs() < 1e-5,
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn layer_norm_is_per_example() -> Result<()> {
        let (_s, norm) = layer(NormKind::Layer, 3)?;
        let x = Tensor::new(&[[1f64, 2.0, 3.0], [1.0, 2.0, 3.0]], &Device::Cpu)?;
        let x2 = Tensor::new(&[[1f64, 2.0, 3.0], [100.0, -7.0, 0.5]], &Device::Cpu)?;
        let a = norm.forward_t(&x, true)?.get(0)?.to_vec1::<f64>()?;
        let b = norm.forward_t(&x2, true)?.get(0)?.to_vec1::<f64>()?;
        assert_eq!(a, b, "row 0 must not depend on row 1");
        Ok(())
    }
}

#[cfg(test)]
mod naive {
    use super::*;
    use candle_core::{DType, Device};

    /// Plain-loop group norm on (N, S, C) with unit affine, for cross-checking.
    fn naive_group_norm(x: &[f64], n: usize, s: usize, c: usize, g: usize) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        let per = c / g;
        for i in 0..n {
            for grp in 0..g {
                let idx = |p: usize, ch: usize| (i * s + p) * c + grp * per + ch;
                let vals: Vec<f64> = (0..s)
                    .flat_map(|p| (0..per).map(move |ch| (p, ch)))
                    .map(|(p, ch)| x[idx(p, ch)])
                    .collect();
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
                for p in 0..s {
                    for ch in 0..per {
                        out[idx(p, ch)] = (x[idx(p, ch)] - mean) / (var + EPS).sqrt();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn fused_batch_norm_matches_op_built_reference() -> Result<()> {
        let mut store = ParamStore::with_dtype(&Device::Cpu, 4, DType::F64);
        let bn = BatchNorm::new(&mut store, "b", 5)?;
        let w = Tensor::new(&[0.5f64, 1.5, -1.0, 2.0, 0.1], &Device::Cpu)?;
        let b = Tensor::new(&[0.1f64, -0.2, 0.3, 0.0, 1.0], &Device::Cpu)?;
        store.params()[0].var.set(&w)?;
        store.params()[1].var.set(&b)?;
        let x = candle_core::Var::from_tensor(&Tensor::rand(-2f64, 3.0, (7, 5), &Device::Cpu)?)?;
        let r = Tensor::rand(-1f64, 1.0, (7, 5), &Device::Cpu)?;
        let fused = bn.forward_t(x.as_tensor(), true)?;
        let (xhat, _, _) = standardize_columns(x.as_tensor())?;
        let reference = affine(&xhat, &bn.weight, &bn.bias)?;
        assert!(
            (&fused - &reference)?
                .abs()?
                .max_all()?
                .to_scalar::<f64>()?
                < 1e-12
        );
        let gf = (&fused * &r)?.sum_all()?.backward()?;
        let gr = (&reference * &r)?.sum_all()?.backward()?;
        for t in [x.as_tensor(), &bn.weight, &bn.bias] {
            let a = gf.get(t).expect("fused gradient");
            let b = gr.get(t).expect("reference gradient");
            assert!((a - b)?.abs()?.max_all()?.to_scalar::<f64>()? < 1e-10);
        }
        Ok(())
    }

    #[test]
    fn group_and_batch_norm_match_plain_loops() -> Result<()> {
        let (n, s, c) = (2, 3, 6);
        let v: Vec<f64> = (0..n * s * c)
            .map(|i| ((i * 13 % 17) as f64) * 0.3 - 2.0)
            .collect();
        let x = Tensor::from_vec(v.clone(), (n, s, c), &Device::Cpu)?;
        let mut store = ParamStore::with_dtype(&Device::Cpu, 0, DType::F64);
        let gn = GroupNorm::new(&mut store, "g", c, 3)?;
        let got = gn.forward_t(&x, true)?.flatten_all()?.to_vec1::<f64>()?;
        let want = naive_group_norm(&v, n, s, c, 3);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-10, "{a} vs {b}");
        }
        // Batch norm = group norm with one group per channel over the whole batch: treat the
        // batch as one example with N·S positions.
        let bn = BatchNorm::new(&mut store, "b", c)?;
        let got = bn.forward_t(&x, true)?.flatten_all()?.to_vec1::<f64>()?;
        let want = naive_group_norm(&v, 1, n * s, c, c);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-10, "{a} vs {b}");
        }
        Ok(())
    }
}

/// The parts of batch norm taken apart (`bn_center`, `bn_scale`, `bn_detached`, `ghost_bn`):
/// closed-form cases, gradients against finite differences, and the relations to batch norm
/// that define them.
#[cfg(test)]
mod parts {
    use super::*;
    use crate::model::gradcheck::check_gradients;
    use candle_core::{DType, Device, Var};

    fn store() -> ParamStore {
        ParamStore::with_dtype(&Device::Cpu, 5, DType::F64)
    }

    /// Sets γ and β of the only norm in `store` (non-trivial, so they are tested too).
    fn set_affine(store: &ParamStore, w: &[f64], b: &[f64]) -> Result<()> {
        store.params()[0].var.set(&Tensor::new(w, &Device::Cpu)?)?;
        store.params()[1].var.set(&Tensor::new(b, &Device::Cpu)?)
    }

    fn col(y: &Tensor, c: usize) -> Result<Vec<f64>> {
        y.narrow(1, c, 1)?.flatten_all()?.to_vec1::<f64>()
    }

    fn mean_sd(v: &[f64]) -> (f64, f64) {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
        (m, var.sqrt())
    }

    fn batch() -> Result<Tensor> {
        // Column 0 is constant; the others vary, with different means and spreads.
        let v: Vec<f64> = (0..8)
            .flat_map(|i| {
                let i = i as f64;
                [2.5, 3.0 + 0.7 * i, -1.0 + ((i * 7.0) % 5.0) * 1.3]
            })
            .collect();
        Tensor::from_vec(v, (8, 3), &Device::Cpu)
    }

    #[test]
    fn every_part_has_gradients_to_input_and_parameters() -> Result<()> {
        for (kind, shape) in [
            (NormKind::BatchCenter, vec![5, 4]),
            (NormKind::BatchScale, vec![5, 4]),
            (NormKind::GhostBatch(2), vec![5, 4]),
            (NormKind::GhostBatch(3), vec![6, 3]),
        ] {
            let c = *shape.last().expect("rank 2");
            let mut s = store();
            let norm = Norm::new(&mut s, "n", c, kind)?;
            let w: Vec<f64> = (0..c).map(|k| 0.5 + 0.2 * k as f64).collect();
            let b: Vec<f64> = (0..c).map(|k| 0.1 - 0.3 * k as f64).collect();
            set_affine(&s, &w, &b)?;
            check_gradients(&format!("{kind:?} {shape:?}"), &shape, &s, |x| {
                norm.forward_t(x, true)
            })?;
        }
        Ok(())
    }

    #[test]
    fn centring_gives_zero_batch_mean_and_keeps_the_spread() -> Result<()> {
        let mut s = store();
        let norm = Norm::new(&mut s, "n", 3, NormKind::BatchCenter)?;
        set_affine(&s, &[2.0, 0.5, -1.5], &[0.25, -1.0, 3.0])?;
        let x = batch()?;
        let y = norm.forward_t(&x, true)?;
        // A constant feature is exactly β.
        assert!(col(&y, 0)?.iter().all(|v| *v == 0.25), "{:?}", col(&y, 0)?);
        for (c, (g, b)) in [(1, (0.5, -1.0)), (2, (-1.5, 3.0))] {
            let (m, sd) = mean_sd(&col(&y, c)?);
            let (_, sd_in) = mean_sd(&col(&x, c)?);
            assert!((m - b).abs() < 1e-12, "column {c}: mean {m}");
            assert!(
                (sd - f64::abs(g) * sd_in).abs() < 1e-12,
                "column {c}: not rescaled"
            );
        }
        Ok(())
    }

    #[test]
    fn scaling_gives_unit_batch_std_and_keeps_the_mean_direction() -> Result<()> {
        let mut s = store();
        let norm = Norm::new(&mut s, "n", 3, NormKind::BatchScale)?;
        let x = batch()?;
        let y = norm.forward_t(&x, true)?;
        // γ = 1, β = 0: each varying column has unit std and its mean is not removed.
        for c in [1, 2] {
            let (m, sd) = mean_sd(&col(&y, c)?);
            let (m_in, sd_in) = mean_sd(&col(&x, c)?);
            assert!((sd - 1.0).abs() < 1e-4, "column {c}: sd {sd}");
            assert!((m - m_in / (sd_in * sd_in + EPS).sqrt()).abs() < 1e-12);
        }
        // A constant feature is divided by √ε: its value, not removed.
        let want = 2.5 / EPS.sqrt();
        assert!(col(&y, 0)?.iter().all(|v| (v - want).abs() < 1e-9 * want));
        Ok(())
    }

    #[test]
    fn detached_statistics_give_batch_norms_forward_and_the_frozen_gradient() -> Result<()> {
        let (w, b) = ([2.0, 0.5, -1.5], [0.25, -1.0, 3.0]);
        let mut s1 = store();
        let bn = Norm::new(&mut s1, "n", 3, NormKind::Batch)?;
        set_affine(&s1, &w, &b)?;
        let mut s2 = store();
        let detached = Norm::new(&mut s2, "n", 3, NormKind::BatchDetached)?;
        set_affine(&s2, &w, &b)?;
        let x = Var::from_tensor(&batch()?)?;
        let r = Tensor::rand(-1f64, 1.0, (8, 3), &Device::Cpu)?;
        let (yb, yd) = (
            bn.forward_t(x.as_tensor(), true)?,
            detached.forward_t(x.as_tensor(), true)?,
        );
        let diff = (&yb - &yd)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "forward differs by {diff}");
        let gb = (&yb * &r)?.sum_all()?.backward()?;
        let gd = (&yd * &r)?.sum_all()?.backward()?;
        let (gxb, gxd) = (
            gb.get(x.as_tensor()).expect("bn input gradient"),
            gd.get(x.as_tensor()).expect("detached input gradient"),
        );
        // Frozen statistics: d y / d x = γ / √(σ² + ε), element by element.
        let mut frozen = Vec::new();
        for (c, g) in w.iter().enumerate() {
            let (_, sd) = mean_sd(&col(x.as_tensor(), c)?);
            frozen.push(g / (sd * sd + EPS).sqrt());
        }
        let rv = r.to_vec2::<f64>()?;
        let got = gxd.to_vec2::<f64>()?;
        for (i, row) in got.iter().enumerate() {
            for (c, g) in row.iter().enumerate() {
                let want = rv[i][c] * frozen[c];
                assert!((g - want).abs() < 1e-9, "({i},{c}): {g} vs {want}");
            }
        }
        let apart = (gxb - gxd)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(
            apart > 1e-3,
            "the input gradient must differ from batch norm's"
        );
        // γ and β enter after the normalization: their gradients are batch norm's.
        for (a, b) in s1.params().iter().zip(s2.params()) {
            let d = (gb.get(a.var.as_tensor()).expect("bn")
                - gd.get(b.var.as_tensor()).expect("detached"))?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
            assert!(d < 1e-10, "{}: {d}", a.name);
        }
        Ok(())
    }

    #[test]
    fn ghost_batch_norm_is_batch_norm_of_each_group() -> Result<()> {
        let x = Tensor::rand(-2f64, 3.0, (12, 4), &Device::Cpu)?;
        let mut s = store();
        let bn = Norm::new(&mut s, "b", 4, NormKind::Batch)?;
        // One group holding the whole batch is batch norm.
        let mut s1 = store();
        let whole = Norm::new(&mut s1, "g", 4, NormKind::GhostBatch(16))?;
        let d = (bn.forward_t(&x, true)? - whole.forward_t(&x, true)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(d < 1e-10, "{d}");
        // Groups of 4 (and a batch that is not a multiple: 12 = 5 + 5 + 2) are batch norm
        // applied to each group alone.
        for g in [4usize, 5] {
            let mut s2 = store();
            let ghost = Norm::new(&mut s2, "g", 4, NormKind::GhostBatch(g))?;
            let y = ghost.forward_t(&x, true)?;
            for start in (0..12).step_by(g) {
                let n = g.min(12 - start);
                let mut s3 = store();
                let alone = Norm::new(&mut s3, "b", 4, NormKind::Batch)?;
                let want = alone.forward_t(&x.narrow(0, start, n)?, true)?;
                let d = (y.narrow(0, start, n)? - want)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f64>()?;
                assert!(d < 1e-10, "groups of {g}, group at {start}: {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn running_statistics_serve_evaluation() -> Result<()> {
        let x = batch()?;
        let one = Tensor::new(&[[2.5f64, 5.0, 0.0]], &Device::Cpu)?;
        for kind in [
            NormKind::BatchCenter,
            NormKind::BatchScale,
            NormKind::BatchDetached,
            NormKind::GhostBatch(4),
        ] {
            let mut s = store();
            let norm = Norm::new(&mut s, "n", 3, kind)?;
            norm.forward_t(&x, true)?;
            let (rm, rv) = (
                s.buffers()[0].1.as_tensor().to_vec1::<f64>()?,
                s.buffers()[1].1.as_tensor().to_vec1::<f64>()?,
            );
            // 10 % of the way from (0, 1) to the batch's (or groups') statistics.
            assert!((rm[0] - 0.25).abs() < 1e-12, "{kind:?}: {rm:?}");
            assert!((rv[0] - 0.9).abs() < 1e-12, "{kind:?}: {rv:?}");
            let e = norm.forward_t(&one, false)?.to_vec2::<f64>()?;
            let want = match kind {
                NormKind::BatchCenter => 2.5 - rm[0],
                NormKind::BatchScale => 2.5 / (rv[0] + EPS).sqrt(),
                _ => (2.5 - rm[0]) / (rv[0] + EPS).sqrt(),
            };
            assert!(
                (e[0][0] - want).abs() < 1e-12,
                "{kind:?}: {} vs {want}",
                e[0][0]
            );
        }
        Ok(())
    }
}
