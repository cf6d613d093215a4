//! A convolution, its normalization layer and optionally ReLU: the unit both encoders are
//! built from. With batch norm in training mode on the CPU it runs as one fused op
//! ([`super::conv_bn_op`]); otherwise as the separate layers.

use std::sync::{Arc, Mutex};

use candle_core::{Result, Tensor};
use candle_nn::{Module, ModuleT};

use super::layers::{Conv2d, ConvSpec};
use super::norm::{BatchNorm, Norm, NormKind};
use super::params::ParamStore;
use crate::ops::conv_bn_chain::ChainUnit;
use crate::ops::conv_bn_op::{lock_state, ConvBnState, ConvBnTrain};
use crate::ops::fused_op::{Fused, FusedConv};

#[derive(Debug, Clone)]
pub struct ConvNorm {
    pub conv: Conv2d,
    pub norm: Norm,
}

impl ConvNorm {
    /// The conv's parameters are drawn first, then the norm's.
    pub fn new(
        store: &mut ParamStore,
        conv: &str,
        spec: ConvSpec,
        norm: (&str, NormKind),
    ) -> Result<Self> {
        let output = spec.output;
        let conv = Conv2d::new(store, conv, spec)?;
        let norm = Norm::new(store, norm.0, output, norm.1)?;
        Ok(Self { conv, norm })
    }

    /// norm(conv(x)), then ReLU if `relu`. Channels-last in and out.
    pub fn forward_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        match self.fusable(x, train) {
            Some(bn) => self.fused(bn, x, relu),
            None => self.forward_separate(x, train, relu),
        }
    }

    /// Like `forward_t` but always through the separate layers (the fused op's reference).
    pub fn forward_separate(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let h = self.norm.forward_t(&self.conv.forward(x)?, train)?;
        if relu {
            h.relu()
        } else {
            Ok(h)
        }
    }

    /// The batch norm this unit's fused op would run: in training mode on the CPU, after a
    /// conv without bias. `None` where the separate layers run.
    pub(super) fn fusable(&self, x: &Tensor, train: bool) -> Option<&BatchNorm> {
        match &self.norm {
            Norm::Batch(bn) if train && x.device().is_cpu() && !self.conv.has_bias() => Some(bn),
            _ => None,
        }
    }

    /// The fused op's weight (standardised if asked) and [γ; β].
    pub(super) fn fused_inputs(&self, bn: &BatchNorm) -> Result<(Tensor, Tensor)> {
        let (gamma, beta) = bn.affine_params();
        Ok((self.conv.weight_in_use()?, Tensor::cat(&[gamma, beta], 0)?))
    }

    fn fused(&self, bn: &BatchNorm, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (weight, gamma_beta) = self.fused_inputs(bn)?;
        let state = Arc::new(Mutex::new(ConvBnState::default()));
        let keep = x.track_op() || weight.track_op() || gamma_beta.track_op();
        let y = x.contiguous()?.apply_op3(
            &weight,
            &gamma_beta,
            Fused(ConvBnTrain {
                patch: self.conv.patch(),
                relu,
                keep,
                state: state.clone(),
            }),
        )?;
        record_batch_statistics(bn, &state, x.dtype())?;
        Ok(y)
    }
}

/// Runs `units` (each a conv + batch norm, with ReLU or not) as one op that `op` makes from
/// their fused ops ([`ChainUnit`]s), with x, their concatenated weights and their concatenated
/// [γ; β] as inputs, and records each unit's batch statistics. `None` (nothing run) unless
/// every unit would run the fused op.
pub(super) fn fused_units<C: FusedConv + 'static>(
    x: &Tensor,
    units: &[(&ConvNorm, bool)],
    train: bool,
    op: impl FnOnce(Vec<ChainUnit>) -> C,
) -> Result<Option<Tensor>> {
    let Some(norms) = units
        .iter()
        .map(|(u, _)| u.fusable(x, train))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let mut inputs = Vec::with_capacity(units.len());
    for ((unit, _), bn) in units.iter().zip(&norms) {
        inputs.push(unit.fused_inputs(bn)?);
    }
    let keep = x.track_op() || inputs.iter().any(|(w, gb)| w.track_op() || gb.track_op());
    let (mut chain, mut weights, mut gamma_beta) = (Vec::new(), Vec::new(), Vec::new());
    for ((unit, relu), (w, gb)) in units.iter().zip(inputs) {
        chain.push(ChainUnit {
            op: ConvBnTrain {
                patch: unit.conv.patch(),
                relu: *relu,
                keep,
                state: Arc::new(Mutex::new(ConvBnState::default())),
            },
            weight: w.dims4()?,
        });
        weights.push(w.flatten_all()?);
        gamma_beta.push(gb);
    }
    let states: Vec<_> = chain.iter().map(|u| u.op.state.clone()).collect();
    let y = x.contiguous()?.apply_op3(
        &Tensor::cat(&weights, 0)?,
        &Tensor::cat(&gamma_beta, 0)?,
        Fused(op(chain)),
    )?;
    for (bn, state) in norms.iter().zip(&states) {
        record_batch_statistics(bn, state, x.dtype())?;
    }
    Ok(Some(y))
}

/// Moves `bn`'s running statistics towards the batch's, as the fused op found them.
fn record_batch_statistics(
    bn: &BatchNorm,
    state: &Mutex<ConvBnState>,
    dtype: candle_core::DType,
) -> Result<()> {
    let (mean, var, rows) = {
        let st = lock_state(state)?;
        (st.mean.clone(), st.var.clone(), st.rows)
    };
    let as_tensor = |v: Vec<f64>| Tensor::new(v, &candle_core::Device::Cpu)?.to_dtype(dtype);
    bn.update_running(&as_tensor(mean)?, &as_tensor(var)?, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::check_gradients;
    use candle_core::{DType, Device, Var};

    fn unit(
        dtype: DType,
        kernel: usize,
        stride: usize,
        standardize: bool,
    ) -> Result<(ParamStore, ConvNorm)> {
        let mut store = ParamStore::with_dtype(&Device::Cpu, 11, dtype);
        let unit = ConvNorm::new(
            &mut store,
            "c",
            ConvSpec {
                input: 4,
                output: 5,
                kernel,
                stride,
                padding: kernel / 2,
                bias: false,
                standardize,
            },
            ("n", NormKind::Batch),
        )?;
        // Non-trivial γ, β, so that their gradients and the ReLU's clipping are exercised.
        for p in store.params() {
            if p.name.starts_with("n.") {
                let n = p.var.elem_count();
                let v: Vec<f64> = (0..n)
                    .map(|k| 0.3 + 0.2 * k as f64 - 0.1 * n as f64 / 2.0)
                    .collect();
                p.var
                    .set(&Tensor::from_vec(v, n, &Device::Cpu)?.to_dtype(dtype)?)?;
            }
        }
        Ok((store, unit))
    }

    fn input(dtype: DType) -> Result<Tensor> {
        let v: Vec<f64> = (0..3 * 6 * 5 * 4)
            .map(|i| ((i * 29 % 97) as f64 / 97.0 - 0.4) * 2.0)
            .collect();
        Tensor::from_vec(v, (3, 6, 5, 4), &Device::Cpu)?.to_dtype(dtype)
    }

    fn max_relative(a: &Tensor, b: &Tensor) -> Result<f64> {
        let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        Ok(a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
            / scale)
    }

    /// The fused op against the separate layers (candle's matmul, our im2col and batch-norm
    /// ops, candle's ReLU): outputs, the gradients of every input, and the running
    /// statistics.
    #[test]
    fn fused_matches_the_separate_layers_forward_and_backward() -> Result<()> {
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
            for (kernel, stride) in [(3, 1), (3, 2), (1, 1), (1, 2)] {
                for relu in [true, false] {
                    for standardize in [false, true] {
                        let label =
                            format!("{dtype:?} k{kernel} s{stride} relu {relu} ws {standardize}");
                        let x = Var::from_tensor(&input(dtype)?)?;
                        let (fs, fused) = unit(dtype, kernel, stride, standardize)?;
                        let (ss, separate) = unit(dtype, kernel, stride, standardize)?;
                        let yf = fused.forward_t(x.as_tensor(), true, relu)?;
                        let ys = separate.forward_separate(x.as_tensor(), true, relu)?;
                        let r =
                            Tensor::rand(-1f64, 1.0, yf.shape(), &Device::Cpu)?.to_dtype(dtype)?;
                        assert!(max_relative(&yf, &ys)? < tol, "{label}: forward");
                        let gf = (&yf * &r)?.sum_all()?.backward()?;
                        let gs = (&ys * &r)?.sum_all()?.backward()?;
                        let pairs = [(x.as_tensor(), x.as_tensor())].into_iter().chain(
                            fs.params()
                                .iter()
                                .zip(ss.params())
                                .map(|(a, b)| (a.var.as_tensor(), b.var.as_tensor())),
                        );
                        for (i, (a, b)) in pairs.enumerate() {
                            let (ga, gb) = (
                                gf.get(a).expect("fused gradient"),
                                gs.get(b).expect("separate gradient"),
                            );
                            let err = max_relative(ga, gb)?;
                            assert!(err < tol, "{label}: gradient {i} differs by {err:e}");
                        }
                        for ((na, a), (_, b)) in fs.buffers().iter().zip(ss.buffers()) {
                            let err = max_relative(a.as_tensor(), b.as_tensor())?;
                            assert!(err < tol, "{label}: running {na} differs by {err:e}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn fused_gradients_match_finite_differences() -> Result<()> {
        for (kernel, stride) in [(3, 2), (1, 1)] {
            for relu in [true, false] {
                let (store, unit) = unit(DType::F64, kernel, stride, false)?;
                check_gradients(
                    &format!("fused conv-bn k{kernel} s{stride} relu {relu}"),
                    &[2, 5, 4, 4],
                    &store,
                    |x| unit.forward_t(x, true, relu),
                )?;
            }
        }
        Ok(())
    }

    /// The first layer's input (images) is not tracked: no input gradient is computed, and
    /// the parameters' gradients are those of a tracked input.
    #[test]
    fn untracked_input_gets_no_gradient_and_changes_nothing_else() -> Result<()> {
        let (store, unit) = unit(DType::F64, 3, 2, false)?;
        let x = input(DType::F64)?;
        let xv = Var::from_tensor(&x)?;
        let tracked = unit.forward_t(xv.as_tensor(), true, true)?;
        let plain = unit.forward_t(&x, true, true)?;
        assert_eq!(max_relative(&tracked, &plain)?, 0.0);
        let r = Tensor::rand(-1f64, 1.0, plain.shape(), &Device::Cpu)?;
        let gt = (&tracked * &r)?.sum_all()?.backward()?;
        let gp = (&plain * &r)?.sum_all()?.backward()?;
        assert!(gt.get(xv.as_tensor()).is_some());
        assert!(gp.get(&x).is_none());
        for p in store.params() {
            let (a, b) = (gt.get(p.var.as_tensor()), gp.get(p.var.as_tensor()));
            assert_eq!(
                max_relative(a.expect("tracked"), b.expect("plain"))?,
                0.0,
                "{}",
                p.name
            );
        }
        Ok(())
    }
}
