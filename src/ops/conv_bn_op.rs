//! Convolution → batch norm (training mode) → optional ReLU as one CPU op.
//!
//! Built from separate ops, this unit is im2col, a matmul, batch norm, ReLU and their
//! backward ops: a dozen graph nodes, each allocating and sweeping the activations, and for
//! each node candle's backward pass zero-fills a gradient buffer and adds into it. Fused, the
//! forward pass is im2col + gemm per group of images, each group's column moments taken
//! while its output is in cache, and one pass to normalise (and clamp); the backward pass is
//! one pass for the batch-norm sums, then one pass over blocks of image groups that makes
//! each group's conv-output gradient, im2col columns, weight-gradient product and input
//! gradient (gemm + col2im) while they are in cache ([`conv_gradients`]). The conv output `z`
//! is kept for the backward pass; the im2col columns are rebuilt there rather than kept (for
//! ResNet-18 they are ~9× the activations).
//!
//! The arithmetic is the separate ops' (gemm's kernels, batch norm's f64 formulas in
//! [`super::columns`]) with sums split differently: the forward product per image group is
//! bit for bit one big product's ([`for_each_image_group`]); the moments combine per-group
//! moments, the weight gradient per-block partial products, in orders fixed by the shapes.
//! Tests compare with the separate ops, independent f64 sums and finite differences.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{CpuStorage, Result, Shape, WithDType};

use super::batch_norm_op::to_f64;
use super::columns::{
    apply_affine, apply_affine_in_place, combine_moments, gradient_sums,
    input_gradient_coefficients, input_gradient_here, part_moments, Affine, InputGradient,
    PartMoments, EPS,
};
use super::fused_op::{FusedConv, Gradients, Inputs};
use super::im2col::{col2im_add, im2col_into, im2col_mapped_into, InputMap, Patch};
use super::parallel::map_items;

/// The batch statistics of the last forward pass (for the running averages), and the conv
/// output kept for the backward pass.
#[derive(Default)]
pub struct ConvBnState {
    /// Per output channel: batch mean and biased variance.
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    /// Output positions the statistics are over (N·Ho·Wo).
    pub rows: usize,
    inv_std: Vec<f64>,
    z: Option<CpuStorage>,
}

/// The shared state, locked (a poisoned lock is an error, not a panic).
pub fn lock_state(state: &Mutex<ConvBnState>) -> Result<MutexGuard<'_, ConvBnState>> {
    state
        .lock()
        .map_err(|_| candle_core::Error::Msg("fused conv state poisoned".into()))
}

/// Inputs: x (N, H, W, C) contiguous, weight (O, kh, kw, C), [γ; β] (2·O).
pub struct ConvBnTrain {
    pub patch: Patch,
    pub relu: bool,
    /// Keep `z` for a backward pass (false when no input is tracked: nothing will ask).
    pub keep: bool,
    pub state: Arc<Mutex<ConvBnState>>,
}

/// dst (m × n, row-major) = lhs · rhs, operands given by (pointer, row stride, column stride).
///
/// # Safety
/// The operands must cover the (m × k) and (k × n) elements their strides address.
unsafe fn matmul_with<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[T], isize, isize),
    rhs: (&[T], isize, isize),
    parallelism: gemm::Parallelism,
) -> Vec<T> {
    let mut dst: Vec<T> = Vec::with_capacity(m * n);
    unsafe {
        matmul_into(
            &mut dst.spare_capacity_mut()[..m * n],
            n,
            k,
            lhs,
            rhs,
            parallelism,
        );
        // Safety: matmul_into wrote every element.
        dst.set_len(m * n);
    }
    dst
}

/// dst (rows × n, row-major, every element written) = lhs · rhs, rows = dst.len() / n.
///
/// # Safety
/// The operands must cover the (rows × k) and (k × n) elements their strides address.
unsafe fn matmul_into<T: WithDType>(
    dst: &mut [MaybeUninit<T>],
    n: usize,
    k: usize,
    lhs: (&[T], isize, isize),
    rhs: (&[T], isize, isize),
    parallelism: gemm::Parallelism,
) {
    let m = dst.len() / n.max(1);
    // Safety: gemm writes every element of dst (read_dst = false) and reads none.
    unsafe {
        gemm_rows(
            dst.as_mut_ptr().cast::<T>(),
            m,
            n,
            k,
            lhs,
            rhs,
            false,
            parallelism,
        )
    }
}

/// dst (rows × n, row-major) = lhs · rhs, plus dst's own values if `add`, on this thread.
///
/// # Safety
/// The operands must cover the (rows × k) and (k × n) elements their strides address.
unsafe fn matmul_add<T: WithDType>(
    dst: &mut [T],
    n: usize,
    k: usize,
    lhs: (&[T], isize, isize),
    rhs: (&[T], isize, isize),
    add: bool,
) {
    let m = dst.len() / n.max(1);
    // Safety: dst is m × n, initialised; gemm reads it only if `add`.
    unsafe {
        gemm_rows(
            dst.as_mut_ptr(),
            m,
            n,
            k,
            lhs,
            rhs,
            add,
            gemm::Parallelism::None,
        )
    }
}

/// gemm's call for a row-major m × n dst: dst = lhs · rhs (+ dst if `add`).
///
/// # Safety
/// dst must address m × n elements (initialised if `add`), the operands the (m × k) and
/// (k × n) elements their strides address.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rows<T: WithDType>(
    dst: *mut T,
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[T], isize, isize),
    rhs: (&[T], isize, isize),
    add: bool,
    parallelism: gemm::Parallelism,
) {
    let keep = if add { T::one() } else { T::zero() };
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            add,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            keep,
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Output rows per gemm of the image-group passes ([`conv_forward`], the input gradient):
/// enough for gemm to run at full speed, few enough that a group's im2col columns stay in
/// cache (≤ 1.2 MB for the small net).
const GROUP_ROWS: usize = 256;

/// Output rows per group where the weights (K × O) are larger than [`LARGE_WEIGHTS`]: gemm
/// packs them again for every product, from memory rather than cache, and 256 rows did not
/// pay for that (ResNet-18's last stage: 113 GFLOP/s a thread at 256 rows, 144 at 1 024, on
/// a Xeon with AVX-512).
const LARGE_WEIGHT_GROUP_ROWS: usize = 1024;

/// Weights (K × O elements) beyond which groups take [`LARGE_WEIGHT_GROUP_ROWS`]: 512 KiB of
/// f32, about a core's share of L2.
const LARGE_WEIGHTS: usize = 1 << 17;

/// The least output rows of a group of `d`'s image-group passes. A function of the shapes
/// alone: never of the thread count.
fn group_rows(d: &ConvDims) -> usize {
    if d.k * d.o >= LARGE_WEIGHTS {
        LARGE_WEIGHT_GROUP_ROWS
    } else {
        GROUP_ROWS
    }
}

/// Splits `data`, `per_image` elements an image, into groups of whole images with at least
/// [`group_rows`] output rows each (the last group takes the remainder; a batch with fewer
/// rows is one group) and runs `f(first image, images, group's data)` on each, in parallel;
/// the results in group order.
///
/// No group is smaller because gemm takes other paths, with other summation orders, for
/// products of ≤ 64 or ≤ 16 × 16 outputs; above those it sums each element over K in the
/// same blocks whatever the number of rows. So each group's gemm gives bit for bit the rows
/// that one product over the whole batch would.
fn for_each_image_group<T: Send, R: Send>(
    data: &mut [T],
    per_image: usize,
    d: &ConvDims,
    f: impl Fn(usize, usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    let n = d.input.0;
    let rows_per_image = (d.m / n.max(1)).max(1);
    let group = group_rows(d).div_ceil(rows_per_image);
    let count = (n / group).max(1);
    let mut groups = Vec::with_capacity(count);
    let mut rest = data;
    for g in 0..count {
        let images = if g + 1 == count { n - g * group } else { group };
        let (head, tail) = rest.split_at_mut(images * per_image);
        groups.push((g * group, images, head));
        rest = tail;
    }
    map_items(groups, |(first, images, chunk)| f(first, images, chunk))
}

/// z (M × O) = im2col(x) · Wᵀ, a group of images at a time, each group's columns built
/// just before its gemm rather than all M × K of them first: those were ~9× the input (for
/// the small net's second layer 75 MB a view), written to memory and read back. The result
/// is bit for bit one big product's ([`for_each_image_group`]). With it, each group's column
/// moments, read while its output is in cache: batch norm's statistics then need no pass
/// over z of their own.
fn conv_forward<T: WithDType>(
    (x, map): (&[T], Option<&InputMap>),
    w: &[T],
    d: &ConvDims,
    patch: Patch,
) -> (Vec<T>, Vec<PartMoments>) {
    let (n, h, wd, c) = d.input;
    let len = d.m * d.o;
    let mut z: Vec<T> = Vec::with_capacity(len);
    let per_image = len / n.max(1);
    let parts = for_each_image_group(
        &mut z.spare_capacity_mut()[..len],
        per_image,
        d,
        |first, images, dst| {
            let xs = &x[first * h * wd * c..(first + images) * h * wd * c];
            let cols = group_columns(xs, (images, h, wd, c), patch, map);
            // Safety: cols is (rows × K) and w (O × K), both contiguous.
            unsafe {
                matmul_into(
                    dst,
                    d.o,
                    d.k,
                    (&cols, d.k as isize, 1),
                    (w, 1, d.k as isize),
                    gemm::Parallelism::None,
                )
            };
            // Safety: matmul_into wrote every element of dst.
            let written = unsafe { &*(dst as *const [MaybeUninit<T>] as *const [T]) };
            part_moments(written, d.o)
        },
    );
    // Safety: every group's rows were written above.
    unsafe { z.set_len(len) };
    (z, parts)
}

/// The rows of an im2col'd input for one group of images (through `map` if given), on this
/// thread (inside a parallel loop): a 1×1, stride-1, unpadded conv of an unmapped input
/// needs none.
fn group_columns<'a, T: WithDType>(
    x: &'a [T],
    dims: (usize, usize, usize, usize),
    patch: Patch,
    map: Option<&InputMap>,
) -> std::borrow::Cow<'a, [T]> {
    if is_identity(patch) && map.is_none() {
        return std::borrow::Cow::Borrowed(x);
    }
    let (n, h, w, c) = dims;
    let len = n * patch.out_size(h) * patch.out_size(w) * patch.kernel * patch.kernel * c;
    let mut cols: Vec<T> = Vec::with_capacity(len);
    let dst = &mut cols.spare_capacity_mut()[..len];
    match map {
        Some(map) => im2col_mapped_into(x, dims, patch, dst, map),
        None => im2col_into(x, dims, patch, dst),
    }
    // Safety: im2col_into / im2col_mapped_into wrote all `len` elements.
    unsafe { cols.set_len(len) };
    std::borrow::Cow::Owned(cols)
}

/// A 1×1, stride-1, unpadded patch: im2col is the identity.
fn is_identity(patch: Patch) -> bool {
    patch.kernel == 1 && patch.stride == 1 && patch.padding == 0
}

impl ConvDims {
    /// The conv of a (N, H, W, C) input with a (O, kh, kw, C) weight.
    pub(crate) fn new(
        input: (usize, usize, usize, usize),
        weight: (usize, usize, usize, usize),
        patch: Patch,
    ) -> Result<Self> {
        let (n, h, w, c) = input;
        let (o, kh, kw, wc) = weight;
        if kh != patch.kernel || kw != patch.kernel || wc != c {
            candle_core::bail!(
                "fused conv: weight {weight:?} does not fit input {input:?} and kernel {}",
                patch.kernel
            );
        }
        Ok(Self {
            input: (n, h, w, c),
            m: n * patch.out_size(h) * patch.out_size(w),
            k: kh * kw * c,
            o,
            out: (n, patch.out_size(h), patch.out_size(w), o),
        })
    }
}

pub(crate) struct ConvDims {
    input: (usize, usize, usize, usize),
    /// Output positions (rows of z).
    m: usize,
    /// Receptive-field length (columns of im2col).
    k: usize,
    o: usize,
    pub(crate) out: (usize, usize, usize, usize),
}

impl ConvBnTrain {
    /// y from x (the conv's input, read through `map` if given), the weight and [γ; β]; the
    /// batch statistics (and z if `keep`) go to `state`. Without `normalise` it returns z
    /// itself and keeps nothing but the statistics: the caller reads z through
    /// [`ConvBnTrain::output_map`] and hands it back with [`ConvBnTrain::keep_z`].
    pub(crate) fn forward<T: WithDType>(
        &self,
        x: (&[T], Option<&InputMap>),
        w: &[T],
        gb: &[T],
        d: &ConvDims,
        normalise: bool,
    ) -> Result<Vec<T>> {
        let (mut z, parts) = conv_forward(x, w, d, self.patch);
        let (mean, inv_std) = combine_moments(&parts);
        let gb = to_f64(gb);
        let a = Affine::new(&mean, &inv_std, &gb[..d.o], &gb[d.o..]);
        let mut st = lock_state(&self.state)?;
        st.var = inv_std.iter().map(|s| 1.0 / (s * s) - EPS).collect();
        st.mean = mean;
        st.inv_std = inv_std;
        st.rows = d.m;
        if !normalise {
            st.z = None;
            Ok(z)
        } else if self.keep {
            let y = apply_affine(&z, d.o, &a, self.relu);
            st.z = Some(T::to_cpu_storage_owned(z));
            Ok(y)
        } else {
            // No backward pass will read z (an EMA target, evaluation in training mode): y
            // takes its place.
            apply_affine_in_place(&mut z, d.o, &a, self.relu);
            st.z = None;
            Ok(z)
        }
    }

    /// This unit's output as a map of z (batch norm with the last forward pass's statistics,
    /// then its ReLU), for the next unit to read z through.
    pub(crate) fn output_map<T: WithDType>(&self, gb: &[T]) -> Result<InputMap> {
        let st = lock_state(&self.state)?;
        let c = st.mean.len();
        if gb.len() != 2 * c {
            candle_core::bail!("fused conv: {} γ/β for {c} channels", gb.len());
        }
        let gb = to_f64(gb);
        let a = Affine::new(&st.mean, &st.inv_std, &gb[..c], &gb[c..]);
        Ok(InputMap {
            scale: a.scale,
            shift: a.shift,
            relu: self.relu,
        })
    }

    /// Keeps z (returned by a `forward` without `normalise`) for the backward pass.
    pub(crate) fn keep_z<T: WithDType>(&self, z: Vec<T>) -> Result<()> {
        lock_state(&self.state)?.z = Some(T::to_cpu_storage_owned(z));
        Ok(())
    }

    /// `f` of the kept z.
    pub(crate) fn with_kept_z<T: WithDType, R>(
        &self,
        f: impl FnOnce(&[T]) -> Result<R>,
    ) -> Result<R> {
        let st = lock_state(&self.state)?;
        match &st.z {
            Some(z) => f(T::cpu_storage_as_slice(z)?),
            None => candle_core::bail!("fused conv: no kept forward pass"),
        }
    }

    /// The gradients of x (if `want_dx`), the weight and [γ; β] from dy; `forward` kept z. x
    /// is the conv's input as in `forward` (read through its map if given).
    pub(crate) fn backward<T: WithDType>(
        &self,
        x: (&[T], Option<&InputMap>),
        w: &[T],
        gb: &[T],
        dy: &[T],
        d: &ConvDims,
        want_dx: bool,
    ) -> Result<Gradients<T>> {
        let st = lock_state(&self.state)?;
        let z: &[T] = match &st.z {
            Some(z) => T::cpu_storage_as_slice(z)?,
            None => candle_core::bail!("fused conv: backward pass without a kept forward"),
        };
        let c = d.o;
        let gb = to_f64(gb);
        let gamma = &gb[..c];
        let (mean, inv_std) = (&st.mean, &st.inv_std);
        // The ReLU passed dy where the forward pass's normalised value (recomputed bit for
        // bit from z) is ≥ 0.
        let a = Affine::new(mean, inv_std, gamma, &gb[c..]);
        let relu_after = self.relu.then_some(&a);
        let (sum_g, sum_gz) = gradient_sums(z, dy, c, mean, relu_after);
        let mut dgb: Vec<T> = sum_gz
            .iter()
            .zip(inv_std)
            .map(|(s, i)| T::from_f64(s * i))
            .collect();
        dgb.extend(sum_g.iter().map(|s| T::from_f64(*s)));
        // dz, batch norm's input gradient, is made group by group inside the conv's backward.
        let k = input_gradient_coefficients(mean, inv_std, gamma, &sum_g, &sum_gz, d.m);
        let (dwt, dx) = conv_gradients((x, w), (z, dy, &k, relu_after), d, self.patch, want_dx);
        drop(st);
        let mut dw = vec![T::zero(); d.o * d.k];
        for (kk, row) in dwt.chunks_exact(d.o).enumerate() {
            for (oo, v) in row.iter().enumerate() {
                dw[oo * d.k + kk] = *v;
            }
        }
        Ok((dx, dw, dgb))
    }
}

/// Blocks of whole images over which the weight gradient's reduction runs in parallel (gemm
/// parallelises over the output, which for dW is only O × K (≤ 512 × 4 608) against
/// M = N·Ho·Wo rows to sum over: it barely used the second core).
const DW_BLOCKS: usize = 8;

/// Rows per step of a block's reduction (at least; whole images): the step's product adds
/// onto the block's K × O partial, which it reads and writes, so fewer rows made that
/// traffic dominate for large weights.
const DW_GROUP_ROWS: usize = 1024;

/// Batch norm's side of the backward pass: dz = p·g + q·z + r from z and dy
/// ([`input_gradient_here`]).
type BnBackward<'a, T> = (&'a [T], &'a [T], &'a InputGradient, Option<&'a Affine>);

/// The conv's gradients from batch norm's: dWᵀ (K × O) = colsᵀ · dz (cols = im2col(x)) and,
/// if wanted, dx = col2im(dz · W). One pass over the images in [`DW_BLOCKS`] blocks of whole
/// images, in parallel, each block a group of images at a time ([`DW_GROUP_ROWS`] rows or
/// more): the group's dz, its im2col columns, their product added onto the block's partial
/// dWᵀ, then its dx. Neither dz nor the columns exist whole: dz went through memory three
/// times (written, read for dW, read for dx), the columns are ~9× the input (the small net's
/// second layer: 75 MB a view). Blocks, groups and the order of the sums follow from the
/// shapes alone, so the result does not depend on the thread count.
fn conv_gradients<T: WithDType>(
    ((x, map), w): ((&[T], Option<&InputMap>), &[T]),
    (z, dy, k, relu_after): BnBackward<'_, T>,
    d: &ConvDims,
    patch: Patch,
    want_dx: bool,
) -> (Vec<T>, Option<Vec<T>>) {
    let (n, h, wd, c) = d.input;
    let rows_per_image = (d.m / n.max(1)).max(1);
    let (per_input, per_output) = (h * wd * c, rows_per_image * d.o);
    let per_block = n.div_ceil(DW_BLOCKS).max(1);
    let per_group = DW_GROUP_ROWS.max(group_rows(d)).div_ceil(rows_per_image);
    let len = if want_dx { n * per_input } else { 0 };
    let mut dx: Vec<T> = Vec::with_capacity(len);
    let mut rest = &mut dx.spare_capacity_mut()[..len];
    let mut blocks = Vec::new();
    for first in (0..n).step_by(per_block) {
        let images = per_block.min(n - first);
        let (head, tail) =
            std::mem::take(&mut rest).split_at_mut(if want_dx { images * per_input } else { 0 });
        rest = tail;
        blocks.push((first, images, head));
    }
    let partials = map_items(blocks, |(first, images, dx_block)| {
        let mut acc = vec![T::zero(); d.k * d.o];
        for done in (0..images).step_by(per_group) {
            let (image, count) = (first + done, per_group.min(images - done));
            let out = image * per_output..(image + count) * per_output;
            let dz = input_gradient_here(&z[out.clone()], &dy[out], d.o, k, relu_after);
            let xs = &x[image * per_input..(image + count) * per_input];
            let cols = group_columns(xs, (count, h, wd, c), patch, map);
            // Safety: cols is (rows × K) and dz (rows × O), both contiguous; acc is K × O.
            unsafe {
                matmul_add(
                    &mut acc,
                    d.o,
                    count * rows_per_image,
                    (&cols, 1, d.k as isize),
                    (&dz, d.o as isize, 1),
                    done > 0,
                )
            };
            drop(cols);
            if want_dx {
                let dst = &mut dx_block[done * per_input..(done + count) * per_input];
                group_input_gradient(&dz, w, d, patch, count, dst);
            }
        }
        acc
    });
    let mut total = vec![T::zero(); d.k * d.o];
    for p in &partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += *v;
        }
    }
    // Safety: with want_dx, every block's images were written above (else len is 0).
    unsafe { dx.set_len(len) };
    (total, want_dx.then_some(dx))
}

/// dx of `images` images = col2im(dz · W), dz their rows (rows × O), on this thread.
fn group_input_gradient<T: WithDType>(
    dz: &[T],
    w: &[T],
    d: &ConvDims,
    patch: Patch,
    images: usize,
    dst: &mut [MaybeUninit<T>],
) {
    let (_, h, wd, c) = d.input;
    if is_identity(patch) {
        // Safety: dz is (rows × O) and w (O × K), both contiguous; dst is rows × K.
        unsafe {
            matmul_into(
                dst,
                d.k,
                d.o,
                (dz, d.o as isize, 1),
                (w, d.k as isize, 1),
                gemm::Parallelism::None,
            )
        };
        return;
    }
    // Safety: as above.
    let dcols = unsafe {
        matmul_with(
            dz.len() / d.o.max(1),
            d.k,
            d.o,
            (dz, d.o as isize, 1),
            (w, d.k as isize, 1),
            gemm::Parallelism::None,
        )
    };
    // Zeroed here, just before the scatter-add, rather than all of dx up front: the group's
    // part is then in cache for it.
    for v in dst.iter_mut() {
        v.write(T::zero());
    }
    // Safety: every element was written just above.
    let dst = unsafe { &mut *(dst as *mut [MaybeUninit<T>] as *mut [T]) };
    col2im_add(&dcols, (images, h, wd, c), patch, dst);
}

impl FusedConv for ConvBnTrain {
    fn op_name(&self) -> &'static str {
        "conv-batch-norm-train"
    }

    fn cpu_forward<T: WithDType>(&self, i: Inputs<'_, T>) -> Result<(Vec<T>, Shape)> {
        let d = ConvDims::new(i.x_shape.dims4()?, i.w_shape.dims4()?, self.patch)?;
        let y = self.forward((i.x, None), i.w, i.gb, &d, true)?;
        Ok((y, Shape::from(d.out)))
    }

    fn cpu_backward<T: WithDType>(
        &self,
        i: Inputs<'_, T>,
        dy: &[T],
        want_dx: bool,
    ) -> Result<Gradients<T>> {
        let d = ConvDims::new(i.x_shape.dims4()?, i.w_shape.dims4()?, self.patch)?;
        self.backward((i.x, None), i.w, i.gb, dy, &d, want_dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::im2col::col2im_cpu;

    /// Rows of an im2col'd input: a 1×1, stride-1, unpadded conv needs none.
    fn columns<'a, T: WithDType>(
        x: &'a [T],
        dims: (usize, usize, usize, usize),
        patch: Patch,
    ) -> std::borrow::Cow<'a, [T]> {
        if is_identity(patch) {
            std::borrow::Cow::Borrowed(x)
        } else {
            std::borrow::Cow::Owned(crate::ops::im2col::im2col_cpu(x, dims, patch))
        }
    }

    /// dWᵀ and dx of the conv for a given dz: batch norm's side set to pass it through
    /// (p = 1, q = r = 0, no ReLU: p·g + q·z + r is g exactly).
    fn gradients_for(
        x: &[f32],
        w: &[f32],
        dz: &[f32],
        d: &ConvDims,
        patch: Patch,
    ) -> (Vec<f32>, Vec<f32>) {
        let through = InputGradient {
            p: vec![1.0; d.o],
            q: vec![0.0; d.o],
            r: vec![0.0; d.o],
        };
        let (dwt, dx) = conv_gradients(((x, None), w), (dz, dz, &through, None), d, patch, true);
        (dwt, dx.unwrap_or_default())
    }

    /// The patch and dimensions of a conv of `o` channels over (n, h, w, c) inputs.
    fn conv_dims(
        (n, h, w, c, o): (usize, usize, usize, usize, usize),
        (kernel, stride, padding): (usize, usize, usize),
    ) -> (Patch, ConvDims) {
        let patch = Patch {
            kernel,
            stride,
            padding,
        };
        let (ho, wo) = (patch.out_size(h), patch.out_size(w));
        let d = ConvDims {
            input: (n, h, w, c),
            m: n * ho * wo,
            k: kernel * kernel * c,
            o,
            out: (n, ho, wo, o),
        };
        (patch, d)
    }

    fn values(len: usize, salt: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 29 + salt * 7) % 97) as f32 / 48.0 - 1.0)
            .collect()
    }

    fn same(got: &[f32], want: &[f32], what: &str, d: &ConvDims, patch: Patch) {
        assert_eq!(got.len(), want.len());
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!(
                "{what} of {:?} {patch:?}: element {i} is {} by groups, {} in one product",
                d.input, got[i], want[i]
            );
        }
    }

    /// Image groups give bit for bit what one product over all rows gives: the forward
    /// conv, with several groups and a short last one, few-channel (the fixed-width im2col)
    /// and many-channel inputs, and identity patches.
    #[test]
    fn forward_image_groups_equal_one_product_bit_for_bit() {
        let patches = [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)];
        for (n, h, w, c, o) in [(47, 7, 6, 3, 20), (140, 4, 4, 5, 8), (27, 9, 9, 1, 17)] {
            for (kernel, stride, padding) in patches {
                let (patch, d) = conv_dims((n, h, w, c, o), (kernel, stride, padding));
                let (ho, wo) = (d.out.1, d.out.2);
                let group = group_rows(&d).div_ceil(ho * wo);
                assert!(
                    n / group >= 2 && n % group > 0,
                    "several groups, a longer last one"
                );
                let (x, wt) = (values(n * h * w * c, 1), values(o * d.k, 2));
                let cols = columns(&x, d.input, patch);
                let one = unsafe {
                    matmul_with(
                        d.m,
                        d.o,
                        d.k,
                        (&cols, d.k as isize, 1),
                        (&wt, 1, d.k as isize),
                        gemm::Parallelism::None,
                    )
                };
                same(
                    &conv_forward((&x, None), &wt, &d, patch).0,
                    &one,
                    "z",
                    &d,
                    patch,
                );
            }
        }
    }

    /// The conv's gradients, built block by block and group by group, equal independent
    /// f64 sums over all rows (to float32 rounding): dW = colsᵀ · dz and dx = col2im(dz · W),
    /// with several blocks, several groups in a block, a short last block, and identity
    /// patches.
    #[test]
    fn gradients_by_blocks_equal_sums_over_all_rows() {
        // The last: 256 rows an image, 10-image blocks of 4-image groups (4, 4, 2).
        let shapes = [(37, 9, 9, 3, 20), (17, 5, 5, 64, 9), (80, 16, 16, 2, 4)];
        for (n, h, w, c, o) in shapes {
            for (kernel, stride, padding) in [(3, 1, 1), (3, 2, 1), (1, 1, 0)] {
                let (patch, d) = conv_dims((n, h, w, c, o), (kernel, stride, padding));
                let (x, dz) = (values(n * h * w * c, 4), values(d.m * o, 5));
                let cols = columns(&x, d.input, patch);
                let wt = values(o * d.k, 6);
                let (got, dx) = gradients_for(&x, &wt, &dz, &d, patch);
                let dcols: Vec<f64> = (0..d.m * d.k)
                    .map(|i| {
                        let (r, kk) = (i / d.k, i % d.k);
                        (0..o)
                            .map(|oo| dz[r * o + oo] as f64 * wt[oo * d.k + kk] as f64)
                            .sum()
                    })
                    .collect();
                let want_dx = if is_identity(patch) {
                    dcols
                } else {
                    col2im_cpu(&dcols, d.input, patch)
                };
                for (i, (a, b)) in dx.iter().zip(&want_dx).enumerate() {
                    assert!(
                        (*a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{:?} {patch:?} dx[{i}]: {a} vs {b}",
                        d.input
                    );
                }
                for kk in 0..d.k {
                    for oo in 0..o {
                        let want: f64 = (0..d.m)
                            .map(|r| cols[r * d.k + kk] as f64 * dz[r * o + oo] as f64)
                            .sum();
                        let scale: f64 = (0..d.m)
                            .map(|r| (cols[r * d.k + kk] as f64 * dz[r * o + oo] as f64).abs())
                            .sum();
                        let err = (got[kk * o + oo] as f64 - want).abs();
                        assert!(
                            err <= 1e-5 * scale.max(1e-3),
                            "{:?} {patch:?} dW[{kk}, {oo}]: {} vs {want}",
                            d.input,
                            got[kk * o + oo]
                        );
                    }
                }
            }
        }
    }
}
