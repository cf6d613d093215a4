//! Convolution → batch norm (training mode) → optional ReLU as one CPU op.
//!
//! Built from separate ops, this unit is im2col, a matmul, batch norm, ReLU and their
//! backward ops: a dozen graph nodes, each allocating and sweeping the activations, and for
//! each node candle's backward pass zero-fills a gradient buffer and adds into it. Fused, the
//! forward pass is im2col, one gemm, one pass for the column moments and one to normalise
//! (and clamp); the backward pass is one pass for the batch-norm sums, one for the gradient
//! of the conv output, and two gemms (weights, input) plus col2im. The conv output `z` is
//! kept for the backward pass; the im2col columns are rebuilt there rather than kept (for
//! ResNet-18 they are ~9× the activations).
//!
//! The arithmetic is the separate ops' own: the same gemm calls (operands, strides, thread
//! count) as candle's matmul and its backward, and batch norm's f64 formulas
//! ([`super::batch_norm_op`]); tests compare with the separate ops and finite differences.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{
    CpuStorage, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, WithDType,
};
use rayon::prelude::*;

use super::batch_norm_op::{
    affine, column_sums, input_gradient_coefficients, moments, slice, to_f64, EPS,
};
use super::im2col::{col2im_cpu, im2col_cpu, Patch};
use super::parallel::for_each_chunk_mut;

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

fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// dst (m × n, row-major) = lhs · rhs, operands given by (pointer, row stride, column stride).
///
/// # Safety
/// The operands must cover the (m × k) and (k × n) elements their strides address.
unsafe fn matmul<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[T], isize, isize),
    rhs: (&[T], isize, isize),
) -> Vec<T> {
    unsafe { matmul_with(m, n, k, lhs, rhs, parallelism()) }
}

/// [`matmul`] with the given parallelism.
unsafe fn matmul_with<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    lhs: (&[T], isize, isize),
    rhs: (&[T], isize, isize),
    parallelism: gemm::Parallelism,
) -> Vec<T> {
    let mut dst: Vec<T> = Vec::with_capacity(m * n);
    // Safety: gemm writes every element of dst (read_dst = false) before it is read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
        dst.set_len(m * n);
    }
    dst
}

/// Rows of an im2col'd input: a 1×1, stride-1, unpadded conv needs none.
fn columns<'a, T: WithDType>(
    x: &'a [T],
    dims: (usize, usize, usize, usize),
    patch: Patch,
) -> std::borrow::Cow<'a, [T]> {
    if patch.kernel == 1 && patch.stride == 1 && patch.padding == 0 {
        std::borrow::Cow::Borrowed(x)
    } else {
        std::borrow::Cow::Owned(im2col_cpu(x, dims, patch))
    }
}

/// Rows per parallel chunk of the element-wise passes.
const ROWS: usize = 256;

/// Per-column y = z·scale + shift (then ReLU), in f64 as the separate batch-norm op does.
fn normalise<T: WithDType>(z: &[T], c: usize, scale: &[f64], shift: &[f64], relu: bool) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(z.len());
    let len = z.len();
    for_each_chunk_mut(&mut out.spare_capacity_mut()[..len], ROWS * c, |i, dst| {
        let src = &z[i * ROWS * c..(i * ROWS * c + dst.len())];
        for (drow, srow) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            for (((d, v), s), t) in drow.iter_mut().zip(srow).zip(scale).zip(shift) {
                let y = T::from_f64(v.to_f64() * s + t);
                d.write(if relu && y < T::zero() { T::zero() } else { y });
            }
        }
    });
    // Safety: z.len() is a multiple of c, so every element was written above.
    unsafe { out.set_len(z.len()) };
    out
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
        let cols = columns(x, d.input, self.patch);
        // z = cols · Wᵀ: rhs (K × O) addressed inside the (O, K) weight.
        let z = unsafe {
            matmul(
                d.m,
                d.o,
                d.k,
                (&cols, d.k as isize, 1),
                (w, 1, d.k as isize),
            )
        };
        drop(cols);
        let (mean, inv_std) = moments(&z, d.o);
        let gb = to_f64(gb);
        let a = affine(&mean, &inv_std, &gb[..d.o], &gb[d.o..]);
        let y = normalise(&z, d.o, &a.scale, &a.shift, self.relu);
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
        let relu = self.relu;
        let a = affine(mean, inv_std, gamma, &gb[c..]);
        // g = dy where ReLU passed, 0 elsewhere: where the forward pass's normalised value
        // (recomputed bit for bit from z) is ≥ 0, candle's ReLU gradient convention.
        let grad = |v: &T, d: &T, s: f64, t: f64| {
            if !relu || T::from_f64(v.to_f64() * s + t) >= T::zero() {
                d.to_f64()
            } else {
                0.0
            }
        };
        // Σ g and Σ g·(z − μ) per column.
        let sums = column_sums(c, 2, |cols, acc| {
            let (sg, sgz) = acc.split_at_mut(cols.len());
            let (mean, scale, shift) = (
                &mean[cols.clone()],
                &a.scale[cols.clone()],
                &a.shift[cols.clone()],
            );
            for (zrow, drow) in z.chunks_exact(c).zip(dy.chunks_exact(c)) {
                for (((sg, sgz), (v, mu)), (dv, (s, t))) in sg
                    .iter_mut()
                    .zip(sgz.iter_mut())
                    .zip(zrow[cols.clone()].iter().zip(mean))
                    .zip(drow[cols.clone()].iter().zip(scale.iter().zip(shift)))
                {
                    let g = grad(v, dv, *s, *t);
                    *sg += g;
                    *sgz += g * (v.to_f64() - mu);
                }
            }
        });
        let (sum_g, sum_gz) = sums.split_at(c);
        let mut dgb: Vec<T> = sum_gz
            .iter()
            .zip(inv_std)
            .map(|(s, i)| T::from_f64(s * i))
            .collect();
        dgb.extend(sum_g.iter().map(|s| T::from_f64(*s)));
        // dz = p·g + q·z + r per column (batch norm's input gradient).
        let [p, q, r] = input_gradient_coefficients(mean, inv_std, gamma, sum_g, sum_gz, d.m);
        let mut dz: Vec<T> = Vec::with_capacity(z.len());
        let len = z.len();
        for_each_chunk_mut(&mut dz.spare_capacity_mut()[..len], ROWS * c, |i, dst| {
            let span = i * ROWS * c..i * ROWS * c + dst.len();
            let (zs, ds) = (&z[span.clone()], &dy[span]);
            for ((drow, zrow), grow) in dst
                .chunks_exact_mut(c)
                .zip(zs.chunks_exact(c))
                .zip(ds.chunks_exact(c))
            {
                for ((out, (v, dv)), (((p, q), r), (s, t))) in drow
                    .iter_mut()
                    .zip(zrow.iter().zip(grow))
                    .zip(p.iter().zip(&q).zip(&r).zip(a.scale.iter().zip(&a.shift)))
                {
                    out.write(T::from_f64(p * grad(v, dv, *s, *t) + q * v.to_f64() + r));
                }
            }
        });
        // Safety: every element of dz was written above.
        unsafe { dz.set_len(z.len()) };
        drop(st);
        let cols = columns(x, d.input, self.patch);
        let dwt = weight_gradient(&cols, &dz, d);
        drop(cols);
        let mut dw = vec![T::zero(); d.o * d.k];
        for (kk, row) in dwt.chunks_exact(d.o).enumerate() {
            for (oo, v) in row.iter().enumerate() {
                dw[oo * d.k + kk] = *v;
            }
        }
        let dx = if want_dx {
            // dcols (M × K) = dz · W, then scatter-added back onto the image.
            let dcols =
                unsafe { matmul(d.m, d.k, d.o, (&dz, d.o as isize, 1), (w, d.k as isize, 1)) };
            let (n, h, wd, ch) = d.input;
            Some(
                if self.patch.kernel == 1 && self.patch.stride == 1 && self.patch.padding == 0 {
                    debug_assert_eq!(dcols.len(), n * h * wd * ch);
                    dcols
                } else {
                    col2im_cpu(&dcols, d.input, self.patch)
                },
            )
        } else {
            None
        };
        Ok((dx, dw, dgb))
    }
}

/// Row blocks of the weight gradient's reduction on several threads. gemm parallelises over
/// the output, which for dW is only O × K (≤ 512 × 4 608) against M = N·Ho·Wo rows to sum
/// over: it barely used the second core.
const DW_BLOCKS: usize = 8;

/// dWᵀ (K × O) = colsᵀ · dz. On one thread, one gemm — candle's matmul backward, bit for
/// bit; on several, summed over [`DW_BLOCKS`] row blocks computed in parallel (the same
/// result for any thread count above one; it differs from one thread's in the last bits).
fn weight_gradient<T: WithDType>(cols: &[T], dz: &[T], d: &ConvDims) -> Vec<T> {
    if candle_core::utils::get_num_threads() <= 1 {
        return unsafe {
            matmul(
                d.k,
                d.o,
                d.m,
                (cols, 1, d.k as isize),
                (dz, d.o as isize, 1),
            )
        };
    }
    let rows = d.m.div_ceil(DW_BLOCKS).max(1);
    let partials: Vec<Vec<T>> = (0..DW_BLOCKS)
        .into_par_iter()
        .filter_map(|b| {
            let (start, end) = (b * rows, ((b + 1) * rows).min(d.m));
            (start < end).then(|| unsafe {
                matmul_with(
                    d.k,
                    d.o,
                    end - start,
                    (&cols[start * d.k..end * d.k], 1, d.k as isize),
                    (&dz[start * d.o..end * d.o], d.o as isize, 1),
                    gemm::Parallelism::None,
                )
            })
        })
        .collect();
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
