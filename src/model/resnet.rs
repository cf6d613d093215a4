//! ResNet-18 (He et al. 2016), the study's encoder, with a choice of normalization.

use candle_core::{Result, Tensor};
use candle_nn::{Module, ModuleT};

use super::layers::{Conv2d, ConvSpec};
use super::norm::{Norm, NormKind};
use super::params::ParamStore;
use super::pool::{global_average_pool, max_pool_3x3_s2, to_channels_last};
use crate::config::ResnetStem;

#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv2d,
    norm1: Norm,
    conv2: Conv2d,
    norm2: Norm,
    shortcut: Option<(Conv2d, Norm)>,
}

struct Ctx {
    norm: NormKind,
    standardize: bool,
}

impl Ctx {
    fn conv(
        &self,
        store: &mut ParamStore,
        name: &str,
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Conv2d> {
        Conv2d::new(
            store,
            name,
            ConvSpec {
                input,
                output,
                kernel,
                stride,
                padding: kernel / 2,
                bias: self.norm == NormKind::None,
                standardize: self.standardize,
            },
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
            Some((
                ctx.conv(
                    store,
                    &format!("{name}.shortcut.conv"),
                    input,
                    output,
                    1,
                    stride,
                )?,
                Norm::new(store, &format!("{name}.shortcut.norm"), output, ctx.norm)?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: ctx.conv(store, &format!("{name}.conv1"), input, output, 3, stride)?,
            norm1: Norm::new(store, &format!("{name}.norm1"), output, ctx.norm)?,
            conv2: ctx.conv(store, &format!("{name}.conv2"), output, output, 3, 1)?,
            norm2: Norm::new(store, &format!("{name}.norm2"), output, ctx.norm)?,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self
            .norm1
            .forward_t(&self.conv1.forward(x)?, train)?
            .relu()?;
        let h = self.norm2.forward_t(&self.conv2.forward(&h)?, train)?;
        let skip = match &self.shortcut {
            Some((conv, norm)) => norm.forward_t(&conv.forward(x)?, train)?,
            None => x.clone(),
        };
        (h + skip)?.relu()
    }
}

#[derive(Debug, Clone)]
pub struct ResNet18 {
    stem: Conv2d,
    stem_norm: Norm,
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
        let stem = ctx.conv(
            store,
            &format!("{name}.stem.conv"),
            in_channels,
            width,
            kernel,
            stride,
        )?;
        let stem_norm = Norm::new(store, &format!("{name}.stem.norm"), width, norm)?;
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
            stem_norm,
            stem_kind,
            blocks,
            out_dim: channels,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
}

impl ModuleT for ResNet18 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = to_channels_last(x)?;
        let mut h = self
            .stem_norm
            .forward_t(&self.stem.forward(&x)?, train)?
            .relu()?;
        if self.stem_kind == ResnetStem::Imagenet {
            h = max_pool_3x3_s2(&h)?;
        }
        for block in &self.blocks {
            h = block.forward_t(&h, train)?;
        }
        global_average_pool(&h)
    }
}
