//! θ′ ← τ·θ′ + (1 − τ)·θ for every target parameter in one launch. CPU reference:
//! [`ema_reference`], the candle ops `EmaTarget::update` runs on other devices.

use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{Result, Tensor, Var};

use super::{address, cuda_device, function, grid_for, upload};

/// The CPU formula, rounded the same way: fl(fl(θ′·τ) + fl(θ·(1 − τ))) with τ and 1 − τ in f32.
pub fn ema_reference(target: &Tensor, online: &Tensor, tau: f64) -> Result<Tensor> {
    (target * tau)? + (online.detach() * (1.0 - tau))?
}

/// Updates every `targets[k]` in place from `onlines[k]` (same shapes, f32, contiguous).
pub fn ema_update(targets: &[&Var], onlines: &[&Tensor], tau: f64) -> Result<()> {
    if targets.len() != onlines.len() {
        candle_core::bail!(
            "ema: {} targets for {} online tensors",
            targets.len(),
            onlines.len()
        );
    }
    let Some(first) = targets.first() else {
        return Ok(());
    };
    let dev = cuda_device(first.as_tensor())?;
    let mut target_ptrs = Vec::with_capacity(targets.len());
    let mut online_ptrs = Vec::with_capacity(targets.len());
    let mut offsets = vec![0i64];
    for (t, o) in targets.iter().zip(onlines) {
        if t.shape() != o.shape() {
            candle_core::bail!("ema: target {:?} vs online {:?}", t.shape(), o.shape());
        }
        target_ptrs.push(address(t.as_tensor())?);
        online_ptrs.push(address(o)?);
        offsets.push(offsets[offsets.len() - 1] + t.elem_count() as i64);
    }
    let total = offsets[offsets.len() - 1] as usize;
    let (targets_d, onlines_d, offsets_d) = (
        upload(&dev, &target_ptrs)?,
        upload(&dev, &online_ptrs)?,
        upload(&dev, &offsets)?,
    );
    let n = targets.len() as i32;
    let (tau_f, rest_f) = (tau as f32, (1.0 - tau) as f32);
    let func = function!(dev, "ema_multi_tensor")?;
    let mut launch = func.builder();
    launch.arg(&targets_d);
    launch.arg(&onlines_d);
    launch.arg(&offsets_d);
    launch.arg(&n);
    launch.arg(&tau_f);
    launch.arg(&rest_f);
    // Safety: the pointer tables hold `n` live, contiguous f32 buffers of the lengths in
    // `offsets`, which stay alive (borrowed) until the stream has run the kernel.
    unsafe { launch.launch(grid_for(total, 256)) }.w()?;
    dev.cuda_stream().synchronize().w()?;
    Ok(())
}

/// The kernel against [`ema_reference`] on tensors of several shapes (one of them not a
/// multiple of the block): the largest absolute difference. The kernel computes the same two
/// f32 products and sum as the reference, so anything but 0 is a fault.
pub fn self_check(gpu: &candle_core::Device) -> Result<f64> {
    use candle_core::{DType, Device};
    let shapes: [&[usize]; 4] = [&[3, 5], &[1], &[64, 3, 3, 32], &[1000]];
    let tau = 0.996;
    let (mut targets, mut onlines, mut expected) = (vec![], vec![], vec![]);
    for (i, shape) in shapes.iter().enumerate() {
        let t = Tensor::randn(0f32, 1.0, *shape, &Device::Cpu)?;
        let o = (Tensor::randn(0f32, 1.0, *shape, &Device::Cpu)? * (i + 1) as f64)?;
        expected.push(ema_reference(&t, &o, tau)?);
        targets.push(Var::from_tensor(&t.to_device(gpu)?)?);
        onlines.push(o.to_device(gpu)?);
    }
    let t_refs: Vec<&Var> = targets.iter().collect();
    let o_refs: Vec<&Tensor> = onlines.iter().collect();
    ema_update(&t_refs, &o_refs, tau)?;
    let mut largest = 0f64;
    for (t, e) in targets.iter().zip(&expected) {
        let got = t.as_tensor().to_device(&Device::Cpu)?;
        let diff = (got - e)?
            .abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        largest = crate::metrics::difference::worst(largest, diff);
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Needs a CUDA device: this test fails, rather than skips, without one.
    #[test]
    fn one_launch_matches_the_cpu_formula_bit_for_bit() -> Result<()> {
        assert_eq!(self_check(&Device::new_cuda(0)?)?, 0.0);
        Ok(())
    }
}
