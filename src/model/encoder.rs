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

    /// Multiply-adds per example of a size × size input: (the whole encoder, its first
    /// layer — whose input gradient a training step does not compute).
    pub fn macs(&self, size: usize) -> (u64, u64) {
        match self {
            Self::ConvNet(n) => n.macs(size),
            Self::ResNet18(n) => n.macs(size),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ResnetStem;
    use candle_core::{DType, Device};

    /// Every encoder × norm trains: output shape right, every parameter gets a gradient.
    #[test]
    fn every_encoder_and_norm_passes_gradients_to_all_parameters() -> Result<()> {
        for encoder in [EncoderName::Convnet, EncoderName::Resnet18] {
            for norm in [
                EncoderNorm::Bn,
                EncoderNorm::Gn,
                EncoderNorm::GnWs,
                EncoderNorm::None,
            ] {
                for stem in [ResnetStem::Cifar, ResnetStem::Imagenet] {
                    if encoder == EncoderName::Convnet && stem == ResnetStem::Imagenet {
                        continue;
                    }
                    let cfg = ModelConfig {
                        encoder,
                        encoder_norm: norm,
                        width: 4,
                        depth: 3,
                        gn_groups: 2,
                        resnet_stem: stem,
                        ..ModelConfig::default()
                    };
                    let mut store = ParamStore::new(&Device::Cpu, 0);
                    let net = Encoder::new(&mut store, "encoder", &cfg, 3)?;
                    let x = Tensor::rand(0f32, 1.0, (4, 3, 16, 16), &Device::Cpu)?;
                    let y = net.forward_t(&x, true)?;
                    assert_eq!(y.dims(), [4, net.out_dim()], "{encoder:?} {norm:?}");
                    let r = Tensor::rand(-1f32, 1.0, y.dims(), &Device::Cpu)?;
                    let grads = (y * r)?.sum_all()?.backward()?;
                    for p in store.params() {
                        let g = grads.get(p.var.as_tensor()).unwrap_or_else(|| {
                            panic!("{encoder:?} {norm:?} {stem:?}: no gradient for {}", p.name)
                        });
                        let mag = g
                            .abs()?
                            .sum_all()?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()?;
                        assert!(
                            mag > 0.0,
                            "{encoder:?} {norm:?} {stem:?}: zero gradient for {}",
                            p.name
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
