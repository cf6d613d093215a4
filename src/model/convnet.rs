//! The small CPU encoder: `depth` stages of 3×3 conv → norm → ReLU (stride 2 after the
//! first stage, channels doubling from `width`), then global average pooling.

use candle_core::{Result, Tensor};
use candle_nn::ModuleT;

use super::conv_norm::{fused_units, ConvNorm};
use super::layers::ConvSpec;
use super::norm::NormKind;
use super::params::ParamStore;
use super::pool::{global_average_pool, to_channels_last};
use crate::ops::conv_bn_chain::ConvBnChain;

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

impl ConvNet {
    /// The stages one op at a time (the chain's reference).
    pub fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = to_channels_last(x)?;
        for stage in &self.stages {
            h = stage.forward_t(&h, train, true)?;
        }
        global_average_pool(&h)
    }

    /// Every stage in one op ([`ConvBnChain`]) where each would run the fused conv + batch
    /// norm op; `None` otherwise.
    fn forward_chain(&self, x: &Tensor, train: bool) -> Result<Option<Tensor>> {
        let h = to_channels_last(x)?;
        let units: Vec<(&ConvNorm, bool)> = self.stages.iter().map(|s| (s, true)).collect();
        match fused_units(&h, &units, train, ConvBnChain::new)? {
            Some(y) => Ok(Some(global_average_pool(&y)?)),
            None => Ok(None),
        }
    }
}

impl ModuleT for ConvNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self.forward_chain(x, train)? {
            Some(y) => Ok(y),
            None => self.forward_stages(x, train),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::assert_same_step;
    use candle_core::{DType, Device, Var};

    fn net(dtype: DType, standardize: bool) -> Result<(ParamStore, ConvNet)> {
        let mut store = ParamStore::with_dtype(&Device::Cpu, 5, dtype);
        let net = ConvNet::new(&mut store, "e", 3, 4, 3, NormKind::Batch, standardize)?;
        // γ, β away from 1, 0 so that their gradients and the ReLUs' clipping take part.
        for (i, p) in store.params().iter().enumerate() {
            if p.name.contains(".norm.") {
                let n = p.var.elem_count();
                let v: Vec<f64> = (0..n)
                    .map(|k| 0.6 + 0.15 * ((k + i) % 5) as f64 - 0.3)
                    .collect();
                p.var
                    .set(&Tensor::from_vec(v, n, &Device::Cpu)?.to_dtype(dtype)?)?;
            }
        }
        Ok((store, net))
    }

    fn values(t: &Tensor) -> Result<Vec<f64>> {
        t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
    }

    /// The chain (one op) against the stages one op at a time: the same code on the same
    /// numbers, so outputs, every gradient and the running statistics are equal, not close.
    #[test]
    fn the_chain_equals_the_stages_one_by_one() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for standardize in [false, true] {
                for track_input in [false, true] {
                    let label = format!("{dtype:?} ws {standardize} tracked input {track_input}");
                    let x =
                        Tensor::rand(-1f64, 1.0, (3, 3, 9, 8), &Device::Cpu)?.to_dtype(dtype)?;
                    let (cs, chain) = net(dtype, standardize)?;
                    let (ss, stages) = net(dtype, standardize)?;
                    assert_same_step(
                        &label,
                        &Var::from_tensor(&x)?,
                        track_input,
                        (&cs, &|x| chain.forward_t(x, true)),
                        (&ss, &|x| stages.forward_stages(x, true)),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Without anything to differentiate (an EMA target's frozen parameters), the chain
    /// keeps nothing and normalises in place: the same output and running statistics as
    /// with gradients tracked.
    #[test]
    fn an_untracked_chain_gives_the_tracked_output() -> Result<()> {
        let (store, tracked) = net(DType::F32, false)?;
        let mut frozen = ParamStore::frozen_copy_of(&store)?;
        let untracked = ConvNet::new(&mut frozen, "e", 3, 4, 3, NormKind::Batch, false)?;
        let x = Tensor::rand(-1f32, 1.0, (4, 3, 8, 8), &Device::Cpu)?;
        let y = tracked.forward_t(&x, true)?;
        let y_untracked = untracked.forward_t(&x, true)?;
        assert!(!y_untracked.track_op());
        assert_eq!(values(&y)?, values(&y_untracked)?);
        for ((name, a), (_, b)) in store.buffers().iter().zip(frozen.buffers()) {
            assert_eq!(
                values(a.as_tensor())?,
                values(b.as_tensor())?,
                "running {name}"
            );
        }
        Ok(())
    }
}
