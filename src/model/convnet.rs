//! The small CPU encoder: `depth` stages of 3×3 conv → norm → ReLU (stride 2 after the
//! first stage, channels doubling from `width`), then global average pooling.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::conv_norm::ConvNorm;
use super::layers::ConvSpec;
use super::norm::NormKind;
use super::params::ParamStore;
use super::pool::{global_average_pool, to_channels_last};

#[derive(Debug, Clone)]
pub struct ConvNet {
    stages: Vec<ConvNorm>,
    out_dim: usize,
}

impl ConvNet {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        in_channels: usize,
        width: usize,
        depth: usize,
        norm: NormKind,
        standardize: bool,
    ) -> Result<Self> {
        let mut stages = Vec::with_capacity(depth);
        let mut channels = in_channels;
        for i in 0..depth {
            let out = width << i;
            stages.push(ConvNorm::new(
                store,
                &format!("{name}.stage{i}.conv"),
                ConvSpec {
                    input: channels,
                    output: out,
                    kernel: 3,
                    stride: if i == 0 { 1 } else { 2 },
                    padding: 1,
                    // A bias right before a norm layer is redundant.
                    bias: norm == NormKind::None,
                    standardize,
                },
                (&format!("{name}.stage{i}.norm"), norm),
            )?);
            channels = out;
        }
        Ok(Self {
            stages,
            out_dim: channels,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Multiply-adds per example of a size × size input: (all layers, the first conv).
    pub fn macs(&self, size: usize) -> (u64, u64) {
        let (mut h, mut w, mut total, mut first) = (size, size, 0, None);
        for stage in &self.stages {
            let (m, ho, wo) = stage.conv.macs(h, w);
            total += m;
            first.get_or_insert(m);
            (h, w) = (ho, wo);
        }
        (total, first.unwrap_or(0))
    }
}

impl ModuleT for ConvNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = to_channels_last(x)?;
        for stage in &self.stages {
            h = stage.forward_t(&h, train, true)?;
        }
        global_average_pool(&h)
    }
}
