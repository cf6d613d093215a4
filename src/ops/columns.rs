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

use super::isa::{Isa, Kernel};
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

/// A reduction over all rows of a column block: `K` sums per column. Implementations hold
/// their inputs and mark `block` `#[inline(always)]`, so that [`Isa::run`] compiles its loops
/// for the instruction set.
trait ColumnPass<const K: usize>: Sync {
    fn block(&self, start: usize, len: usize) -> [[f64; COLUMNS]; K];
}

/// An element-wise pass writing a chunk of whole rows, every column block of it (inline
/// always, as [`ColumnPass`]).
trait RowPass<T>: Sync {
    fn rows(&self, first_row: usize, dst: &mut [MaybeUninit<T>]);
}

/// One column block of a [`ColumnPass`] of `K` sums, as a [`Kernel`].
struct Block<'p, P, const K: usize> {
    pass: &'p P,
    start: usize,
    len: usize,
}

impl<const K: usize, P: ColumnPass<K>> Kernel for Block<'_, P, K> {
    type Output = [[f64; COLUMNS]; K];
    #[inline(always)]
    fn run(self) -> Self::Output {
        self.pass.block(self.start, self.len)
    }
}

/// One row chunk of a [`RowPass`], as a [`Kernel`].
struct Chunk<'p, 'd, P, T> {
    pass: &'p P,
    first_row: usize,
    dst: &'d mut [MaybeUninit<T>],
}

impl<T, P: RowPass<T>> Kernel for Chunk<'_, '_, P, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        self.pass.rows(self.first_row, self.dst)
    }
}

/// Per-column sums over all rows, `K` of them per column, in parallel over column blocks
/// on [`Isa::of_passes`].
fn reduce<const K: usize>(c: usize, pass: &impl ColumnPass<K>) -> [Vec<f64>; K] {
    let isa = Isa::of_passes();
    let blocks = map_indices(c.div_ceil(COLUMNS), |b| {
        let start = b * COLUMNS;
        let len = COLUMNS.min(c - start);
        isa.run(Block::<_, K> { pass, start, len })
    });
    gather(c, &blocks)
}

/// [`reduce`] on this thread (inside a parallel loop).
fn reduce_here<const K: usize>(c: usize, pass: &impl ColumnPass<K>) -> [Vec<f64>; K] {
    let isa = Isa::of_passes();
    let blocks: Vec<_> = (0..c.div_ceil(COLUMNS))
        .map(|b| {
            let start = b * COLUMNS;
            let len = COLUMNS.min(c - start);
            isa.run(Block::<_, K> { pass, start, len })
        })
        .collect();
    gather(c, &blocks)
}

/// The `K` per-column sums of column blocks, as `K` rows of `c`.
fn gather<const K: usize>(c: usize, blocks: &[[[f64; COLUMNS]; K]]) -> [Vec<f64>; K] {
    std::array::from_fn(|k| {
        let mut total = Vec::with_capacity(c);
        for (b, acc) in blocks.iter().enumerate() {
            total.extend_from_slice(&acc[k][..COLUMNS.min(c - b * COLUMNS)]);
        }
        total
    })
}

/// An element-wise pass producing a matrix the size of `len`, over chunks of [`ROWS`] rows
/// on [`Isa::of_passes`]: in parallel, or on this thread if `here` (inside a parallel loop).
fn map_rows<T: WithDType>(len: usize, c: usize, pass: &impl RowPass<T>, here: bool) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    run_rows(&mut out.spare_capacity_mut()[..len], c, pass, here);
    // Safety: len is a multiple of c, and every block of every row was written by run_rows.
    unsafe { out.set_len(len) };
    out
}

/// Runs a [`RowPass`] over every row chunk of `dst`.
fn run_rows<T: WithDType>(
    dst: &mut [MaybeUninit<T>],
    c: usize,
    pass: &impl RowPass<T>,
    here: bool,
) {
    let isa = Isa::of_passes();
    let chunk = |i: usize, dst: &mut [MaybeUninit<T>]| {
        isa.run(Chunk {
            pass,
            first_row: i * ROWS,
            dst,
        })
    };
    if here {
        for (i, part) in dst.chunks_mut((ROWS * c).max(1)).enumerate() {
            chunk(i, part);
        }
    } else {
        for_each_chunk_mut(dst, ROWS * c, chunk);
    }
}

/// `$body` once per column block of a `$c`-wide row chunk, `$start` its first column and
/// `$w` its [`Width`].
macro_rules! for_each_block {
    ($c:expr, |$start:ident, $w:ident| $body:expr) => {{
        let mut $start = 0;
        while $start < $c {
            let len = COLUMNS.min($c - $start);
            with_width!(len, |$w| $body);
            $start += len;
        }
    }};
}

/// Σ x per column.
struct Sum<'a, T> {
    x: &'a [T],
    c: usize,
}

impl<T: WithDType> ColumnPass<1> for Sum<'_, T> {
    #[inline(always)]
    fn block(&self, start: usize, len: usize) -> [[f64; COLUMNS]; 1] {
        with_width!(len, |w| [sum_block(self.x, self.c, start, w)])
    }
}

#[inline(always)]
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

/// Σ (x − μ)² per column.
struct SquaredDeviation<'a, T> {
    x: &'a [T],
    c: usize,
    mean: &'a [f64],
}

impl<T: WithDType> ColumnPass<1> for SquaredDeviation<'_, T> {
    #[inline(always)]
    fn block(&self, start: usize, len: usize) -> [[f64; COLUMNS]; 1] {
        with_width!(len, |w| [squared_deviation_block(
            self.x, self.c, start, w, self.mean
        )])
    }
}

#[inline(always)]
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
    let [sum] = reduce(c, &Sum { x, c });
    let mean: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let [sq] = reduce(c, &SquaredDeviation { x, c, mean: &mean });
    (mean, inv_std(&sq, m))
}

fn inv_std(squared_deviations: &[f64], m: f64) -> Vec<f64> {
    squared_deviations
        .iter()
        .map(|s| 1.0 / (s / m + EPS).sqrt())
        .collect()
}

/// The column moments of some of the rows: their count, mean and Σ (x − mean)², in f64.
pub struct PartMoments {
    count: usize,
    mean: Vec<f64>,
    squared_deviations: Vec<f64>,
}

/// [`PartMoments`] of `x`, two passes on this thread: for a part computed inside a parallel
/// loop (the fused conv's image groups, each read while its gemm output is in cache).
pub fn part_moments<T: WithDType>(x: &[T], c: usize) -> PartMoments {
    let count = x.len() / c;
    let [sum] = reduce_here(c, &Sum { x, c });
    let mean: Vec<f64> = sum.iter().map(|s| s / count.max(1) as f64).collect();
    let [squared_deviations] = reduce_here(c, &SquaredDeviation { x, c, mean: &mean });
    PartMoments {
        count,
        mean,
        squared_deviations,
    }
}

/// Mean and 1/√(var + ε) of all the parts' rows (biased variance): the parts combined in
/// order with Chan, Golub and LeVeque's pairwise update (as stable as two passes over all
/// rows, without reading them again).
pub fn combine_moments(parts: &[PartMoments]) -> (Vec<f64>, Vec<f64>) {
    let c = parts.first().map_or(0, |p| p.mean.len());
    let (mut n, mut mean, mut m2) = (0.0f64, vec![0.0f64; c], vec![0.0f64; c]);
    for part in parts {
        let nb = part.count as f64;
        let total = n + nb;
        if nb == 0.0 {
            continue;
        }
        for j in 0..c {
            let delta = part.mean[j] - mean[j];
            mean[j] += delta * nb / total;
            m2[j] += part.squared_deviations[j] + delta * delta * n * nb / total;
        }
        n = total;
    }
    (mean, inv_std(&m2, n.max(1.0)))
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

/// Batch norm's output for one element, x·scale + shift in f64 rounded to T, then ReLU if
/// `RELU` (−0 stays −0, as candle's ReLU leaves it). Every pass that makes or recomputes a
/// normalised value goes through this one formula, so they agree bit for bit.
#[inline(always)]
pub(crate) fn normalised<T: WithDType, const RELU: bool>(x: T, scale: f64, shift: f64) -> T {
    let y = T::from_f64(x.to_f64() * scale + shift);
    if RELU && y < T::zero() {
        T::zero()
    } else {
        y
    }
}

/// dy where a ReLU after the affine map passed it: where the map's output, recomputed bit
/// for bit, is ≥ 0 (candle's ReLU-gradient convention); dy itself without a ReLU.
#[inline(always)]
fn gated<T: WithDType, const RELU: bool>(x: T, dy: T, scale: f64, shift: f64) -> f64 {
    if !RELU || normalised::<T, false>(x, scale, shift) >= T::zero() {
        dy.to_f64()
    } else {
        0.0
    }
}

/// The ReLU gate's coefficients: the affine map a ReLU followed, if `RELU`. Without a ReLU
/// the gate reads no coefficient, and any column-long slice will do.
#[derive(Clone, Copy)]
struct Gate<'a> {
    scale: &'a [f64],
    shift: &'a [f64],
}

impl<'a> Gate<'a> {
    fn of(relu_after: Option<&'a Affine>, column_long: &'a [f64]) -> Self {
        match relu_after {
            Some(a) => Gate {
                scale: &a.scale,
                shift: &a.shift,
            },
            None => Gate {
                scale: column_long,
                shift: column_long,
            },
        }
    }
}

/// Σ g and Σ g·(x − μ) per column.
struct GradientSums<'a, T, const RELU: bool> {
    x: &'a [T],
    dy: &'a [T],
    c: usize,
    mean: &'a [f64],
    gate: Gate<'a>,
}

impl<T: WithDType, const RELU: bool> ColumnPass<2> for GradientSums<'_, T, RELU> {
    #[inline(always)]
    fn block(&self, start: usize, len: usize) -> [[f64; COLUMNS]; 2] {
        with_width!(len, |w| gradient_sums_block::<T, _, RELU>(self, start, w))
    }
}

#[inline(always)]
fn gradient_sums_block<T: WithDType, W: Width, const RELU: bool>(
    pass: &GradientSums<'_, T, RELU>,
    start: usize,
    w: W,
) -> [[f64; COLUMNS]; 2] {
    let (c, n) = (pass.c, w.get());
    let span = start..start + n;
    let (mean, scale, shift) = (
        &pass.mean[span.clone()],
        &pass.gate.scale[span.clone()],
        &pass.gate.shift[span.clone()],
    );
    let (mut sum_g, mut sum_gx) = ([0.0f64; COLUMNS], [0.0f64; COLUMNS]);
    for (row, drow) in pass.x.chunks_exact(c).zip(pass.dy.chunks_exact(c)) {
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
    let gate = Gate::of(relu_after, mean);
    let [sum_g, sum_gx] = match relu_after {
        Some(_) => reduce(
            c,
            &GradientSums::<T, true> {
                x,
                dy,
                c,
                mean,
                gate,
            },
        ),
        None => reduce(
            c,
            &GradientSums::<T, false> {
                x,
                dy,
                c,
                mean,
                gate,
            },
        ),
    };
    (sum_g, sum_gx)
}

/// y = x·scale + shift, then ReLU if `RELU`.
struct AffineMap<'a, T, const RELU: bool> {
    x: &'a [T],
    c: usize,
    a: &'a Affine,
}

impl<T: WithDType, const RELU: bool> RowPass<T> for AffineMap<'_, T, RELU> {
    #[inline(always)]
    fn rows(&self, first_row: usize, dst: &mut [MaybeUninit<T>]) {
        let x = &self.x[first_row * self.c..first_row * self.c + dst.len()];
        for_each_block!(self.c, |start, w| affine_block::<T, _, RELU>(
            dst, x, self.c, start, w, self.a
        ));
    }
}

#[inline(always)]
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
            drow[j].write(normalised::<T, RELU>(row[j], scale[j], shift[j]));
        }
    }
}

/// y = x·scale + shift per column, then ReLU if asked.
pub fn apply_affine<T: WithDType>(x: &[T], c: usize, a: &Affine, relu: bool) -> Vec<T> {
    match relu {
        true => map_rows(x.len(), c, &AffineMap::<T, true> { x, c, a }, false),
        false => map_rows(x.len(), c, &AffineMap::<T, false> { x, c, a }, false),
    }
}

/// [`apply_affine`] over `x` itself: no second buffer, and each cache line is read and
/// written back rather than a fresh one fetched for the write. Bit for bit the same values.
pub fn apply_affine_in_place<T: WithDType>(x: &mut [T], c: usize, a: &Affine, relu: bool) {
    // Safety: MaybeUninit<T> has T's layout; every element stays initialised (each is read
    // before it is overwritten with an initialised value).
    let dst = unsafe { &mut *(x as *mut [T] as *mut [MaybeUninit<T>]) };
    match relu {
        true => run_rows(dst, c, &AffineInPlace::<true> { c, a }, false),
        false => run_rows(dst, c, &AffineInPlace::<false> { c, a }, false),
    }
}

/// [`AffineMap`] reading each element from where it writes it.
struct AffineInPlace<'a, const RELU: bool> {
    c: usize,
    a: &'a Affine,
}

impl<T: WithDType, const RELU: bool> RowPass<T> for AffineInPlace<'_, RELU> {
    #[inline(always)]
    fn rows(&self, _first_row: usize, dst: &mut [MaybeUninit<T>]) {
        for_each_block!(self.c, |start, w| affine_in_place_block::<T, _, RELU>(
            dst, self.c, start, w, self.a
        ));
    }
}

#[inline(always)]
fn affine_in_place_block<T: WithDType, W: Width, const RELU: bool>(
    dst: &mut [MaybeUninit<T>],
    c: usize,
    start: usize,
    w: W,
    a: &Affine,
) {
    let n = w.get();
    let span = start..start + n;
    let (scale, shift) = (&a.scale[span.clone()], &a.shift[span.clone()]);
    for drow in dst.chunks_exact_mut(c) {
        let drow = &mut drow[span.clone()];
        for j in 0..n {
            // Safety: apply_affine_in_place's buffer is initialised throughout.
            let x = unsafe { drow[j].assume_init() };
            drow[j].write(normalised::<T, RELU>(x, scale[j], shift[j]));
        }
    }
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

/// dx = p·g + q·x + r.
struct InputGradientMap<'a, T, const RELU: bool> {
    x: &'a [T],
    dy: &'a [T],
    c: usize,
    k: &'a InputGradient,
    gate: Gate<'a>,
}

impl<T: WithDType, const RELU: bool> RowPass<T> for InputGradientMap<'_, T, RELU> {
    #[inline(always)]
    fn rows(&self, first_row: usize, dst: &mut [MaybeUninit<T>]) {
        let span = first_row * self.c..first_row * self.c + dst.len();
        let (x, dy) = (&self.x[span.clone()], &self.dy[span]);
        for_each_block!(self.c, |start, w| input_gradient_block::<T, _, RELU>(
            dst, x, dy, self, start, w
        ));
    }
}

#[inline(always)]
fn input_gradient_block<T: WithDType, W: Width, const RELU: bool>(
    dst: &mut [MaybeUninit<T>],
    x: &[T],
    dy: &[T],
    pass: &InputGradientMap<'_, T, RELU>,
    start: usize,
    w: W,
) {
    let (c, n) = (pass.c, w.get());
    let span = start..start + n;
    let k = pass.k;
    let (p, q, r) = (&k.p[span.clone()], &k.q[span.clone()], &k.r[span.clone()]);
    let (scale, shift) = (
        &pass.gate.scale[span.clone()],
        &pass.gate.shift[span.clone()],
    );
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
    input_gradient_with(x, dy, c, (k, relu_after), false)
}

/// [`input_gradient`] on this thread: for some of the rows, inside a parallel loop.
pub fn input_gradient_here<T: WithDType>(
    x: &[T],
    dy: &[T],
    c: usize,
    k: &InputGradient,
    relu_after: Option<&Affine>,
) -> Vec<T> {
    input_gradient_with(x, dy, c, (k, relu_after), true)
}

fn input_gradient_with<T: WithDType>(
    x: &[T],
    dy: &[T],
    c: usize,
    (k, relu_after): (&InputGradient, Option<&Affine>),
    here: bool,
) -> Vec<T> {
    let gate = Gate::of(relu_after, &k.p);
    match relu_after {
        Some(_) => map_rows(
            x.len(),
            c,
            &InputGradientMap::<T, true> { x, dy, c, k, gate },
            here,
        ),
        None => map_rows(
            x.len(),
            c,
            &InputGradientMap::<T, false> { x, dy, c, k, gate },
            here,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::isa;

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

    /// On every instruction set this machine runs (baseline, AVX2, AVX-512): the plain
    /// loops are the baseline's, so each path gives the same bits.
    #[test]
    fn moments_equal_plain_two_pass_loops_bit_for_bit_on_every_path() {
        for isa in isa::available() {
            isa::with_passes_on(isa, moments_equal_plain_two_pass_loops);
        }
    }

    fn moments_equal_plain_two_pass_loops() {
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

    /// On every instruction set this machine runs (baseline, AVX2, AVX-512): the plain
    /// loops are the baseline's, so each path gives the same bits.
    #[test]
    fn passes_equal_plain_loops_bit_for_bit_on_every_path() {
        for isa in isa::available() {
            isa::with_passes_on(isa, passes_equal_plain_loops);
        }
    }

    fn passes_equal_plain_loops() {
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

    /// Parts combined give the moments of all rows: to f64 rounding against the two-pass
    /// moments (an independent computation), with uneven parts and an offset mean far from
    /// zero; and exactly the closed form for constant columns.
    #[test]
    fn combined_part_moments_equal_the_moments_of_all_rows() {
        let (rows, c) = (1000, 37);
        let x: Vec<f32> = matrix(rows, c, 8).iter().map(|v| v + 1000.0).collect();
        let (mean, inv_std) = moments(&x, c);
        let parts: Vec<PartMoments> = [0, 1, 256, 513, 1000]
            .windows(2)
            .map(|w| part_moments(&x[w[0] * c..w[1] * c], c))
            .collect();
        let (pmean, pinv) = combine_moments(&parts);
        for j in 0..c {
            assert!((pmean[j] - mean[j]).abs() <= 1e-12 * mean[j].abs(), "{j}");
            assert!((pinv[j] - inv_std[j]).abs() <= 1e-9 * inv_std[j], "{j}");
        }
        let constant = [2.5f32; 12];
        let parts = [
            part_moments(&constant[..4], 2),
            part_moments(&constant[4..], 2),
        ];
        assert_eq!(
            combine_moments(&parts),
            (vec![2.5; 2], vec![1.0 / EPS.sqrt(); 2])
        );
    }
}
