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

use super::parallel::map_indices;

pub const EPS: f64 = 1e-5;

pub(super) fn slice<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("fused batch norm: {what} must be contiguous"),
    }
}

/// Columns per parallel task of a column reduction: one 64-byte cache line of f32, so no
/// two tasks read the same line.
const COLUMNS: usize = 16;

/// Per-column sums over all rows of a (rows, c) matrix, in parallel over blocks of
/// [`COLUMNS`] columns: `f(columns, acc)` adds every row's entries in `columns` into
/// `width` accumulators per column (`acc[w · len + j]`). Each column is summed row by row
/// in order, as a sequential loop would — the result does not depend on the thread count,
/// and is bit for bit that of the ops this module replaced.
pub(super) fn column_sums(
    c: usize,
    width: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f64]) + Sync,
) -> Vec<f64> {
    let blocks: Vec<Vec<f64>> = map_indices(c.div_ceil(COLUMNS), |b| {
        let cols = b * COLUMNS..((b + 1) * COLUMNS).min(c);
        let mut acc = vec![0.0f64; width * cols.len()];
        f(cols, &mut acc);
        acc
    });
    let mut total = vec![0.0f64; width * c];
    for (b, acc) in blocks.iter().enumerate() {
        let len = acc.len() / width;
        for w in 0..width {
            total[w * c + b * COLUMNS..w * c + b * COLUMNS + len]
                .copy_from_slice(&acc[w * len..(w + 1) * len]);
        }
    }
    total
}

/// Per-column mean and 1/√(var + ε), in f64.
pub(super) fn moments<T: WithDType>(x: &[T], c: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (x.len() / c).max(1) as f64;
    let sum = column_sums(c, 1, |cols, acc| {
        for row in x.chunks_exact(c) {
            for (s, v) in acc.iter_mut().zip(&row[cols.clone()]) {
                *s += v.to_f64();
            }
        }
    });
    let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let sq = column_sums(c, 1, |cols, acc| {
        let mean = &mean[cols.clone()];
        for row in x.chunks_exact(c) {
            for ((s, v), mu) in acc.iter_mut().zip(&row[cols.clone()]).zip(mean) {
                let d = v.to_f64() - mu;
                *s += d * d;
            }
        }
    });
    let inv_std = sq.iter().map(|s| 1.0 / (s / m + EPS).sqrt()).collect();
    (mean, inv_std)
}

/// What both backward ops need per column: mean, 1/√(var + ε), Σ dy and Σ dy·(x − μ).
struct BackwardSums {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    sum_dy: Vec<f64>,
    sum_dyx: Vec<f64>,
}

fn backward_sums<T: WithDType>(x: &[T], dy: &[T], c: usize) -> BackwardSums {
    let (mean, inv_std) = moments(x, c);
    let mut sums = column_sums(c, 2, |cols, acc| {
        let (sd, sx) = acc.split_at_mut(cols.len());
        let mean = &mean[cols.clone()];
        for (row, drow) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
            for (((sd, sx), (v, d)), mu) in sd
                .iter_mut()
                .zip(sx.iter_mut())
                .zip(row[cols.clone()].iter().zip(&drow[cols.clone()]))
                .zip(mean)
            {
                let d = d.to_f64();
                *sd += d;
                *sx += d * (v.to_f64() - mu);
            }
        }
    });
    let sum_dyx = sums.split_off(c);
    BackwardSums {
        mean,
        inv_std,
        sum_dy: sums,
        sum_dyx,
    }
}

pub(super) fn to_f64<T: WithDType>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Batch norm's forward as a per-column affine map: y = x·scale + shift.
pub(super) struct Affine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

pub(super) fn affine(mean: &[f64], inv_std: &[f64], w: &[f64], b: &[f64]) -> Affine {
    let scale: Vec<f64> = inv_std.iter().zip(w).map(|(s, w)| s * w).collect();
    let shift = mean
        .iter()
        .zip(&scale)
        .zip(b)
        .map(|((m, s), b)| b - m * s)
        .collect();
    Affine { scale, shift }
}

/// Batch norm's input gradient as a per-column affine map of (dy, x): dx = a·dy + b·x + e,
/// with a = w·inv_std, b = −a·inv_std²·Σ dy·(x − μ)/m, e = −a·Σ dy/m − b·μ.
pub(super) fn input_gradient_coefficients(
    mean: &[f64],
    inv_std: &[f64],
    w: &[f64],
    sum_dy: &[f64],
    sum_dyx: &[f64],
    m: usize,
) -> [Vec<f64>; 3] {
    let (c, mf) = (mean.len(), m as f64);
    let a: Vec<f64> = w.iter().zip(inv_std).map(|(w, s)| w * s).collect();
    let b: Vec<f64> = (0..c)
        .map(|k| -a[k] * inv_std[k] * inv_std[k] * sum_dyx[k] / mf)
        .collect();
    let e: Vec<f64> = (0..c)
        .map(|k| -a[k] * sum_dy[k] / mf - b[k] * mean[k])
        .collect();
    [a, b, e]
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
            let Affine { scale, shift } = affine(&mean, &inv_std, w, b);
            let mut out = Vec::with_capacity(x.len());
            for row in x.chunks_exact(c) {
                out.extend(
                    row.iter()
                        .zip(&scale)
                        .zip(&shift)
                        .map(|((v, s), t)| T::from_f64(v.to_f64() * s + t)),
                );
            }
            out
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
            let BackwardSums {
                mean,
                inv_std,
                sum_dy,
                sum_dyx,
            } = backward_sums(x, dy, c);
            let [a, bcoef, e] =
                input_gradient_coefficients(&mean, &inv_std, w, &sum_dy, &sum_dyx, m);
            let mut out = Vec::with_capacity(x.len());
            for (row, drow) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
                out.extend(
                    drow.iter().zip(row).zip(a.iter().zip(&bcoef).zip(&e)).map(
                        |((d, v), ((a, b), e))| T::from_f64(a * d.to_f64() + b * v.to_f64() + e),
                    ),
                );
            }
            out
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
            let BackwardSums {
                inv_std,
                sum_dy,
                sum_dyx,
                ..
            } = backward_sums(x, dy, c);
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
