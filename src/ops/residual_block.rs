//! A ResNet basic block in training mode as one CPU op: relu(bn2(conv2(relu(bn1(conv1(x)))))
//! + skip), skip = bn_s(conv_s(x)) or x.
//!
//! Its units are the fused ops of [`super::conv_bn_op`], run by the same code, as in
//! [`super::conv_bn_chain`]: no unit's normalised output is written (conv2's im2col reads z1
//! through bn1 + ReLU; the block's output pass reads z2 and the shortcut's z through their
//! batch norms), and candle's backward pass zero-fills and adds into a gradient buffer only
//! for the block's input, not for the four activations inside it. Results are bit for bit
//! those of the units, [`super::residual_op`] and candle's gradient sums (a sum of two
//! gradients is the same in either order; adding one to zeros is exact).
//!
//! Inputs: x (N, H, W, C) contiguous; the weights of conv1, conv2 and the shortcut's conv
//! (if any), flattened and concatenated; their [γ; β], concatenated in the same order.

use std::mem::MaybeUninit;

use candle_core::{Result, Shape, WithDType};

use super::columns::normalised;
use super::conv_bn_chain::{ChainUnit, UnitSlices};
use super::conv_bn_op::ConvDims;
use super::fused_op::{FusedConv, Gradients, Inputs};
use super::im2col::InputMap;
use super::isa::{Isa, Kernel};
use super::parallel::for_each_chunk_mut;

/// Rows (output positions) per parallel chunk of the element-wise passes.
const ROWS: usize = 256;

/// Inputs: x, the concatenated weights, the concatenated [γ; β] (see the module's doc).
pub struct ResidualBlock {
    /// conv1 (with its ReLU), conv2 (without), and the shortcut's conv (without), if any.
    pub units: Vec<ChainUnit>,
}

/// The block's skip input, for the element-wise passes.
#[derive(Clone, Copy)]
enum Skip<'a, T> {
    /// x itself.
    Identity(&'a [T]),
    /// The shortcut's z through its batch norm.
    Mapped(&'a [T], &'a InputMap),
}

/// relu(bn2(z2) + skip) (forward), or dy where that sum is ≥ 0 (backward: candle's ReLU
/// convention), for one chunk of rows.
struct BlockPass<'a, 'd, T> {
    z2: &'a [T],
    bn2: &'a InputMap,
    skip: Skip<'a, T>,
    /// Backward: the block's output gradient.
    dy: Option<&'a [T]>,
    first: usize,
    dst: &'d mut [MaybeUninit<T>],
}

impl<T: WithDType> Kernel for BlockPass<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        match (self.skip, self.dy.is_some()) {
            (Skip::Identity(_), false) => block_rows::<T, false, false>(self),
            (Skip::Identity(_), true) => block_rows::<T, false, true>(self),
            (Skip::Mapped(..), false) => block_rows::<T, true, false>(self),
            (Skip::Mapped(..), true) => block_rows::<T, true, true>(self),
        }
    }
}

/// [`BlockPass`] with the skip's kind (`MAPPED`) and the direction (`BACKWARD`) fixed at
/// compile time, so that the loop is one straight line.
#[inline(always)]
fn block_rows<T: WithDType, const MAPPED: bool, const BACKWARD: bool>(p: BlockPass<'_, '_, T>) {
    let c = p.bn2.scale.len();
    let span = p.first..p.first + p.dst.len();
    let z2 = &p.z2[span.clone()];
    let (skip, skip_map) = match p.skip {
        Skip::Identity(x) => (&x[span.clone()], p.bn2),
        Skip::Mapped(zs, m) => (&zs[span.clone()], m),
    };
    let dy = match p.dy {
        Some(dy) => &dy[span],
        None => z2,
    };
    let (scale, shift) = (&p.bn2.scale[..c], &p.bn2.shift[..c]);
    let (skip_scale, skip_shift) = (&skip_map.scale[..c], &skip_map.shift[..c]);
    for (((out, z), s), g) in p
        .dst
        .chunks_exact_mut(c)
        .zip(z2.chunks_exact(c))
        .zip(skip.chunks_exact(c))
        .zip(dy.chunks_exact(c))
    {
        for j in 0..c {
            let h = normalised::<T, false>(z[j], scale[j], shift[j]);
            let s = match MAPPED {
                true => normalised::<T, false>(s[j], skip_scale[j], skip_shift[j]),
                false => s[j],
            };
            let v = h + s;
            // residual_op's conventions: forward keeps −0 and NaN; backward passes the
            // gradient where the sum is ≥ 0.
            out[j].write(match BACKWARD {
                true if v >= T::zero() => g[j],
                true => T::zero(),
                false if v < T::zero() => T::zero(),
                false => v,
            });
        }
    }
}

/// [`BlockPass`] over all rows, in parallel.
fn block_pass<T: WithDType>(
    z2: &[T],
    bn2: &InputMap,
    skip: Skip<'_, T>,
    dy: Option<&[T]>,
) -> Vec<T> {
    let len = z2.len();
    let c = bn2.scale.len().max(1);
    let mut out: Vec<T> = Vec::with_capacity(len);
    let isa = Isa::of_passes();
    for_each_chunk_mut(&mut out.spare_capacity_mut()[..len], ROWS * c, |i, dst| {
        isa.run(BlockPass {
            z2,
            bn2,
            skip,
            dy,
            first: i * ROWS * c,
            dst,
        })
    });
    // Safety: the chunks cover all `len` elements, each written once.
    unsafe { out.set_len(len) };
    out
}

impl ResidualBlock {
    fn dims(&self, input: (usize, usize, usize, usize)) -> Result<Vec<ConvDims>> {
        let [conv1, conv2, rest @ ..] = &self.units[..] else {
            candle_core::bail!("residual block: conv1 and conv2 expected");
        };
        let d1 = ConvDims::new(input, conv1.weight, conv1.op.patch)?;
        let d2 = ConvDims::new(d1.out, conv2.weight, conv2.op.patch)?;
        let mut dims = vec![d1, d2];
        if let Some(shortcut) = rest.first() {
            dims.push(ConvDims::new(input, shortcut.weight, shortcut.op.patch)?);
        }
        if dims.iter().any(|d| d.out != dims[1].out) || (rest.is_empty() && input != dims[1].out) {
            candle_core::bail!("residual block: the skip's shape differs from conv2's output");
        }
        Ok(dims)
    }

    fn forward<T: WithDType>(
        &self,
        x: &[T],
        w: &[T],
        gb: &[T],
        dims: &[ConvDims],
    ) -> Result<Vec<T>> {
        let parts = UnitSlices::of(&self.units, w, gb)?;
        let [u1, u2, rest @ ..] = &self.units[..] else {
            candle_core::bail!("residual block: conv1 and conv2 expected");
        };
        let keep = u1.op.keep;
        let z1 = u1
            .op
            .forward((x, None), parts.w(0), parts.gb(0), &dims[0], false)?;
        let bn1 = u1.op.output_map(parts.gb(0))?;
        let z2 = u2
            .op
            .forward((&z1, Some(&bn1)), parts.w(1), parts.gb(1), &dims[1], false)?;
        let bn2 = u2.op.output_map(parts.gb(1))?;
        let zs = match rest.first() {
            Some(us) => {
                let zs = us
                    .op
                    .forward((x, None), parts.w(2), parts.gb(2), &dims[2], false)?;
                Some((zs, us.op.output_map(parts.gb(2))?))
            }
            None => None,
        };
        let skip = match &zs {
            Some((zs, m)) => Skip::Mapped(zs, m),
            None => Skip::Identity(x),
        };
        let out = block_pass(&z2, &bn2, skip, None);
        if keep {
            u1.op.keep_z(z1)?;
            u2.op.keep_z(z2)?;
            if let (Some(us), Some((zs, _))) = (rest.first(), zs) {
                us.op.keep_z(zs)?;
            }
        }
        Ok(out)
    }

    fn backward<T: WithDType>(
        &self,
        (x, w, gb): (&[T], &[T], &[T]),
        dy: &[T],
        dims: &[ConvDims],
        want_dx: bool,
    ) -> Result<Gradients<T>> {
        let parts = UnitSlices::of(&self.units, w, gb)?;
        let [u1, u2, rest @ ..] = &self.units[..] else {
            candle_core::bail!("residual block: conv1 and conv2 expected");
        };
        let (bn1, bn2) = (
            u1.op.output_map(parts.gb(0))?,
            u2.op.output_map(parts.gb(1))?,
        );
        let (mut dw, mut dgb) = (vec![T::zero(); w.len()], vec![T::zero(); gb.len()]);
        // The gradient through the final ReLU: conv2's and the skip's output gradient.
        let g = u2.op.with_kept_z(|z2| match rest.first() {
            Some(us) => {
                let bs = us.op.output_map(parts.gb(2))?;
                us.op
                    .with_kept_z(|zs| Ok(block_pass(z2, &bn2, Skip::Mapped(zs, &bs), Some(dy))))
            }
            None => Ok(block_pass(z2, &bn2, Skip::Identity(x), Some(dy))),
        })?;
        let (dy1, dw2, dgb2) = u1.op.with_kept_z(|z1| {
            u2.op.backward(
                (z1, Some(&bn1)),
                parts.w(1),
                parts.gb(1),
                &g,
                &dims[1],
                true,
            )
        })?;
        parts.put(1, (&mut dw, &mut dgb), &dw2, &dgb2);
        let dy1 = match dy1 {
            Some(v) => v,
            None => candle_core::bail!("residual block: conv2 gave no input gradient"),
        };
        let (dx1, dw1, dgb1) =
            u1.op
                .backward((x, None), parts.w(0), parts.gb(0), &dy1, &dims[0], want_dx)?;
        parts.put(0, (&mut dw, &mut dgb), &dw1, &dgb1);
        let dx_skip = match rest.first() {
            Some(us) => {
                let (dxs, dws, dgbs) =
                    us.op
                        .backward((x, None), parts.w(2), parts.gb(2), &g, &dims[2], want_dx)?;
                parts.put(2, (&mut dw, &mut dgb), &dws, &dgbs);
                dxs
            }
            None => Some(g),
        };
        let dx = match (dx1, dx_skip) {
            (Some(mut a), Some(b)) if want_dx => {
                for (a, b) in a.iter_mut().zip(&b) {
                    *a += *b;
                }
                Some(a)
            }
            _ => None,
        };
        Ok((dx, dw, dgb))
    }
}

impl FusedConv for ResidualBlock {
    fn op_name(&self) -> &'static str {
        "residual-block"
    }

    fn cpu_forward<T: WithDType>(&self, i: Inputs<'_, T>) -> Result<(Vec<T>, Shape)> {
        let dims = self.dims(i.x_shape.dims4()?)?;
        let out = dims[1].out;
        Ok((self.forward(i.x, i.w, i.gb, &dims)?, Shape::from(out)))
    }

    fn cpu_backward<T: WithDType>(
        &self,
        i: Inputs<'_, T>,
        dy: &[T],
        want_dx: bool,
    ) -> Result<Gradients<T>> {
        let dims = self.dims(i.x_shape.dims4()?)?;
        self.backward((i.x, i.w, i.gb), dy, &dims, want_dx)
    }
}
