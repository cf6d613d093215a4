//! The encoder f: image → representation y.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::convnet::ConvNet;
use super::norm::NormKind;
use super::params::ParamStore;
use super::resnet::ResNet18;
use crate::config::{EncoderName, EncoderNorm, ModelConfig};

#[derive(Debug, Clone)]
pub enum Encoder {
    ConvNet(ConvNet),
    ResNet18(ResNet18),
}

impl Encoder {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        cfg: &ModelConfig,
        in_channels: usize,
    ) -> Result<Self> {
        let (norm, standardize) = match cfg.encoder_norm {
            EncoderNorm::Bn => (NormKind::Batch, false),
            EncoderNorm::Gn => (NormKind::Group(cfg.gn_groups), false),
            EncoderNorm::GnWs => (NormKind::Group(cfg.gn_groups), true),
            EncoderNorm::None => (NormKind::None, false),
        };
        Ok(match cfg.encoder {
            EncoderName::Convnet => Self::ConvNet(ConvNet::new(
                store,
                name,
                in_channels,
                cfg.width,
                cfg.depth,
                norm,
                standardize,
            )?),
            EncoderName::Resnet18 => Self::ResNet18(ResNet18::new(
                store,
                name,
                in_channels,
                cfg.width,
                cfg.resnet_stem,
                norm,
                standardize,
            )?),
        })
    }

    /// Dimension of the representation y.
    pub fn out_dim(&self) -> usize {
        match self {
            Self::ConvNet(n) => n.out_dim(),
            Self::ResNet18(n) => n.out_dim(),
        }
    }
}

impl ModuleT for Encoder {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::ConvNet(n) => n.forward_t(x, train),
            Self::ResNet18(n) => n.forward_t(x, train),
        }
    }
}
