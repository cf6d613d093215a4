//! A stack of conv → batch norm (training mode) → ReLU units as one CPU op: the small
//! encoder's body.
//!
//! Each unit is the fused op of [`super::conv_bn_op`], run by the same code; what the chain
//! removes is the graph between them. For every op input candle's backward pass zero-fills a
//! gradient buffer and adds the op's input gradient into it (`GradStore::or_insert`, then
//! `add`): a write, two reads and another write of every activation the encoder passes on
//! (`perf`: ~6 % of the small net's BYOL step in memset and the add). Inside the chain each
//! unit's input gradient is the next one's output gradient directly. And a unit's normalised
//! output is never written: the next unit's im2col reads its z through the batch norm and
//! ReLU ([`InputMap`]), forward and backward, so one z per unit serves both units (a write
//! and a read of every activation less; `perf`'s batch-norm passes were ~20 % of the step).
//! Results are bit for bit those of the units run one by one (adding a gradient to zeros is
//! exact; the map is the normalising pass's own formula).
//!
//! Inputs: x (N, H, W, C) contiguous; every unit's weight (O, kh, kw, C), flattened and
//! concatenated in order; every unit's [γ; β], concatenated in order.

use candle_core::{Result, Shape, WithDType};

use std::ops::Range;

use super::conv_bn_op::{ConvBnTrain, ConvDims};
use super::fused_op::{FusedConv, Gradients, Inputs};
use super::im2col::InputMap;

/// One unit of a [`ConvBnChain`].
pub struct ChainUnit {
    pub op: ConvBnTrain,
    /// (O, kh, kw, C) of its weight.
    pub weight: (usize, usize, usize, usize),
}

impl ChainUnit {
    fn weight_len(&self) -> usize {
        let (o, kh, kw, c) = self.weight;
        o * kh * kw * c
    }
}

/// Each unit's part of the concatenated weights and [γ; β] of an op over several units.
pub(crate) struct UnitSlices<'a, T> {
    w: &'a [T],
    gb: &'a [T],
    parts: Vec<(Range<usize>, Range<usize>)>,
}

impl<'a, T: Copy> UnitSlices<'a, T> {
    /// The parts of `w` and `gb`, which must hold exactly what the units take.
    pub(crate) fn of(units: &[ChainUnit], w: &'a [T], gb: &'a [T]) -> Result<Self> {
        let (mut at_w, mut at_gb) = (0, 0);
        let parts = units
            .iter()
            .map(|u| {
                let (lw, lgb) = (u.weight_len(), 2 * u.weight.0);
                let part = (at_w..at_w + lw, at_gb..at_gb + lgb);
                (at_w, at_gb) = (at_w + lw, at_gb + lgb);
                part
            })
            .collect();
        if (at_w, at_gb) != (w.len(), gb.len()) {
            candle_core::bail!(
                "{} weights and {} γ/β for units that take {at_w} and {at_gb}",
                w.len(),
                gb.len()
            );
        }
        Ok(Self { w, gb, parts })
    }

    /// Unit i's weight.
    pub(crate) fn w(&self, i: usize) -> &'a [T] {
        &self.w[self.parts[i].0.clone()]
    }

    /// Unit i's [γ; β].
    pub(crate) fn gb(&self, i: usize) -> &'a [T] {
        &self.gb[self.parts[i].1.clone()]
    }

    /// Writes unit i's gradients into its parts of the concatenated gradients.
    pub(crate) fn put(
        &self,
        i: usize,
        (dw, dgb): (&mut [T], &mut [T]),
        unit_dw: &[T],
        unit_dgb: &[T],
    ) {
        dw[self.parts[i].0.clone()].copy_from_slice(unit_dw);
        dgb[self.parts[i].1.clone()].copy_from_slice(unit_dgb);
    }
}

/// Inputs: x, the concatenated weights, the concatenated [γ; β] (see the module's doc).
pub struct ConvBnChain {
    pub units: Vec<ChainUnit>,
}

impl ConvBnChain {
    pub fn new(units: Vec<ChainUnit>) -> Self {
        Self { units }
    }

    /// Every unit's dims, from the input's shape on.
    fn dims(&self, input: (usize, usize, usize, usize)) -> Result<Vec<ConvDims>> {
        let mut shape = input;
        self.units
            .iter()
            .map(|u| {
                let d = ConvDims::new(shape, u.weight, u.op.patch)?;
                shape = d.out;
                Ok(d)
            })
            .collect()
    }

    /// Each unit's output but the last stays z: the next unit reads it through the unit's
    /// batch norm and ReLU as its im2col gathers it ([`ConvBnTrain::output_map`]), and the
    /// same z serves the unit's own backward pass. The last unit normalises.
    fn forward<T: WithDType>(
        &self,
        x: &[T],
        w: &[T],
        gb: &[T],
        dims: &[ConvDims],
    ) -> Result<Vec<T>> {
        let parts = UnitSlices::of(&self.units, w, gb)?;
        let last = self.units.len().saturating_sub(1);
        // The previous unit's z and the map to read it through.
        let mut previous: Option<(Vec<T>, InputMap)> = None;
        for (i, unit) in self.units.iter().enumerate() {
            let input = match &previous {
                Some((z, map)) => (&z[..], Some(map)),
                None => (x, None),
            };
            let out = unit
                .op
                .forward(input, parts.w(i), parts.gb(i), &dims[i], i == last)?;
            if let Some((z, _)) = previous.take() {
                if unit.op.keep {
                    self.units[i - 1].op.keep_z(z)?;
                }
            }
            if i == last {
                return Ok(out);
            }
            previous = Some((out, unit.op.output_map(parts.gb(i))?));
        }
        candle_core::bail!("conv-bn chain without units")
    }

    fn backward<T: WithDType>(
        &self,
        (x, w, gb): (&[T], &[T], &[T]),
        dy: &[T],
        dims: &[ConvDims],
        want_dx: bool,
    ) -> Result<Gradients<T>> {
        let parts = UnitSlices::of(&self.units, w, gb)?;
        let (mut dw, mut dgb) = (vec![T::zero(); w.len()], vec![T::zero(); gb.len()]);
        let mut dy_here: Option<Vec<T>> = None;
        for (i, unit) in self.units.iter().enumerate().rev() {
            let g = dy_here.as_deref().unwrap_or(dy);
            let step = |input: (&[T], Option<&InputMap>)| {
                let (w, gb) = (parts.w(i), parts.gb(i));
                unit.op
                    .backward(input, w, gb, g, &dims[i], i > 0 || want_dx)
            };
            let (dx, unit_dw, unit_dgb) = match i {
                0 => step((x, None))?,
                _ => {
                    let before = &self.units[i - 1].op;
                    let map = before.output_map(parts.gb(i - 1))?;
                    before.with_kept_z(|z| step((z, Some(&map))))?
                }
            };
            parts.put(i, (&mut dw, &mut dgb), &unit_dw, &unit_dgb);
            dy_here = dx;
        }
        Ok((dy_here, dw, dgb))
    }
}

impl FusedConv for ConvBnChain {
    fn op_name(&self) -> &'static str {
        "conv-batch-norm-chain"
    }

    fn cpu_forward<T: WithDType>(&self, i: Inputs<'_, T>) -> Result<(Vec<T>, Shape)> {
        let dims = self.dims(i.x_shape.dims4()?)?;
        let out = dims
            .last()
            .map(|d| d.out)
            .ok_or_else(|| candle_core::Error::Msg("conv-bn chain without units".into()))?;
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
