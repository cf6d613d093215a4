//! ResNet-18 (He et al. 2016), the study's encoder, with a choice of normalization.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::conv_norm::fused_units;
use super::conv_norm::ConvNorm;
use super::layers::ConvSpec;
use super::norm::NormKind;
use super::params::ParamStore;
use super::pool::{global_average_pool, max_pool_3x3_s2, to_channels_last};
use crate::config::ResnetStem;
use crate::ops::residual_block::ResidualBlock;
use crate::ops::residual_op::residual_relu;

#[derive(Debug, Clone)]
struct BasicBlock {
    unit1: ConvNorm,
    unit2: ConvNorm,
    shortcut: Option<ConvNorm>,
}

struct Ctx {
    norm: NormKind,
    standardize: bool,
}

impl Ctx {
    /// A conv and its norm layer, drawn in that order.
    #[allow(clippy::too_many_arguments)]
    fn unit(
        &self,
        store: &mut ParamStore,
        conv: &str,
        norm: &str,
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<ConvNorm> {
        ConvNorm::new(
            store,
            conv,
            ConvSpec {
                input,
                output,
                kernel,
                stride,
                padding: kernel / 2,
                bias: self.norm == NormKind::None,
                standardize: self.standardize,
            },
            (norm, self.norm),
        )
    }
}

impl BasicBlock {
    fn new(
        store: &mut ParamStore,
        name: &str,
        ctx: &Ctx,
        input: usize,
        output: usize,
        stride: usize,
    ) -> Result<Self> {
        let shortcut = if stride != 1 || input != output {
            Some(ctx.unit(
                store,
                &format!("{name}.shortcut.conv"),
                &format!("{name}.shortcut.norm"),
                input,
                output,
                1,
                stride,
            )?)
        } else {
            None
        };
        Ok(Self {
            unit1: ctx.unit(
                store,
                &format!("{name}.conv1"),
                &format!("{name}.norm1"),
                input,
                output,
                3,
                stride,
            )?,
            unit2: ctx.unit(
                store,
                &format!("{name}.conv2"),
                &format!("{name}.norm2"),
                output,
                output,
                3,
                1,
            )?,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self.forward_fused(x, train)? {
            Some(y) => Ok(y),
            None => self.forward_units(x, train),
        }
    }

    /// The block as one op ([`ResidualBlock`]) where every unit would run the fused conv +
    /// batch norm op; `None` otherwise.
    fn forward_fused(&self, x: &Tensor, train: bool) -> Result<Option<Tensor>> {
        let units: Vec<(&ConvNorm, bool)> = [(&self.unit1, true), (&self.unit2, false)]
            .into_iter()
            .chain(self.shortcut.iter().map(|s| (s, false)))
            .collect();
        fused_units(x, &units, train, |units| ResidualBlock { units })
    }

    /// The units one op at a time (the fused block's reference).
    fn forward_units(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.unit1.forward_t(x, train, true)?;
        let h = self.unit2.forward_t(&h, train, false)?;
        let skip = match &self.shortcut {
            Some(unit) => unit.forward_t(x, train, false)?,
            None => x.clone(),
        };
        residual_relu(&h, &skip)
    }
}

#[derive(Debug, Clone)]
pub struct ResNet18 {
    stem: ConvNorm,
    stem_kind: ResnetStem,
    blocks: Vec<BasicBlock>,
    out_dim: usize,
}

impl ResNet18 {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        in_channels: usize,
        width: usize,
        stem_kind: ResnetStem,
        norm: NormKind,
        standardize: bool,
    ) -> Result<Self> {
        let ctx = Ctx { norm, standardize };
        let (kernel, stride) = match stem_kind {
            ResnetStem::Imagenet => (7, 2),
            ResnetStem::Cifar => (3, 1),
        };
        let stem = ctx.unit(
            store,
            &format!("{name}.stem.conv"),
            &format!("{name}.stem.norm"),
            in_channels,
            width,
            kernel,
            stride,
        )?;
        let mut blocks = Vec::new();
        let mut channels = width;
        for stage in 0..4 {
            let out = width << stage;
            for b in 0..2 {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(
                    store,
                    &format!("{name}.layer{}.{b}", stage + 1),
                    &ctx,
                    channels,
                    out,
                    stride,
                )?);
                channels = out;
            }
        }
        Ok(Self {
            stem,
            stem_kind,
            blocks,
            out_dim: channels,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Multiply-adds per example of a size × size input: (all convolutions, the stem's).
    pub fn macs(&self, size: usize) -> (u64, u64) {
        let (stem, mut h, mut w) = self.stem.conv.macs(size, size);
        if self.stem_kind == ResnetStem::Imagenet {
            // 3×3 / 2 max pool, padding 1.
            (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        }
        let mut total = stem;
        for block in &self.blocks {
            let (m1, ho, wo) = block.unit1.conv.macs(h, w);
            let (m2, _, _) = block.unit2.conv.macs(ho, wo);
            let skip = block.shortcut.as_ref().map_or(0, |s| s.conv.macs(h, w).0);
            total += m1 + m2 + skip;
            (h, w) = (ho, wo);
        }
        (total, stem)
    }
}

impl ModuleT for ResNet18 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = to_channels_last(x)?;
        let mut h = self.stem.forward_t(&x, train, true)?;
        if self.stem_kind == ResnetStem::Imagenet {
            h = max_pool_3x3_s2(&h)?;
        }
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        global_average_pool(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::assert_same_step;
    use candle_core::{DType, Device, Var};

    fn block(
        dtype: DType,
        input: usize,
        output: usize,
        stride: usize,
    ) -> Result<(ParamStore, BasicBlock)> {
        let mut store = ParamStore::with_dtype(&Device::Cpu, 9, dtype);
        let ctx = Ctx {
            norm: NormKind::Batch,
            standardize: false,
        };
        let block = BasicBlock::new(&mut store, "b", &ctx, input, output, stride)?;
        // γ, β away from 1, 0: the ReLUs clip, and their gradients take part.
        for (i, p) in store.params().iter().enumerate() {
            if p.name.contains("norm") {
                let n = p.var.elem_count();
                let v: Vec<f64> = (0..n)
                    .map(|k| 0.5 + 0.2 * ((k + i) % 4) as f64 - 0.2)
                    .collect();
                p.var
                    .set(&Tensor::from_vec(v, n, &Device::Cpu)?.to_dtype(dtype)?)?;
            }
        }
        Ok((store, block))
    }

    /// The block as one op against its units, the residual op and candle's gradient sums:
    /// the same code on the same numbers, so everything is equal, not close — with and
    /// without a shortcut conv, the input tracked or not.
    #[test]
    fn the_fused_block_equals_its_units() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for (input, output, stride) in [(4, 4, 1), (4, 6, 2), (3, 5, 1)] {
                for track_input in [true, false] {
                    let label =
                        format!("{dtype:?} {input}→{output} /{stride} tracked {track_input}");
                    let x = Tensor::rand(-1f64, 1.0, (3, 7, 6, input), &Device::Cpu)?
                        .to_dtype(dtype)?;
                    let (fs, fused) = block(dtype, input, output, stride)?;
                    let (us, units) = block(dtype, input, output, stride)?;
                    let fused_path = |x: &Tensor| -> Result<Tensor> {
                        match fused.forward_fused(x, true)? {
                            Some(y) => Ok(y),
                            None => candle_core::bail!("the fused path did not run"),
                        }
                    };
                    assert_same_step(
                        &label,
                        &Var::from_tensor(&x)?,
                        track_input,
                        (&fs, &fused_path),
                        (&us, &|x| units.forward_units(x, true)),
                    )?;
                }
            }
        }
        Ok(())
    }
}
