//! ResNet-18 (He et al. 2016), the study's encoder, with a choice of normalization.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::conv_norm::ConvNorm;
use super::layers::ConvSpec;
use super::norm::NormKind;
use super::params::ParamStore;
use super::pool::{global_average_pool, max_pool_3x3_s2, to_channels_last};
use crate::config::ResnetStem;
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
