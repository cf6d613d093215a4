//! The small CPU encoder: `depth` stages of 3×3 conv → norm → ReLU (stride 2 after the
//! first stage, channels doubling from `width`), then global average pooling.

use candle_core::{Result, Tensor};
use candle_nn::{Module, ModuleT};

use super::layers::{Conv2d, ConvSpec};
use super::norm::{Norm, NormKind};
use super::params::ParamStore;
use super::pool::{global_average_pool, to_channels_last};

#[derive(Debug, Clone)]
pub struct ConvNet {
    stages: Vec<(Conv2d, Norm)>,
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
            let conv = Conv2d::new(
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
            )?;
            let norm = Norm::new(store, &format!("{name}.stage{i}.norm"), out, norm)?;
            stages.push((conv, norm));
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
}

impl ModuleT for ConvNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = to_channels_last(x)?;
        for (conv, norm) in &self.stages {
            h = norm.forward_t(&conv.forward(&h)?, train)?.relu()?;
        }
        global_average_pool(&h)
    }
}
