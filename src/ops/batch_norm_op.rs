//! Batch norm in training mode as one fused CPU op (forward and backward one pass each over
//! memory). Built from candle ops, batch norm's forward and backward are ~20 small ops, each
//! allocating and sweeping the activations; on the CPU that was ~40 % of a training step.
//!
//! Input (M, C) channels-last; y = (x − μ) / √(σ² + ε) · w + b with μ, σ² the biased batch
//! moments of each column. Backward (x̂ the normalised input, g = dy · w):
//! dx = (g − mean(g) − x̂ · mean(g · x̂)) / √(σ² + ε); dw = Σ dy · x̂; db = Σ dy.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType,
};

use super::columns::{
    apply_affine, gradient_sums, input_gradient, input_gradient_coefficients, moments, Affine, EPS,
};

pub(crate) fn slice<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused batch norm: {what} must be contiguous"),
    }
}

pub(crate) fn to_f64<T: WithDType>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// The forward op: (x, w, b) → y.
pub struct BatchNormTrain;

/// Column moments (2, C): biased mean and variance, for the running statistics.
pub struct ColumnMoments;

/// dx from (x, w, dy).
struct GradInput;

/// (2, C) [dw; db] from (x, dy).
struct GradParams;

macro_rules! dispatch {
    ($storage:expr, $name:literal, |$v:ident| $body:expr) => {
        match $storage {
            CpuStorage::F32($v) => $body,
            CpuStorage::F64($v) => $body,
            _ => candle_core::bail!(concat!($name, " supports f32 and f64")),
        }
    };
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c) = xl.shape().dims2()?;
        let w = dispatch!(ws, "batch norm", |v| to_f64(slice(v, wl, "weight")?));
        let b = dispatch!(bs, "batch norm", |v| to_f64(slice(v, bl, "bias")?));
        fn run<T: WithDType>(x: &[T], c: usize, w: &[f64], b: &[f64]) -> Vec<T> {
            let (mean, inv_std) = moments(x, c);
            apply_affine(x, c, &Affine::new(&mean, &inv_std, w, b), false)
        }
        let out = match xs {
            CpuStorage::F32(v) => CpuStorage::F32(run(slice(v, xl, "input")?, c, &w, &b)),
            CpuStorage::F64(v) => CpuStorage::F64(run(slice(v, xl, "input")?, c, &w, &b)),
            _ => candle_core::bail!("batch norm supports f32 and f64"),
        };
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &dy, &GradInput)?;
        let dwdb = x.apply_op2_no_bwd(&dy, &GradParams)?;
        Ok((Some(dx), Some(dwdb.get(0)?), Some(dwdb.get(1)?)))
    }
}

impl CustomOp1 for ColumnMoments {
    fn name(&self) -> &'static str {
        "column-moments"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c) = xl.shape().dims2()?;
        fn run<T: WithDType>(x: &[T], c: usize) -> Vec<T> {
            let (mean, inv_std) = moments(x, c);
            let var = inv_std.iter().map(|s| 1.0 / (s * s) - EPS);
            mean.iter().copied().chain(var).map(T::from_f64).collect()
        }
        let out = match xs {
            CpuStorage::F32(v) => CpuStorage::F32(run(slice(v, xl, "input")?, c)),
            CpuStorage::F64(v) => CpuStorage::F64(run(slice(v, xl, "input")?, c)),
            _ => candle_core::bail!("column moments support f32 and f64"),
        };
        Ok((out, Shape::from((2, c))))
    }
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "batch-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, c) = xl.shape().dims2()?;
        let w = dispatch!(ws, "batch norm", |v| to_f64(slice(v, wl, "weight")?));
        fn run<T: WithDType>(x: &[T], dy: &[T], c: usize, m: usize, w: &[f64]) -> Vec<T> {
            let (mean, inv_std) = moments(x, c);
            let (sum_dy, sum_dyx) = gradient_sums(x, dy, c, &mean, None);
            let k = input_gradient_coefficients(&mean, &inv_std, w, &sum_dy, &sum_dyx, m);
            input_gradient(x, dy, c, &k, None)
        }
        let out = match (xs, gs) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(run(
                slice(x, xl, "input")?,
                slice(g, gl, "gradient")?,
                c,
                m,
                &w,
            )),
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(run(
                slice(x, xl, "input")?,
                slice(g, gl, "gradient")?,
                c,
                m,
                &w,
            )),
            _ => candle_core::bail!("batch norm backward: mismatched or unsupported dtypes"),
        };
        Ok((out, xl.shape().clone()))
    }
}

impl CustomOp2 for GradParams {
    fn name(&self) -> &'static str {
        "batch-norm-grad-params"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c) = xl.shape().dims2()?;
        fn run<T: WithDType>(x: &[T], dy: &[T], c: usize) -> Vec<T> {
            let (mean, inv_std) = moments(x, c);
            let (sum_dy, sum_dyx) = gradient_sums(x, dy, c, &mean, None);
            // dw = Σ dy·x̂ = inv_std·Σ dy·(x − μ); db = Σ dy.
            let dw = sum_dyx.iter().zip(&inv_std).map(|(s, i)| s * i);
            dw.chain(sum_dy).map(T::from_f64).collect()
        }
        let out = match (xs, gs) {
            (CpuStorage::F32(x), CpuStorage::F32(g)) => {
                CpuStorage::F32(run(slice(x, xl, "input")?, slice(g, gl, "gradient")?, c))
            }
            (CpuStorage::F64(x), CpuStorage::F64(g)) => {
                CpuStorage::F64(run(slice(x, xl, "input")?, slice(g, gl, "gradient")?, c))
            }
            _ => candle_core::bail!("batch norm backward: mismatched or unsupported dtypes"),
        };
        Ok((out, Shape::from((2, c))))
    }
}
