//! Batch norm's passes over a row-major (rows, c) matrix: the column moments, the backward
//! sums, the forward affine map and the input gradient. The fused batch-norm op and the
//! fused conv → batch norm → ReLU op share them.
//!
//! Columns go in blocks of [`COLUMNS`]. For a full block the width is a compile-time
//! constant ([`Full`]): the compiler unrolls the loop over it, keeps the block's accumulators
//! and coefficients in registers, and vectorises. Over a run-time width the same loops were
//! scalar and reloaded their accumulators every row; they took ~20 % of a training step.
//! Each column is still reduced row by row in order, and each element goes through the same
//! f64 operations, so the results are bit for bit those of the plain loops. They do not
//! depend on the thread count either.

use std::mem::MaybeUninit;

use candle_core::WithDType;

use super::parallel::{for_each_chunk_mut, map_indices};

pub const EPS: f64 = 1e-5;

/// Columns per block: one 64-byte cache line of f32, so no two parallel tasks of a column
/// reduction read the same line.
const COLUMNS: usize = 16;

/// Rows per parallel chunk of the element-wise passes.
const ROWS: usize = 256;

/// A column block's width.
trait Width: Copy {
    fn get(self) -> usize;
}

/// A full block: [`COLUMNS`], known when compiling.
#[derive(Clone, Copy)]
struct Full;

/// The last block of a matrix whose width is not a multiple of [`COLUMNS`].
#[derive(Clone, Copy)]
struct Partial(usize);

impl Width for Full {
    #[inline(always)]
    fn get(self) -> usize {
        COLUMNS
    }
}

impl Width for Partial {
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }
}

/// `$body` with `$w` bound to the [`Width`] of a block of `$len` columns.
macro_rules! with_width {
    ($len:expr, |$w:ident| $body:expr) => {
        if $len == COLUMNS {
            let $w = Full;
            $body
        } else {
            let $w = Partial($len);
            $body
        }
    };
}

/// Per-column sums over all rows, `K` of them per column, in parallel over column blocks:
/// `f(first column, block width)` returns the block's `K` accumulator rows.
fn reduce<const K: usize>(
    c: usize,
    f: impl Fn(usize, usize) -> [[f64; COLUMNS]; K] + Sync,
) -> [Vec<f64>; K] {
    let blocks = map_indices(c.div_ceil(COLUMNS), |b| {
        let start = b * COLUMNS;
        f(start, COLUMNS.min(c - start))
    });
    std::array::from_fn(|k| {
        let mut total = Vec::with_capacity(c);
        for (b, acc) in blocks.iter().enumerate() {
            total.extend_from_slice(&acc[k][..COLUMNS.min(c - b * COLUMNS)]);
        }
        total
    })
}

/// An element-wise pass producing a matrix the size of `len`, in parallel over chunks of
/// [`ROWS`] rows, each chunk column block by column block: `f(first row, chunk, first
/// column, width)` writes the block of the chunk.
fn map_rows<T: WithDType>(
    len: usize,
    c: usize,
    f: impl Fn(usize, &mut [MaybeUninit<T>], usize, usize) + Sync,
) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    for_each_chunk_mut(&mut out.spare_capacity_mut()[..len], ROWS * c, |i, dst| {
        let mut start = 0;
        while start < c {
            let width = COLUMNS.min(c - start);
            f(i * ROWS, dst, start, width);
            start += width;
        }
    });
    // Safety: len is a multiple of c, and every block of every row was written above.
    unsafe { out.set_len(len) };
    out
}

fn sum_block<T: WithDType, W: Width>(x: &[T], c: usize, start: usize, w: W) -> [f64; COLUMNS] {
    let n = w.get();
    let mut acc = [0.0f64; COLUMNS];
    for row in x.chunks_exact(c) {
        let row = &row[start..start + n];
        for j in 0..n {
            acc[j] += row[j].to_f64();
        }
    }
    acc
}

fn squared_deviation_block<T: WithDType, W: Width>(
    x: &[T],
    c: usize,
    start: usize,
    w: W,
    mean: &[f64],
) -> [f64; COLUMNS] {
    let n = w.get();
    let mean = &mean[start..start + n];
    let mut acc = [0.0f64; COLUMNS];
    for row in x.chunks_exact(c) {
        let row = &row[start..start + n];
        for j in 0..n {
            let d = row[j].to_f64() - mean[j];
            acc[j] += d * d;
        }
    }
    acc
}

/// Per-column mean and 1/√(var + ε) (biased variance, two passes), in f64.
pub fn moments<T: WithDType>(x: &[T], c: usize) -> (Vec<f64>, Vec<f64>) {
    let m = (x.len() / c).max(1) as f64;
    let [sum] = reduce(c, |start, len| {
        with_width!(len, |w| [sum_block(x, c, start, w)])
    });
    let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let [sq] = reduce(c, |start, len| {
        with_width!(len, |w| [squared_deviation_block(x, c, start, w, &mean)])
    });
    let inv_std = sq.iter().map(|s| 1.0 / (s / m + EPS).sqrt()).collect();
    (mean, inv_std)
}

/// Batch norm's forward map per column, y = x·scale + shift.
pub struct Affine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

impl Affine {
    pub fn new(mean: &[f64], inv_std: &[f64], w: &[f64], b: &[f64]) -> Self {
        let scale: Vec<f64> = inv_std.iter().zip(w).map(|(s, w)| s * w).collect();
        let shift = mean
            .iter()
            .zip(&scale)
            .zip(b)
            .map(|((m, s), b)| b - m * s)
            .collect();
        Self { scale, shift }
    }
}

/// dy where a ReLU after the affine map passed it: where the map's output, recomputed bit
/// for bit, is ≥ 0 (candle's ReLU-gradient convention); dy itself without a ReLU.
#[inline(always)]
fn gated<T: WithDType, const RELU: bool>(x: T, dy: T, scale: f64, shift: f64) -> f64 {
    if !RELU || T::from_f64(x.to_f64() * scale + shift) >= T::zero() {
        dy.to_f64()
    } else {
        0.0
    }
}

#[allow(clippy::too_many_arguments)]
fn gradient_sums_block<T: WithDType, W: Width, const RELU: bool>(
    x: &[T],
    dy: &[T],
    c: usize,
    start: usize,
    w: W,
    mean: &[f64],
    scale: &[f64],
    shift: &[f64],
) -> [[f64; COLUMNS]; 2] {
    let n = w.get();
    let span = start..start + n;
    let (mean, scale, shift) = (
        &mean[span.clone()],
        &scale[span.clone()],
        &shift[span.clone()],
    );
    let (mut sum_g, mut sum_gx) = ([0.0f64; COLUMNS], [0.0f64; COLUMNS]);
    for (row, drow) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        let (row, drow) = (&row[span.clone()], &drow[span.clone()]);
        for j in 0..n {
            let g = gated::<T, RELU>(row[j], drow[j], scale[j], shift[j]);
            sum_g[j] += g;
            sum_gx[j] += g * (row[j].to_f64() - mean[j]);
        }
    }
    [sum_g, sum_gx]
}

/// Per column, Σ g and Σ g·(x − μ), where g is dy gated by the ReLU after `relu_after`'s
/// affine map (or dy itself).
pub fn gradient_sums<T: WithDType>(
    x: &[T],
    dy: &[T],
    c: usize,
    mean: &[f64],
    relu_after: Option<&Affine>,
) -> (Vec<f64>, Vec<f64>) {
    let [sum_g, sum_gx] = match relu_after {
        Some(a) => reduce(c, |start, len| {
            with_width!(len, |w| gradient_sums_block::<T, _, true>(
                x, dy, c, start, w, mean, &a.scale, &a.shift
            ))
        }),
        // Without a ReLU the gate reads no coefficient: any column-long slice will do.
        None => reduce(c, |start, len| {
            with_width!(len, |w| gradient_sums_block::<T, _, false>(
                x, dy, c, start, w, mean, mean, mean
            ))
        }),
    };
    (sum_g, sum_gx)
}

fn affine_block<T: WithDType, W: Width, const RELU: bool>(
    dst: &mut [MaybeUninit<T>],
    x: &[T],
    c: usize,
    start: usize,
    w: W,
    a: &Affine,
) {
    let n = w.get();
    let span = start..start + n;
    let (scale, shift) = (&a.scale[span.clone()], &a.shift[span.clone()]);
    for (drow, row) in dst.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        let (drow, row) = (&mut drow[span.clone()], &row[span.clone()]);
        for j in 0..n {
            let y = T::from_f64(row[j].to_f64() * scale[j] + shift[j]);
            drow[j].write(if RELU && y < T::zero() { T::zero() } else { y });
        }
    }
}

/// y = x·scale + shift per column, then ReLU if asked.
pub fn apply_affine<T: WithDType>(x: &[T], c: usize, a: &Affine, relu: bool) -> Vec<T> {
    map_rows(x.len(), c, |row, dst, start, len| {
        let x = &x[row * c..row * c + dst.len()];
        match relu {
            true => with_width!(len, |w| affine_block::<T, _, true>(dst, x, c, start, w, a)),
            false => with_width!(len, |w| affine_block::<T, _, false>(dst, x, c, start, w, a)),
        }
    })
}

/// Batch norm's input gradient as a per-column affine map of (g, x): dx = p·g + q·x + r
/// ([`input_gradient_coefficients`]).
pub struct InputGradient {
    pub p: Vec<f64>,
    pub q: Vec<f64>,
    pub r: Vec<f64>,
}

/// The coefficients of the input gradient: p = w·inv_std, q = −p·inv_std²·Σ g·(x − μ)/m,
/// r = −p·Σ g/m − q·μ.
pub fn input_gradient_coefficients(
    mean: &[f64],
    inv_std: &[f64],
    w: &[f64],
    sum_g: &[f64],
    sum_gx: &[f64],
    m: usize,
) -> InputGradient {
    let (c, mf) = (mean.len(), m as f64);
    let p: Vec<f64> = w.iter().zip(inv_std).map(|(w, s)| w * s).collect();
    let q: Vec<f64> = (0..c)
        .map(|k| -p[k] * inv_std[k] * inv_std[k] * sum_gx[k] / mf)
        .collect();
    let r: Vec<f64> = (0..c)
        .map(|k| -p[k] * sum_g[k] / mf - q[k] * mean[k])
        .collect();
    InputGradient { p, q, r }
}

#[allow(clippy::too_many_arguments)]
fn input_gradient_block<T: WithDType, W: Width, const RELU: bool>(
    dst: &mut [MaybeUninit<T>],
    x: &[T],
    dy: &[T],
    c: usize,
    start: usize,
    w: W,
    k: &InputGradient,
    (scale, shift): (&[f64], &[f64]),
) {
    let n = w.get();
    let span = start..start + n;
    let (p, q, r) = (&k.p[span.clone()], &k.q[span.clone()], &k.r[span.clone()]);
    let (scale, shift) = (&scale[span.clone()], &shift[span.clone()]);
    for ((drow, row), grow) in dst
        .chunks_exact_mut(c)
        .zip(x.chunks_exact(c))
        .zip(dy.chunks_exact(c))
    {
        let (drow, row, grow) = (
            &mut drow[span.clone()],
            &row[span.clone()],
            &grow[span.clone()],
        );
        for j in 0..n {
            let g = gated::<T, RELU>(row[j], grow[j], scale[j], shift[j]);
            drow[j].write(T::from_f64(p[j] * g + q[j] * row[j].to_f64() + r[j]));
        }
    }
}

/// dx = p·g + q·x + r per column, g being dy gated by the ReLU after `relu_after`'s affine
/// map (or dy itself).
pub fn input_gradient<T: WithDType>(
    x: &[T],
    dy: &[T],
    c: usize,
    k: &InputGradient,
    relu_after: Option<&Affine>,
) -> Vec<T> {
    map_rows(x.len(), c, |row, dst, start, len| {
        let span = row * c..row * c + dst.len();
        let (x, dy) = (&x[span.clone()], &dy[span]);
        match relu_after {
            Some(a) => with_width!(len, |w| input_gradient_block::<T, _, true>(
                dst,
                x,
                dy,
                c,
                start,
                w,
                k,
                (&a.scale, &a.shift)
            )),
            // Without a ReLU the gate reads no coefficient: any column-long slice will do.
            None => with_width!(len, |w| input_gradient_block::<T, _, false>(
                dst,
                x,
                dy,
                c,
                start,
                w,
                k,
                (&k.p, &k.p)
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values of both signs, so the ReLU gate opens and closes.
    fn matrix(rows: usize, c: usize, salt: usize) -> Vec<f32> {
        (0..rows * c)
            .map(|i| (((i * 37 + salt * 11) % 101) as f32 / 50.0 - 1.0) * (1.0 + (i % 7) as f32))
            .collect()
    }

    fn column(c: usize, salt: usize) -> Vec<f64> {
        (0..c)
            .map(|j| ((j * 13 + salt) % 17) as f64 / 8.0 - 1.0)
            .collect()
    }

    /// Widths below, at and past one block; rows past one parallel chunk.
    const SHAPES: [(usize, usize); 4] = [(7, 5), (300, 16), (300, 37), (513, 48)];

    #[test]
    fn moments_equal_plain_two_pass_loops_bit_for_bit() {
        for (rows, c) in SHAPES {
            let x = matrix(rows, c, 1);
            let (mean, inv_std) = moments(&x, c);
            for j in 0..c {
                let mut s = 0.0f64;
                for r in 0..rows {
                    s += x[r * c + j] as f64;
                }
                let mu = s / rows as f64;
                let mut sq = 0.0f64;
                for r in 0..rows {
                    let d = x[r * c + j] as f64 - mu;
                    sq += d * d;
                }
                assert_eq!(mean[j], mu, "({rows}, {c}) column {j}");
                assert_eq!(inv_std[j], 1.0 / (sq / rows as f64 + EPS).sqrt());
            }
        }
    }

    #[test]
    fn closed_form_moments() {
        // Column 0 constant, column 1 ±1: mean 3 and 0, variance 0 and 1.
        let x = [3.0f32, 1.0, 3.0, -1.0, 3.0, 1.0, 3.0, -1.0];
        let (mean, inv_std) = moments(&x, 2);
        assert_eq!(mean, vec![3.0, 0.0]);
        assert_eq!(inv_std[0], 1.0 / EPS.sqrt());
        assert_eq!(inv_std[1], 1.0 / (1.0 + EPS).sqrt());
    }

    #[test]
    fn passes_equal_plain_loops_bit_for_bit() {
        for (rows, c) in SHAPES {
            let (x, dy) = (matrix(rows, c, 2), matrix(rows, c, 3));
            let (mean, inv_std) = moments(&x, c);
            let a = Affine::new(&mean, &inv_std, &column(c, 4), &column(c, 5));
            for relu in [false, true] {
                let gate = |i: usize| {
                    let j = i % c;
                    let y = (x[i] as f64 * a.scale[j] + a.shift[j]) as f32;
                    if !relu || y >= 0.0 {
                        dy[i] as f64
                    } else {
                        0.0
                    }
                };
                // Forward map.
                let y = apply_affine(&x, c, &a, relu);
                for (i, v) in y.iter().enumerate() {
                    let j = i % c;
                    let want = (x[i] as f64 * a.scale[j] + a.shift[j]) as f32;
                    let want = if relu && want < 0.0 { 0.0 } else { want };
                    assert_eq!(*v, want, "({rows}, {c}) relu {relu} element {i}");
                }
                // Backward sums.
                let (sum_g, sum_gx) = gradient_sums(&x, &dy, c, &mean, relu.then_some(&a));
                if relu {
                    let closed = (0..rows * c).filter(|&i| gate(i) == 0.0 && dy[i] != 0.0);
                    assert!(closed.count() > 0, "the ReLU gate closes somewhere");
                }
                for j in 0..c {
                    let (mut sg, mut sgx) = (0.0f64, 0.0f64);
                    for r in 0..rows {
                        let g = gate(r * c + j);
                        sg += g;
                        sgx += g * (x[r * c + j] as f64 - mean[j]);
                    }
                    assert_eq!((sum_g[j], sum_gx[j]), (sg, sgx), "({rows}, {c}) column {j}");
                }
                // Input gradient.
                let k = input_gradient_coefficients(
                    &mean,
                    &inv_std,
                    &column(c, 6),
                    &sum_g,
                    &sum_gx,
                    rows,
                );
                let dx = input_gradient(&x, &dy, c, &k, relu.then_some(&a));
                for (i, v) in dx.iter().enumerate() {
                    let j = i % c;
                    let want = (k.p[j] * gate(i) + k.q[j] * x[i] as f64 + k.r[j]) as f32;
                    assert_eq!(*v, want, "({rows}, {c}) relu {relu} element {i}");
                }
            }
        }
    }
}
