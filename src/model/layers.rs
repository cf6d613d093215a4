//! Linear and convolution layers over named, seeded parameters.

use candle_core::{Result, Tensor};
use candle_nn::Module;

use super::norm::weight_standardize;
use super::params::ParamStore;
use crate::ops::im2col::{im2col, Patch};

/// y = x·Wᵀ + b, input (N, in).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        output: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = store.weight(&format!("{name}.weight"), &[output, input], input)?;
        let bias = if bias {
            Some(store.bias(&format!("{name}.bias"), output, input)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl Linear {
    /// Multiply-adds per example.
    pub fn macs(&self) -> u64 {
        self.weight.elem_count() as u64
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A 2-D convolution over channels-last (N, H, W, C) input: im2col, then one matrix
/// product with the (O, kh·kw·C) weight; output (N, Ho, Wo, O). Optional weight
/// standardization.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// (O, kh, kw, C)
    weight: Tensor,
    bias: Option<Tensor>,
    patch: Patch,
    standardize: bool,
}

pub struct ConvSpec {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
    pub standardize: bool,
}

impl Conv2d {
    pub fn new(store: &mut ParamStore, name: &str, s: ConvSpec) -> Result<Self> {
        let fan_in = s.input * s.kernel * s.kernel;
        let weight = store.weight(
            &format!("{name}.weight"),
            &[s.output, s.kernel, s.kernel, s.input],
            fan_in,
        )?;
        let bias = if s.bias {
            Some(store.bias(&format!("{name}.bias"), s.output, fan_in)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            patch: Patch {
                kernel: s.kernel,
                stride: s.stride,
                padding: s.padding,
            },
            standardize: s.standardize,
        })
    }
}

impl Conv2d {
    /// The (O, kh, kw, C) weight as the convolution uses it (standardized if asked).
    pub(super) fn weight_in_use(&self) -> Result<Tensor> {
        if self.standardize {
            weight_standardize(&self.weight)
        } else {
            Ok(self.weight.clone())
        }
    }

    pub(super) fn patch(&self) -> Patch {
        self.patch
    }

    pub(super) fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// Multiply-adds per example on an h × w input, and the output's (h, w).
    pub fn macs(&self, h: usize, w: usize) -> (u64, usize, usize) {
        let (ho, wo) = (self.patch.out_size(h), self.patch.out_size(w));
        ((ho * wo * self.weight.elem_count()) as u64, ho, wo)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let out_channels = self.weight.dim(0)?;
        let weight = self.weight_in_use()?.reshape((out_channels, ()))?;
        let (ho, wo) = (self.patch.out_size(h), self.patch.out_size(w));
        let cols = if self.patch
            == (Patch {
                kernel: 1,
                stride: 1,
                padding: 0,
            }) {
            x.reshape((n * h * w, c))?
        } else {
            im2col(x, self.patch)?
        };
        let y = cols.matmul(&weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        y.reshape((n, ho, wo, out_channels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::check_gradients;
    use candle_core::{DType, Device};

    #[test]
    fn linear_and_conv_gradients() -> Result<()> {
        let mut store = ParamStore::with_dtype(&Device::Cpu, 5, DType::F64);
        let lin = Linear::new(&mut store, "fc", 3, 2, true)?;
        check_gradients("linear", &[4, 3], &store, |x| lin.forward(x))?;
        for standardize in [false, true] {
            let mut store = ParamStore::with_dtype(&Device::Cpu, 5, DType::F64);
            let conv = Conv2d::new(
                &mut store,
                "conv",
                ConvSpec {
                    input: 2,
                    output: 3,
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                    bias: true,
                    standardize,
                },
            )?;
            check_gradients("conv", &[2, 5, 5, 2], &store, |x| conv.forward(x))?;
        }
        Ok(())
    }

    #[test]
    fn conv_matches_candle_reference_conv2d() -> Result<()> {
        // Same weights, NCHW candle conv2d vs our NHWC im2col conv.
        let mut store = ParamStore::with_dtype(&Device::Cpu, 9, DType::F64);
        let conv = Conv2d::new(
            &mut store,
            "c",
            ConvSpec {
                input: 3,
                output: 4,
                kernel: 3,
                stride: 2,
                padding: 1,
                bias: true,
                standardize: false,
            },
        )?;
        let x_nchw = Tensor::rand(-1f64, 1.0, (2, 3, 7, 6), &Device::Cpu)?;
        let ours = conv
            .forward(&x_nchw.permute((0, 2, 3, 1))?.contiguous()?)?
            .permute((0, 3, 1, 2))?;
        let w_oihw = conv.weight.permute((0, 3, 1, 2))?.contiguous()?;
        let reference = x_nchw
            .conv2d(&w_oihw, 1, 2, 1, 1)?
            .broadcast_add(&conv.bias.as_ref().expect("bias").reshape((1, 4, 1, 1))?)?;
        let diff = (ours - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{diff}");
        Ok(())
    }
}
