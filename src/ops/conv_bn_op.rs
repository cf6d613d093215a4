//! Convolution → batch norm (training mode) → optional ReLU as one CPU op.
//!
//! Built from separate ops, this unit is im2col, a matmul, batch norm, ReLU and their
//! backward ops: a dozen graph nodes, each allocating and sweeping the activations, and for
//! each node candle's backward pass zero-fills a gradient buffer and adds into it. Fused, the
//! forward pass is im2col + gemm per group of images, one pass for the column moments and
//! one to normalise (and clamp); the backward pass is one pass for the batch-norm sums, one
//! for the gradient of the conv output, the weight-gradient gemm, and gemm + col2im per group
//! of images for the input gradient. The conv output `z` is kept for the backward pass; the
//! im2col columns are rebuilt there rather than kept (for ResNet-18 they are ~9× the
//! activations).
//!
//! The arithmetic is the separate ops' own: the same gemm kernels and operands as candle's
//! matmul and its backward (per image group: [`for_each_image_group`]), and batch norm's f64
//! formulas ([`super::columns`]); tests compare with the separate ops and finite
//! differences.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{
    CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
};

use super::batch_norm_op::{slice, to_f64};
use super::columns::{
    apply_affine, combine_moments, gradient_sums, input_gradient, input_gradient_coefficients,
    part_moments, Affine, PartMoments, EPS,
};
use super::im2col::{col2im_add, im2col_into, Patch};
use super::parallel::{map_indices, map_items};

/// The batch statistics of the last forward pass (for the running averages), and the conv
/// output kept for the backward pass.
#[derive(Default)]
pub struct ConvBnState {
    /// Per output channel: batch mean and biased variance.
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
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
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<T>(),
            1,
            n as isize,
            false,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
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
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            add,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
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
    x: &[T],
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
            let cols = group_columns(xs, (images, h, wd, c), patch);
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

/// The rows of an im2col'd input for one group of images, on this thread (inside a
/// parallel loop): a 1×1, stride-1, unpadded conv needs none.
fn group_columns<'a, T: WithDType>(
    x: &'a [T],
    dims: (usize, usize, usize, usize),
    patch: Patch,
) -> std::borrow::Cow<'a, [T]> {
    if is_identity(patch) {
        return std::borrow::Cow::Borrowed(x);
    }
    let (n, h, w, c) = dims;
    let len = n * patch.out_size(h) * patch.out_size(w) * patch.kernel * patch.kernel * c;
    let mut cols: Vec<T> = Vec::with_capacity(len);
    im2col_into(x, dims, patch, &mut cols.spare_capacity_mut()[..len]);
    // Safety: im2col_into wrote all `len` elements.
    unsafe { cols.set_len(len) };
    std::borrow::Cow::Owned(cols)
}

/// A 1×1, stride-1, unpadded patch: im2col is the identity.
fn is_identity(patch: Patch) -> bool {
    patch.kernel == 1 && patch.stride == 1 && patch.padding == 0
}

fn dims_of(xl: &Layout, wl: &Layout, patch: Patch) -> Result<ConvDims> {
    let (n, h, w, c) = xl.shape().dims4()?;
    let (o, kh, kw, wc) = wl.shape().dims4()?;
    if kh != patch.kernel || kw != patch.kernel || wc != c {
        candle_core::bail!(
            "fused conv: weight {:?} does not fit input {:?} and kernel {}",
            wl.shape(),
            xl.shape(),
            patch.kernel
        );
    }
    Ok(ConvDims {
        input: (n, h, w, c),
        m: n * patch.out_size(h) * patch.out_size(w),
        k: kh * kw * c,
        o,
        out: (n, patch.out_size(h), patch.out_size(w), o),
    })
}

struct ConvDims {
    input: (usize, usize, usize, usize),
    /// Output positions (rows of z).
    m: usize,
    /// Receptive-field length (columns of im2col).
    k: usize,
    o: usize,
    out: (usize, usize, usize, usize),
}

/// (dx if wanted, dW (O, K), [dγ; dβ]).
type Gradients<T> = (Option<Vec<T>>, Vec<T>, Vec<T>);

impl ConvBnTrain {
    fn forward<T: WithDType>(&self, x: &[T], w: &[T], gb: &[T], d: &ConvDims) -> Result<Vec<T>> {
        let (z, parts) = conv_forward(x, w, d, self.patch);
        let (mean, inv_std) = combine_moments(&parts);
        let gb = to_f64(gb);
        let a = Affine::new(&mean, &inv_std, &gb[..d.o], &gb[d.o..]);
        let y = apply_affine(&z, d.o, &a, self.relu);
        let mut st = lock_state(&self.state)?;
        st.var = inv_std.iter().map(|s| 1.0 / (s * s) - EPS).collect();
        st.mean = mean;
        st.inv_std = inv_std;
        st.z = self.keep.then(|| T::to_cpu_storage_owned(z));
        Ok(y)
    }

    fn backward<T: WithDType>(
        &self,
        x: &[T],
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
        // dz: batch norm's input gradient.
        let k = input_gradient_coefficients(mean, inv_std, gamma, &sum_g, &sum_gz, d.m);
        let dz = input_gradient(z, dy, c, &k, relu_after);
        drop(st);
        let dwt = weight_gradient(x, &dz, d, self.patch);
        let mut dw = vec![T::zero(); d.o * d.k];
        for (kk, row) in dwt.chunks_exact(d.o).enumerate() {
            for (oo, v) in row.iter().enumerate() {
                dw[oo * d.k + kk] = *v;
            }
        }
        let dx = want_dx.then(|| input_gradient_of_conv(&dz, w, d, self.patch));
        Ok((dx, dw, dgb))
    }
}

/// dx = col2im(dz · W), a group of images at a time (as [`conv_forward`]): each group's
/// column gradient stays in cache between its gemm and the scatter-add. Groups hold whole
/// images, so they add onto disjoint parts of dx, each in the order one big col2im would.
fn input_gradient_of_conv<T: WithDType>(dz: &[T], w: &[T], d: &ConvDims, patch: Patch) -> Vec<T> {
    let (n, h, wd, c) = d.input;
    let rows_per_image = d.m / n.max(1);
    let len = n * h * wd * c;
    let mut dx: Vec<T> = Vec::with_capacity(len);
    let dst = &mut dx.spare_capacity_mut()[..len];
    for_each_image_group(dst, h * wd * c, d, |first, images, dst| {
        let dz = &dz[first * rows_per_image * d.o..(first + images) * rows_per_image * d.o];
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
                images * rows_per_image,
                d.k,
                d.o,
                (dz, d.o as isize, 1),
                (w, d.k as isize, 1),
                gemm::Parallelism::None,
            )
        };
        // Zeroed here, just before the scatter-add, rather than all of dx up front: the
        // group's part is then in cache for it.
        for v in dst.iter_mut() {
            v.write(T::zero());
        }
        // Safety: every element was written just above.
        let dst = unsafe { &mut *(dst as *mut [MaybeUninit<T>] as *mut [T]) };
        col2im_add(&dcols, (images, h, wd, c), patch, dst);
    });
    // Safety: every group's images were written above.
    unsafe { dx.set_len(len) };
    dx
}

/// Blocks of whole images over which the weight gradient's reduction runs in parallel (gemm
/// parallelises over the output, which for dW is only O × K (≤ 512 × 4 608) against
/// M = N·Ho·Wo rows to sum over: it barely used the second core).
const DW_BLOCKS: usize = 8;

/// Rows per step of a block's reduction (at least; whole images): the step's product adds
/// onto the block's K × O partial, which it reads and writes, so fewer rows made that
/// traffic dominate for large weights.
const DW_GROUP_ROWS: usize = 1024;

/// dWᵀ (K × O) = colsᵀ · dz, cols = im2col(x). The rows go in [`DW_BLOCKS`] blocks of whole
/// images, in parallel; within a block a few images at a time ([`DW_GROUP_ROWS`]):
/// their columns are built, multiplied and added onto the block's partial product. The full
/// M × K columns were never needed at once: built whole they were ~9× the input (the small
/// net's second layer: 75 MB a view), written to memory and read back. The blocks, groups
/// and the order of their sums follow from the shapes alone, so the result is the same for
/// any number of threads.
fn weight_gradient<T: WithDType>(x: &[T], dz: &[T], d: &ConvDims, patch: Patch) -> Vec<T> {
    let (n, h, wd, c) = d.input;
    let rows_per_image = (d.m / n.max(1)).max(1);
    let per_block = n.div_ceil(DW_BLOCKS).max(1);
    let per_group = DW_GROUP_ROWS.div_ceil(rows_per_image);
    let partials = map_indices(n.div_ceil(per_block), |b| {
        let (first, end) = (b * per_block, ((b + 1) * per_block).min(n));
        let mut acc = vec![T::zero(); d.k * d.o];
        let mut image = first;
        while image < end {
            let images = per_group.min(end - image);
            let xs = &x[image * h * wd * c..(image + images) * h * wd * c];
            let cols = group_columns(xs, (images, h, wd, c), patch);
            let rows = image * rows_per_image..(image + images) * rows_per_image;
            let dzs = &dz[rows.start * d.o..rows.end * d.o];
            // Safety: cols is (rows × K) and dzs (rows × O), both contiguous; acc is K × O.
            unsafe {
                matmul_add(
                    &mut acc,
                    d.o,
                    rows.len(),
                    (&cols, 1, d.k as isize),
                    (dzs, d.o as isize, 1),
                    image > first,
                )
            };
            image += images;
        }
        acc
    });
    let mut total = vec![T::zero(); d.k * d.o];
    for p in &partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += *v;
        }
    }
    total
}

macro_rules! with_cpu {
    ($t:expr, |$s:ident, $l:ident| $body:expr) => {{
        let (guard, $l) = $t.storage_and_layout();
        match &*guard {
            Storage::Cpu($s) => $body,
            _ => candle_core::bail!("fused conv + batch norm runs on the CPU only"),
        }
    }};
}

impl CustomOp3 for ConvBnTrain {
    fn name(&self) -> &'static str {
        "conv-batch-norm-train"
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
        let d = dims_of(xl, wl, self.patch)?;
        let y = match (xs, ws, bs) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) => {
                CpuStorage::F32(self.forward(
                    slice(x, xl, "input")?,
                    slice(w, wl, "weight")?,
                    slice(b, bl, "γ, β")?,
                    &d,
                )?)
            }
            (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(b)) => {
                CpuStorage::F64(self.forward(
                    slice(x, xl, "input")?,
                    slice(w, wl, "weight")?,
                    slice(b, bl, "γ, β")?,
                    &d,
                )?)
            }
            _ => candle_core::bail!("fused conv + batch norm: f32 or f64, all alike"),
        };
        Ok((y, Shape::from(d.out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let want_dx = x.track_op();
        let dev = Device::Cpu;
        with_cpu!(x, |xs, xl| with_cpu!(w, |ws, wl| with_cpu!(
            gb,
            |bs, bl| {
                with_cpu!(dy, |gs, gl| {
                    let d = dims_of(xl, wl, self.patch)?;
                    macro_rules! run {
                        ($x:expr, $w:expr, $b:expr, $g:expr) => {{
                            let (dx, dw, dgb) = self.backward(
                                slice($x, xl, "input")?,
                                slice($w, wl, "weight")?,
                                slice($b, bl, "γ, β")?,
                                slice($g, gl, "gradient")?,
                                &d,
                                want_dx,
                            )?;
                            let dx = match dx {
                                Some(v) => Some(Tensor::from_vec(v, x.shape(), &dev)?),
                                None => None,
                            };
                            (
                                dx,
                                Some(Tensor::from_vec(dw, w.shape(), &dev)?),
                                Some(Tensor::from_vec(dgb, gb.shape(), &dev)?),
                            )
                        }};
                    }
                    Ok(match (xs, ws, bs, gs) {
                        (
                            CpuStorage::F32(x),
                            CpuStorage::F32(w),
                            CpuStorage::F32(b),
                            CpuStorage::F32(g),
                        ) => run!(x, w, b, g),
                        (
                            CpuStorage::F64(x),
                            CpuStorage::F64(w),
                            CpuStorage::F64(b),
                            CpuStorage::F64(g),
                        ) => run!(x, w, b, g),
                        _ => candle_core::bail!("fused conv + batch norm: f32 or f64, all alike"),
                    })
                })
            }
        )))
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
    /// conv and the input gradient, with several groups and a short last one, few-channel
    /// (the fixed-width im2col) and many-channel inputs, and identity patches.
    #[test]
    fn image_groups_equal_one_product_bit_for_bit() {
        let patches = [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)];
        for (n, h, w, c, o) in [(47, 7, 6, 3, 20), (140, 4, 4, 5, 8), (27, 9, 9, 1, 17)] {
            for (kernel, stride, padding) in patches {
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
                same(&conv_forward(&x, &wt, &d, patch).0, &one, "z", &d, patch);
                let dz = values(d.m * o, 3);
                let dcols = unsafe {
                    matmul_with(
                        d.m,
                        d.k,
                        d.o,
                        (&dz, d.o as isize, 1),
                        (&wt, d.k as isize, 1),
                        gemm::Parallelism::None,
                    )
                };
                let one = if is_identity(patch) {
                    dcols
                } else {
                    col2im_cpu(&dcols, d.input, patch)
                };
                same(
                    &input_gradient_of_conv(&dz, &wt, &d, patch),
                    &one,
                    "dx",
                    &d,
                    patch,
                );
            }
        }
    }

    /// The weight gradient, built block by block and group by group, equals one product
    /// colsᵀ · dz over all rows (to float32 rounding: the sums are split), with several
    /// blocks, several groups in a block, a short last block, and identity patches.
    #[test]
    fn weight_gradient_by_blocks_equals_one_product() {
        for (n, h, w, c, o) in [(37, 9, 9, 3, 20), (9, 16, 16, 8, 12), (17, 5, 5, 64, 9)] {
            for (kernel, stride, padding) in [(3, 1, 1), (3, 2, 1), (1, 1, 0)] {
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
                let (x, dz) = (values(n * h * w * c, 4), values(d.m * o, 5));
                let cols = columns(&x, d.input, patch);
                let got = weight_gradient(&x, &dz, &d, patch);
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
