//! im2col for channels-last (NHWC) images, so a convolution is one matrix product.
//!
//! candle's own CPU conv2d backward goes through a direct conv_transpose2d that costs ~8× the
//! forward pass. Here a convolution is `im2col(x) · Wᵀ`: the matrix product and its
//! gradients are gemm calls, and the gradient of im2col is col2im, a scatter-add. On the CPU
//! both are custom ops (one pass over memory, parallel over images); on other devices the same
//! result is built from ordinary candle ops (`im2col_reference`, also the tests' reference).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use std::mem::MaybeUninit;

use super::columns::normalised;
use super::isa::{Isa, Kernel};
use super::parallel::for_each_chunk_mut;

/// Geometry of a square-kernel convolution over an NHWC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patch {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Patch {
    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

/// (N, H, W, C) → (N·Ho·Wo, k·k·C); each row is one output position's receptive field in
/// (kh, kw, c) order, zeros where it overhangs the padded border.
pub fn im2col(x: &Tensor, patch: Patch) -> Result<Tensor> {
    let (_, h, w, _) = x.dims4()?;
    if h + 2 * patch.padding < patch.kernel || w + 2 * patch.padding < patch.kernel {
        candle_core::bail!(
            "im2col: kernel {} larger than padded input {h}×{w}",
            patch.kernel
        );
    }
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Im2Col { patch, dims: None })
    } else {
        im2col_reference(x, patch)
    }
}

/// The same as [`im2col`] from ordinary, differentiable candle ops (pad, narrow, cat).
pub fn im2col_reference(x: &Tensor, patch: Patch) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let Patch {
        kernel: k,
        stride: s,
        padding: p,
    } = patch;
    let (ho, wo) = (patch.out_size(h), patch.out_size(w));
    let padded = x.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)?;
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let mut pieces = Vec::with_capacity(k * k);
    for kh in 0..k {
        for kw in 0..k {
            // Rows kh, kh+s, …: take a window of ho·s rows (padding the end if needed) and
            // keep every s-th by reshaping.
            let pick = |t: &Tensor,
                        dim: usize,
                        start: usize,
                        count: usize,
                        full: usize|
             -> Result<Tensor> {
                let span = count * s;
                let avail = full - start;
                let t = if avail >= span {
                    t.narrow(dim, start, span)?
                } else {
                    t.narrow(dim, start, avail)?
                        .pad_with_zeros(dim, 0, span - avail)?
                };
                let mut dims = t.dims().to_vec();
                dims[dim] = count;
                dims.insert(dim + 1, s);
                t.reshape(dims.as_slice())?
                    .narrow(dim + 1, 0, 1)?
                    .squeeze(dim + 1)
            };
            let rows = pick(&padded, 1, kh, ho, hp)?;
            let cols = pick(&rows, 2, kw, wo, wp)?;
            pieces.push(cols);
        }
    }
    Tensor::cat(&pieces, 3)?.reshape((n * ho * wo, k * k * c))
}

/// im2col as a CPU custom op; `dims` is (N, H, W, C) when used as col2im's adjoint.
struct Im2Col {
    patch: Patch,
    dims: Option<(usize, usize, usize, usize)>,
}

/// col2im: the adjoint of im2col (scatter-add of patch rows back onto the image).
struct Col2Im {
    patch: Patch,
    dims: (usize, usize, usize, usize),
}

/// Copies `src` into the uninitialised `dst` of the same length.
fn put<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    assert_eq!(dst.len(), src.len());
    // Safety: equal lengths, and a fresh output buffer cannot overlap the input.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<T>(), src.len()) }
}

fn zero<T: WithDType>(dst: &mut [MaybeUninit<T>]) {
    for d in dst {
        d.write(T::zero());
    }
}

/// An input's channel count: fixed when compiling for the few-channel first layer (so a
/// pixel's copy is a couple of moves, not a `memcpy` call per 12 bytes), or known only at
/// run time.
trait Channels: Copy {
    fn get(self) -> usize;
    /// Copies one pixel's channels per tap, `src` holding the taps side by side.
    fn copy_taps<T: WithDType>(self, dst: &mut [MaybeUninit<T>], src: &[T]);
}

#[derive(Clone, Copy)]
struct Fixed<const C: usize>;

#[derive(Clone, Copy)]
struct Any(usize);

impl<const C: usize> Channels for Fixed<C> {
    #[inline(always)]
    fn get(self) -> usize {
        C
    }

    #[inline(always)]
    fn copy_taps<T: WithDType>(self, dst: &mut [MaybeUninit<T>], src: &[T]) {
        for (d, s) in dst.chunks_exact_mut(C).zip(src.chunks_exact(C)) {
            for j in 0..C {
                d[j].write(s[j]);
            }
        }
    }
}

impl Channels for Any {
    #[inline(always)]
    fn get(self) -> usize {
        self.0
    }

    #[inline(always)]
    fn copy_taps<T: WithDType>(self, dst: &mut [MaybeUninit<T>], src: &[T]) {
        put(dst, src)
    }
}

/// A per-channel map the input goes through as im2col reads it: batch norm's output
/// x·scale + shift, then ReLU if `relu` ([`normalised`]). The previous unit's normalised
/// output then never needs to exist in memory ([`super::conv_bn_chain`]).
pub struct InputMap {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
    pub relu: bool,
}

/// Channels read through an [`InputMap`] (with ReLU if `RELU`).
#[derive(Clone, Copy)]
struct Mapped<'a, const RELU: bool>(&'a InputMap);

impl<const RELU: bool> Channels for Mapped<'_, RELU> {
    #[inline(always)]
    fn get(self) -> usize {
        self.0.scale.len()
    }

    #[inline(always)]
    fn copy_taps<T: WithDType>(self, dst: &mut [MaybeUninit<T>], src: &[T]) {
        let c = self.get();
        let (scale, shift) = (&self.0.scale[..c], &self.0.shift[..c]);
        for (d, s) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
            for j in 0..c {
                d[j].write(normalised::<T, RELU>(s[j], scale[j], shift[j]));
            }
        }
    }
}

/// One group's [`im2col_into`] through an [`InputMap`], as a [`Kernel`].
struct MappedColumns<'a, 'd, T> {
    src: &'a [T],
    dims: (usize, usize, usize, usize),
    patch: Patch,
    dst: &'d mut [MaybeUninit<T>],
    map: &'a InputMap,
}

impl<T: WithDType> Kernel for MappedColumns<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (n, h, w, c) = self.dims;
        let per_image =
            self.patch.out_size(h) * self.patch.out_size(w) * self.patch.kernel.pow(2) * c;
        for (img, dst) in self.dst.chunks_exact_mut(per_image).take(n).enumerate() {
            let src = &self.src[img * h * w * c..(img + 1) * h * w * c];
            match self.map.relu {
                true => im2col_image(src, dst, (h, w), Mapped::<true>(self.map), self.patch),
                false => im2col_image(src, dst, (h, w), Mapped::<false>(self.map), self.patch),
            }
        }
    }
}

/// [`im2col_into`] of the input mapped through `map` (c = its length), on this thread, in
/// the kernels' instruction set ([`Isa::of_passes`]). Padding stays 0: it pads the map's
/// output.
pub(crate) fn im2col_mapped_into<T: WithDType>(
    src: &[T],
    dims: (usize, usize, usize, usize),
    patch: Patch,
    dst: &mut [MaybeUninit<T>],
    map: &InputMap,
) {
    Isa::of_passes().run(MappedColumns {
        src,
        dims,
        patch,
        dst,
        map,
    })
}

pub(crate) fn im2col_cpu<T: WithDType>(
    src: &[T],
    dims: (usize, usize, usize, usize),
    patch: Patch,
) -> Vec<T> {
    let (n, h, w, c) = dims;
    let per_image = patch.out_size(h) * patch.out_size(w) * patch.kernel * patch.kernel * c;
    let total = n * per_image;
    // Every element is written once below (a copy or a padding zero): no zero-fill first.
    let mut out: Vec<T> = Vec::with_capacity(total);
    for_each_chunk_mut(
        &mut out.spare_capacity_mut()[..total],
        per_image,
        |img, dst| {
            let src = &src[img * h * w * c..(img + 1) * h * w * c];
            im2col_into(src, (1, h, w, c), patch, dst);
        },
    );
    // Safety: the loop above initialised all `total` elements.
    unsafe { out.set_len(total) };
    out
}

/// [`im2col_cpu`] of the images in `src` into `dst`, on this thread.
pub(crate) fn im2col_into<T: WithDType>(
    src: &[T],
    (n, h, w, c): (usize, usize, usize, usize),
    patch: Patch,
    dst: &mut [MaybeUninit<T>],
) {
    let per_image = patch.out_size(h) * patch.out_size(w) * patch.kernel * patch.kernel * c;
    for (img, dst) in dst.chunks_exact_mut(per_image).take(n).enumerate() {
        let src = &src[img * h * w * c..(img + 1) * h * w * c];
        match c {
            1 => im2col_image(src, dst, (h, w), Fixed::<1>, patch),
            3 => im2col_image(src, dst, (h, w), Fixed::<3>, patch),
            _ => im2col_image(src, dst, (h, w), Any(c), patch),
        }
    }
}

/// One image's rows of [`im2col_cpu`].
#[inline(always)]
fn im2col_image<T: WithDType>(
    src: &[T],
    dst: &mut [MaybeUninit<T>],
    (h, w): (usize, usize),
    channels: impl Channels,
    patch: Patch,
) {
    let c = channels.get();
    let Patch {
        kernel: k,
        stride: s,
        padding: p,
    } = patch;
    let (ho, wo) = (patch.out_size(h), patch.out_size(w));
    let row_len = k * k * c;
    for oh in 0..ho {
        for ow in 0..wo {
            let row = &mut dst[(oh * wo + ow) * row_len..(oh * wo + ow + 1) * row_len];
            let iw0 = (ow * s) as isize - p as isize;
            for kh in 0..k {
                let seg = &mut row[kh * k * c..(kh + 1) * k * c];
                let ih = (oh * s + kh) as isize - p as isize;
                if ih < 0 || ih >= h as isize {
                    zero(seg);
                    continue;
                }
                let line = &src[ih as usize * w * c..(ih as usize + 1) * w * c];
                if iw0 >= 0 && iw0 as usize + k <= w {
                    // The k taps of this kernel row are adjacent in the input row.
                    channels.copy_taps(seg, &line[iw0 as usize * c..(iw0 as usize + k) * c]);
                    continue;
                }
                for kw in 0..k {
                    let iw = iw0 + kw as isize;
                    let to = &mut seg[kw * c..(kw + 1) * c];
                    if iw < 0 || iw >= w as isize {
                        zero(to);
                    } else {
                        channels.copy_taps(to, &line[iw as usize * c..(iw as usize + 1) * c]);
                    }
                }
            }
        }
    }
}

pub(crate) fn col2im_cpu<T: WithDType>(
    cols: &[T],
    dims: (usize, usize, usize, usize),
    patch: Patch,
) -> Vec<T> {
    let (n, h, w, c) = dims;
    let row_len = patch.kernel * patch.kernel * c;
    let rows = patch.out_size(h) * patch.out_size(w);
    let mut out = vec![T::zero(); n * h * w * c];
    for_each_chunk_mut(&mut out, h * w * c, |img, dst| {
        let cols = &cols[img * rows * row_len..(img + 1) * rows * row_len];
        col2im_add(cols, (1, h, w, c), patch, dst);
    });
    out
}

/// Adds [`col2im_cpu`] of `cols` (the rows of the images in `dims`) onto `dst`, on this
/// thread.
pub(crate) fn col2im_add<T: WithDType>(
    cols: &[T],
    (n, h, w, c): (usize, usize, usize, usize),
    patch: Patch,
    dst: &mut [T],
) {
    let Patch {
        kernel: k,
        stride: s,
        padding: p,
    } = patch;
    let (ho, wo) = (patch.out_size(h), patch.out_size(w));
    let row_len = k * k * c;
    for (img, dst) in dst.chunks_exact_mut(h * w * c).take(n).enumerate() {
        let cols = &cols[img * ho * wo * row_len..(img + 1) * ho * wo * row_len];
        for oh in 0..ho {
            for ow in 0..wo {
                let row = &cols[(oh * wo + ow) * row_len..(oh * wo + ow + 1) * row_len];
                for kh in 0..k {
                    let ih = (oh * s + kh) as isize - p as isize;
                    if ih < 0 || ih >= h as isize {
                        continue;
                    }
                    for kw in 0..k {
                        let iw = (ow * s + kw) as isize - p as isize;
                        if iw < 0 || iw >= w as isize {
                            continue;
                        }
                        let at = (ih as usize * w + iw as usize) * c;
                        let from = (kh * k + kw) * c;
                        for (d, v) in dst[at..at + c].iter_mut().zip(&row[from..from + c]) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    }
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("im2col/col2im need a contiguous input"),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = match self.dims {
            Some(d) => d,
            None => layout.shape().dims4()?,
        };
        let (n, h, w, c) = dims;
        let p = self.patch;
        let shape = Shape::from((n * p.out_size(h) * p.out_size(w), p.kernel * p.kernel * c));
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(im2col_cpu(contiguous(v, layout)?, dims, p)),
            CpuStorage::F64(v) => CpuStorage::F64(im2col_cpu(contiguous(v, layout)?, dims, p)),
            _ => candle_core::bail!("im2col supports f32 and f64"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = match self.dims {
            Some(d) => d,
            None => arg.dims4()?,
        };
        let g = grad_res.contiguous()?.apply_op1(Col2Im {
            patch: self.patch,
            dims,
        })?;
        Ok(Some(g.reshape(arg.shape())?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, h, w, c) = self.dims;
        let p = self.patch;
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(col2im_cpu(contiguous(v, layout)?, self.dims, p)),
            CpuStorage::F64(v) => CpuStorage::F64(col2im_cpu(contiguous(v, layout)?, self.dims, p)),
            _ => candle_core::bail!("col2im supports f32 and f64"),
        };
        Ok((out, Shape::from((n, h, w, c))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // col2im is linear and its adjoint is im2col.
        let g = grad_res.contiguous()?.apply_op1(Im2Col {
            patch: self.patch,
            dims: Some(self.dims),
        })?;
        Ok(Some(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::check_gradients;
    use candle_core::{Device, Var};

    fn input(n: usize, h: usize, w: usize, c: usize) -> Result<Tensor> {
        let v: Vec<f64> = (0..n * h * w * c)
            .map(|i| ((i * 37 % 101) as f64) / 10.0 - 5.0)
            .collect();
        Tensor::from_vec(v, (n, h, w, c), &Device::Cpu)
    }

    #[test]
    fn custom_op_equals_reference_and_gradients_match() -> Result<()> {
        for (dims, patch) in [
            (
                (2, 5, 5, 3),
                Patch {
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                },
            ),
            (
                (2, 6, 7, 2),
                Patch {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
            ),
            (
                (1, 7, 7, 2),
                Patch {
                    kernel: 7,
                    stride: 2,
                    padding: 3,
                },
            ),
            (
                (3, 4, 4, 5),
                Patch {
                    kernel: 1,
                    stride: 2,
                    padding: 0,
                },
            ),
            (
                (2, 5, 6, 1),
                Patch {
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
            ),
        ] {
            let x = Var::from_tensor(&input(dims.0, dims.1, dims.2, dims.3)?)?;
            let fast = im2col(x.as_tensor(), patch)?;
            let slow = im2col_reference(x.as_tensor(), patch)?;
            assert_eq!(fast.dims(), slow.dims());
            let diff = (&fast - &slow)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert_eq!(diff, 0.0, "{dims:?} {patch:?}");
            // Gradients of a weighted sum agree with the reference's (autograd of pad/narrow/cat).
            let r = Tensor::rand(0f64, 1.0, fast.dims(), &Device::Cpu)?;
            let gf = (&fast * &r)?.sum_all()?.backward()?;
            let gs = (&slow * &r)?.sum_all()?.backward()?;
            let (gf, gs) = (
                gf.get(x.as_tensor()).expect("grad"),
                gs.get(x.as_tensor()).expect("grad"),
            );
            let diff = (gf - gs)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(diff < 1e-12, "{dims:?} {patch:?}: {diff}");
        }
        Ok(())
    }

    #[test]
    fn finite_differences_through_col2im() -> Result<()> {
        let patch = Patch {
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        check_gradients("im2col", &[2, 5, 4, 2], &Device::Cpu, &[], |x| {
            im2col(x, patch)
        })?;
        Ok(())
    }

    /// im2col through a map = im2col of the mapped input (the batch-norm pass's formula),
    /// bit for bit, on every instruction-set path, with padding left at 0.
    #[test]
    fn mapped_columns_equal_columns_of_the_mapped_input_on_every_path() {
        for isa in crate::ops::isa::available() {
            crate::ops::isa::with_passes_on(isa, mapped_columns_equal_columns_of_the_mapped_input);
        }
    }

    fn mapped_columns_equal_columns_of_the_mapped_input() {
        let (n, h, w, c) = (2, 5, 6, 19);
        let x: Vec<f32> = (0..n * h * w * c)
            .map(|i| ((i * 37 % 101) as f32) / 20.0 - 2.5)
            .collect();
        let scale: Vec<f64> = (0..c).map(|j| 0.3 + 0.1 * j as f64).collect();
        let shift: Vec<f64> = (0..c).map(|j| 0.05 * j as f64 - 0.4).collect();
        for relu in [false, true] {
            let map = InputMap {
                scale: scale.clone(),
                shift: shift.clone(),
                relu,
            };
            let mapped: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let y = (v as f64 * scale[i % c] + shift[i % c]) as f32;
                    if relu && y < 0.0 {
                        0.0
                    } else {
                        y
                    }
                })
                .collect();
            for (kernel, stride, padding) in [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)] {
                let patch = Patch {
                    kernel,
                    stride,
                    padding,
                };
                let want = im2col_cpu(&mapped, (n, h, w, c), patch);
                let mut got: Vec<f32> = Vec::with_capacity(want.len());
                im2col_mapped_into(
                    &x,
                    (n, h, w, c),
                    patch,
                    &mut got.spare_capacity_mut()[..want.len()],
                    &map,
                );
                // Safety: im2col_mapped_into wrote every element.
                unsafe { got.set_len(want.len()) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "relu {relu} patch {patch:?}");
            }
        }
    }
}
