//! relu(h + skip), the end of a ResNet block, as one CPU op. Built from candle ops it is an
//! add and a ReLU forward, and backward a comparison, a cast, a product and two
//! zero-filled gradient buffers — five sweeps of the block's activations for no arithmetic.
//! Same numbers as those ops: the sum is recomputed in backward and the gradient passes
//! where it is ≥ 0 (candle's ReLU convention).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

use super::parallel::for_each_chunk_mut;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 16;

struct ResidualRelu;

/// ReLU gradient of the sum, with dy.
struct ResidualReluGrad;

fn slice<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("residual relu: inputs must be contiguous"),
    }
}

fn forward<T: WithDType>(h: &[T], skip: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); h.len()];
    for_each_chunk_mut(&mut out, CHUNK, |i, dst| {
        let at = i * CHUNK;
        for ((d, a), b) in dst.iter_mut().zip(&h[at..]).zip(&skip[at..]) {
            let x = *a + *b;
            *d = if x < T::zero() { T::zero() } else { x };
        }
    });
    out
}

fn backward<T: WithDType>(h: &[T], skip: &[T], dy: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); h.len()];
    for_each_chunk_mut(&mut out, CHUNK, |i, dst| {
        let at = i * CHUNK;
        for (((d, a), b), g) in dst.iter_mut().zip(&h[at..]).zip(&skip[at..]).zip(&dy[at..]) {
            if *a + *b >= T::zero() {
                *d = *g;
            }
        }
    });
    out
}

impl CustomOp2 for ResidualRelu {
    fn name(&self) -> &'static str {
        "residual-relu"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if hl.shape() != sl.shape() {
            candle_core::bail!("residual relu: {:?} vs {:?}", hl.shape(), sl.shape());
        }
        let out = match (hs, ss) {
            (CpuStorage::F32(h), CpuStorage::F32(s)) => {
                CpuStorage::F32(forward(slice(h, hl)?, slice(s, sl)?))
            }
            (CpuStorage::F64(h), CpuStorage::F64(s)) => {
                CpuStorage::F64(forward(slice(h, hl)?, slice(s, sl)?))
            }
            _ => candle_core::bail!("residual relu: f32 or f64, both alike"),
        };
        Ok((out, hl.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        skip: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = h.apply_op3_no_bwd(skip, &dy.contiguous()?, &ResidualReluGrad)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

impl candle_core::CustomOp3 for ResidualReluGrad {
    fn name(&self) -> &'static str {
        "residual-relu-grad"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (hs, ss, gs) {
            (CpuStorage::F32(h), CpuStorage::F32(s), CpuStorage::F32(g)) => {
                CpuStorage::F32(backward(slice(h, hl)?, slice(s, sl)?, slice(g, gl)?))
            }
            (CpuStorage::F64(h), CpuStorage::F64(s), CpuStorage::F64(g)) => {
                CpuStorage::F64(backward(slice(h, hl)?, slice(s, sl)?, slice(g, gl)?))
            }
            _ => candle_core::bail!("residual relu: f32 or f64, all alike"),
        };
        Ok((out, hl.shape().clone()))
    }
}

/// relu(h + skip): one op on the CPU, candle's add and ReLU elsewhere.
pub fn residual_relu(h: &Tensor, skip: &Tensor) -> Result<Tensor> {
    if h.device().is_cpu() && h.shape() == skip.shape() {
        h.contiguous()?.apply_op2(&skip.contiguous()?, ResidualRelu)
    } else {
        (h + skip)?.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck::check_gradients;
    use candle_core::{Device, Var};

    /// Against candle's add + ReLU, bit for bit, forward and both gradients — including
    /// sums that are exactly 0, where candle's ReLU passes the gradient.
    #[test]
    fn matches_candle_add_and_relu_exactly() -> Result<()> {
        let h: Vec<f32> = (0..200)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.25)
            .collect();
        let s: Vec<f32> = (0..200)
            .map(|i| ((i * 11 % 19) as f32 - 9.0) * 0.25)
            .collect();
        assert!(h.iter().zip(&s).any(|(a, b)| a + b == 0.0));
        let h = Var::from_vec(h, (2, 10, 10), &Device::Cpu)?;
        let s = Var::from_vec(s, (2, 10, 10), &Device::Cpu)?;
        let r = Tensor::rand(-1f32, 1.0, (2, 10, 10), &Device::Cpu)?;
        let ours = residual_relu(h.as_tensor(), s.as_tensor())?;
        let reference = (h.as_tensor() + s.as_tensor())?.relu()?;
        let same = |a: &Tensor, b: &Tensor| -> Result<bool> {
            Ok(a.flatten_all()?.to_vec1::<f32>()? == b.flatten_all()?.to_vec1::<f32>()?)
        };
        assert!(same(&ours, &reference)?);
        let go = (&ours * &r)?.sum_all()?.backward()?;
        let gr = (&reference * &r)?.sum_all()?.backward()?;
        for v in [&h, &s] {
            let (a, b) = (go.get(v.as_tensor()), gr.get(v.as_tensor()));
            assert!(same(a.expect("ours"), b.expect("candle's"))?);
        }
        Ok(())
    }

    #[test]
    fn finite_differences() -> Result<()> {
        // A skip input with both signs, so that the ReLU's kink is crossed.
        let values: Vec<f64> = (0..24).map(|i| ((i as f64) * 0.9).cos() * 0.8).collect();
        let skip = Var::from_tensor(&Tensor::from_vec(values, (2, 3, 4), &Device::Cpu)?)?;
        let params = [("skip".to_string(), skip.clone())];
        check_gradients("residual relu", &[2, 3, 4], &Device::Cpu, &params, |x| {
            residual_relu(x, skip.as_tensor())
        })
    }
}
