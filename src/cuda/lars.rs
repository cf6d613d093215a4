//! LARS, fused: trust ratio and update of every parameter in one launch (a block per
//! parameter: both norms, then v ← m·v + factor·u and w ← w − lr·v in place). CPU
//! reference: `train::Optimizer`'s LARS, which a test in `train/optim.rs` compares against.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{Result, Tensor, Var};

use super::{address, cuda_device, function, upload};

/// One parameter's tensors for a fused LARS step: weight and velocity are updated in place.
pub struct LarsParam<'a> {
    pub weight: &'a Var,
    pub grad: &'a Tensor,
    pub velocity: &'a Tensor,
    /// Biases and norm parameters when excluded: no weight decay, no trust ratio.
    pub excluded: bool,
}

pub struct LarsSettings {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub eta: f64,
}

/// One LARS step of every parameter, one launch.
pub fn lars_step(params: &[LarsParam], s: &LarsSettings) -> Result<()> {
    let Some(first) = params.first() else {
        return Ok(());
    };
    let dev = cuda_device(first.weight.as_tensor())?;
    let (mut w, mut g, mut v, mut lens, mut excluded) = (vec![], vec![], vec![], vec![], vec![]);
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad.contiguous())
        .collect::<Result<_>>()?;
    for (p, grad) in params.iter().zip(&grads) {
        let n = p.weight.elem_count();
        if grad.elem_count() != n || p.velocity.elem_count() != n {
            candle_core::bail!("lars: weight, gradient and velocity lengths differ");
        }
        w.push(address(p.weight.as_tensor())?);
        g.push(address(grad)?);
        v.push(address(p.velocity)?);
        lens.push(n as i64);
        excluded.push(i32::from(p.excluded));
    }
    let (w_d, g_d, v_d, lens_d, ex_d) = (
        upload(&dev, &w)?,
        upload(&dev, &g)?,
        upload(&dev, &v)?,
        upload(&dev, &lens)?,
        upload(&dev, &excluded)?,
    );
    let (lr, m, wd, eta) = (s.lr as f32, s.momentum as f32, s.weight_decay as f32, s.eta);
    let eta = eta as f32;
    let func = function!(dev, "lars_multi_tensor")?;
    let mut launch = func.builder();
    launch.arg(&w_d);
    launch.arg(&g_d);
    launch.arg(&v_d);
    launch.arg(&lens_d);
    launch.arg(&ex_d);
    launch.arg(&lr);
    launch.arg(&m);
    launch.arg(&wd);
    launch.arg(&eta);
    let block: u32 = 256;
    let cfg = LaunchConfig {
        grid_dim: (params.len() as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: block * 8,
    };
    // Safety: every table entry is a live, contiguous f32 buffer of the listed length.
    unsafe { launch.launch(cfg) }.w()?;
    dev.cuda_stream().synchronize().w()?;
    Ok(())
}
